"""FreshTickers: concurrent callers share venue calls, and none gets a price read before it asked.
StreamPrices: the ticker stream's last price serves only while it is fresh."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from decimal import Decimal

import anyio
import pytest

from ordermgr.bybit.tickers import FreshTickers, StreamPrices
from ordermgr.domain.errors import VenueUnavailable
from ordermgr.domain.market import TickerItem, read_ticker_item
from ordermgr.domain.model import Ticker

pytestmark = pytest.mark.anyio


class GatedVenue:
    """A ticker source whose calls finish only when the test lets them; prices can change between."""

    def __init__(self) -> None:
        self.prices = {"AUSDT": Decimal(1), "BUSDT": Decimal(2), "CUSDT": Decimal(3)}
        self.calls: list[frozenset[str]] = []
        self.started = [anyio.Event() for _ in range(4)]
        self.release = [anyio.Event() for _ in range(4)]
        self.failure: VenueUnavailable | None = None

    async def fetch(self, symbols: frozenset[str]) -> Mapping[str, Ticker]:
        call = len(self.calls)
        self.calls.append(symbols)
        prices = dict(self.prices)  # what the venue knows when the call reaches it
        self.started[call].set()
        await self.release[call].wait()
        if self.failure is not None:
            raise self.failure
        return {s: Ticker(s, prices[s]) for s in symbols if s in prices}


async def two_ask_during_a_call(
    venue: GatedVenue, ask: Callable[[str], Awaitable[None]], *, meanwhile: Callable[[], None] = lambda: None
) -> None:
    """AUSDT asks alone; while its call is at the venue (``meanwhile`` runs then), BUSDT and
    CUSDT ask; then both calls finish."""
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(ask, "AUSDT")
            await venue.started[0].wait()
            meanwhile()
            tg.start_soon(ask, "BUSDT")
            tg.start_soon(ask, "CUSDT")
            await anyio.wait_all_tasks_blocked()
            venue.release[0].set()
            await venue.started[1].wait()
            venue.release[1].set()


async def test_a_caller_never_gets_a_price_from_a_call_that_began_before_it_asked() -> None:
    venue = GatedVenue()
    tickers = FreshTickers(venue.fetch)
    got: dict[str, Ticker] = {}

    async def ask(symbol: str) -> None:
        got[symbol] = await tickers.get(symbol)

    def price_moves() -> None:
        venue.prices["BUSDT"] = Decimal(20)

    await two_ask_during_a_call(venue, ask, meanwhile=price_moves)
    assert venue.calls == [frozenset({"AUSDT"}), frozenset({"BUSDT", "CUSDT"})]
    assert got["BUSDT"].last_price == Decimal(20)  # not the 2 the first call saw
    assert {s: t.last_price for s, t in got.items()} == {"AUSDT": 1, "BUSDT": 20, "CUSDT": 3}


async def test_the_venue_failing_a_shared_call_fails_every_caller_of_it() -> None:
    venue = GatedVenue()
    tickers = FreshTickers(venue.fetch)
    errors: list[str] = []

    async def ask(symbol: str) -> None:
        try:
            await tickers.get(symbol)
        except VenueUnavailable as exc:
            errors.append(f"{symbol}: {exc}")

    venue.failure = VenueUnavailable("timeout")
    await two_ask_during_a_call(venue, ask)
    assert sorted(errors) == ["AUSDT: timeout", "BUSDT: timeout", "CUSDT: timeout"]


async def test_a_symbol_missing_from_the_answer_is_unavailable_not_a_crash() -> None:
    venue = GatedVenue()
    tickers = FreshTickers(venue.fetch)
    venue.release[0].set()
    with anyio.fail_after(5), pytest.raises(VenueUnavailable, match="no ticker for NOPEUSDT"):
        await tickers.get("NOPEUSDT")


async def test_when_the_caller_making_the_call_is_cancelled_the_others_still_get_their_price() -> None:
    venue = GatedVenue()
    tickers = FreshTickers(venue.fetch)
    got: list[Decimal] = []

    async def ask(symbol: str) -> None:
        got.append((await tickers.get(symbol)).last_price)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(ask, "AUSDT")
            await venue.started[0].wait()
            async with anyio.create_task_group() as doomed:
                doomed.start_soon(ask, "BUSDT")  # waits to make the second call ...
                await anyio.wait_all_tasks_blocked()
                tg.start_soon(ask, "CUSDT")  # ... which this one joins
                await anyio.wait_all_tasks_blocked()
                doomed.cancel_scope.cancel()  # ... and is cancelled before making it
            venue.release[0].set()
            await venue.started[1].wait()
            venue.release[1].set()
    assert venue.calls == [frozenset({"AUSDT"}), frozenset({"CUSDT"})]
    assert sorted(got) == [Decimal(1), Decimal(3)]


# --- StreamPrices: the ticker stream's prices -----------------------------------------------------


class Clock:
    """Our monotonic clock, moved by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def streamed(kind: str, ts_ms: int, **fields: str) -> TickerItem:
    return read_ticker_item({"symbol": "AUSDT", "type": kind, "ts": ts_ms, **fields})


