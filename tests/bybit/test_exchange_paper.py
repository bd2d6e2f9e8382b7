"""BybitExchange driven through pybit over HTTP against the in-process paper venue."""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING

import anyio
import attrs
import pytest

from ordermgr.bybit import client as bybit_client
from ordermgr.bybit.exchange import BybitExchange
from ordermgr.domain.errors import VenueAuthError, VenueUnavailable
from ordermgr.domain.model import (
    Accepted,
    Expired,
    OrderRequest,
    OrderType,
    Rejected,
    Side,
    Unavailable,
    Unknown,
)
from ordermgr.paper import PaperConfig, PaperVenue
from tests.bybit.conftest import KEY, SECRET

if TYPE_CHECKING:  # fixtures' types only; conftest is not imported at run time
    from .conftest import MakeExchange, SleepLog

pytestmark = pytest.mark.anyio

BTC = "BTCUSDT"


def limit_buy(link: str, qty: str = "0.001", price: str = "64000") -> OrderRequest:
    return OrderRequest(symbol=BTC, side=Side.BUY, order_type=OrderType.LIMIT, qty=Decimal(qty),
                        price=Decimal(price), order_link_id=link)


def market(link: str, side: Side, qty: str = "0.010") -> OrderRequest:
    return OrderRequest(symbol=BTC, side=side, order_type=OrderType.MARKET, qty=Decimal(qty),
                        price=None, order_link_id=link)


def venue_orders(venue: PaperVenue, link: str) -> list[str]:
    return [o.order_id for o in venue.engine.orders.values() if o.order_link_id == link]


async def test_reads_parse_what_the_venue_serves(venue: PaperVenue, exchange: BybitExchange) -> None:
    venue.set_price(BTC, Decimal("65000"))
    with anyio.fail_after(10):
        btc = await exchange.instrument(BTC)
        ticker = await exchange.ticker(BTC)
        balance = await exchange.available_balance()
        assert await exchange.positions() == []
        assert await exchange.open_orders() == []
        assert await exchange.instrument("NOPEUSDT") is None
    assert btc is not None and btc.qty_step == Decimal("0.001") and btc.is_trading
    assert ticker.last_price == Decimal("65000")
    assert balance == Decimal("100000")
    assert exchange.statistics().last_success_at is not None


async def test_instruments_are_cached(exchange: BybitExchange) -> None:
    with anyio.fail_after(10):
        first = await exchange.instruments()
        sent = exchange.statistics().requests
        second = await exchange.instruments()
        await exchange.instrument(BTC)
    assert first == second and BTC in first
    assert exchange.statistics().requests == sent


async def test_instruments_refresh_after_ttl(make_exchange: MakeExchange) -> None:
    exchange = make_exchange(instrument_ttl_s=0)
    with anyio.fail_after(10):
        await exchange.instruments()
        sent = exchange.statistics().requests
        await exchange.instruments()
    assert exchange.statistics().requests == sent + 1


@pytest.mark.parametrize(("key", "secret", "code"), [("paper-key", "wrong", 10004), ("nokey", "x", 10003)])
async def test_refused_credentials(make_exchange: MakeExchange, key: str, secret: str, code: int) -> None:
    exchange = make_exchange(api_key=key, api_secret=secret)
    with anyio.fail_after(10):
        with pytest.raises(VenueAuthError, match=str(code)):
            await exchange.open_orders()
        outcome = await exchange.place_order(limit_buy("auth-1"))
    assert isinstance(outcome, Rejected) and outcome.code == code
    stats = exchange.statistics()
    assert stats.auth_error is not None and str(code) in stats.auth_error
    assert stats.retries == 0  # a configuration error is not retried


async def test_place_find_cancel(venue: PaperVenue, exchange: BybitExchange) -> None:
    venue.set_price(BTC, Decimal("65000"))
    with anyio.fail_after(10):
        placed = await exchange.place_order(limit_buy("life-1"))
        assert isinstance(placed, Accepted) and placed.order_link_id == "life-1"
        assert [o.order_link_id for o in await exchange.open_orders(BTC)] == ["life-1"]
        found = await exchange.find_order(BTC, "life-1")
        assert found is not None and found.order_id == placed.order_id and found.status == "New"
        assert found.price == Decimal("64000") and found.avg_price is None
        cancelled = await exchange.cancel_order(BTC, "life-1")
        assert cancelled == Accepted(placed.order_id, "life-1")
        after = await exchange.find_order(BTC, "life-1")  # realtime still returns it, closed
        assert after is not None and after.status == "Cancelled"
        again = await exchange.cancel_order(BTC, "life-1")
        assert isinstance(again, Rejected) and again.code == 110001
        assert await exchange.find_order(BTC, "never-placed") is None


