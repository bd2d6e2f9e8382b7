"""Fresh prices, shared. Orders are sized on the venue's last price (contract §7.3), so a cached
price could size an order on a stale one. Instead, concurrent requests share venue calls: a
caller joins the next call that has not started yet, never one already in flight, so every price
it gets was read after it asked. Under load one call serves many symbols' signals; alone, a
signal costs one call, as before."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

import anyio

from ordermgr.domain.errors import VenueUnavailable
from ordermgr.domain.model import Ticker

Fetch = Callable[[frozenset[str]], Awaitable[Mapping[str, Ticker]]]


class _Round:
    """One venue call and the callers waiting for it."""

    def __init__(self) -> None:
        self.symbols: set[str] = set()
        self.done = anyio.Event()
        self.tickers: Mapping[str, Ticker] = {}
        self.error: VenueUnavailable | None = None
        self.abandoned = False  # its driver was cancelled or failed unexpectedly: callers retry


class FreshTickers:
    def __init__(self, fetch: Fetch) -> None:
        self._fetch = fetch
        self._gate = anyio.Lock()  # one call at a time; the next one forms meanwhile
        self._forming: _Round | None = None  # the next call, not started yet: callers join it

    async def get(self, symbol: str) -> Ticker:
        """``symbol``'s ticker as the venue gave it after this call began."""
        while True:
            joined = self._forming
            if joined is None:
                joined = self._forming = _Round()
                joined.symbols.add(symbol)
                await self._drive(joined)
            else:
                joined.symbols.add(symbol)
                await joined.done.wait()
            if not joined.abandoned:
                break
        if joined.error is not None:
            raise joined.error
        ticker = joined.tickers.get(symbol)
        if ticker is None:
            raise VenueUnavailable(f"Bybit returned no ticker for {symbol}")
        return ticker

    async def _drive(self, forming: _Round) -> None:
        """Wait for the call in flight, then make this round's call for every symbol that joined."""
        try:
            async with self._gate:
                self._forming = None  # from here on, new callers form the round after this one
                forming.tickers = await self._fetch(frozenset(forming.symbols))
        except VenueUnavailable as exc:  # the venue's answer, for everyone who asked
            forming.error = exc
        except BaseException:
            forming.abandoned = True
            if self._forming is forming:
                self._forming = None
            raise
        finally:
            forming.done.set()
