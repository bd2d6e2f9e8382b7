"""The rate-limit budget end to end: BybitExchange through pybit against a paper venue that
enforces Bybit's limits (10 creates/s, 10 cancels/s per account). Real time: each test spends
a second or two waiting for the venue's window, which is what it is about."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import anyio
import attrs
import pytest

from ordermgr.bybit.exchange import BybitExchange
from ordermgr.domain.model import Accepted, Expired, OrderRequest, OrderType, Priority, Rejected, Side
from ordermgr.paper import PaperConfig, PaperVenue
from ordermgr.paper.limits import LimitStatus, RateLimits
from tests.bybit.conftest import KEY, SECRET
from tests.paper.helpers import call, make_session, rejected

pytestmark = pytest.mark.anyio

BTC = "BTCUSDT"
CREATE, CANCEL = "/v5/order/create", "/v5/order/cancel"


@pytest.fixture
async def venue() -> AsyncIterator[PaperVenue]:
    paper = PaperVenue(PaperConfig(port=0, api_key=KEY, api_secret=SECRET, price_walk_interval_s=0,
                                   enforce_rate_limits=True))  # fmt: skip
    paper.set_price(BTC, Decimal("65000"))
    async with anyio.create_task_group() as tg:
        await tg.start(paper.run)
        yield paper
        tg.cancel_scope.cancel()


@pytest.fixture
async def exchange(venue: PaperVenue) -> AsyncIterator[BybitExchange]:
    assert venue.base_url is not None
    made = BybitExchange(api_key=KEY, api_secret=SECRET, base_url=venue.base_url, timeout_s=5.0)
    yield made
    await made.aclose()


def resting_buy(link: str, **changes: object) -> OrderRequest:
    request = OrderRequest(symbol=BTC, side=Side.BUY, order_type=OrderType.LIMIT, qty=Decimal("0.001"),
                           price=Decimal("64000"), order_link_id=link)  # fmt: skip
    return attrs.evolve(request, **changes)


def market(link: str, side: Side, *, reduce_only: bool = False) -> OrderRequest:
    return OrderRequest(symbol=BTC, side=side, order_type=OrderType.MARKET, qty=Decimal("0.010"), price=None,
                        order_link_id=link, reduce_only=reduce_only)  # fmt: skip


async def test_a_flood_of_concurrent_creates_waits_for_the_budget_and_meets_no_10006(
    venue: PaperVenue, exchange: BybitExchange
) -> None:
    outcomes: list[object] = []

    async def place(n: int) -> None:
        outcomes.append(await exchange.place_order(resting_buy(f"flood-{n}")))

    started = time.monotonic()
    with anyio.fail_after(15):
        async with anyio.create_task_group() as tg:
            for n in range(15):
                tg.start_soon(place, n)
    assert all(isinstance(o, Accepted) for o in outcomes) and len(venue.engine.orders) == 15
    assert exchange.statistics().rate_limited == 0
    assert time.monotonic() - started > 1.0  # 15 creates do not fit one window
    assert exchange.rate_limits().endpoints[CREATE].waited >= 5


async def test_cancels_and_closes_overtake_queued_orders_that_open_positions(
    venue: PaperVenue, exchange: BybitExchange
) -> None:
    with anyio.fail_after(20):
        assert isinstance(await exchange.place_order(resting_buy("rest-1")), Accepted)
        assert isinstance(await exchange.place_order(market("long-1", Side.BUY)), Accepted)
        async with anyio.create_task_group() as tg:
            for n in range(20):
                tg.start_soon(exchange.place_order, resting_buy(f"open-{n}"))
            await anyio.wait_all_tasks_blocked()
            assert exchange.rate_limits().endpoints[CREATE].queued >= 15
            cancelled = await exchange.cancel_order(BTC, "rest-1")
            closed = await exchange.place_order(market("close-1", Side.SELL, reduce_only=True))
            # Both went while most of the opening orders still wait.
            assert exchange.rate_limits().endpoints[CREATE].queued >= 10
    assert isinstance(cancelled, Accepted) and isinstance(closed, Accepted)
    figures = exchange.rate_limits()
    assert figures.lanes["cancel"].wait_s_max == 0.0 and figures.lanes["close"].wait_s_max < 0.3
    assert exchange.statistics().rate_limited == 0


async def test_an_order_whose_deadline_passes_in_the_queue_is_never_sent(
    venue: PaperVenue, exchange: BybitExchange
) -> None:
    venue.faults.rate_limit_next = 1000  # the venue keeps answering 10006
    not_after = datetime.now(UTC) + timedelta(seconds=0.3)
    with anyio.fail_after(5):
        outcome = await exchange.place_order(resting_buy("late-1", not_after=not_after))
    assert isinstance(outcome, Expired), outcome
    assert datetime.now(UTC) >= not_after
    assert [o for o in venue.engine.orders.values() if o.order_link_id == "late-1"] == []


class Advertised(RateLimits):
    """A higher account tier: 20 requests/s on every endpoint, enforced."""

    def hit(self, endpoint: str, limit: int, now_ms: int) -> LimitStatus:
        return super().hit(endpoint, 20, now_ms)


async def test_the_limit_header_sets_the_budget(venue: PaperVenue, exchange: BybitExchange) -> None:
    venue.limits = Advertised()
    outcomes: list[object] = []

    async def place(n: int) -> None:
        outcomes.append(await exchange.place_order(resting_buy(f"tier-{n}", priority=Priority.CLOSE)))

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            for n in range(20):
                tg.start_soon(place, n)
    create = exchange.rate_limits().endpoints[CREATE]
    assert create.limit == 20 and exchange.statistics().rate_limited == 0
    assert len(outcomes) == 20 and create.wait_s_max < 0.5  # one window, not two


async def test_another_client_on_the_same_account_is_counted_from_the_status_header(
    venue: PaperVenue, exchange: BybitExchange
) -> None:
    assert venue.base_url is not None
    other = make_session(venue.base_url)
    for n in range(8):  # someone else's cancels: 8 of the account's 10 per second
        error = await rejected(other.cancel_order, category="linear", symbol=BTC, orderLinkId=f"theirs-{n}")
        assert error.status_code == 110001
    await call(other.client.close)
    with anyio.fail_after(10):
        outcomes = [await exchange.cancel_order(BTC, f"ours-{n}") for n in range(4)]
    assert all(isinstance(o, Rejected) and o.code == 110001 for o in outcomes), outcomes
    assert exchange.statistics().rate_limited == 0  # the third waited for their requests to leave
    assert exchange.rate_limits().endpoints[CANCEL].waited >= 1