async def test_same_request_twice_is_the_same_order(venue: PaperVenue, exchange: BybitExchange) -> None:
    with anyio.fail_after(10):
        first = await exchange.place_order(limit_buy("dup-1"))
        second = await exchange.place_order(limit_buy("dup-1"))  # venue answers 110072
    assert isinstance(first, Accepted) and first == second
    assert venue_orders(venue, "dup-1") == [first.order_id]


async def test_qty_off_the_step_is_rejected(venue: PaperVenue, exchange: BybitExchange) -> None:
    with anyio.fail_after(10):
        outcome = await exchange.place_order(limit_buy("step-1", qty="0.0015"))
    assert isinstance(outcome, Rejected) and outcome.code == 10001
    assert venue_orders(venue, "step-1") == []
    assert exchange.statistics().retries == 0


@pytest.mark.parametrize(("fault", "code"), [("error", 10016), ("error", 5004), ("http_error", 502)])
async def test_ambiguous_create_is_looked_up_not_retried(
    venue: PaperVenue, exchange: BybitExchange, fault: str, code: int
) -> None:
    with anyio.fail_after(10):
        await exchange.server_time_ms()  # keep the clock sync out of the request count
        if fault == "error":  # 5004 "Server Timeout" as real Bybit sends it (contract §16)
            venue.faults.error_next, venue.faults.error_code = 1, code
        else:
            venue.faults.http_error_next, venue.faults.http_status = 1, code
        sent = exchange.statistics().requests
        outcome = await exchange.place_order(limit_buy("amb-1"))
        # The venue did not execute it, and the lookup (realtime + history) says so: the
        # caller gets Unknown and reconciles; a later resend with the same id is safe.
        assert isinstance(outcome, Unknown), outcome
        stats = exchange.statistics()
        assert stats.requests == sent + 3 and stats.unknown_outcomes == 1 and stats.retries == 0
        assert venue_orders(venue, "amb-1") == []
        resent = await exchange.place_order(limit_buy("amb-1"))
    assert isinstance(resent, Accepted) and venue_orders(venue, "amb-1") == [resent.order_id]


async def test_lost_response_is_resolved_to_the_existing_order(
    venue: PaperVenue, make_exchange: MakeExchange
) -> None:
    exchange = make_exchange(timeout_s=1.0)
    venue.faults.lose_response_next = 1
    with anyio.fail_after(10):
        outcome = await exchange.place_order(limit_buy("lost-1"))
    assert isinstance(outcome, Accepted), outcome
    assert venue_orders(venue, "lost-1") == [outcome.order_id]  # placed exactly once
    assert exchange.statistics().unknown_outcomes == 1


async def test_rate_limit_burst_slows_down_and_places_once(venue: PaperVenue, exchange: BybitExchange) -> None:
    venue.faults.rate_limit_next = 5
    with anyio.fail_after(10):
        outcome = await exchange.place_order(limit_buy("burst-1"))
    assert isinstance(outcome, Accepted), outcome
    assert venue_orders(venue, "burst-1") == [outcome.order_id]
    stats = exchange.statistics()
    assert stats.rate_limited == 5 and stats.retries == 0  # the retry budget is untouched
    create = exchange.rate_limits().endpoints["/v5/order/create"]
    # Each 10006 closed the endpoint until the venue's reset header (~0.2 s ahead), then it retried.
    assert (create.rate_limited, create.requests, create.waited) == (5, 6, 5)
    assert 0.1 <= create.wait_s_max <= 0.5


