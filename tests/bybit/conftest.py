"""Fixtures: the paper venue served in-process on port 0, and adapters pointed at it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import pytest

from ordermgr.bybit.exchange import BybitExchange
from ordermgr.domain.model import RetryPolicy
from ordermgr.paper import PaperConfig, PaperVenue

KEY, SECRET = "paper-key", "paper-secret"


class SleepLog:
    """Zero-delay stand-in for ``anyio.sleep`` that records what the adapter asked for."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        await anyio.lowlevel.checkpoint()


@pytest.fixture
async def venue() -> AsyncIterator[PaperVenue]:
    # Bybit's limits lifted: these tests are not about them (tests/bybit/test_rate_limits.py is).
    paper = PaperVenue(PaperConfig(port=0, api_key=KEY, api_secret=SECRET, price_walk_interval_s=0,
                                   enforce_rate_limits=False))  # fmt: skip
    async with anyio.create_task_group() as tg:
        await tg.start(paper.run)
        yield paper
        tg.cancel_scope.cancel()


@pytest.fixture
def sleeps() -> SleepLog:
    return SleepLog()


MakeExchange = Callable[..., BybitExchange]


@pytest.fixture
async def make_exchange(venue: PaperVenue, sleeps: SleepLog) -> AsyncIterator[MakeExchange]:
    made: list[BybitExchange] = []

    def make(**overrides: Any) -> BybitExchange:
        assert venue.base_url is not None
        options: dict[str, Any] = {
            "api_key": KEY, "api_secret": SECRET, "base_url": venue.base_url, "timeout_s": 2.0,
            "retry": RetryPolicy(max_attempts=3, base_delay_s=0.5), "sleep": sleeps,
            "balance_after_fill_s": 0.0,  # tests read the balance right after a fill
        } | overrides
        made.append(BybitExchange(**options))
        return made[-1]

    yield make
    for exchange in made:
        await exchange.aclose()


@pytest.fixture
def exchange(make_exchange: MakeExchange) -> BybitExchange:
    return make_exchange()
