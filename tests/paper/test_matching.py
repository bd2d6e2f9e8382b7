"""Fills, positions, wallet and executions, driven through pybit."""

from __future__ import annotations

from decimal import Decimal

import pytest
from pybit.unified_trading import HTTP

from ordermgr.paper import PaperVenue
from tests.paper.helpers import (
    call,
    make_session,
    order_by_link,
    place,
    position_of,
    rejected,
    running_venue,
    usdt_wallet,
)


@pytest.fixture(autouse=True)
def btc_at_50k(venue: PaperVenue) -> None:
    venue.set_price("BTCUSDT", Decimal("50000"))


async def test_market_order_fills_at_last_price(session: HTTP) -> None:
    ids = await place(session, side="Buy", orderType="Market", qty="0.1", orderLinkId="m-1")
    order = await order_by_link(session, "m-1")
    assert order["orderId"] == ids["orderId"]
    assert (order["orderStatus"], order["cumExecQty"], order["leavesQty"]) == ("Filled", "0.100", "0.000")
    assert (order["avgPrice"], order["cumExecValue"], order["cumExecFee"]) == ("50000", "5000", "2.75")

    (execution,) = (await call(session.get_executions, category="linear", orderLinkId="m-1"))["result"]["list"]
    assert (execution["execPrice"], execution["execQty"], execution["execFee"]) == ("50000.00", "0.100", "2.75")
    assert execution["isMaker"] is False and execution["feeRate"] == "0.00055"

    position = await position_of(session)
    assert (position["side"], position["size"], position["avgPrice"]) == ("Buy", "0.100", "50000")
    assert position["cumRealisedPnl"] == "-2.75"  # Bybit books the opening fee as realised

    wallet = await usdt_wallet(session)
    assert wallet["totalWalletBalance"] == "99997.25"
    assert wallet["totalInitialMargin"] == "500"  # 5000 notional at 10x
    assert wallet["totalAvailableBalance"] == "99497.25"


async def test_unrealised_pnl_follows_the_price(venue: PaperVenue, session: HTTP) -> None:
    await place(session, side="Sell", orderType="Market", qty="0.1")
    venue.set_price("BTCUSDT", Decimal("49000"))
    position = await position_of(session)
    assert (position["side"], position["unrealisedPnl"]) == ("Sell", "100")
    assert (await usdt_wallet(session))["totalPerpUPL"] == "100"


async def test_limit_rests_then_fills_as_maker_when_price_crosses(venue: PaperVenue, session: HTTP) -> None:
    await place(session, side="Buy", orderType="Limit", price="49000", qty="0.1", orderLinkId="l-1")
    order = await order_by_link(session, "l-1")
    assert (order["orderStatus"], order["leavesQty"], order["avgPrice"]) == ("New", "0.100", "0")
    assert (await usdt_wallet(session))["coin"][0]["totalOrderIM"] == "492.695"

    venue.set_price("BTCUSDT", Decimal("49100"))  # not yet
    assert (await order_by_link(session, "l-1"))["orderStatus"] == "New"
    venue.set_price("BTCUSDT", Decimal("48900"))
    order = await order_by_link(session, "l-1")
    assert (order["orderStatus"], order["avgPrice"], order["cumExecFee"]) == ("Filled", "49000", "0.98")
    (execution,) = (await call(session.get_executions, category="linear", orderLinkId="l-1"))["result"]["list"]
    assert execution["isMaker"] is True and execution["execPrice"] == "49000.00"
    assert (await position_of(session))["avgPrice"] == "49000"


async def test_marketable_limit_takes_at_last_price(session: HTTP) -> None:
    await place(session, side="Buy", orderType="Limit", price="50500", qty="0.01", orderLinkId="t-1")
    order = await order_by_link(session, "t-1")
    assert (order["orderStatus"], order["avgPrice"]) == ("Filled", "50000")


async def test_post_only_that_would_cross_is_accepted_then_cancelled(session: HTTP) -> None:
    await place(
        session, side="Buy", orderType="Limit", price="50100", qty="0.01", timeInForce="PostOnly", orderLinkId="po-1"
    )
    order = await order_by_link(session, "po-1")
    assert (order["orderStatus"], order["rejectReason"]) == ("Cancelled", "EC_PostOnlyWillTakeLiquidity")
    assert order["cumExecQty"] == "0.000"
    assert (await position_of(session))["size"] == "0.000"


