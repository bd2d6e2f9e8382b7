"""Lists as live Bybit answers them (contract §16): a list may carry a
``nextPageCursor`` on its last page, the same cursor twice means the end, and others' orders may
come in shapes we do not read. A scripted HTTP
server plays the venue, so each page and each cursor is exactly what a capture showed."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from ordermgr.bybit.exchange import BybitExchange
from ordermgr.domain.errors import VenueUnavailable
from ordermgr.domain.model import RetryPolicy
from tests.bybit.conftest import SleepLog

pytestmark = pytest.mark.anyio

Pages = Mapping[str, tuple[Sequence[str], str]]  # request cursor ("" = first) → (orderLinkIds, next cursor)


def order_item(link: str) -> dict[str, Any]:
    return {"orderId": f"id-{link}", "orderLinkId": link, "symbol": "BTCUSDT", "side": "Buy", "orderType": "Limit",
            "orderStatus": "New", "qty": "0.001", "price": "50000", "cumExecQty": "0", "cumExecValue": "0",
            "cumExecFee": "0", "leavesQty": "0.001", "createdTime": "1", "updatedTime": "1"}  # fmt: skip


class ScriptedVenue:
    """Answers ``/v5/order/realtime`` (and the clock) from a script of pages; records cursors."""

    def __init__(self, pages: Pages) -> None:
        self.pages = pages
        self.oddities: dict[str, dict[str, Any]] = {}  # orderLinkId → fields that replace the usual ones
        self.cursors: list[str] = []

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v5/market/time", self._time)
        app.router.add_get("/v5/order/realtime", self._orders)
        return app

    async def _time(self, request: web.Request) -> web.Response:
        return _envelope({"timeSecond": "1700000000", "timeNano": "1700000000000000000"})

    async def _orders(self, request: web.Request) -> web.Response:
        # The cursor as sent: pybit passes it on unencoded, as Bybit wrote it ("...%3A...").
        raw = dict(pair.partition("=")[::2] for pair in request.rel_url.raw_query_string.split("&"))
        cursor = raw.get("cursor", "")
        self.cursors.append(cursor)
        links, following = self.pages[cursor]
        items = [order_item(link) | self.oddities.get(link, {}) for link in links]
        return _envelope({"category": "linear", "list": items,
                          "nextPageCursor": following})  # fmt: skip


def _envelope(result: object) -> web.Response:
    return web.json_response({"retCode": 0, "retMsg": "OK", "result": result, "retExtInfo": {}, "time": 1})


@pytest.fixture
async def scripted() -> AsyncIterator[tuple[ScriptedVenue, BybitExchange]]:
    venue = ScriptedVenue({})
    async with TestServer(venue.app(), host="127.0.0.1") as server:
        exchange = BybitExchange(api_key="k", api_secret="s", base_url=str(server.make_url("")), timeout_s=2.0,
                                 retry=RetryPolicy(max_attempts=1), sleep=SleepLog())  # fmt: skip
        yield venue, exchange
        await exchange.aclose()


async def test_a_cursor_on_the_last_page_leads_to_an_empty_page_and_the_end(
    scripted: tuple[ScriptedVenue, BybitExchange],
) -> None:
    # Captured: an open-orders list holding its only order, with a cursor.
    venue, exchange = scripted
    captured = "1368933863545500672%3A1677925633316"
    venue.pages = {"": (["only"], captured), captured: ([], "")}
    orders = await exchange.open_orders("BTCUSDT")
    assert [o.order_link_id for o in orders] == ["only"]
    assert venue.cursors == ["", captured]


async def test_the_same_cursor_twice_is_the_end_not_an_error(scripted: tuple[ScriptedVenue, BybitExchange]) -> None:
    venue, exchange = scripted
    venue.pages = {"": (["a", "b"], "c1"), "c1": (["c"], "c1")}
    orders = await exchange.open_orders("BTCUSDT")
    assert [o.order_link_id for o in orders] == ["a", "b", "c"]
    assert venue.cursors == ["", "c1"]  # c1 is not asked for a second time


async def test_an_empty_page_ends_the_list_whatever_cursor_it_carries(
    scripted: tuple[ScriptedVenue, BybitExchange],
) -> None:
    venue, exchange = scripted
    venue.pages = {"": (["a"], "c1"), "c1": ([], "c2"), "c2": (["never"], "")}
    orders = await exchange.open_orders("BTCUSDT")
    assert [o.order_link_id for o in orders] == ["a"]
    assert venue.cursors == ["", "c1"]


async def test_an_order_of_someone_else_that_we_cannot_read_is_left_out(
    scripted: tuple[ScriptedVenue, BybitExchange],
) -> None:
    """Listed by settle coin, the account's other orders come too; one with an empty side or an
    unknown status is none of ours and must not fail the whole list (contract §16)."""
    venue, exchange = scripted
    venue.pages = {"": (["om-0123456789abcdef0123-1-1", "foreign-empty-side", "foreign-odd-status"], "")}
    odd = {"foreign-empty-side": {"side": ""}, "foreign-odd-status": {"orderStatus": "Brandnew", "side": None}}
    venue.oddities = odd
    orders = await exchange.open_orders()
    assert [o.order_link_id for o in orders] == ["om-0123456789abcdef0123-1-1"]


async def test_an_order_of_ours_that_we_cannot_read_makes_the_list_unknown(
    scripted: tuple[ScriptedVenue, BybitExchange],
) -> None:
    venue, exchange = scripted
    venue.pages = {"": (["om-0123456789abcdef0123-1-1"], "")}
    venue.oddities = {"om-0123456789abcdef0123-1-1": {"side": ""}}
    with pytest.raises(VenueUnavailable, match="om-0123456789abcdef0123-1-1"):
        await exchange.open_orders()
