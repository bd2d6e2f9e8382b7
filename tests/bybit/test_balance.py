"""BackgroundBalance: the wallet is read in the background, after fills and on an interval, and
a caller gets the last figure without waiting for a read (contract §14.2)."""

from __future__ import annotations

from decimal import Decimal

import anyio
import pytest

from ordermgr.bybit.balance import BackgroundBalance
from ordermgr.bybit.wire import WalletBalance
from ordermgr.domain.errors import VenueUnavailable

pytestmark = pytest.mark.anyio


class Wallet:
    """The venue's wallet endpoint: counts reads; ``gate`` (when set) holds each read until opened."""

    def __init__(self) -> None:
        self.available = Decimal(1000)
        self.reads: list[str] = []
        self.failure: VenueUnavailable | None = None
        self.gate: anyio.Event | None = None
        self.read_started = anyio.Event()

    async def fetch(self, coin: str) -> WalletBalance:
        self.reads.append(coin)
        self.read_started.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.failure is not None:
            raise self.failure
        return WalletBalance(self.available, coin, self.available, self.available)


async def test_only_the_first_call_reads_and_concurrent_first_calls_share_that_read() -> None:
    wallet = Wallet()
    wallet.gate = anyio.Event()
    balance = BackgroundBalance(wallet.fetch, interval_s=0.0)  # an interval that has always passed
    got: list[Decimal] = []

    async def ask() -> None:
        got.append((await balance.wallet()).available)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(ask)
            await wallet.read_started.wait()
            wallet.gate.set()
        wallet.available = Decimal(5)
        for _ in range(10):
            await ask()  # no background running: the last figure, never a read
    assert wallet.reads == ["USDT"] and got == [Decimal(1000)] * 13


async def test_the_background_reads_soon_after_a_fill_and_once_for_a_burst_of_fills() -> None:
    wallet = Wallet()
    balance = BackgroundBalance(wallet.fetch, interval_s=60.0, after_fill_s=0.05)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(balance.run)
            await balance.next_refresh()  # the read at start
            assert wallet.reads == ["USDT"]
            wallet.available = Decimal(900)
            filled_at = anyio.current_time()
            for _ in range(5):
                balance.fill_happened()
            await balance.next_refresh()
            took_s = anyio.current_time() - filled_at
            tg.cancel_scope.cancel()
    assert (await balance.wallet()).available == Decimal(900)
    assert wallet.reads == ["USDT", "USDT"]  # five fills, one read
    assert took_s < 0.05 + 1.0  # the bound, and a generous second for the read


async def test_the_background_reads_on_its_interval_without_fills() -> None:
    wallet = Wallet()
    balance = BackgroundBalance(wallet.fetch, interval_s=0.05)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(balance.run)
            for _ in range(3):
                await balance.next_refresh()
            tg.cancel_scope.cancel()
    assert len(wallet.reads) >= 3


async def test_a_failed_background_read_keeps_the_last_figure() -> None:
    wallet = Wallet()
    balance = BackgroundBalance(wallet.fetch, interval_s=60.0, after_fill_s=0.0)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(balance.run)
            await balance.next_refresh()
            wallet.failure = VenueUnavailable("down")
            balance.fill_happened()
            await balance.next_refresh()
            tg.cancel_scope.cancel()
    assert (await balance.wallet()).available == Decimal(1000) and len(wallet.reads) == 2


async def test_with_no_figure_younger_than_the_bound_the_caller_hears_the_venue_is_down() -> None:
    """The background has failed for longer than ``max_age_s``: no trading on an old figure."""
    wallet = Wallet()
    balance = BackgroundBalance(wallet.fetch, max_age_s=0.0)
    await balance.wallet()
    wallet.failure = VenueUnavailable("down")
    with pytest.raises(VenueUnavailable):
        await balance.wallet()
