"""The wallet off the critical path (contract §14.2): a signal never waits for a wallet read.

The figure is read in the background (``run``): at start, ``after_fill_s`` after a fill (the
fills of a burst share one read), and every ``interval_s`` whatever happens. ``wallet`` returns
the last figure; it reads the wallet itself only when there is none yet (the very first call,
before the background has read it) or when the background has failed to read it for longer
than ``max_age_s`` (then the venue is likely down, and the caller should hear so rather than
trade on an old figure).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable

import anyio

from ordermgr.bybit.wire import WalletBalance
from ordermgr.domain.errors import VenueAuthError, VenueUnavailable

log = logging.getLogger(__name__)

Fetch = Callable[[str], Awaitable[WalletBalance]]


class BackgroundBalance:
    def __init__(
        self, fetch: Fetch, *, interval_s: float = 5.0, after_fill_s: float = 0.5, max_age_s: float = 30.0,
        coins: tuple[str, ...] = ("USDT",),
    ) -> None:  # fmt: skip
        self._fetch = fetch
        self._interval_s = interval_s
        self._after_fill_s = after_fill_s
        self._max_age_s = max_age_s
        self._coins = set(coins)  # read by the background: these, and every coin asked for
        self._figures: dict[str, tuple[float, WalletBalance]] = {}  # coin → (read began at, figure)
        self._reading = anyio.Lock()  # one read at a time: concurrent first calls share it
        self._filled = anyio.Event()  # a fill since the last background read began
        self._refreshed = anyio.Event()  # set (and replaced) after each background round
        self._last_round = -math.inf
        self._failing = False

    async def wallet(self, coin: str = "USDT") -> WalletBalance:
        """The last figure; a read only when there is none, or none younger than ``max_age_s``."""
        held = self._figures.get(coin)
        if held is not None and anyio.current_time() - held[0] <= self._max_age_s:
            return held[1]
        self._coins.add(coin)
        return await self.refresh(coin)

    async def refresh(self, coin: str = "USDT") -> WalletBalance:
        """Read the wallet now. A caller that waited for another's read takes that one, as long
        as it began after this call did."""
        asked = anyio.current_time()
        async with self._reading:
            held = self._figures.get(coin)
            if held is not None and held[0] >= asked:
                return held[1]
            began = anyio.current_time()
            wallet = await self._fetch(coin)
            self._figures[coin] = (began, wallet)
            return wallet

    def fill_happened(self) -> None:
        """A fill changed the wallet: the background reads it within ``after_fill_s``."""
        self._filled.set()

    async def next_refresh(self) -> None:
        """Until the background's next round of reads has finished."""
        await self._refreshed.wait()

    async def run(self) -> None:
        """Keep the figures fresh until cancelled."""
        while True:
            await self._until_due()
            self._filled = anyio.Event()  # a fill from here on needs a read that begins after it
            self._last_round = anyio.current_time()
            for coin in sorted(self._coins):
                await self._refresh_quietly(coin)
            self._refreshed.set()
            self._refreshed = anyio.Event()

    async def _until_due(self) -> None:
        while True:
            gap_s = self._after_fill_s if self._filled.is_set() else self._interval_s
            wait_s = self._last_round + gap_s - anyio.current_time()
            if wait_s <= 0:
                return
            if self._filled.is_set():
                await anyio.sleep(wait_s)
            else:
                with anyio.move_on_after(wait_s):
                    await self._filled.wait()  # a fill brings the next read forward

    async def _refresh_quietly(self, coin: str) -> None:
        """One background read; a failure keeps the last figure and is logged once per outage."""
        try:
            await self.refresh(coin)
        except (VenueUnavailable, VenueAuthError) as exc:
            if not self._failing:
                log.warning("wallet balance refresh failed; keeping the last figure", extra={"error": str(exc)})
            self._failing = True
            return
        if self._failing:
            log.info("wallet balance refreshed again")
        self._failing = False