async def test_ioc_limit_that_cannot_fill_is_cancelled(session: HTTP) -> None:
    await place(session, side="Buy", orderType="Limit", price="49000", qty="0.01", timeInForce="IOC", orderLinkId="i-1")
    assert (await order_by_link(session, "i-1"))["orderStatus"] == "Cancelled"


async def test_position_flip_realises_pnl(venue: PaperVenue, session: HTTP) -> None:
    await place(session, side="Buy", orderType="Market", qty="0.1")  # fee 2.75
    venue.set_price("BTCUSDT", Decimal("51000"))
    await place(session, side="Sell", orderType="Market", qty="0.3")  # +100 gross, fee 8.415
    position = await position_of(session)
    assert (position["side"], position["size"], position["avgPrice"]) == ("Sell", "0.200", "51000")
    assert position["cumRealisedPnl"] == "88.835"
    venue.set_price("BTCUSDT", Decimal("50000"))
    await place(session, side="Buy", orderType="Market", qty="0.2")  # +200 gross, fee 5.5
    position = await position_of(session)
    assert (position["side"], position["size"], position["cumRealisedPnl"]) == ("", "0.000", "283.335")
    assert (await usdt_wallet(session))["totalWalletBalance"] == "100283.335"


async def test_reduce_only_never_outgrows_the_position(session: HTTP) -> None:
    await place(session, side="Buy", orderType="Market", qty="0.1")
    await place(session, side="Sell", orderType="Market", qty="0.3", reduceOnly=True, orderLinkId="ro-1")
    order = await order_by_link(session, "ro-1")
    assert (order["orderStatus"], order["cumExecQty"]) == ("Cancelled", "0.100")
    assert order["cancelType"] == "CancelByReduceOnly"
    assert (await position_of(session))["size"] == "0.000"


async def test_realtime_by_link_id_returns_closed_orders(session: HTTP) -> None:
    await place(session, side="Buy", orderType="Market", qty="0.01", orderLinkId="closed-1")
    await place(session, side="Buy", orderType="Limit", price="49000", qty="0.01", orderLinkId="open-1")
    open_only = await call(session.get_open_orders, category="linear", symbol="BTCUSDT")
    assert [o["orderLinkId"] for o in open_only["result"]["list"]] == ["open-1"]
    assert (await order_by_link(session, "closed-1"))["orderStatus"] == "Filled"
    order_id = (await order_by_link(session, "closed-1"))["orderId"]
    by_id = await call(session.get_open_orders, category="linear", symbol="BTCUSDT", orderId=order_id)
    assert by_id["result"]["list"][0]["orderLinkId"] == "closed-1"


async def test_history_lists_closed_and_filters_by_status(session: HTTP) -> None:
    await place(session, side="Buy", orderType="Market", qty="0.01", orderLinkId="h-1")
    await place(session, side="Buy", orderType="Limit", price="49000", qty="0.01", orderLinkId="h-2")
    await call(session.cancel_order, category="linear", symbol="BTCUSDT", orderLinkId="h-2")
    history = await call(session.get_order_history, category="linear", symbol="BTCUSDT")
    assert [o["orderLinkId"] for o in history["result"]["list"]] == ["h-2", "h-1"]
    filled = await call(session.get_order_history, category="linear", symbol="BTCUSDT", orderStatus="Filled")
    assert [o["orderLinkId"] for o in filled["result"]["list"]] == ["h-1"]


async def test_cancel_then_cancel_again_is_110001(session: HTTP) -> None:
    ids = await place(session, side="Sell", orderType="Limit", price="51000", qty="0.01", orderLinkId="c-1")
    reply = await call(session.cancel_order, category="linear", symbol="BTCUSDT", orderLinkId="c-1")
    assert reply["result"] == ids
    order = await order_by_link(session, "c-1")
    assert (order["orderStatus"], order["cancelType"], order["leavesQty"]) == ("Cancelled", "CancelByUser", "0.000")
    error = await rejected(session.cancel_order, category="linear", symbol="BTCUSDT", orderLinkId="c-1")
    assert (error.status_code, error.message) == (110001, "order not exists or too late to cancel")