def stream_prices(max_age_ms: int = 1000) -> tuple[StreamPrices, Clock, list[str]]:
    clock, asked = Clock(), []
    return StreamPrices(max_age_ms, on_first_ask=asked.append, clock=clock), clock, asked


def test_a_fresh_stream_price_is_served_with_the_other_prices_of_the_item() -> None:
    prices, _, _ = stream_prices()
    prices.take(streamed("snapshot", 5000, lastPrice="10.5", bid1Price="10.4", ask1Price="10.6", markPrice="10.5"))
    assert prices.fresh("AUSDT", venue_now_ms=5900) == Ticker("AUSDT", Decimal("10.5"), Decimal("10.4"),
                                                              Decimal("10.6"), Decimal("10.5"))  # fmt: skip
    assert (prices.figures.from_stream, prices.figures.from_rest) == (1, 0)


def test_a_price_older_than_the_limit_by_the_venue_clock_is_not_served() -> None:
    prices, _, _ = stream_prices()
    prices.take(streamed("snapshot", 5000, lastPrice="10.5"))
    assert prices.fresh("AUSDT", venue_now_ms=6000) is not None
    assert prices.fresh("AUSDT", venue_now_ms=6001) is None
    assert (prices.figures.from_stream, prices.figures.from_rest) == (1, 1)


def test_a_price_that_arrived_longer_ago_than_the_limit_is_not_served_whatever_its_ts_says() -> None:
    """A clock offset measured short makes ts look young; our own clock still bounds a stopped stream."""
    prices, clock, _ = stream_prices()
    prices.take(streamed("snapshot", 9000, lastPrice="10.5"))  # ts ahead of the venue clock below
    clock.now += 1.0
    assert prices.fresh("AUSDT", venue_now_ms=5000) is not None
    clock.now += 0.001
    assert prices.fresh("AUSDT", venue_now_ms=5000) is None


def test_items_without_a_last_price_neither_renew_it_nor_its_arrival() -> None:
    prices, clock, _ = stream_prices()
    prices.take(streamed("snapshot", 5000, lastPrice="10.5"))
    clock.now += 0.9
    prices.take(streamed("delta", 5900, bid1Price="10.3"))
    clock.now += 0.2
    assert prices.fresh("AUSDT", venue_now_ms=5950) is None  # arrived 1.1 s ago, though ts is young


def test_nothing_streamed_is_not_served_and_the_first_ask_asks_for_the_channel_once() -> None:
    prices, _, asked = stream_prices()
    assert prices.fresh("AUSDT", venue_now_ms=0) is None
    assert prices.fresh("AUSDT", venue_now_ms=0) is None
    assert prices.fresh("BUSDT", venue_now_ms=0) is None
    assert asked == ["AUSDT", "BUSDT"]


def test_a_late_item_is_counted_and_changes_nothing() -> None:
    prices, _, _ = stream_prices()
    prices.take(streamed("snapshot", 5000, lastPrice="10.5"))
    prices.take(streamed("delta", 4000, lastPrice="9.0"))
    ticker = prices.fresh("AUSDT", venue_now_ms=5000)
    assert ticker is not None and ticker.last_price == Decimal("10.5")
    assert (prices.figures.items, prices.figures.ignored) == (2, 1)
