"""The ticker stream's items: read, merged over what is held, and judged fresh (contract §14.1)."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from ordermgr.domain.market import StreamTicker, TickerItem, fresh_last_price, merge_ticker, read_ticker_item

D = Decimal
REAL = Path(__file__).parents[1] / "data" / "bybit-v5" / "nautilus_trader" / "ws_ticker_linear.json"


def item(kind: str, ts: int, **fields: Any) -> TickerItem:
    return read_ticker_item({"symbol": "BTCUSDT", "type": kind, "ts": ts, **fields})


def merged(*items: TickerItem) -> StreamTicker | None:
    """What is held after ``items``, in this order."""
    held: StreamTicker | None = None
    for one in items:
        held = merge_ticker(held, one)
    return held


def test_a_real_bybit_stream_item_is_read_with_its_numbers_as_decimals() -> None:
    message = json.loads(REAL.read_text())
    read = read_ticker_item({**message["data"], "type": message["type"], "ts": message["ts"]})
    assert (read.symbol, read.is_snapshot, read.ts_ms) == ("BTCUSDT", True, 1673272861686)
    assert read.last_price == D("17216.00")
    assert (read.fields["fundingRate"], read.fields["nextFundingTime"]) == (D("-0.000212"), D("1673280000000"))
    assert read.fields["tickDirection"] == "PlusTick"
    assert "type" not in read.fields and "ts" not in read.fields


@pytest.mark.parametrize(
    ("payload", "complaint"),
    [
        (None, "not an object"),
        ([], "not an object"),
        ({"type": "snapshot", "ts": 1, "lastPrice": "1"}, "symbol"),
        ({"symbol": "BTCUSDT", "type": "update", "ts": 1, "lastPrice": "1"}, "type"),
        ({"symbol": "BTCUSDT", "type": "delta", "lastPrice": "1"}, "ts"),
        ({"symbol": "BTCUSDT", "type": "delta", "ts": "soon", "lastPrice": "1"}, "ts"),
        ({"symbol": "BTCUSDT", "type": "delta", "ts": True, "lastPrice": "1"}, "ts"),
        ({"symbol": "BTCUSDT", "type": "snapshot", "ts": 1}, "lastPrice"),  # a snapshot without a price
        ({"symbol": "BTCUSDT", "type": "delta", "ts": 1, "lastPrice": ""}, "lastPrice"),
        ({"symbol": "BTCUSDT", "type": "delta", "ts": 1, "lastPrice": "0"}, "lastPrice"),
        ({"symbol": "BTCUSDT", "type": "delta", "ts": 1, "lastPrice": "-5"}, "lastPrice"),
        ({"symbol": "BTCUSDT", "type": "delta", "ts": 1, "lastPrice": 50000.5}, "lastPrice"),  # a float: never
    ],
)
def test_an_unreadable_item_is_a_value_error_naming_the_field(payload: object, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        read_ticker_item(payload)


def test_a_delta_is_merged_over_the_snapshot_and_keeps_what_it_does_not_carry() -> None:
    held = merged(item("snapshot", 10, lastPrice="100.0", bid1Price="99.9", volume24h="5"),
                  item("delta", 20, bid1Price="99.8"), item("delta", 30, lastPrice="100.5"))  # fmt: skip
    assert held is not None
    assert (held.last_price, held.price("bid1Price"), held.fields["volume24h"]) == (D("100.5"), D("99.8"), D(5))
    assert (held.ts_ms, held.last_price_ts_ms) == (30, 30)


def test_the_price_is_as_old_as_the_newest_item_that_carried_it() -> None:
    held = merged(item("snapshot", 10, lastPrice="100"), item("delta", 900, bid1Price="99"))
    assert held is not None and (held.ts_ms, held.last_price_ts_ms) == (900, 10)
    assert fresh_last_price(held, now_ms=1010, max_age_ms=1000) == D(100)
    assert fresh_last_price(held, now_ms=1011, max_age_ms=1000) is None  # the bid delta does not renew it


def test_an_item_older_than_what_is_held_is_ignored_whole() -> None:
    held = merged(item("snapshot", 10, lastPrice="100"), item("delta", 30, lastPrice="101"))
    for late in (item("delta", 20, lastPrice="99", bid1Price="98"), item("snapshot", 29, lastPrice="97")):
        assert merge_ticker(held, late) is held


def test_an_item_with_the_same_ts_is_merged_and_merging_twice_changes_nothing() -> None:
    delta = item("delta", 30, lastPrice="101")
    once = merged(item("snapshot", 30, lastPrice="100"), delta)
    assert once is not None and once.last_price == D(101)
    assert merge_ticker(once, delta) == once


def test_a_snapshot_replaces_everything_held() -> None:
    held = merged(item("snapshot", 10, lastPrice="100", bid1Price="99"), item("snapshot", 20, lastPrice="200"))
    assert held is not None and held.price("bid1Price") is None and held.last_price == D(200)


def test_a_delta_before_any_snapshot_gives_a_price_only_when_it_carries_one() -> None:
    no_price = merged(item("delta", 10, bid1Price="99"))
    assert no_price is not None and fresh_last_price(no_price, now_ms=10, max_age_ms=1000) is None
    priced = merged(item("delta", 10, bid1Price="99"), item("delta", 20, lastPrice="100"))
    assert fresh_last_price(priced, now_ms=20, max_age_ms=1000) == D(100)


@pytest.mark.parametrize(("now_ms", "fresh"), [(1000, True), (2000, True), (2001, False), (500, True)])
def test_the_last_price_is_fresh_within_the_limit_of_the_venue_clock(now_ms: int, fresh: bool) -> None:
    held = merged(item("snapshot", 1000, lastPrice="100"))
    assert (fresh_last_price(held, now_ms, max_age_ms=1000) == D(100)) is fresh


def test_nothing_held_is_no_price() -> None:
    assert fresh_last_price(None, now_ms=0, max_age_ms=1000) is None


def test_stream_order_matters_only_through_ts() -> None:
    """However the queue interleaves them, items merge to what their timestamps say."""
    items = [item("snapshot", 10, lastPrice="100", bid1Price="99"), item("delta", 20, bid1Price="98"),
             item("delta", 30, lastPrice="102")]  # fmt: skip
    in_order, late_bid = merged(*items), merged(items[0], items[2], items[1])
    assert in_order is not None and late_bid is not None
    assert (in_order.last_price, late_bid.last_price) == (D(102), D(102))
    assert late_bid.price("bid1Price") == D(99)  # the bid of ts 20 came after ts 30: too late to count