async def test_rate_limit_without_end_is_unavailable(venue: PaperVenue, make_exchange: MakeExchange) -> None:
    exchange = make_exchange(rate_limit_wait_s=0.1)  # every 10006 asks for ~0.2 s
    venue.faults.rate_limit_next = 100
    with anyio.fail_after(10):
        outcome = await exchange.place_order(limit_buy("limited-1"))
        assert isinstance(outcome, Unavailable), outcome
        with pytest.raises(VenueUnavailable, match="rate limited"):
            await exchange.open_orders()
    assert venue_orders(venue, "limited-1") == []


async def test_enforced_limits_are_waited_for_not_met() -> None:
    # Real time here: 12 creates against Bybit's 10/s create limit. The 11th waits for the
    # window instead of meeting 10006 (before the budget, it met one and waited after).
    paper = PaperVenue(PaperConfig(port=0, price_walk_interval_s=0, enforce_rate_limits=True))
    async with anyio.create_task_group() as tg:
        base_url = await tg.start(paper.run)
        exchange = BybitExchange(api_key="paper-key", api_secret="paper-secret", base_url=base_url,
                                 timeout_s=3.0)
        with anyio.fail_after(10):
            outcomes = [await exchange.place_order(limit_buy(f"real-{i}")) for i in range(12)]
        await exchange.aclose()
        tg.cancel_scope.cancel()
    assert all(isinstance(o, Accepted) for o in outcomes), outcomes
    assert exchange.statistics().rate_limited == 0
    assert len(paper.engine.orders) == 12


async def test_reads_during_http_errors_raise_never_empty(venue: PaperVenue, exchange: BybitExchange) -> None:
    with anyio.fail_after(10):
        await exchange.place_order(limit_buy("read-1"))
        venue.faults.http_error_next = 1000
        for read in (exchange.open_orders(), exchange.positions(), exchange.available_balance(),
                     exchange.find_order(BTC, "read-1"), exchange.order_history()):
            with pytest.raises(VenueUnavailable):
                await read
        venue.faults.http_error_next = 0
        assert [o.order_link_id for o in await exchange.open_orders()] == ["read-1"]


async def test_transient_read_errors_are_retried(venue: PaperVenue, exchange: BybitExchange) -> None:
    with anyio.fail_after(10):
        await exchange.place_order(limit_buy("retry-1"))
        venue.faults.error_next, venue.faults.error_code = 2, 10016
        orders = await exchange.open_orders()
    assert [o.order_link_id for o in orders] == ["retry-1"]
    assert exchange.statistics().retries == 2


WALLET = "/v5/account/wallet-balance"


async def test_market_orders_move_positions_and_balance_within_the_refresh_bound(
    venue: PaperVenue, make_exchange: MakeExchange
) -> None:
    """Contract §14.2: the balance is read in the background; asking for it reads nothing, and
    after a fill the figure moves within ``balance_after_fill_s`` (plus the read itself)."""
    exchange = make_exchange(balance_interval_s=60.0, balance_after_fill_s=0.2)
    venue.set_price(BTC, Decimal("65000"))
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(exchange.keep_balance_fresh)
            await exchange.next_balance_refresh()
            reads = venue.request_counts[WALLET]
            before = await exchange.available_balance()
            assert isinstance(await exchange.place_order(market("mkt-1", Side.SELL)), Accepted)
            assert await exchange.available_balance() == before  # asked: the last figure, no read
            assert venue.request_counts[WALLET] == reads
            filled_at = anyio.current_time()
            exchange.invalidate_balance()  # what the actor calls when it applies the fill
            await exchange.next_balance_refresh()
            took_s = anyio.current_time() - filled_at
            after = await exchange.available_balance()
            tg.cancel_scope.cancel()
        [position] = await exchange.positions()
        filled = await exchange.find_order(BTC, "mkt-1")
    assert after < before and took_s < 0.2 + 1.0  # the bound, and a generous second for the read
    assert venue.request_counts[WALLET] == reads + 1
    assert position.symbol == BTC and position.size == Decimal("-0.010")
    assert position.avg_price == Decimal("65000")
    assert filled is not None and filled.status == "Filled" and filled.avg_price == Decimal("65000")


async def test_pagination_follows_the_cursor(venue: PaperVenue, exchange: BybitExchange) -> None:
    with anyio.fail_after(20):
        for i in range(55):
            assert isinstance(await exchange.place_order(limit_buy(f"page-{i}")), Accepted)
        open_now = await exchange.open_orders()
        history = await exchange.order_history(BTC)
    assert len({o.order_link_id for o in open_now}) == 55
    assert len({o.order_link_id for o in history}) == 55


