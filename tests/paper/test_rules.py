"""Order validation: each rule answers with the code Bybit uses."""

from __future__ import annotations

from decimal import Decimal

import pytest
from pybit.unified_trading import HTTP

from ordermgr.paper import PaperVenue
from tests.paper.helpers import call, order_by_link, place, rejected


@pytest.fixture(autouse=True)
def btc_at_50k(venue: PaperVenue) -> None:
    venue.set_price("BTCUSDT", Decimal("50000"))
    venue.set_price("DOGEUSDT", Decimal("0.15"))


async def create_error(session: HTTP, **kwargs: object) -> tuple[int, str]:
    params = {"category": "linear", "symbol": "BTCUSDT", "side": "Buy", "orderType": "Market", **kwargs}
    error = await rejected(session.place_order, **params)
    return error.status_code, error.message


async def test_qty_off_step_is_10001(session: HTTP) -> None:
    assert await create_error(session, qty="0.0015") == (10001, "params error: qty err")


async def test_below_min_qty_is_10001(session: HTTP) -> None:
    code, message = await create_error(session, symbol="DOGEUSDT", qty="5")
    assert (code, message) == (10001, "The number of contracts exceeds minimum limit allowed")


async def test_below_min_notional_is_110094(session: HTTP) -> None:
    code, message = await create_error(session, symbol="DOGEUSDT", qty="20")  # 3 USDT
    assert (code, message) == (110094, "Order does not meet minimum order value 5USDT")


async def test_market_above_max_mkt_qty_is_10001_but_limit_may_be_larger(session: HTTP) -> None:
    code, message = await create_error(session, qty="600")
    assert code == 10001
    assert message.endswith("order_qty:60000000000 > max_qty:50000000000")
    # The same size as a Limit passes the qty rule and meets the balance rule instead.
    code, _ = await create_error(session, orderType="Limit", price="50000", qty="600")
    assert code == 110007


async def test_insufficient_balance_is_110007(session: HTTP) -> None:
    # 30 BTC at 50k at 10x needs 150k of margin; the account holds 100k.
    code, message = await create_error(session, orderType="Limit", price="49000", qty="30")
    assert (code, message) == (110007, "ab not enough for new order")


async def test_price_off_tick_is_10001(session: HTTP) -> None:
    code, _ = await create_error(session, orderType="Limit", price="49000.05", qty="0.01")
    assert code == 10001


async def test_price_outside_band_is_110003(session: HTTP) -> None:
    for price in ("56000", "44000"):  # BTCUSDT priceLimitRatioX = 0.05
        code, _ = await create_error(session, orderType="Limit", price=price, qty="0.01")
        assert code == 110003


async def test_duplicate_order_link_id_is_110072(session: HTTP) -> None:
    await place(session, side="Buy", orderType="Market", qty="0.01", orderLinkId="dup-1")
    code, message = await create_error(session, qty="0.01", orderLinkId="dup-1")
    assert (code, message) == (110072, "OrderLinkedID is duplicate")


async def test_duplicate_wins_over_rules_the_first_fill_changed(session: HTTP) -> None:
    await place(session, side="Buy", orderType="Market", qty="0.01")
    await place(session, side="Sell", orderType="Market", qty="0.01", reduceOnly=True, orderLinkId="close-1")
    # A retry of the reduce-only close, now that the position is flat: still "duplicate".
    code, _ = await create_error(session, side="Sell", qty="0.01", reduceOnly=True, orderLinkId="close-1")
    assert code == 110072


@pytest.mark.parametrize("link_id", ["x" * 37, "has space", "semi;colon"])
async def test_bad_order_link_id_is_10001(session: HTTP, link_id: str) -> None:
    code, _ = await create_error(session, qty="0.01", orderLinkId=link_id)
    assert code == 10001


async def test_order_link_id_of_36_chars_is_fine(session: HTTP) -> None:
    link_id = "A-z_0" + "9" * 31
    await place(session, side="Buy", orderType="Market", qty="0.01", orderLinkId=link_id)
    assert (await order_by_link(session, link_id))["orderStatus"] == "Filled"


async def test_reduce_only_that_would_not_reduce_is_110017(session: HTTP) -> None:
    code, message = await create_error(session, side="Sell", qty="0.01", reduceOnly=True)
    assert (code, message) == (110017, "Reduce-only rule not satisfied")
    await place(session, side="Buy", orderType="Market", qty="0.01")
    code, _ = await create_error(session, side="Buy", qty="0.01", reduceOnly=True)  # same side
    assert code == 110017


async def test_hedge_mode_position_idx_is_refused(session: HTTP) -> None:
    code, _ = await create_error(session, qty="0.01", positionIdx=1)
    assert code == 10001


async def test_other_categories_are_refused(session: HTTP) -> None:
    code, _ = await create_error(session, category="spot", qty="0.01")
    assert code == 10001


async def test_realtime_needs_a_scope(session: HTTP) -> None:
    error = await rejected(session.get_open_orders, category="linear")
    assert error.status_code == 10001
    reply = await call(session.get_open_orders, category="linear", settleCoin="USDT")
    assert reply["result"]["list"] == []
