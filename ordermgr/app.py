"""Composition root: opens the resources, starts every task in nested task groups, and owns
the shutdown order. The nesting below IS the shutdown order: leaving the innermost block first
stops intake, then the actors drain, then the outbox flushes, then the HTTP server, broker and
venue stop, and last the pool closes."""

from __future__ import annotations

import logging
import signal
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import anyio
import attrs
import psycopg
from anyio.abc import TaskStatus

from ordermgr.actors.control import TradingControl
from ordermgr.actors.deps import ActorDeps, ExposureBook
from ordermgr.actors.intake import run_intake, run_order_updates
from ordermgr.actors.messages import SyncRequest
from ordermgr.actors.operator import OperatorDesk, run_desk
from ordermgr.actors.outbox import OutboxWakeup, flush_outbox, run_outbox
from ordermgr.actors.supervisor import Supervisor, open_supervisor
from ordermgr.actors.symbol import SymbolActor
from ordermgr.actors.sync import SyncService
from ordermgr.actors.timers import every, snapshot_tick, sync_tick, validation_tick
from ordermgr.amqp.broker import (
    ORDER_UPDATES_ARGUMENTS, ORDER_UPDATES_QUEUE, SIGNAL_QUEUE, Broker, Delivery, Publisher, consume,
    hand_over_to,
)  # fmt: skip
from ordermgr.amqp.ws_gateway import TickerSubscriptions, follow_tickers, keep_subscribed, order_events_to
from ordermgr.bybit.budget import BudgetFigures, RateBudget
from ordermgr.bybit.exchange import BybitExchange
from ordermgr.bybit.tickers import StreamPrices
from ordermgr.config import Config
from ordermgr.db.controls import ControlStore
from ordermgr.db.lease import LEADER_CHANNEL, LeaseStore
from ordermgr.db.listen import Listener
from ordermgr.db.migrate import apply_migrations
from ordermgr.db.queries import Queries
from ordermgr.db.requests import OUTCOMES_CHANNEL, REQUESTS_CHANNEL, OperatorGateway, RequestStore
from ordermgr.db.store import PgStore
from ordermgr.domain.decision import DecisionSettings
from ordermgr.domain.errors import StoreUnavailable, VenueAuthError, VenueUnavailable
from ordermgr.domain.model import Fence, Instrument
from ordermgr.domain.trading import GLOBAL, TradingStates, TriggerSettings
from ordermgr.http.api import create_api
from ordermgr.http.prometheus import ServiceSources
from ordermgr.http.server import create_app, serve
from ordermgr.leadership import STANDBY, Leadership, instance_id
from ordermgr.metrics import metrics_log_fields, service_log_fields
from ordermgr.paper import PaperConfig, PaperVenue
from ordermgr.paper.instruments import LISTINGS
from ordermgr.ports import OrderEventDelivery, until_stored

log = logging.getLogger(__name__)

VENUE_CHECK_INTERVAL_S = 15.0


@attrs.define
class ServiceState:
    """The answers behind ``/ready``."""

    store: PgStore
    broker: Broker
    role: Callable[[], str] = lambda: STANDBY
    is_paper: bool = False
    venue_ok: bool = False
    ws_gateway_ok: bool = False
    migrated: bool = False
    reconciled: bool = False
    stopping: bool = False

    async def dependencies(self) -> Mapping[str, bool]:
        return {
            "database": await self.store.ping(),
            "rabbitmq": self.broker.is_connected,
            "bybit_api": self.venue_ok,
            # The paper venue publishes ws-gateway's order events itself.
            "ws_gateway": self.venue_ok if self.is_paper else self.ws_gateway_ok,
        }

    def set_ws_gateway(self, ok: bool) -> None:
        self.ws_gateway_ok = ok

    def is_ready(self, dependencies: Mapping[str, bool]) -> bool:
        """A standby is ready once its dependencies are (an orchestrator's rolling deploy waits
        for it); the leader once its startup reconciliation is done too."""
        return (
            dependencies["database"]
            and dependencies["rabbitmq"]
            and self.migrated
            and (self.reconciled or self.role() == STANDBY)
            and not self.stopping
        )

    async def describe(self) -> Mapping[str, Any]:
        """What ``/ready`` adds (contract §11.5, §13.1): the role and the global trading state."""
        try:
            with anyio.fail_after(1.0):
                state = (await ControlStore(self.store).trading_states()).global_state.state.value
        except (StoreUnavailable, TimeoutError, psycopg.Error):  # down, or not migrated yet
            state = "unknown"
        return {"role": self.role(), "trading_state": state}


