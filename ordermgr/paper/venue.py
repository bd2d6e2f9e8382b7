"""PaperVenue: the engine, the HTTP server, the price walk and the event publisher,
run together under one task group."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Final

import anyio
import attrs
from aiohttp import web
from anyio.abc import TaskStatus

from ordermgr.paper import wire
from ordermgr.paper.config import PaperConfig
from ordermgr.paper.engine import Engine, EngineSettings
from ordermgr.paper.events import EventStream
from ordermgr.paper.faults import Faults
from ordermgr.paper.gateway import Gateway, ticker_envelope
from ordermgr.paper.instruments import LISTINGS, Listing
from ordermgr.paper.limits import RateLimits
from ordermgr.paper.records import Order
from ordermgr.paper.server import VenueHttp

log = logging.getLogger(__name__)

CLEANUP_TIMEOUT_S: Final = 3.0
WALK_RESOLUTION: Final = 1000  # the walk draws integers: no floats near prices


def _clock_ms() -> int:
    return time.time_ns() // 1_000_000


class PaperVenue:
    """A Bybit v5 linear venue served over HTTP; see ``ordermgr.paper`` for the API.

    ``faults`` and ``set_price`` may be used before or while ``run`` serves. They must be
    called from the event loop thread (the engine is not thread-safe).
    """

    def __init__(self, config: PaperConfig, listings: Mapping[str, Listing] = LISTINGS) -> None:
        self.config = config
        self.listings = listings
        self.faults = Faults()
        self.events = EventStream(config.amqp_url, config.order_queue, config.event_buffer, self.faults, config.seed)
        # The ws-gateway stand-in's ticker events: never faulted, published only when playing ws-gateway.
        self.ticker_events = EventStream(config.amqp_url if config.ws_gateway else None, config.ticker_queue,
                                         config.event_buffer, Faults(), config.seed, wrap=ticker_envelope)
        self.gateway = Gateway(config.gateway_api_key, self.ticker_item, self.ticker_events.offer, _clock_ms,
                               stalled=lambda: self.faults.ticker_stall)  # fmt: skip
        self.limits = RateLimits()
        self.request_counts: dict[str, int] = {}  # every /v5 request that arrived, by path
        self.engine = self._new_engine()
        self.base_url: str | None = None
        # In-process observers of every order-stream item (test barriers, demos). Called
        # synchronously on the event loop thread; they must not block or raise.
        self.order_listeners: list[Callable[[dict[str, object]], None]] = []
        self._walk_rng = random.Random(config.seed)

    # -- control ----------------------------------------------------------------------

    def set_price(self, symbol: str, price: Decimal | str) -> None:
        """Set the last price and fill the resting limit orders it crosses."""
        self.engine.set_price(symbol, Decimal(price))
        self.gateway.price_changed(symbol)

    def ticker_item(self, symbol: str) -> dict[str, object] | None:
        """The ``/v5/market/tickers`` item of ``symbol`` now; None for a symbol not listed."""
        listing = self.engine.listings.get(symbol)
        if listing is None:
            return None
        return wire.ticker(listing, self.engine.prices[symbol], wire.next_funding_ms(_clock_ms()))

    def price(self, symbol: str) -> Decimal:
        return self.engine.prices[symbol]

    def reset(self) -> None:
        """Orders, executions, positions, wallet, prices and faults back to the start."""
        self.faults.reset()
        self.limits = RateLimits()
        self.request_counts = {}
        self.engine = self._new_engine()
        self._walk_rng = random.Random(self.config.seed)

    def state(self) -> dict[str, object]:
        """A JSON-ready summary for tests and ``GET /paper/state``."""
        engine = self.engine
        account = engine.account()
        return {
            "base_url": self.base_url,
            "prices": {s: wire.fmt(p) for s, p in engine.prices.items()},
            "orders": len(engine.orders),
            "open_orders": [o.order_link_id or o.order_id for o in engine.open_orders()],
            "executions": len(engine.executions),
            "positions": {
                p.symbol: {
                    "size": wire.fmt(p.size),
                    "avgPrice": wire.fmt(p.avg_price),
                    "cumRealisedPnl": wire.fmt(p.cum_realised_pnl),
                }
                for p in engine.positions.values()
                if p.seq != -1  # traded at least once
            },
            "wallet": {
                "walletBalance": wire.fmt(account.wallet_balance),
                "equity": wire.fmt(account.equity),
                "availableBalance": wire.fmt(account.available),
            },
            "faults": self.faults.as_dict(),
            "rate_limits": {path: dict(totals) for path, totals in self.limits.totals.items()},
            "requests": dict(self.request_counts),
            "events": attrs.asdict(self.events.stats),
        }

    # -- serving ----------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[str] = anyio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled; reports the base URL (with the real port) once listening.

        Cancelling it stops accepting, releases held requests and closes connections within
        ``shutdown_timeout_s`` (cleanup is shielded and bounded).
        """
        closing = anyio.Event()
        app = VenueHttp(self, closing).app()
        if self.config.ws_gateway:
            self.gateway.add_routes(app)
        runner = web.AppRunner(
            app,
            shutdown_timeout=self.config.shutdown_timeout_s,
            access_log=logging.getLogger("ordermgr.paper.access") if self.config.access_log else None,
        )
        async with anyio.create_task_group() as tg:
            await tg.start(self.events.run)
            await tg.start(self.ticker_events.run)
            await runner.setup()
            try:
                site = web.TCPSite(runner, self.config.host, self.config.port)
                await site.start()
                self.base_url = _base_url(runner)
                if self.config.price_walk_interval_s > 0:
                    tg.start_soon(self._walk_prices)
                log.info("paper venue listening on %s", self.base_url, extra={"url": self.base_url})
                task_status.started(self.base_url)
                await anyio.sleep_forever()
            finally:
                self.base_url = None
                closing.set()
                with anyio.move_on_after(CLEANUP_TIMEOUT_S, shield=True):
                    await runner.cleanup()

    def step_prices(self) -> None:
        """Advance the seeded random walk by one tick for every symbol (fills included)."""
        for symbol in self.listings:
            self.engine.set_price(symbol, self._walk_step(symbol))
            self.gateway.price_changed(symbol)

    async def _walk_prices(self) -> None:
        while True:
            await anyio.sleep(self.config.price_walk_interval_s)
            self.step_prices()

    def _walk_step(self, symbol: str) -> Decimal:
        tick = self.listings[symbol].instrument.tick_size
        move = Decimal(self._walk_rng.randint(-WALK_RESOLUTION, WALK_RESOLUTION)) / WALK_RESOLUTION
        price = self.engine.prices[symbol] * (1 + move * self.config.price_walk_step)
        return max((price / tick).to_integral_value() * tick, tick)

    def _new_engine(self) -> Engine:
        c = self.config
        settings = EngineSettings(
            initial_balance=c.initial_balance,
            leverage=c.leverage,
            taker_fee_rate=c.taker_fee_rate,
            maker_fee_rate=c.maker_fee_rate,
            maintenance_margin_rate=c.maintenance_margin_rate,
            market_fill_parts=c.market_fill_parts,
            max_open_orders_per_symbol=c.max_open_orders_per_symbol,
        )
        prices = {s: c.initial_prices.get(s, listing.initial_price) for s, listing in self.listings.items()}
        return Engine(self.listings, prices, settings, clock_ms=_clock_ms, on_order=self._publish)

    def _publish(self, order: Order) -> None:
        # Snapshot now: the order keeps changing after this call.
        payload = wire.order_ws(order, self.listings[order.symbol])
        self.events.offer(payload)
        for listener in list(self.order_listeners):
            listener(payload)


def _base_url(runner: web.AppRunner) -> str:
    host, port = runner.addresses[0][:2]
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    return f"http://{host}:{port}"