async def test_cancel_all_is_scoped_by_symbol(venue: PaperVenue, session: HTTP) -> None:
    for n in range(2):
        await place(session, side="Buy", orderType="Limit", price="49000", qty="0.01", orderLinkId=f"ca-{n}")
    await place(
        session, symbol="ETHUSDT", side="Buy", orderType="Limit", price="2900", qty="0.01", orderLinkId="ca-eth"
    )
    reply = await call(session.cancel_all_orders, category="linear", symbol="BTCUSDT")
    assert reply["result"]["success"] == "1"
    assert sorted(o["orderLinkId"] for o in reply["result"]["list"]) == ["ca-0", "ca-1"]
    assert (await order_by_link(session, "ca-eth", "ETHUSDT"))["orderStatus"] == "New"
    error = await rejected(session.cancel_all_orders, category="linear")
    assert error.status_code == 10001


async def test_amend_changes_qty_and_price_and_may_fill(session: HTTP) -> None:
    await place(session, side="Buy", orderType="Limit", price="49000", qty="0.1", orderLinkId="a-1")
    await call(session.amend_order, category="linear", symbol="BTCUSDT", orderLinkId="a-1", qty="0.2", price="49500")
    order = await order_by_link(session, "a-1")
    assert (order["orderStatus"], order["qty"], order["price"]) == ("New", "0.200", "49500.00")
    await call(session.amend_order, category="linear", symbol="BTCUSDT", orderLinkId="a-1", price="50200")
    order = await order_by_link(session, "a-1")
    assert (order["orderStatus"], order["avgPrice"]) == ("Filled", "50000")
    error = await rejected(session.amend_order, category="linear", symbol="BTCUSDT", orderLinkId="a-1", qty="0.3")
    assert (error.status_code, error.message) == (110001, "order not exists or too late to replace")


async def test_realtime_paginates_with_cursor(session: HTTP) -> None:
    for n in range(3):
        await place(session, side="Buy", orderType="Limit", price=str(49000 + n), qty="0.01", orderLinkId=f"p-{n}")
    first = (await call(session.get_open_orders, category="linear", symbol="BTCUSDT", limit=2))["result"]
    assert len(first["list"]) == 2 and first["nextPageCursor"]
    cursor = first["nextPageCursor"]
    second = (await call(session.get_open_orders, category="linear", symbol="BTCUSDT", limit=2, cursor=cursor))[
        "result"
    ]
    # Like live Bybit, the last page still carries a cursor; following it gives an empty page.
    assert len(second["list"]) == 1 and second["nextPageCursor"] not in ("", cursor)
    third = (await call(session.get_open_orders, category="linear", symbol="BTCUSDT", limit=2,
                        cursor=second["nextPageCursor"]))["result"]  # fmt: skip
    assert (third["list"], third["nextPageCursor"]) == ([], "")
    seen = [o["orderLinkId"] for o in first["list"] + second["list"]]
    assert seen == ["p-2", "p-1", "p-0"]  # newest first


async def test_a_one_item_list_carries_a_cursor_as_captured_from_bybit(session: HTTP) -> None:
    """Captured: a one-symbol position list and an open-orders list holding its only order
    both come with a ``nextPageCursor`` (tests/data/bybit-v5, contract §16)."""
    await place(session, side="Buy", orderType="Limit", price="49000", qty="0.01", orderLinkId="only")
    orders = (await call(session.get_open_orders, category="linear", symbol="BTCUSDT"))["result"]
    positions = (await call(session.get_positions, category="linear", symbol="BTCUSDT"))["result"]
    assert len(orders["list"]) == 1 and orders["nextPageCursor"]
    assert len(positions["list"]) == 1 and positions["nextPageCursor"]
    instruments = (await call(session.get_instruments_info, category="linear"))["result"]
    assert instruments["nextPageCursor"] == ""  # captured: the instrument list ends with ""


async def test_positions_by_settle_coin_list_only_open_ones(session: HTTP) -> None:
    await place(session, side="Buy", orderType="Market", qty="0.01")
    rows = (await call(session.get_positions, category="linear", settleCoin="USDT"))["result"]["list"]
    assert [row["symbol"] for row in rows] == ["BTCUSDT"]


async def test_market_fill_parts_split_executions() -> None:
    async with running_venue(market_fill_parts=3) as venue:
        assert venue.base_url is not None
        session = make_session(venue.base_url)
        await place(session, side="Buy", orderType="Market", qty="0.01", orderLinkId="parts")
        executions = (await call(session.get_executions, category="linear", orderLinkId="parts"))["result"]["list"]
        assert sorted(e["execQty"] for e in executions) == ["0.003", "0.003", "0.004"]
        assert (await order_by_link(session, "parts"))["orderStatus"] == "Filled"
        await call(session.client.close)