def default_instruments() -> dict[str, Instrument]:
    """Documented default filters (the paper venue's table), for dry-run without a venue."""
    return {symbol: listing.instrument for symbol, listing in LISTINGS.items()}


def decision_settings(config: Config) -> DecisionSettings:
    return DecisionSettings(
        market_confidence_threshold=config.market_order_confidence_threshold,
        market_spread_threshold_pct=config.market_order_spread_threshold,
        limit_price_offset_ratio=config.limit_order_price_offset_ratio,
        max_single_order_usdt=config.max_single_order_size,
        enable_splitting=config.enable_order_splitting,
        max_position_size=config.max_position_size,
        max_exposure_usdt=config.max_exposure,
        max_order_size_ratio=config.max_order_size_ratio,
    )


def amqp_heartbeat_s(lease_s: float) -> int:
    """RabbitMQ closes a peer's connection, and requeues what it held, about one to one and a
    half heartbeats after the peer went silent: well within the 0.8 × lease after which a frozen
    leader's lease can pass, so its successor finds the older messages back in the queue first."""
    return max(1, int(lease_s / 2.5))


def trigger_settings(config: Config) -> TriggerSettings:
    return TriggerSettings(max_daily_loss=config.max_daily_loss, halt_after_venue_errors=config.halt_after_venue_errors,
                           halt_after_rejections=config.halt_after_rejections)  # fmt: skip


async def migrate_until_done(config: Config, *, max_backoff_s: float = 5.0) -> None:
    """Apply migrations, retrying while the database is unreachable (contract §7.13)."""
    failures = 0
    while True:
        try:
            applied = await apply_migrations(config.postgres.conninfo)
            log.info("schema up to date", extra={"applied": applied})
            return
        except (psycopg.OperationalError, OSError) as exc:
            failures += 1
            if failures == 1:
                log.error("database unavailable; retrying migrations", extra={"error": str(exc)})
            await anyio.sleep(min(max_backoff_s, 0.2 * 2**failures))


async def watch_signals(stop: anyio.Event) -> None:
    """SIGTERM / SIGINT → begin a graceful stop. The receiver stays open until the process
    ends: a repeated signal (make, a supervisor or an impatient Ctrl-C sends a second) must
    not fall through to the default action and kill the drain half way; the drain is bounded."""
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            name = signal.Signals(signum).name
            if stop.is_set():
                log.warning("stop already in progress; signal ignored", extra={"signal": name})
            else:
                log.info("stop requested", extra={"signal": name})
                stop.set()


async def watch_venue(exchange: BybitExchange, state: ServiceState, *, private: bool) -> None:
    """Keep ``bybit_api`` in /ready current. The public time call refreshes the clock offset;
    a private call (the balance) proves the credentials, which the venue may refuse
    (contract §7.13: a configuration error, shown by /ready and logged loudly)."""
    while True:
        try:
            await exchange.server_time_ms()
            if private:
                await exchange.refresh_balance()
            state.venue_ok = True
        except VenueAuthError as exc:
            state.venue_ok = False
            log.critical("venue refused our API credentials: check BYBIT_API_KEY / BYBIT_API_SECRET and "
                         "BYBIT_ENVIRONMENT", extra={"error": str(exc)})  # fmt: skip
        except VenueUnavailable:
            state.venue_ok = False
        await anyio.sleep(VENUE_CHECK_INTERVAL_S)


