"""FreshTickers: concurrent callers share venue calls, and none gets a price read before it asked."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from decimal import Decimal

import anyio
import pytest

from ordermgr.bybit.tickers import FreshTickers
from ordermgr.domain.errors import VenueUnavailable
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
