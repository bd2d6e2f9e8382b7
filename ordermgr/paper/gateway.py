"""A ws-gateway stand-in on the paper venue, for the standalone stack (docker-compose.yml).

ws-gateway relays Bybit's streams to RabbitMQ for the services that ask for a channel. The paper
venue plays it: it answers ws-gateway's subscription API (``POST /api/v1/subscriptions``,
``X-API-Key``, body ``{"channel_type": "order"|"ticker", "symbol"?, "requesting_service"}``;
201 new, 409 exists), and publishes, besides the order events it always publishes, the ticker
events of the subscribed symbols on ``ws-gateway.ticker`` (contract §14.1): one per price
change, each a Bybit v5 linear ticker item with ``type`` and ``ts``, a ``snapshot`` first and
then ``delta`` items that carry only the fields that changed.

A ticker subscription, new or repeated, starts with a snapshot: a consumer that (re)starts and
asks again gets the whole item, whatever the queue dropped while it was away. While the stream
stalls (the ``ticker_stall`` fault) nothing is published, and a symbol's first item after the
stall is a snapshot again.
"""

from __future__ import annotations

import hmac
import json
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Final

import attrs
from aiohttp import web

Json = dict[str, object]
CHANNEL_TYPES: Final = ("order", "ticker")
API_KEY_HEADER: Final = "X-API-Key"


@attrs.frozen
class Subscription:
    id: str
    channel_type: str
    symbol: str | None
    requesting_service: str
    created_at: str

    def as_json(self) -> Json:
        return {**attrs.asdict(self), "is_active": True}


class TickerStream:
    """The ticker items published for each subscribed symbol: a snapshot, then deltas."""

    def __init__(self, publish: Callable[[Json], None]) -> None:
        self._publish = publish
        self._last: dict[str, Json] = {}  # symbol → the item as the consumer now has it

    @property
    def symbols(self) -> frozenset[str]:
        return frozenset(self._last)

    def snapshot(self, item: Json, ts_ms: int) -> None:
        symbol = str(item["symbol"])
        full = {**item, "tickDirection": _tick_direction(item, self._last.get(symbol))}
        self._last[symbol] = full
        self._publish({**full, "type": "snapshot", "ts": ts_ms})

    def changed(self, item: Json, ts_ms: int) -> None:
        """A new price for a symbol: publish what changed, if anything did (subscribed only)."""
        symbol = str(item["symbol"])
        last = self._last.get(symbol)
        if last is None:
            return
        full = {**item, "tickDirection": _tick_direction(item, last)}
        delta = {key: value for key, value in full.items() if last.get(key) != value}
        if delta:
            last.update(delta)
            self._publish({"symbol": symbol, **delta, "type": "delta", "ts": ts_ms})


def _tick_direction(item: Json, last: Json | None) -> str:
    """Bybit's ``tickDirection`` (stream items only): the last move of ``lastPrice``."""
    if last is None:
        return "ZeroPlusTick"
    new, old = Decimal(str(item["lastPrice"])), Decimal(str(last["lastPrice"]))
    if new == old:
        return str(last["tickDirection"])
    return "PlusTick" if new > old else "MinusTick"


def ticker_envelope(payload: Json) -> Json:
    """ws-gateway's envelope around one ticker item (as around an order, topic ``tickers.<SYMBOL>``)."""
    ts_ms = int(str(payload["ts"]))
    return {
        "event_id": str(uuid.uuid4()),
        "event_type": "ticker",
        "topic": f"tickers.{payload['symbol']}",
        "timestamp": datetime.fromtimestamp(ts_ms / 1000, UTC).isoformat(),
        "received_at": datetime.now(UTC).isoformat(),
        "payload": payload,
        "trace_id": None,
    }