async def unless_stopped(stop: anyio.Event, work: Callable[[], Awaitable[Any]]) -> bool:
    """Run ``work`` unless ``stop`` is set first; True when it finished."""
    finished = False
    async with anyio.create_task_group() as tg:

        async def cancel_on_stop() -> None:
            await stop.wait()
            tg.cancel_scope.cancel()

        tg.start_soon(cancel_on_stop)
        await work()
        finished = True
        tg.cancel_scope.cancel()
    return finished


async def run(
    config: Config,
    *,
    stop: anyio.Event | None = None,
    handle_signals: bool = True,
    http_host: str = "0.0.0.0",
    task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Run the service until ``stop`` is set (or a signal arrives); ``task_status`` gets the HTTP port."""
    stop = stop or anyio.Event()
    async with PgStore(config.postgres.conninfo) as store:
        broker = Broker(config.rabbitmq.url, heartbeat_s=amqp_heartbeat_s(config.leader_lease_s))
        listener = Listener(config.postgres.conninfo, (LEADER_CHANNEL, REQUESTS_CHANNEL, OUTCOMES_CHANNEL))
        leadership = Leadership(LeaseStore(store, instance_id()), listener, ttl_s=config.leader_lease_s,
                                on_change=lambda fence: _fence(store, fence))  # fmt: skip
        state = ServiceState(store, broker, role=lambda: leadership.role, is_paper=config.is_paper)
        async with anyio.create_task_group() as outer:
            await outer.start(broker.run)
            await outer.start(listener.run)
            sync = SyncService(store)  # also the API's metrics source
            budget = RateBudget()  # the account's, for every venue request (contract §15)
            queries, rate_limits = Queries(store.pool), lambda: budget.figures().as_fields()
            operators = OperatorGateway(RequestStore(store, leadership.lease.holder), leadership.lease, listener,
                                        ControlStore(store))  # fmt: skip
            api = create_api(queries=queries, api_key=config.api_key, operators=operators, metrics=sync, assets=sync,
                             rate_limits=rate_limits)  # fmt: skip
            controls = _Controls()
            scrape = ServiceSources(metrics=sync, queries=queries, rate_limits=rate_limits,
                                    role=lambda: leadership.role, trading_states=controls.by_scope)  # fmt: skip
            port = await outer.start(serve, create_app(state, api=api, scrape=scrape), http_host, config.port)
            if handle_signals:
                outer.start_soon(watch_signals, stop)
            task_status.started(port)
            base_url, gateway_url = config.rest_url, config.ws_gateway_url
            if config.is_paper and base_url is None:
                venue = PaperVenue(_paper_config(config))
                base_url = gateway_url = await outer.start(venue.run)  # it plays ws-gateway too
            assert base_url is not None
            feed = MarketFeed.of(config, gateway_url)
            exchange = BybitExchange(
                api_key=config.bybit_api_key, api_secret=config.bybit_api_secret, base_url=base_url,
                timeout_s=config.order_execution_timeout_s, retry=config.retry, budget=budget, stream=feed.prices,
                on_answer=controls.venue_answer,
            )  # fmt: skip
            outer.start_soon(lambda: watch_venue(exchange, state, private=not config.dry_run))
            if not config.is_paper:
                outer.start_soon(lambda: keep_subscribed(config.ws_gateway_url, config.ws_gateway_api_key,
                                                         config.service_name, state.set_ws_gateway))  # fmt: skip
            try:
                if await unless_stopped(stop, lambda: migrate_until_done(config)):
                    state.migrated = True
                    outer.start_soon(controls.follow_stored, ControlStore(store))
                    roles = _Roles(config, store, broker, exchange, state, stop, sync, leadership, controls, feed)
                    await roles.run()
            finally:
                state.stopping = True
                await exchange.aclose()
            outer.cancel_scope.cancel()
    log.info("stopped")


def _fence(store: PgStore, fence: Fence | None) -> None:
    """While this instance leads, its store's guarded writes carry the fence."""
    store.fence = fence


class _Controls:
    """The leader's trading control, once there is one: the venue's answers go to its trigger.
    Without one (a standby), the trading state as last read from the database."""

    def __init__(self) -> None:
        self.control: TradingControl | None = None
        self.stored = TradingStates()

    def venue_answer(self, kind: str, detail: str) -> None:
        if self.control is not None:
            self.control.venue_answer(kind, detail)

    def by_scope(self) -> dict[str, str]:
        """Every scope's state now (for /metrics): the leader's own view, else the stored one."""
        states = self.control.states if self.control is not None else self.stored
        return {GLOBAL: states.global_state.state.value, **{a: s.state.value for a, s in states.assets.items()}}

    async def follow_stored(self, store: ControlStore, every_s: float = 5.0) -> None:
        while True:
            try:
                self.stored = await store.trading_states()
            except StoreUnavailable:
                pass  # keep the last one read
            await anyio.sleep(every_s)


@attrs.define
class _Roles:
    """Stand by until the lease is ours, trade while it stays ours; after losing it, stand by
    again (contract §13). A stop request ends either role."""

    config: Config
    store: PgStore
    broker: Broker
    exchange: BybitExchange
    state: ServiceState
    stop: anyio.Event
    sync: SyncService
    leadership: Leadership
    controls: _Controls
    feed: MarketFeed

    async def run(self) -> None:
        while not self.stop.is_set():
            fence: Fence | None = None

            async def wait() -> None:
                nonlocal fence
                fence = await self.leadership.wait_for_lease()

            if not await unless_stopped(self.stop, wait) or fence is None:
                return
            if await self.leadership.lead(fence, self._trade):
                return  # stopped: drained, and the lease given back
            self.state.reconciled = False

    async def _trade(self) -> None:
        """The leader's work, with a trading control of its own: the state in force is loaded
        before the first signal (kept across restarts, §11.4)."""
        wakeup = OutboxWakeup()
        control = TradingControl(ControlStore(self.store), trigger_settings(self.config), wakeup.notify)
        await control.load()
        self.controls.control = control
        try:
            await self._run_actors(control, wakeup)
        finally:  # stopped, or cancelled when the lease is lost: a standby shows no leader's figures
            self.controls.control = None
            self.sync.attach(None)

    async def _run_actors(self, control: TradingControl, wakeup: OutboxWakeup) -> None:
        """Outbox publisher outermost (it flushes last), then the trading control and the actors,
        then order updates, timers, the operator desk and the market feed, then intake innermost
        (it stops first)."""
        config, store, broker, exchange, state, stop = (self.config, self.store, self.broker, self.exchange,
                                                        self.state, self.stop)  # fmt: skip
        deps = ActorDeps(
            store=store, venue=exchange, settings=decision_settings(config), exposure=ExposureBook(),
            wake_outbox=wakeup.notify, dry_run=config.dry_run, fallback_instruments=default_instruments,
            resubmit_window_s=config.resubmit_window_s, limit_order_ttl_s=config.limit_order_ttl_s,
            signal_max_age_s=config.signal_max_age_s, control=control,
        )  # fmt: skip
        # Mailboxes and the intake stream hold more than the prefetch: routing never waits on a slow symbol.
        capacity = 2 * config.prefetch + 16
        publisher = Publisher(broker)
        async with anyio.create_task_group() as events:
            events.start_soon(run_outbox, store, publisher, wakeup)
            events.start_soon(control.run)
            with anyio.CancelScope() as drain:
                async with open_supervisor(lambda symbol: SymbolActor(symbol, deps), capacity) as supervisor:
                    async with anyio.create_task_group() as background:
                        background.start_soon(_follow_orders, broker, supervisor, config.prefetch, capacity)
                        desk = OperatorDesk(supervisor, control, self.sync, store, exchange, deps.now)
                        requests = RequestStore(store, self.leadership.lease.holder)
                        woken = self.leadership.listener.next
                        background.start_soon(lambda: run_desk(requests, desk, lambda: woken(REQUESTS_CHANNEL)))
                        self.sync.attach(supervisor, exchange)
                        background.start_soon(self.feed.run, broker, exchange)
                        if await unless_stopped(stop, lambda: _reconcile_at_startup(supervisor, store)):
                            state.reconciled = True
                            _start_timers(background, config, supervisor, exchange, store)
                            log.info("ready to take signals")
                            await _take_signals(config, broker, store, exchange, supervisor, wakeup, stop, capacity)
                        state.stopping = True
                        background.cancel_scope.cancel()
                    log.info("stopping: intake closed, draining actors", extra={"timeout_s": config.drain_timeout_s})
                    drain.deadline = anyio.current_time() + config.drain_timeout_s
            if drain.cancelled_caught:
                log.warning("drain timed out; unacknowledged signals return to the queue")
            await flush_outbox(store, publisher, timeout_s=5.0)
            events.cancel_scope.cancel()


def _paper_config(config: Config) -> PaperConfig:
    """The in-process venue also plays ws-gateway: the ticker-channel subscriptions go to its
    URL and it publishes the subscribed symbols' ticker events, as ws-gateway would."""
    return PaperConfig(
        api_key=config.bybit_api_key,
        api_secret=config.bybit_api_secret,
        amqp_url=config.rabbitmq.url,
        seed=config.paper_seed,
        ws_gateway=True,
        gateway_api_key=config.ws_gateway_api_key,
    )


@attrs.frozen
class MarketFeed:
    """Contract §14: what a signal needs of the market, kept ready in the background so it waits
    for neither. ``prices``: ws-gateway's ticker stream (§14.1; None when the age limit is 0,
    then every price is read over REST), each symbol's channel asked for at its first signal;
    ``read_wallet``: the balance read in the background (§14.2; not in dry-run, which makes no
    private call). It runs with the trading (``_Roles._trade``), as the consumers of the other
    queues do."""

    prices: StreamPrices | None
    subscriptions: TickerSubscriptions | None
    read_wallet: bool

    @classmethod
    def of(cls, config: Config, gateway_url: str) -> MarketFeed:
        if config.price_max_age_ms == 0:
            return cls(None, None, read_wallet=not config.dry_run)
        subscriptions = TickerSubscriptions(gateway_url, config.ws_gateway_api_key, config.service_name)
        prices = StreamPrices(config.price_max_age_ms, on_first_ask=subscriptions.want)
        return cls(prices, subscriptions, read_wallet=not config.dry_run)

    async def run(self, broker: Broker, exchange: BybitExchange) -> None:
        async with anyio.create_task_group() as tg:
            if self.prices is not None and self.subscriptions is not None:
                tg.start_soon(self.subscriptions.run)
                tg.start_soon(follow_tickers, broker, self.prices.take)
            if self.read_wallet:
                tg.start_soon(exchange.keep_balance_fresh)


async def _reconcile_at_startup(supervisor: Supervisor, store: PgStore) -> None:
    """Contract §7.10: before the first signal, every order not yet final is looked up on the
    venue by orderLinkId and settled. Symbols with open orders or a position get their actor."""
    active = {order.asset for order in await until_stored(store.active_orders)}
    symbols = sorted(active | set(await until_stored(store.position_assets)))
    for symbol in symbols:
        await supervisor.ensure_actor(symbol)
    replies = await supervisor.ask(lambda reply: SyncRequest(reply, strict=True), active)
    log.info("startup reconciliation done", extra={
        "symbols": symbols, "synced_orders": sum(r.synced_orders for r in replies.values()),
        "updated_orders": sum(r.updated_orders for r in replies.values())})  # fmt: skip


def _start_timers(
    tg: anyio.abc.TaskGroup, config: Config, supervisor: Supervisor, exchange: BybitExchange, store: PgStore
) -> None:
    tg.start_soon(every, config.sync_interval_s, sync_tick(supervisor))
    tg.start_soon(every, config.position_snapshot_interval_s, snapshot_tick(supervisor))
    if not config.dry_run:
        tg.start_soon(every, config.position_validation_interval_s, validation_tick(supervisor, exchange))
    tg.start_soon(every, config.metrics_interval_s, lambda: _log_metrics(supervisor, exchange.rate_limits, store))


async def _log_metrics(supervisor: Supervisor, rate_limits: Callable[[], BudgetFigures], store: PgStore) -> None:
    """Contract §10: one symbol_metrics line per active symbol every metrics interval (with the
    time its requests waited for the rate-limit budget), then one service_metrics line with the
    totals, the budget's figures and the group commit's (rounds, writes, the largest)."""
    metrics, budget = supervisor.symbol_metrics(), rate_limits()
    for symbol, figures in metrics.items():
        waits, waited_s = budget.waits_by_symbol.get(symbol, (0, 0.0))
        log.info("symbol_metrics", extra={**metrics_log_fields(symbol, figures), "rate_limit_waits": waits,
                                          "rate_limit_wait_s": round(waited_s, 3)})  # fmt: skip
    log.info("service_metrics", extra={**service_log_fields(metrics), "rate_limits": budget.as_fields(),
                                       "group_commit": attrs.asdict(store.writer.stats)})  # fmt: skip


async def _follow_orders(broker: Broker, supervisor: Supervisor, prefetch: int, capacity: int) -> None:
    """Consume ws-gateway's order events, declared exactly as ws-gateway declares the queue."""
    send, receive = anyio.create_memory_object_stream[OrderEventDelivery](capacity)

    with send:
        async with anyio.create_task_group() as tg:
            tg.start_soon(run_order_updates, receive, supervisor)
            await consume(broker, ORDER_UPDATES_QUEUE, order_events_to(send), prefetch=prefetch,
                          arguments=ORDER_UPDATES_ARGUMENTS)  # fmt: skip


async def _take_signals(
    config: Config,
    broker: Broker,
    store: PgStore,
    exchange: BybitExchange,
    supervisor: Supervisor,
    wakeup: OutboxWakeup,
    stop: anyio.Event,
    capacity: int,
) -> None:
    """Consume the signal queue until ``stop``; then stop deliveries and finish the ones in hand."""
    send, receive = anyio.create_memory_object_stream[Delivery](capacity)

    trading: tuple[Mapping[str, Instrument] | None, frozenset[str]] = (None, frozenset())

    async def known_symbols() -> frozenset[str]:
        """Asked for every signal: the set is rebuilt only when the instrument list is new."""
        nonlocal trading
        try:
            instruments = await exchange.instruments()
        except VenueUnavailable:
            if not config.dry_run:
                raise
            instruments = default_instruments()
        if trading[0] is not instruments:
            trading = (instruments, frozenset(s for s, instrument in instruments.items() if instrument.is_trading))
        return trading[1]

    intake_stop = anyio.Event()
    with send:  # closed however we leave, so nothing is left dangling
        async with anyio.create_task_group() as intake:
            intake.start_soon(lambda: consume(broker, SIGNAL_QUEUE, hand_over_to(send), prefetch=config.prefetch,
                                              stop=intake_stop, sole=True))  # fmt: skip
            intake.start_soon(lambda: run_intake(
                receive, supervisor, store, known_symbols, wakeup.notify))  # fmt: skip
            await stop.wait()
            intake_stop.set()
            send.close()  # intake finishes the deliveries in hand, then ends
