"""Pure parts, without a server: ledger arithmetic, signing, faults, limits, price walk."""

from __future__ import annotations

from decimal import Decimal

import pytest

from ordermgr.paper import Faults, PaperConfig, PaperVenue
from ordermgr.paper.auth import sign, verify
from ordermgr.paper.engine import _split
from ordermgr.paper.errors import VenueError
from ordermgr.paper.ledger import apply_fill
from ordermgr.paper.limits import RateLimits
from ordermgr.paper.records import Position
from ordermgr.paper.wire import fmt

D = Decimal


@pytest.mark.parametrize(
    ("size", "avg", "fill", "price", "new_size", "new_avg", "pnl", "closed"),
    [
        ("0", "0", "1", "100", "1", "100", "0", "0"),  # open
        ("1", "100", "1", "110", "2", "105", "0", "0"),  # add: weighted average
        ("2", "105", "-1", "120", "1", "105", "15", "1"),  # partial close keeps the average
        ("1", "100", "-1", "90", "0", "0", "-10", "1"),  # close flat
        ("1", "100", "-3", "110", "-2", "110", "10", "1"),  # flip: remainder opens at the fill
        ("-2", "50", "3", "40", "1", "40", "20", "2"),  # short flip
    ],
)
def test_apply_fill(
    size: str, avg: str, fill: str, price: str, new_size: str, new_avg: str, pnl: str, closed: str
) -> None:
    position = Position("BTCUSDT", size=D(size), avg_price=D(avg))
    effect = apply_fill(position, D(fill), D(price))
    assert (position.size, position.avg_price) == (D(new_size), D(new_avg))
    assert (effect.realized_pnl, effect.closed_size) == (D(pnl), D(closed))


def test_split_keeps_steps_and_total() -> None:
    assert list(_split(D("0.010"), D("0.001"), 3)) == [D("0.003"), D("0.003"), D("0.004")]
    assert list(_split(D("0.002"), D("0.001"), 5)) == [D("0.001"), D("0.001")]
    assert list(_split(D("0"), D("0.001"), 2)) == []


def test_fmt_never_uses_exponents() -> None:
    assert [fmt(D(v)) for v in ("65000.00", "1E+2", "0.000", "-2.750", "0.00000001")] == [
        "65000", "100", "0", "-2.75", "0.00000001"
    ]


def test_verify_uses_raw_bytes() -> None:
    keys = {"k": "s"}
    payload = b"category=linear&symbol=BTCUSDT"
    headers = {"X-BAPI-API-KEY": "k", "X-BAPI-TIMESTAMP": "1000", "X-BAPI-RECV-WINDOW": "5000",
               "X-BAPI-SIGN": sign("s", "1000", "k", "5000", payload)}
    verify(headers, payload, keys, now_ms=1500)
    with pytest.raises(VenueError) as info:  # what requests would send for a quoted value
        verify(headers, b"category=linear&symbol=BTC%20USDT", keys, now_ms=1500)
    assert info.value.code == 10004
    with pytest.raises(VenueError) as info:
        verify(headers, payload, keys, now_ms=7000)
    assert info.value.code == 10002
    with pytest.raises(VenueError) as info:  # ahead of the server by a second or more
        verify(headers, payload, keys, now_ms=0)
    assert info.value.code == 10002


def test_faults_count_down_and_reset() -> None:
    faults = Faults(rate_limit_next=1, error_next=1)
    assert [faults.take_request_fault() for _ in range(3)] == ["rate_limit", "error", None]
    faults.update({"http_error_next": 2, "http_status": 503, "event_reorder": True})
    assert faults.take_request_fault() == "http_error" and faults.http_error_next == 1
    with pytest.raises(ValueError):
        faults.update({"latency_s": 0.5, "bogus": 1})
    assert faults.latency_s == 0.0  # a refused update changes nothing
    with pytest.raises(ValueError):
        faults.update({"event_reorder": "yes"})
    faults.update({"fault_path": "/v5/order/create", "error_next": 1})
    assert faults.take_request_fault("/v5/account/wallet-balance") is None and faults.error_next == 1
    assert faults.take_request_fault("/v5/order/create") == "error"
    faults.reset()
    assert faults == Faults()


def test_rate_limits_roll_over_one_second() -> None:
    limits = RateLimits()
    statuses = [limits.hit("/v5/order/create", 2, now_ms=1000 + n) for n in range(3)]
    assert [s.remaining for s in statuses] == [1, 0, -1]
    assert statuses[2].exceeded and statuses[2].reset_ms == 2000
    assert limits.hit("/v5/order/create", 2, now_ms=2003).remaining == 1  # all three aged out


def test_seeded_walk_is_reproducible_and_on_tick() -> None:
    walks = []
    for _ in range(2):
        venue = PaperVenue(PaperConfig(seed=7, price_walk_step=D("0.01")))
        for _ in range(5):
            venue.step_prices()
        walks.append(dict(venue.engine.prices))
    assert walks[0] == walks[1]
    assert walks[0]["BTCUSDT"] != D("65000.00")
    assert walks[0]["BTCUSDT"] % D("0.10") == 0


def test_walk_fills_resting_orders() -> None:
    venue = PaperVenue(PaperConfig(seed=1, price_walk_step=D("0.01")))
    venue.engine.create_order({"category": "linear", "symbol": "BTCUSDT", "side": "Sell", "orderType": "Limit",
                               "price": "65000.10", "qty": "0.01", "orderLinkId": "w"})
    for _ in range(10_000):  # bounded: a walk that never rose would fail below
        if venue.price("BTCUSDT") >= D("65000.10"):
            break
        venue.step_prices()
    order = venue.engine.find_order(order_link_id="w")
    assert order is not None and order.status == "Filled"