async def test_skewed_local_clock_is_corrected(
    venue: PaperVenue, exchange: BybitExchange, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = bybit_client._local_ms
    monkeypatch.setattr(bybit_client, "_local_ms", lambda: real() - 60_000)  # host 60 s behind
    with anyio.fail_after(10):
        orders = await exchange.open_orders()  # first signed call syncs the clock first
    assert orders == []
    stats = exchange.statistics()
    assert 59_000 < stats.clock_offset_ms < 61_000 and stats.retries == 0


async def test_10002_resyncs_the_clock_and_retries(venue: PaperVenue, exchange: BybitExchange) -> None:
    with anyio.fail_after(10):
        await exchange.server_time_ms()
        venue.faults.error_next, venue.faults.error_code = 1, 10002
        sent = exchange.statistics().requests
        outcome = await exchange.place_order(limit_buy("clock-1"))
    assert isinstance(outcome, Accepted)
    stats = exchange.statistics()
    assert stats.retries == 1 and stats.requests == sent + 3  # create, time, create
    assert venue_orders(venue, "clock-1") == [outcome.order_id]


async def test_concurrent_ticker_reads_share_requests_and_each_gets_its_own_symbol(
    venue: PaperVenue, exchange: BybitExchange
) -> None:
    prices = {BTC: Decimal("65000"), "ETHUSDT": Decimal("3100"), "SOLUSDT": Decimal("150")}
    for symbol, price in prices.items():
        venue.set_price(symbol, price)
    got: dict[str, Decimal] = {}

    async def read(symbol: str) -> None:
        got[symbol] = (await exchange.ticker(symbol)).last_price

    sent = exchange.statistics().requests
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            for symbol in prices:
                tg.start_soon(read, symbol)
    assert got == prices
    # All three asked before a request left: one request for the whole list serves them.
    assert exchange.statistics().requests - sent == 1


async def test_executions_of_an_order_come_oldest_first_with_their_prices() -> None:
    paper = PaperVenue(PaperConfig(port=0, api_key=KEY, api_secret=SECRET, price_walk_interval_s=0,
                                   market_fill_parts=3))  # fmt: skip
    async with anyio.create_task_group() as tg:
        await tg.start(paper.run)
        assert paper.base_url is not None
        exchange = BybitExchange(api_key=KEY, api_secret=SECRET, base_url=paper.base_url, timeout_s=2.0)
        try:
            with anyio.fail_after(10):
                placed = await exchange.place_order(market("exec-1", Side.BUY, qty="0.009"))
                assert isinstance(placed, Accepted)
                executions = await exchange.executions(BTC, placed.order_id)
        finally:
            await exchange.aclose()
            tg.cancel_scope.cancel()
    theirs = sorted((e for e in paper.engine.executions if e.order_id == placed.order_id), key=lambda e: e.seq)
    assert [e.exec_id for e in executions] == [e.exec_id for e in theirs]
    assert [e.qty for e in executions] == [Decimal("0.003")] * 3
    assert sum(e.value for e in executions) == sum(e.exec_value for e in theirs)


async def test_an_order_withheld_at_the_last_moment_is_never_sent(venue: PaperVenue, exchange: BybitExchange) -> None:
    """The trading state may turn halted while an order waits for the budget: asked once the
    permit is in hand, it withholds the order, and the venue never sees it (contract §11)."""
    asked: list[str] = []

    def halted_meanwhile() -> str | None:
        asked.append("asked")
        return "trading_halted"

    with anyio.fail_after(10):
        outcome = await exchange.place_order(attrs.evolve(market("withheld-1", Side.BUY), allowed=halted_meanwhile))
        sent = await exchange.place_order(attrs.evolve(market("allowed-1", Side.BUY), allowed=lambda: None))
    assert isinstance(outcome, Expired) and outcome.code == "trading_halted" and asked == ["asked"]
    assert venue_orders(venue, "withheld-1") == [] and isinstance(sent, Accepted)
    assert exchange.rate_limits().in_flight == 0  # the unused permit was given back
