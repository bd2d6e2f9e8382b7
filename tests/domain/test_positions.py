from __future__ import annotations

from decimal import Decimal

import pytest

from ordermgr.domain.model import Side
from ordermgr.domain.positions import (
    Position,
    apply_fill,
    exposure_usdt,
    unrealized_pnl,
    with_last_price,
)

D = Decimal
BUY, SELL = Side.BUY, Side.SELL
Fill = tuple[Side, str, str, str]  # side, qty, price, fee


def pos(size: str = "0", entry: str = "0", realized: str = "0", fees: str = "0") -> Position:
    return Position("BTCUSDT", D(size), D(entry), D(realized), D(fees))


FLAT = pos()

FILLS = [
    # start, fills, expected
    pytest.param(FLAT, [(BUY, "1", "100", "0")], pos("1", "100"), id="open-long"),
    pytest.param(FLAT, [(SELL, "2", "100", "0")], pos("-2", "100"), id="open-short"),
    pytest.param(pos("1", "100"), [(BUY, "1", "200", "0")], pos("2", "150"), id="add-long"),
    pytest.param(pos("-1", "100"), [(SELL, "3", "200", "0")], pos("-4", "175"), id="add-short"),
    pytest.param(
        pos("1", "100"), [(BUY, "2", "101", "0")], pos("3", "100.66666667"),
        id="add-weighted-average-not-terminating",
    ),
    pytest.param(
        pos("2", "100"), [(SELL, "0.5", "120", "0")], pos("1.5", "100", "10"), id="reduce-long-gain"
    ),
    pytest.param(
        pos("2", "100"), [(SELL, "0.5", "80", "0")], pos("1.5", "100", "-10"), id="reduce-long-loss"
    ),
    pytest.param(
        pos("-2", "100"), [(BUY, "0.5", "80", "0")], pos("-1.5", "100", "10"),
        id="reduce-short-gain",
    ),
    pytest.param(
        pos("-2", "100"), [(BUY, "1", "110", "0")], pos("-1", "100", "-10"), id="reduce-short-loss"
    ),
    pytest.param(pos("2", "100"), [(SELL, "2", "90", "0")], pos("0", "0", "-20"), id="close-long"),
    pytest.param(pos("-2", "100"), [(BUY, "2", "90", "0")], pos("0", "0", "20"), id="close-short"),
    pytest.param(
        pos("1", "100"), [(SELL, "3", "120", "0")], pos("-2", "120", "20"), id="flip-long-to-short"
    ),
    pytest.param(
        pos("-1", "100"), [(BUY, "1.5", "90", "0")], pos("0.5", "90", "10"), id="flip-short-to-long"
    ),
    pytest.param(
        FLAT, [(BUY, "1", "100", "0.06")], pos("1", "100", "-0.06", "0.06"),
        id="opening-fee-is-realized-like-bybit",
    ),
    pytest.param(
        FLAT, [(BUY, "1", "100", "0.06"), (SELL, "1", "110", "0.066")],
        pos("0", "0", "9.874", "0.126"), id="round-trip-net-of-fees",
    ),
    pytest.param(
        FLAT, [(BUY, "1", "100", "-0.01")], pos("1", "100", "0.01", "-0.01"), id="maker-rebate",
    ),
    pytest.param(
        pos("1", "100", "5", "0.1"), [(SELL, "0", "0", "0.5")], pos("1", "100", "4.5", "0.6"),
        id="fee-only-delta",
    ),
    pytest.param(FLAT, [(BUY, "0", "0", "0")], FLAT, id="nothing-on-flat"),
    pytest.param(
        pos("0", "0", "7"), [(SELL, "1", "50", "0")], pos("-1", "50", "7"), id="reopen-after-close",
    ),
    pytest.param(
        FLAT,
        [
            (BUY, "1", "100", "0.1"),  # open
            (BUY, "1", "120", "0.1"),  # add: entry 110
            (SELL, "0.5", "130", "0.1"),  # reduce: +10
            (SELL, "2.5", "100", "0.1"),  # flip: +(100-110)*1.5 = -15, short 1 @ 100
            (BUY, "1", "90", "0.1"),  # close short: +10
        ],
        pos("0", "0", "4.5", "0.5"),
        id="open-add-reduce-flip-close",
    ),
]


@pytest.mark.parametrize(("start", "fills", "expected"), FILLS)
def test_apply_fill(start: Position, fills: list[Fill], expected: Position) -> None:
    position = start
    for side, qty, price, fee in fills:
        position = apply_fill(position, side, D(qty), D(price), D(fee))
    assert position == expected


BAD_FILLS = [
    pytest.param(BUY, "-1", "100", id="negative-qty"),
    pytest.param(BUY, "1", "0", id="zero-price"),
    pytest.param(SELL, "1", "-5", id="negative-price"),
]


@pytest.mark.parametrize(("side", "qty", "price"), BAD_FILLS)
def test_apply_fill_rejects_nonsense(side: Side, qty: str, price: str) -> None:
    with pytest.raises(ValueError):
        apply_fill(FLAT, side, D(qty), D(price), D(0))


UNREALIZED = [
    # position, last price, unrealized PnL
    pytest.param(pos("2", "100"), "110", D("20"), id="long-up"),
    pytest.param(pos("2", "100"), "95", D("-10"), id="long-down"),
    pytest.param(pos("-2", "100"), "110", D("-20"), id="short-up"),
    pytest.param(pos("-2", "100"), "90", D("20"), id="short-down"),
    pytest.param(FLAT, "110", D("0"), id="flat"),
    pytest.param(pos("0.001", "50000.1"), "50000.2", D("0.0001"), id="small-exact"),
]


@pytest.mark.parametrize(("position", "last", "pnl"), UNREALIZED)
def test_unrealized_pnl(position: Position, last: str, pnl: Decimal) -> None:
    assert unrealized_pnl(position, D(last)) == pnl


EXPOSURES = [
    pytest.param(pos("-2", "100"), None, D("200"), id="entry-price-until-marked"),
    pytest.param(pos("-2", "100"), "110", D("220"), id="marked-at-last"),
    pytest.param(FLAT, "110", D("0"), id="flat"),
]


@pytest.mark.parametrize(("position", "last", "exposure"), EXPOSURES)
def test_exposure(position: Position, last: str | None, exposure: Decimal) -> None:
    marked = with_last_price(position, D(last)) if last is not None else position
    assert exposure_usdt(marked) == exposure


SIDES = [
    pytest.param(pos("1", "100"), BUY, id="long"),
    pytest.param(pos("-1", "100"), SELL, id="short"),
    pytest.param(FLAT, None, id="flat"),
]


@pytest.mark.parametrize(("position", "side"), SIDES)
def test_side(position: Position, side: Side | None) -> None:
    assert (position.side, position.is_flat) == (side, side is None)