class Gateway:
    """The subscriptions and the ticker stream. ``ticker_item(symbol)`` is the venue's current
    ticker (None for a symbol it does not list); ``now_ms`` its clock; ``stalled()`` says
    whether the stream is stalled now."""

    def __init__(
        self,
        api_key: str,
        ticker_item: Callable[[str], Json | None],
        publish_ticker: Callable[[Json], None],
        now_ms: Callable[[], int],
        stalled: Callable[[], bool] = lambda: False,
    ) -> None:
        self._api_key = api_key.encode()
        self._ticker_item = ticker_item
        self._now_ms = now_ms
        self._stalled = stalled
        self.tickers = TickerStream(publish_ticker)
        self.subscriptions: dict[tuple[str, str | None], Subscription] = {}
        self._missed: set[str] = set()  # subscribed symbols whose items a stall swallowed: a snapshot is due

    def subscribe(self, channel_type: str, symbol: str | None, requesting_service: str) -> tuple[Subscription, bool]:
        """The subscription and whether it is new. A ticker subscription publishes a snapshot."""
        key = (channel_type, symbol if channel_type == "ticker" else None)
        existing = self.subscriptions.get(key)
        subscription = existing or Subscription(str(uuid.uuid4()), channel_type, key[1], requesting_service,
                                                datetime.now(UTC).isoformat())  # fmt: skip
        self.subscriptions[key] = subscription
        if channel_type == "ticker" and symbol is not None:
            self._publish(symbol, snapshot=True)
        return subscription, existing is None

    def price_changed(self, symbol: str) -> None:
        if symbol in self.tickers.symbols or symbol in self._missed:
            self._publish(symbol, snapshot=symbol in self._missed)

    def _publish(self, symbol: str, *, snapshot: bool) -> None:
        if self._stalled():
            self._missed.add(symbol)
            return
        item = self._ticker_item(symbol)
        if item is None:
            return
        self._missed.discard(symbol)
        if snapshot:
            self.tickers.snapshot(item, self._now_ms())
        else:
            self.tickers.changed(item, self._now_ms())

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/api/v1/subscriptions", self._subscribe)

    async def _subscribe(self, request: web.Request) -> web.Response:
        given = request.headers.get(API_KEY_HEADER, "").encode("utf-8", "surrogateescape")
        if not hmac.compare_digest(given, self._api_key):
            return _error(401, "unauthorized", f"missing or wrong {API_KEY_HEADER} header")
        try:
            body = json.loads(await request.read())
        except (ValueError, RecursionError):
            return _error(400, "invalid_body", "the body is not valid JSON")
        problem = self._check(body)
        if problem is not None:
            return _error(400, "invalid_parameter", problem[1], {"parameter": problem[0]})
        symbol = body.get("symbol")
        subscription, created = self.subscribe(body["channel_type"], symbol.upper() if symbol else None,
                                               body["requesting_service"])  # fmt: skip
        if not created:
            return _error(409, "subscription_exists", "the subscription exists", {"id": subscription.id})
        return web.json_response(subscription.as_json(), status=201)

    def _check(self, body: object) -> tuple[str, str] | None:
        """(field, reason) of the first broken rule, or None."""
        if not isinstance(body, dict):
            return "body", "the body must be a JSON object"
        if body.get("channel_type") not in CHANNEL_TYPES:
            return "channel_type", f"channel_type must be one of {', '.join(CHANNEL_TYPES)} (the stand-in serves these)"
        service = body.get("requesting_service")
        if not isinstance(service, str) or not service.strip():
            return "requesting_service", "requesting_service must be a non-empty string"
        symbol = body.get("symbol")
        if body["channel_type"] == "ticker":
            if not isinstance(symbol, str) or self._ticker_item(symbol.upper()) is None:
                return "symbol", "a ticker subscription needs a symbol the venue lists"
        elif symbol is not None and not isinstance(symbol, str):
            return "symbol", "symbol must be a string"
        return None


def _error(status: int, code: str, message: str, details: Mapping[str, object] | None = None) -> web.Response:
    return web.json_response({"error": message, "code": code, "details": dict(details or {})}, status=status)
