"""Fresh prices. Orders are sized on the venue's last price (contract §7.3), and never on one
older than ``ORDERMANAGER_PRICE_MAX_AGE_MS``.

``StreamPrices`` is the process's price book, fed by ws-gateway's ticker stream (§14.1): while a
symbol's streamed last price is fresh it costs no request at all. ``FreshTickers`` reads the REST
ticker otherwise: a cached price could size an order on a stale one, so instead concurrent
requests share venue calls. A caller joins the next call that has not started yet, never one
already in flight, so every price it gets was read after it asked. Under load one call serves
many symbols' signals; alone, a signal costs one call."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping

import anyio
import attrs

from ordermgr.domain.errors import VenueUnavailable
from ordermgr.domain.market import StreamTicker, TickerItem, fresh_last_price, merge_ticker
from ordermgr.domain.model import Ticker

log = logging.getLogger(__name__)

Fetch = Callable[[frozenset[str]], Awaitable[Mapping[str, Ticker]]]


@attrs.define
class PriceFigures:
    """Where reference prices came from, and what the stream brought."""

    from_stream: int = 0  # tickers served by a fresh stream price
    from_rest: int = 0  # tickers the stream could not serve (nothing yet, or too old): read over REST
    items: int = 0  # stream items taken
    ignored: int = 0  # of those, older than what was held


class StreamPrices:
    """The last prices ws-gateway's ticker stream gave, merged per symbol (``domain.market``).

    A price serves while the venue's ``ts`` of the item that carried it is within ``max_age_ms``
    of the venue's clock now (the caller passes it: local time corrected by the measured offset,
    made later by its uncertainty) *and* it arrived here within ``max_age_ms`` by our own
    monotonic ``clock``: an offset measured short cannot stretch a stopped stream's last price
    past the limit. The first time a symbol is asked for, ``on_first_ask`` is told (the
    ticker-channel subscription, made in the background)."""

    def __init__(
        self, max_age_ms: int, *, on_first_ask: Callable[[str], None] = lambda symbol: None,
        clock: Callable[[], float] = anyio.current_time,
    ) -> None:  # fmt: skip
        self.max_age_ms = max_age_ms
        self._on_first_ask = on_first_ask
        self._clock = clock
        self._held: dict[str, StreamTicker] = {}
        self._price_arrived: dict[str, float] = {}  # symbol → when (``clock``) its last price arrived
        self._serving: dict[str, bool] = {}  # symbol → whether the last ask was served by the stream
        self.figures = PriceFigures()

    def take(self, item: TickerItem) -> None:
        """One item off the stream (the consumer's callback: never blocks)."""
        self.figures.items += 1
        held = self._held.get(item.symbol)
        merged = merge_ticker(held, item)
        if merged is held:
            self.figures.ignored += 1
            return
        if held is None:
            log.info("ticker stream: first item", extra={"asset": item.symbol, "type": "snapshot" if item.is_snapshot
                                                         else "delta", "ts": item.ts_ms})  # fmt: skip
        self._held[item.symbol] = merged
        if item.last_price is not None:
            self._price_arrived[item.symbol] = self._clock()

    def fresh(self, symbol: str, venue_now_ms: int) -> Ticker | None:
        """``symbol``'s ticker from the stream while its last price is fresh, else None."""
        if symbol not in self._serving:
            self._serving[symbol] = False
            self._on_first_ask(symbol)
        held = self._held.get(symbol)
        price = fresh_last_price(held, venue_now_ms, self.max_age_ms)
        arrived = self._price_arrived.get(symbol)
        if held is None or price is None or arrived is None or self._clock() - arrived > self.max_age_ms / 1000:
            self._note_source(symbol, held, venue_now_ms, streamed=False)
            return None
        self._note_source(symbol, held, venue_now_ms, streamed=True)
        return Ticker(symbol, price, held.price("bid1Price"), held.price("ask1Price"), held.price("markPrice"))

    def _note_source(self, symbol: str, held: StreamTicker | None, venue_now_ms: int, *, streamed: bool) -> None:
        if streamed:
            self.figures.from_stream += 1
        else:
            self.figures.from_rest += 1
        if self._serving[symbol] != streamed:
            self._serving[symbol] = streamed
            age_ms = None if held is None or held.last_price_ts_ms is None else venue_now_ms - held.last_price_ts_ms
            log.info("reference price from the ticker stream" if streamed else
                     "ticker stream not fresh; reference price from the REST ticker",
                     extra={"asset": symbol, "price_age_ms": age_ms, "max_age_ms": self.max_age_ms})  # fmt: skip


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
