"""The ticker stream (contract §14.1): ws-gateway relays Bybit's linear ticker items, a ``snapshot``
with every field and then ``delta`` items with only the fields that changed, each stamped ``ts``
(the venue's milliseconds). Here they are read, merged and judged fresh; the caller passes the
time in.

Decisions the contract leaves open:

- A delta is merged over what is held, snapshot or not. Its ``lastPrice``, when it carries one,
  is the venue's last price at its ``ts`` whatever came before, so a delta that arrives before
  any snapshot (the queue dropped the head, the service restarted) gives a usable price; one
  without ``lastPrice`` gives none until a later item brings it.
- The age of the price is the ``ts`` of the newest item that *carried* ``lastPrice``, not of the
  newest item. An item without ``lastPrice`` means "unchanged" only to a consumer that saw every
  item; another consumer of the same queue, or a dropped message, may have taken the one that
  changed it. So a quiet last price ages even while other fields stream, and the caller falls
  back to the REST ticker: slower, never staler.
- An item older (by ``ts``) than the newest merged is ignored entirely; one with the same ``ts``
  is merged (Bybit may stamp several items alike, and merging an item twice changes nothing).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Final

import attrs

Field = Decimal | str
LAST_PRICE: Final = "lastPrice"
KINDS: Final = ("snapshot", "delta")
# Bybit's string numbers: plain decimals ("50000.10", "-0.000212", "0"). Anything else
# ("PlusTick", "", a date) stays text.
_NUMBER: Final = re.compile(r"-?\d+(\.\d+)?")


@attrs.frozen
class TickerItem:
    """One ticker event's item as read: its fields, numbers as ``Decimal``, without ``type``/``ts``."""

    symbol: str
    is_snapshot: bool
    ts_ms: int
    fields: Mapping[str, Field]

    @property
    def last_price(self) -> Decimal | None:
        value = self.fields.get(LAST_PRICE)
        return value if isinstance(value, Decimal) else None


@attrs.frozen
class StreamTicker:
    """What the stream has said about one symbol, merged."""

    symbol: str
    fields: Mapping[str, Field]
    ts_ms: int  # the newest item merged
    last_price: Decimal | None = None
    last_price_ts_ms: int | None = None  # the newest item that carried lastPrice

    def price(self, name: str) -> Decimal | None:
        """A positive price field (``bid1Price``, ``ask1Price``, ``markPrice``), else None."""
        value = self.fields.get(name)
        return value if isinstance(value, Decimal) and value > 0 else None


def read_ticker_item(payload: object) -> TickerItem:
    """A ws-gateway ticker event's ``payload``; ``ValueError`` naming what is wrong."""
    if not isinstance(payload, Mapping):
        raise ValueError(f"payload is {type(payload).__name__}, not an object")
    symbol, kind, ts_ms = payload.get("symbol"), payload.get("type"), _ts_ms(payload.get("ts"))
    if not isinstance(symbol, str) or not symbol:
        raise ValueError(f"symbol {symbol!r} is not a symbol")
    if kind not in KINDS:
        raise ValueError(f"type {kind!r} is not one of {', '.join(KINDS)}")
    fields = {key: _field(value) for key, value in payload.items() if key not in ("type", "ts") and value is not None}
    item = TickerItem(symbol, kind == "snapshot", ts_ms, fields)
    if LAST_PRICE in fields or item.is_snapshot:
        if item.last_price is None or item.last_price <= 0:
            raise ValueError(f"lastPrice {payload.get(LAST_PRICE)!r} is not a positive number")
    return item


def merge_ticker(held: StreamTicker | None, item: TickerItem) -> StreamTicker:
    """``held`` with ``item`` merged; ``held`` itself when the item is older than what it holds."""
    if held is not None and item.ts_ms < held.ts_ms:
        return held
    base = held if held is not None and not item.is_snapshot else None
    fields = {**base.fields, **item.fields} if base is not None else dict(item.fields)
    carried = item.last_price
    if carried is not None:
        return StreamTicker(item.symbol, fields, item.ts_ms, carried, item.ts_ms)
    if base is None:
        return StreamTicker(item.symbol, fields, item.ts_ms)
    return StreamTicker(item.symbol, fields, item.ts_ms, base.last_price, base.last_price_ts_ms)


def fresh_last_price(held: StreamTicker | None, now_ms: int, max_age_ms: int) -> Decimal | None:
    """The last price while it is at most ``max_age_ms`` old at ``now_ms`` (the venue's clock),
    else None. A ``ts`` ahead of ``now_ms`` (a clock offset measured a little short) counts as
    age 0; the caller bounds that case by when the price arrived."""
    if held is None or held.last_price is None or held.last_price_ts_ms is None:
        return None
    return held.last_price if now_ms - held.last_price_ts_ms <= max_age_ms else None


def _ts_ms(value: object) -> int:
    if isinstance(value, bool):
        raise ValueError(f"ts {value!r} is not a time in ms")
    if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
        if int(value) > 0:
            return int(value)
    raise ValueError(f"ts {value!r} is not a time in ms")


def _field(value: object) -> Field:
    if isinstance(value, str):
        return Decimal(value) if _NUMBER.fullmatch(value) else value
    if isinstance(value, Decimal) and value.is_finite():
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return Decimal(value)
    return str(value)
