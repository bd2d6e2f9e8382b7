"""The fault-suite harness: a world of one paper venue (in this process, so it outlives every
daemon), the daemon as a child process reaching PostgreSQL and RabbitMQ through TCP proxies (so
a dependency can "go away" without touching the shared servers), a paced stream of signals, a
reader of the order events — and, at the end, the invariants checked against the database, the
venue and the events queue.

The invariants (``check_invariants``):

- **no signal lost**: every published ``signal_id`` has a ``signals`` row with a final status
  (``accepted`` or ``rejected``) and at least one order event on ``order-manager.order_events``;
- **no duplicate order**: no ``orderLinkId`` twice on the venue, and at most one venue order per
  signal and leg whatever the attempt (a second attempt placed after a first one that landed is a
  duplicate, even under another ``orderLinkId``);
- **no fill lost**: every venue order with our prefix has exactly one ``orders`` row, with the
  venue's status, ``cumExecQty`` and ``cumExecFee``, and the fills recorded for it add up to it;
  no ``orders`` row is live here and unknown there, or rejected here and live there;
- **positions equal to the venue's**: size exactly, average entry price and realized PnL up to the
  rounding drift F3 leaves when a dropped event merges two executions (reported in the notes;
  only the event-faults scenario drops events), for every symbol; and no
  ``position_discrepancies`` row (one would mean our books drifted and were overwritten);
- **every event published**: no ``order_events_outbox`` row without ``published_at``, and every
  outbox ``event_id`` received on the events queue.

Time to recover (``recover_s``): from the end of the fault (proxy restored, daemon restarted,
venue fault counters used up) until the daemon acknowledges its next signal; for the event faults,
which never stop acknowledgements, from the faults switched off until the database agrees with
the venue on every order by the daemon's own periodic sync (before the operator's sync).
"""

from __future__ import annotations

import json
import os
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import aiormq
import anyio
import attrs
import psycopg
from psycopg.rows import dict_row

from ordermgr.amqp.broker import ORDER_EVENTS_QUEUE, ORDER_UPDATES_QUEUE, SIGNAL_QUEUE, TICKER_QUEUE
from ordermgr.domain.decision import link_key, link_key_of
from ordermgr.paper import Faults, PaperVenue
from tests import support
from tests.service import Daemon, QueueReader, paper_venue, reset_queues

SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT")
INITIAL_PRICES = {"BTCUSDT": Decimal("50000"), "ETHUSDT": Decimal("3000"), "SOLUSDT": Decimal("150"),
                  "XRPUSDT": Decimal("0.6")}  # fmt: skip
OUR_PREFIX = "om-"
# The venue's orderStatus → ours, as contract §5 and bybit.md define them (not the service's table).
VENUE_TO_OURS = {"New": "pending", "PartiallyFilled": "partially_filled", "Filled": "filled",
                 "Cancelled": "cancelled", "PartiallyFilledCanceled": "cancelled", "Deactivated": "cancelled",
                 "Rejected": "rejected"}  # fmt: skip
ZERO, ONE = Decimal(0), Decimal(1)
# Rounding drift tolerated between our position and the venue's (finding F3): the venue rounds the
# average price to 8 decimals at each execution; the service takes fills found by lookups from the
# execution list, but rounds once when a dropped order event merged two executions. Relative
# to the average price, and to the notional traded on the symbol for realized PnL. A lost, doubled
# or misordered fill moves the figures by far more (and the size, compared exactly).
ROUNDING_PRICE = Decimal("1e-7")
ROUNDING_PNL = Decimal("1e-7")
FINAL_SIGNAL_STATUSES = frozenset({"accepted", "rejected"})
# A delivery is done with when the daemon logs one of these (a signal that is not valid is
# stored, answered and acknowledged by the intake; the chaos stream sends none on purpose).
ANSWERED_LINES = frozenset({"signal acknowledged", "signal invalid"})
API_KEY = "test-api-key"  # what support.service_env sets
GATEWAY_KEY = "chaos-gateway-key"  # the venue's ws-gateway stand-in's
# Daemon log lines counted in each scenario's notes: they show which recovery paths ran.
RECOVERY_LINES = {
    "resuming an interrupted signal": "resumed",
    "signal already handled; skipped": "redelivered_skipped",
    "order outcome unknown; left for reconciliation": "outcome_unknown",
    "resending an intent the venue never received": "intent_resent",
    "venue order adopted": "adopted",
    "fill older than the last applied; replaying fills in venue order": "fills_replayed",
    "database unavailable; waiting to record": "db_waits",
    "rabbitmq connection lost; reconnecting": "amqp_reconnects",
    "ack lost with its channel; the message will be redelivered": "acks_lost",
    "order update for an order we do not know; sync will adopt it if it is ours": "unknown_order_updates",
    "position differs from the venue; taking the venue's": "position_discrepancies",
    "signal rejected": "signals_refused",
    "order rejected": "orders_rejected",
    "symbol actor started": "actors_started",
    "ticker stream not fresh; reference price from the REST ticker": "price_source_to_rest",
    "reference price from the ticker stream": "price_source_to_stream",
}


# --------------------------------------------------------------------------- sizes


@attrs.frozen
class Sizes:
    """How big each scenario is. ``short`` runs in ``make test``; ``full`` is ``make chaos``."""

    name: str
    kill_signals: int  # the SIGKILL stream
    kills: int
    signals: int  # every other scenario's stream
    rate: float  # signals published per second
    amqp_outage_s: float
    pg_outage_s: float
    bursts: int  # venue fault bursts of each kind
    burst_length: int
    ticker_signals: int  # the ticker-stall stream: long enough to run past the price age limit
    ticker_stall_s: float
    timeout_s: float  # bound of one scenario


# The daemon handles some 12-15 signals a second over four symbols on this 2-core machine; the
# stream is published a little faster, so a backlog is always waiting in the queue.
SHORT = Sizes("short", kill_signals=100, kills=3, signals=40, rate=25.0, amqp_outage_s=2.0, pg_outage_s=3.0,
              bursts=1, burst_length=3, ticker_signals=100, ticker_stall_s=2.0, timeout_s=60.0)  # fmt: skip
FULL = Sizes("full", kill_signals=1000, kills=20, signals=400, rate=25.0, amqp_outage_s=5.0, pg_outage_s=10.0,
             bursts=3, burst_length=6, ticker_signals=400, ticker_stall_s=5.0, timeout_s=600.0)  # fmt: skip


# Every scenario's seeds (the stream, the kill instants, the venue's event faults) are fixed, so a
# run can be repeated; ORDERMGR_CHAOS_SEED=<n> shifts them all to explore other interleavings.
SEED_OFFSET = int(os.environ.get("ORDERMGR_CHAOS_SEED", "0"))


def chosen_sizes() -> Sizes:
    """``ORDERMGR_CHAOS=full`` selects the full sizes; anything else the short ones."""
    return FULL if os.environ.get("ORDERMGR_CHAOS", "").lower() == "full" else SHORT


# --------------------------------------------------------------------------- the stream


@attrs.frozen
class Planned:
    signal_id: str
    symbol: str
    side: str  # buy / sell
    amount: int  # USDT
    limit: bool  # low confidence and a wide spread: a resting Limit order


def plan_stream(tag: str, count: int, rng: random.Random, *, limit_share: float = 0.1) -> list[Planned]:
    """``count`` signals over SYMBOLS, buys and sells at random (positions move both ways, through
    zero too), mostly Market orders (confidence 0.95), some Limit ones near the market."""
    nonce = f"{int(time.time() * 1000) % 10**8:08d}"  # ids differ from any earlier run's
    return [
        Planned(f"chaos-{tag}-{nonce}-{i:05d}", rng.choice(SYMBOLS), rng.choice(("buy", "sell")),
                rng.randrange(100, 1001, 50), rng.random() < limit_share)
        for i in range(count)
    ]  # fmt: skip


def signal_body(item: Planned, price: Decimal) -> bytes:
    body: dict[str, Any] = {
        "signal_id": item.signal_id,
        "signal_type": item.side,
        "asset": item.symbol,
        "amount": item.amount,
        "confidence": 0.5 if item.limit else 0.95,
        "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "strategy_id": "chaos",
        "model_version": None,
        "trace_id": f"trace-{item.signal_id}",
    }
    if item.limit:  # spread 0.2 % of the price: a Limit 0.1 % away from the last price
        body["market_data_snapshot"] = {"price": float(price), "spread": float(price * Decimal("0.002"))}
    return json.dumps(body).encode()


@attrs.define
class ObservedFaults(Faults):
    """The venue's request faults, telling when an armed burst is used up (no polling)."""

    used_up: anyio.Event = attrs.field(factory=anyio.Event)

    def arm(self, counter: str, count: int) -> anyio.Event:
        self.used_up = anyio.Event()
        setattr(self, counter, count)
        return self.used_up

    def _take(self, counter: str) -> bool:
        took = super()._take(counter)
        if took and getattr(self, counter) == 0:
            self.used_up.set()
        return took


# --------------------------------------------------------------------------- results


@attrs.define
class ScenarioResult:
    name: str
    signals: int
    orders: int = 0
    duplicates: int = 0
    lost: int = 0  # signals lost or unanswered + fills lost + order states lost + events unpublished
    position_mismatches: int = 0
    recover_s: float | None = None
    wall_s: float = 0.0
    checked: bool = False  # the invariants were checked (False: the scenario stopped before)
    problems: list[str] = attrs.field(factory=list)
    notes: dict[str, Any] = attrs.field(factory=dict)

    @property
    def ok(self) -> bool:
        clean = self.duplicates == 0 and self.lost == 0 and self.position_mismatches == 0
        return self.checked and clean and not self.problems


COLUMNS = ("scenario", "signals", "orders", "duplicates", "lost", "position mismatches", "time to recover (s)",
           "wall (s)", "result")  # fmt: skip


def format_table(results: Iterable[ScenarioResult]) -> str:
    rows = [COLUMNS] + [
        (r.name, str(r.signals), *_figures(r), "-" if r.recover_s is None else f"{r.recover_s:.2f}",
         f"{r.wall_s:.1f}", "ok" if r.ok else "FAILED")
        for r in results
    ]  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = [" | ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
             for row in rows]  # fmt: skip
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def _figures(result: ScenarioResult) -> tuple[str, ...]:
    if not result.checked:
        return ("-",) * 4
    return tuple(map(str, (result.orders, result.duplicates, result.lost, result.position_mismatches)))


# --------------------------------------------------------------------------- the world


def daemon_env(venue_url: str, pg_port: int, amqp_port: int, **overrides: str) -> dict[str, str]:
    env = {
        "BYBIT_REST_URL": venue_url,
        # The venue plays ws-gateway too: the ticker subscriptions go to it (contract §14.1).
        "WS_GATEWAY_HOST": "127.0.0.1",
        "WS_GATEWAY_PORT": venue_url.rsplit(":", 1)[1],
        "WS_GATEWAY_API_KEY": GATEWAY_KEY,
        "POSTGRES_PORT": str(pg_port),
        "RABBITMQ_PORT": str(amqp_port),
        # Reconcile dropped events and unknown outcomes during the scenario, not after it.
        "ORDERMANAGER_SYNC_INTERVAL": "1",
        "ORDERMANAGER_ORDER_EXECUTION_TIMEOUT": "2",
        "ORDERMANAGER_BYBIT_API_RETRY_BASE_DELAY": "0.2",
        "ORDERMANAGER_BYBIT_API_RETRY_MAX_DELAY": "2",
        "ORDERMANAGER_DRAIN_TIMEOUT": "10",
        # Risk limits out of the way: every signal places its order.
        "ORDERMANAGER_MAX_POSITION_SIZE": "1000000000",
        "ORDERMANAGER_MAX_EXPOSURE": "1000000000000",
        "ORDERMANAGER_MAX_ORDER_SIZE_RATIO": "1",
        "ORDERMANAGER_MAX_SINGLE_ORDER_SIZE": "1000000",
    }
    env.update(overrides)
    return env


class ChaosWorld:
    """One scenario's venue, proxies, events reader and daemons. Built by :func:`chaos_world`."""

    def __init__(self, name: str, conninfo: str, log_dir: Path, tg: anyio.abc.TaskGroup, venue: PaperVenue,
                 venue_url: str, pg_proxy: support.TcpProxy, amqp_proxy: support.TcpProxy, events: QueueReader,
                 seed: int, env: dict[str, str]) -> None:  # fmt: skip
        self.name = name
        self.conninfo = conninfo
        self.log_dir = log_dir
        self.tg = tg
        self.venue = venue
        self.venue_url = venue_url
        self.pg_proxy = pg_proxy
        self.amqp_proxy = amqp_proxy
        self.events = events
        self.seed = seed
        self.rng = random.Random(seed)
        self.env = env
        self.daemons: list[Daemon] = []
        self.started = time.monotonic()
        self.published = 0
        self._acked: set[str] = set()
        self._ack_lines = 0
        self._scanned: list[int] = []
        self._publishing_done = anyio.Event()
        self.phases: dict[str, float] = {}  # seconds since the world was built, per milestone
        self._walk_scope: anyio.CancelScope | None = None
        self._changed = anyio.Event()  # any daemon logged a line or exited
        # Daemon number → (frozen at, thawed at), wall clock: a frozen leader trades no more
        # from the freeze on, and logs its stop only once thawed.
        self.frozen: dict[int, tuple[float, float]] = {}

    def mark(self, phase: str) -> None:
        self.phases[phase] = round(time.monotonic() - self.started, 2)

    # -- daemons ----------------------------------------------------------------------------

    @property
    def daemon(self) -> Daemon:
        return self.daemons[-1]

    async def start_daemon(self, *, ready_timeout_s: float = 30.0) -> Daemon:
        """Start a daemon and wait until it takes signals."""
        daemon = await self.spawn_daemon()
        await daemon.wait_for("ready to take signals", timeout_s=ready_timeout_s)
        self.mark(f"daemon {len(self.daemons)} ready")
        return daemon

    async def spawn_daemon(self, **env_overrides: str) -> Daemon:
        """Start a daemon; return at once."""
        daemon = Daemon({**self.env, **env_overrides}, str(self.log_dir), on_change=self._notify)
        self.daemons.append(daemon)
        self._scanned.append(0)
        await self.tg.start(daemon.run)
        return daemon

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    async def wait_until(self, predicate: Callable[[], bool], *, timeout_s: float = 60.0, what: str = "") -> None:
        """Until ``predicate()`` holds; looked at whenever any daemon logs a line or exits."""
        try:
            with anyio.fail_after(timeout_s):
                while not predicate():
                    if all(d.returncode is not None for d in self.daemons):
                        raise AssertionError(f"every daemon exited while waiting for {what or predicate}")
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what or predicate}") from None

    def alive(self) -> list[Daemon]:
        return [d for d in self.daemons if d.returncode is None]

    async def leader(self, timeout_s: float = 30.0) -> Daemon:
        """The live daemon whose /ready says it leads (waiting for one, bounded)."""
        with anyio.fail_after(timeout_s):
            while True:
                for daemon in self.alive():
                    if (await ready_of(daemon.port)).get("role") == "leader":
                        return daemon
                await anyio.sleep(0.1)

    def _scan(self) -> None:
        for index, daemon in enumerate(self.daemons):
            lines = daemon.lines
            for line in lines[self._scanned[index]:]:
                if line.get("message") in ANSWERED_LINES:
                    self._acked.add(str(line.get("signal_id")))
                    self._ack_lines += 1
            self._scanned[index] = len(lines)

    def acked(self) -> set[str]:
        """Distinct signal ids any daemon of this world acknowledged."""
        self._scan()
        return self._acked

    def ack_lines(self) -> int:
        """Acknowledgements logged by every daemon (a redelivered signal counts again)."""
        self._scan()
        return self._ack_lines

    async def wait_acked(self, count: int, timeout_s: float = 60.0) -> None:
        """Until ``count`` distinct signals are acknowledged (by any daemon)."""
        await self.wait_until(lambda: len(self.acked()) >= count, timeout_s=timeout_s,
                              what=f"{count} signals acknowledged")  # fmt: skip

    async def all_settled(self, planned: Sequence[Planned], *, timeout_s: float) -> None:
        """Until every signal is acknowledged. A daemon killed between sending an ack and logging
        it leaves a signal that is settled but never logged as such (RabbitMQ will not deliver it
        again): one whose outcome is final in the database while its queue is drained counts too."""
        try:
            await self.wait_acked(len(planned), timeout_s=min(timeout_s, 30.0))
            return
        except AssertionError:
            pass
        with anyio.fail_after(timeout_s):
            while True:
                if not await queue_ready(SIGNAL_QUEUE) and not unsettled(self.conninfo, planned, self.acked()):
                    return
                await anyio.sleep(0.5)

    async def next_ack(self, *, total: int, since: float, timeout_s: float = 60.0) -> float:
        """Wait for the next acknowledgement after now; seconds since ``since`` (monotonic) when
        it came. Returns at once if every signal is already acknowledged."""
        baseline = self.ack_lines()
        await self.wait_until(lambda: self.ack_lines() > baseline or len(self.acked()) >= total,
                              timeout_s=timeout_s, what="the next signal acknowledged")  # fmt: skip
        return time.monotonic() - since

    async def kill(self) -> None:
        daemon = self.daemon
        daemon.kill()
        code = await daemon.wait_exit()
        assert code == -9, f"SIGKILL should end the daemon with -9, got {code}"

    # -- the stream -------------------------------------------------------------------------

    def start_stream(
        self, planned: Sequence[Planned], rate: float, step: Callable[[], None] | None = None
    ) -> None:
        """Publish ``planned`` at ``rate`` per second in the background, and move prices with
        ``step`` (default: the venue's random walk, so resting Limit orders fill) every 50 ms
        until ``stop_prices``. Each price change is on the venue's ticker stream too."""
        self.tg.start_soon(self._publish, planned, rate)
        self.tg.start_soon(self._walk_prices, step or self.venue.step_prices)

    async def _publish(self, planned: Sequence[Planned], rate: float) -> None:
        connection = await aiormq.connect(support.AMQP_URL)
        try:
            channel = await connection.channel()  # publisher confirms: each one is in the queue
            await channel.queue_declare(SIGNAL_QUEUE, durable=True)
            start = anyio.current_time()
            for index, item in enumerate(planned):
                due = start + index / rate
                await anyio.sleep(max(0.0, due - anyio.current_time()))
                properties = aiormq.spec.Basic.Properties(delivery_mode=2, content_type="application/json")
                body = signal_body(item, self.venue.price(item.symbol))
                await channel.basic_publish(body, routing_key=SIGNAL_QUEUE, properties=properties)
                self.published += 1
        finally:
            self._publishing_done.set()
            with anyio.CancelScope(shield=True):
                await connection.close()

    async def publishing_done(self, timeout_s: float = 60.0) -> None:
        with anyio.fail_after(timeout_s):
            await self._publishing_done.wait()

    async def _walk_prices(self, step: Callable[[], None], interval_s: float = 0.05) -> None:
        with anyio.CancelScope() as scope:
            self._walk_scope = scope
            while True:
                await anyio.sleep(interval_s)
                step()

    def stop_prices(self) -> None:
        """Freeze the venue: from here on its state changes only by what the daemon sends."""
        if self._walk_scope is not None:
            self._walk_scope.cancel()

    # -- the end ----------------------------------------------------------------------------

    async def finish(self, planned: Sequence[Planned], result: ScenarioResult, *, timeout_s: float = 60.0,
                     several: bool = False) -> None:  # fmt: skip
        """Wait for every signal to be acknowledged, freeze prices, let the venue's events
        arrive, run the operator's full sync, and check the invariants (converging, bounded).
        ``several`` instances: also never two leaders and no FIFO inversion per symbol."""
        await self.publishing_done(timeout_s)
        await self.all_settled(planned, timeout_s=timeout_s)
        self.mark("all acknowledged")
        self.stop_prices()
        try:
            await self.events_delivered(timeout_s=30.0)
        except (TimeoutError, AssertionError) as exc:  # checked below all the same
            result.problems.append(f"the venue's order events were not all consumed: {exc!r}")
        self.mark("venue events consumed")
        deadline = anyio.current_time() + 10.0
        rounds = same_rounds = 0
        last_problems: list[str] = []
        while True:
            rounds += 1
            report = await post_sync((await self.leader()).port)
            try:
                await self.outbox_published(timeout_s=30.0)
            except TimeoutError:
                pass  # the check below counts what was not published or received
            checked = check_invariants(self, planned)
            if report["status"] != "completed":
                checked.problems.append(f"operator sync: {report}")
            if checked.ok or anyio.current_time() > deadline:
                break
            if rounds == 1:  # what the first full sync left unsettled (it converged later, or not)
                result.notes["after_first_sync"] = checked.problems[:5]
            # A frozen venue and a daemon that has synced: the same problems three rounds in a
            # row will not go away by waiting longer.
            same_rounds = same_rounds + 1 if checked.problems == last_problems else 0
            if same_rounds >= 2:
                break
            last_problems = checked.problems
            await anyio.sleep(0.5)  # bounded: the deadline above ends it
        result.notes["check_rounds"] = rounds
        result.orders, result.duplicates, result.lost = checked.orders, checked.duplicates, checked.lost
        result.position_mismatches = checked.position_mismatches
        result.problems.extend(checked.problems)
        result.checked = True
        result.notes.update(checked.notes)
        result.notes["acknowledgements"] = self.ack_lines()
        result.notes["log"] = self.log_counts()
        result.notes["daemons"] = len(self.daemons)
        result.notes["seed"] = self.seed
        self.mark("checked")
        result.notes["phases_s"] = self.phases
        result.notes["venue_events"] = attrs.asdict(self.venue.events.stats)
        inversions = fifo_inversions(self, planned)
        result.notes["fifo_inversions"] = inversions
        if several:
            check_leadership(self, result)
            if inversions:
                result.problems.append(f"{inversions} per-symbol FIFO inversions at the venue")
        result.wall_s = time.monotonic() - self.started

    async def events_delivered(self, timeout_s: float) -> None:
        """Until the venue has published every order event it meant to (drops excepted) and
        the daemon has taken them all off ``ws-gateway.order``."""
        stats = self.venue.events.stats

        def venue_done() -> bool:
            return stats.published >= stats.offered - stats.dropped + stats.duplicated - stats.overflowed

        await poll_until(venue_done, timeout_s, "the venue's order events published")
        with anyio.fail_after(timeout_s):
            while await queue_ready(ORDER_UPDATES_QUEUE):
                await anyio.sleep(0.1)

    async def outbox_published(self, timeout_s: float) -> None:
        """Until no outbox row waits and the events reader has every event id."""
        with anyio.fail_after(timeout_s):
            while True:
                pending, ids = outbox_state(self.conninfo)
                if not pending and ids <= self.received_event_ids():
                    return
                await anyio.sleep(0.1)

    def received_event_ids(self) -> set[str]:
        return {str(m.header.properties.message_id) for m in self.events.messages}

    def answered_signals(self) -> set[str]:
        answered = set()
        for message in self.events.messages:
            event = json.loads(message.body)
            order, signal = event.get("order"), event.get("signal")
            signal_id = (order or {}).get("signal_id") or (signal or {}).get("signal_id")
            if signal_id:
                answered.add(signal_id)
        return answered

    def log_counts(self) -> dict[str, int]:
        counts = Counter[str]()
        for daemon in self.daemons:
            for line in daemon.lines:
                message = str(line.get("message", ""))
                if message in RECOVERY_LINES:
                    counts[RECOVERY_LINES[message]] += 1
                elif message.startswith("Bybit outcome resolved by lookup"):
                    counts["resolved_by_lookup"] += 1
                elif message.startswith("Bybit") and "failed" in message:
                    counts["venue_failures"] += 1
        return dict(sorted(counts.items()))

    def dump_logs(self) -> list[Path]:
        paths = []
        for index, daemon in enumerate(self.daemons, start=1):
            path = self.log_dir / f"{self.name}-daemon-{index}.log"
            path.write_text("".join(json.dumps(line) + "\n" for line in daemon.lines))
            paths.append(path)
        return paths


@asynccontextmanager
async def chaos_world(
    name: str, conninfo: str, log_dir: Path, *, seed: int = 1, market_fill_parts: int = 2,
    enforce_rate_limits: bool = False, **env_overrides: str,
) -> AsyncIterator[ChaosWorld]:  # fmt: skip
    seed += SEED_OFFSET
    await reset_queues(SIGNAL_QUEUE, ORDER_EVENTS_QUEUE, ORDER_UPDATES_QUEUE, TICKER_QUEUE)
    # Bybit's rate limits are lifted unless the scenario is about them: at the streams' 25/s they
    # would only slow every other scenario down to 10 orders/s.
    venue = paper_venue(amqp_url=support.AMQP_URL, initial_balance=Decimal(10) ** 12, initial_prices=INITIAL_PRICES,
                        market_fill_parts=market_fill_parts, seed=seed, enforce_rate_limits=enforce_rate_limits,
                        ws_gateway=True, gateway_api_key=GATEWAY_KEY)  # fmt: skip
    async with anyio.create_task_group() as tg:
        venue_url = await tg.start(venue.run)
        pg_proxy = support.TcpProxy(support.PG_HOST, support.PG_PORT)
        amqp_proxy = support.TcpProxy("127.0.0.1", 5672)
        await tg.start(pg_proxy.run)
        await tg.start(amqp_proxy.run)
        events = QueueReader(ORDER_EVENTS_QUEUE)
        await tg.start(events.run)
        env = daemon_env(venue_url, pg_proxy.port, amqp_proxy.port, **env_overrides)
        world = ChaosWorld(name, conninfo, log_dir, tg, venue, venue_url, pg_proxy, amqp_proxy, events, seed, env)
        try:
            yield world
        finally:
            world.dump_logs()
            for daemon in world.daemons:
                if daemon.returncode is None:
                    daemon.kill()
            with anyio.move_on_after(10, shield=True):
                for daemon in world.daemons:
                    await daemon.wait_exit()
            tg.cancel_scope.cancel()


# --------------------------------------------------------------------------- invariants


def check_invariants(world: ChaosWorld, planned: Sequence[Planned]) -> ScenarioResult:
    """Every invariant of the module docstring, against the DB, the venue and the events queue."""
    result = ScenarioResult(world.name, len(planned), checked=True)
    problems = result.problems
    with psycopg.connect(world.conninfo, row_factory=dict_row) as conn:
        signals = {r["signal_id"]: r for r in conn.execute("SELECT signal_id, status FROM signals").fetchall()}
        orders = conn.execute(
            "SELECT id, order_link_id, signal_id, status, filled_quantity, fees, is_dry_run FROM orders"
        ).fetchall()
        fills = {r["order_uuid"]: r["qty"] for r in conn.execute(
            "SELECT order_uuid, sum(quantity) AS qty FROM order_fills GROUP BY order_uuid").fetchall()}  # fmt: skip
        positions = {r["asset"]: r for r in conn.execute(
            "SELECT asset, size, average_entry_price, realized_pnl FROM positions").fetchall()}  # fmt: skip
        discrepancies = conn.execute("SELECT asset, local_size, venue_size FROM position_discrepancies").fetchall()
        unpublished = conn.execute("SELECT count(*) AS n FROM order_events_outbox WHERE published_at IS NULL"
                                   ).fetchone()["n"]  # type: ignore[index]  # fmt: skip
        # Order events only: trading-state events go to their own queue (checked published above).
        outbox_ids = {str(r["event_id"]) for r in conn.execute(
            "SELECT event_id FROM order_events_outbox WHERE queue = %s", (ORDER_EVENTS_QUEUE,))}  # fmt: skip

    # No signal lost: stored, final, answered.
    answered = world.answered_signals()
    lost_signals = unanswered = 0
    for item in planned:
        row = signals.get(item.signal_id)
        if row is None or row["status"] not in FINAL_SIGNAL_STATUSES:
            lost_signals += 1
            problems.append(f"signal {item.signal_id}: {'not stored' if row is None else row['status']}")
        if item.signal_id not in answered:
            unanswered += 1
            problems.append(f"signal {item.signal_id}: no order event")

    # No duplicate order.
    ours = [o for o in world.venue.engine.orders.values() if o.order_link_id.startswith(OUR_PREFIX)]
    result.orders = len(ours)
    by_link = Counter(o.order_link_id for o in ours)
    duplicates = sum(n - 1 for n in by_link.values() if n > 1)
    by_leg = Counter(_signal_leg(o.order_link_id) for o in ours)
    for leg, n in by_leg.items():
        if n > 1:
            duplicates += n - 1
            problems.append(f"{n} venue orders for signal key/leg {leg}: "
                            f"{sorted(o.order_link_id for o in ours if _signal_leg(o.order_link_id) == leg)}")
    result.duplicates = duplicates

    # No fill lost: the venue's orders and ours, one to one, equal.
    rows_by_link: dict[str, list[dict[str, Any]]] = {}
    for row in orders:
        rows_by_link.setdefault(row["order_link_id"], []).append(row)
    lost_orders = 0
    for theirs in ours:
        mine = rows_by_link.get(theirs.order_link_id, [])
        if len(mine) != 1:
            lost_orders += 1
            problems.append(f"venue order {theirs.order_link_id} has {len(mine)} orders rows")
            continue
        row = mine[0]
        expected = VENUE_TO_OURS.get(theirs.status, theirs.status)
        fill_sum = fills.get(row["id"], Decimal(0))
        here = (row["status"], row["filled_quantity"], row["fees"], fill_sum)
        if here != (expected, theirs.cum_exec_qty, theirs.cum_exec_fee, theirs.cum_exec_qty):
            lost_orders += 1
            problems.append(f"order {theirs.order_link_id}: here {row['status']} {row['filled_quantity']} "
                            f"fee {row['fees']} fills {fill_sum}; venue {theirs.status} {theirs.cum_exec_qty} "
                            f"fee {theirs.cum_exec_fee}")  # fmt: skip
    on_venue = set(by_link)
    for row in orders:
        if row["is_dry_run"] or row["order_link_id"] in on_venue:
            continue
        if row["status"] != "rejected":  # live (or unsettled) here, unknown there
            lost_orders += 1
            problems.append(f"order {row['order_link_id']} is {row['status']} here and unknown to the venue")

    # Every event published.
    missing_events = len(outbox_ids - world.received_event_ids())
    if unpublished or missing_events:
        problems.append(f"events: {unpublished} unpublished in the outbox, {missing_events} never received")
    result.lost = lost_signals + unanswered + lost_orders + unpublished + missing_events

    # Positions equal to the venue's: size exactly; average entry price and realized PnL up to
    # the rounding drift of executions merged by a dropped event (see ROUNDING_* and F3 in
    # test_findings.py); the drift itself is reported in the notes.
    mismatches = 0
    traded: dict[str, Decimal] = {}
    for execution in world.venue.engine.executions:
        traded[execution.symbol] = traded.get(execution.symbol, ZERO) + execution.exec_qty * execution.exec_price
    drift: dict[str, list[str]] = {}
    for symbol in SYMBOLS:
        venue_position = world.venue.engine.positions[symbol]
        theirs_p = (venue_position.size, venue_position.avg_price, venue_position.cum_realised_pnl)
        row = positions.get(symbol)
        mine_p = (row["size"], row["average_entry_price"], row["realized_pnl"]) if row else (ZERO, ZERO, ZERO)
        if mine_p == theirs_p:
            continue
        price_drift, pnl_drift = abs(mine_p[1] - theirs_p[1]), abs(mine_p[2] - theirs_p[2])
        drift[symbol] = [f"{float(price_drift):.1e}", f"{float(pnl_drift):.1e}"]
        if mine_p[0] != theirs_p[0] or price_drift > ROUNDING_PRICE * max(abs(theirs_p[1]), ONE) \
                or pnl_drift > ROUNDING_PNL * max(traded.get(symbol, ZERO), ONE):  # fmt: skip
            mismatches += 1
            problems.append(f"position {symbol}: here {mine_p}, venue {theirs_p}")
    if drift:
        result.notes["position_rounding_drift"] = drift
    for discrepancy in discrepancies:
        mismatches += 1
        problems.append(f"position discrepancy recorded: {dict(discrepancy)}")
    result.position_mismatches = mismatches
    result.notes.update(lost_signals=lost_signals, unanswered=unanswered, lost_orders=lost_orders,
                        unpublished=unpublished, missing_events=missing_events,
                        signal_statuses=dict(Counter(r["status"] for r in signals.values())),
                        order_statuses=dict(Counter(r["status"] for r in orders)))  # fmt: skip
    return result


def _signal_leg(order_link_id: str) -> tuple[str, str]:
    """``om-<key>-<attempt>-<leg>`` → (key, leg): one order per signal and leg, any attempt."""
    key, _attempt, leg = order_link_id.removeprefix(OUR_PREFIX).rsplit("-", 2)
    return key, leg


# --------------------------------------------------------------------------- small helpers


async def post_sync(port: int, scope: str = "all") -> dict[str, Any]:
    """The operator's ``POST /api/v1/sync``: a full reconciliation."""
    async with aiohttp.ClientSession() as http, http.post(
        f"http://127.0.0.1:{port}/api/v1/sync", json={"scope": scope}, headers={"X-API-Key": API_KEY},
        timeout=aiohttp.ClientTimeout(total=60),
    ) as response:  # fmt: skip
        body = await response.json()
        if response.status != 200:
            return {"status": f"HTTP {response.status}", **body}
        return body  # type: ignore[no-any-return]


async def ready_of(port: int) -> dict[str, Any]:
    """``GET /ready`` of a daemon; {} when it does not answer (starting, stopping)."""
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
            async with http.get(f"http://127.0.0.1:{port}/ready") as response:
                return await response.json()  # type: ignore[no-any-return]
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return {}


async def get_metrics(port: int) -> dict[str, Any]:
    """``GET /api/v1/metrics`` of the running daemon."""
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        async with http.get(f"http://127.0.0.1:{port}/api/v1/metrics", headers={"X-API-Key": API_KEY}) as response:
            return await response.json()  # type: ignore[no-any-return]


async def queue_ready(queue: str) -> int:
    """Messages ready in ``queue`` (not those delivered and not yet acknowledged)."""
    connection = await aiormq.connect(support.AMQP_URL)
    try:
        channel = await connection.channel()
        declared = await channel.queue_declare(queue, passive=True)
        return int(declared.message_count or 0)
    finally:
        await connection.close()


def unsettled(conninfo: str, planned: Sequence[Planned], acked: set[str]) -> list[str]:
    """Signals neither logged as acknowledged nor final in the database."""
    waiting = [item.signal_id for item in planned if item.signal_id not in acked]
    with psycopg.connect(conninfo) as conn:
        final = {row[0] for row in conn.execute("SELECT signal_id FROM signals WHERE signal_id = ANY(%s) AND status IN "
                                                "('accepted', 'rejected')", (waiting,))}  # fmt: skip
    return [signal_id for signal_id in waiting if signal_id not in final]


def outbox_state(conninfo: str) -> tuple[int, set[str]]:
    """Rows not yet published (any queue), and the order events' ids (what the reader must get)."""
    with psycopg.connect(conninfo) as conn:
        rows = conn.execute("SELECT event_id, published_at IS NULL, queue FROM order_events_outbox").fetchall()
    return (sum(1 for _, pending, _ in rows if pending),
            {str(event_id) for event_id, _, queue in rows if queue == ORDER_EVENTS_QUEUE})  # fmt: skip


async def poll_until(predicate: Callable[[], bool], timeout_s: float, what: str, *, every_s: float = 0.05) -> None:
    """For state no log line announces (the in-process venue's counters): bounded polling."""
    try:
        with anyio.fail_after(timeout_s):
            while not predicate():
                await anyio.sleep(every_s)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout_s}s waiting for {what}") from None


# --------------------------------------------------------------------------- several instances

LEADING = "leading"
# Lines after which an instance no longer trades: a drained hand-over, a lost lease, a fenced write.
STOPPED_LEADING = frozenset({
    "trading stopped; giving the lease back", "leader lease lost to another instance; trading stopped",
    "leader lease could not be renewed in time; trading stopped", "fenced: another instance leads; trading stopped",
})  # fmt: skip


def log_time(line: dict[str, Any]) -> float:
    return datetime.fromisoformat(str(line["timestamp"])).timestamp()


def first_time(daemon: Daemon, message: str, after: float = 0.0) -> float | None:
    """When ``daemon`` first logged ``message`` at or after ``after`` (wall clock), or None."""
    return next((t for line in daemon.lines if line.get("message") == message and (t := log_time(line)) >= after),
                None)  # fmt: skip


def leading_intervals(world: ChaosWorld) -> list[tuple[float, float, int, int]]:
    """Every stretch in which a daemon led: (start, end, epoch, daemon number), from its log. It
    ends with a stop line, else with its last line (killed), else never (still leading)."""
    intervals = []
    for number, daemon in enumerate(world.daemons, start=1):
        start: tuple[float, int] | None = None
        for line in daemon.lines:
            message = line.get("message")
            if message == LEADING:
                start = (log_time(line), int(line["epoch"]))
            elif message in STOPPED_LEADING and start is not None:
                intervals.append((start[0], log_time(line), start[1], number))
                start = None
        if start is not None:
            end = log_time(daemon.lines[-1]) if daemon.returncode is not None else float("inf")
            intervals.append((start[0], end, start[1], number))
    frozen = world.frozen
    return sorted((start, min(end, frozen[n][0]) if n in frozen and start < frozen[n][0] else end, epoch, n)
                  for start, end, epoch, n in intervals)  # fmt: skip


def check_leadership(world: ChaosWorld, result: ScenarioResult) -> None:
    """Never two leaders: the stretches of leading never overlap, and each new leader has a
    larger epoch than the one before it. Also: a standby consumed nothing."""
    intervals = leading_intervals(world)
    result.notes["leaders"] = [{"daemon": n, "epoch": e, "s": round(end - start, 2) if end != float("inf") else None}
                               for start, end, e, n in intervals]  # fmt: skip
    for (start_a, end_a, epoch_a, a), (start_b, _, epoch_b, b) in zip(intervals, intervals[1:]):
        if start_b < end_a:
            result.problems.append(f"two leaders: daemon {b} (epoch {epoch_b}) led {end_a - start_b:.3f}s before "
                                   f"daemon {a} (epoch {epoch_a}) stopped")  # fmt: skip
        if epoch_b <= epoch_a:
            result.problems.append(f"epoch did not grow: {epoch_a} then {epoch_b}")
    for number, daemon in enumerate(world.daemons, start=1):
        if not any(n == number for *_, n in intervals) and daemon.count("signal received"):
            result.problems.append(f"daemon {number} never led but handled signals")
    for number, (_, thawed) in world.frozen.items():
        sent = [line for line in world.daemons[number - 1].lines
                if line.get("message") == "order sent" and log_time(line) >= thawed]  # fmt: skip
        if sent:
            result.problems.append(f"daemon {number} sent {len(sent)} orders after it was thawed, deposed")


def fifo_inversions(world: ChaosWorld, planned: Sequence[Planned]) -> int:
    """Per symbol, pairs of our venue orders created in the opposite order of their signals."""
    index_by_key = {link_key(item.signal_id): index for index, item in enumerate(planned)}
    by_symbol: dict[str, list[int]] = {}
    for order in world.venue.engine.orders.values():  # in the order the venue created them
        key = link_key_of(order.order_link_id)
        if key in index_by_key:
            by_symbol.setdefault(order.symbol, []).append(index_by_key[key])
    return sum(1 for seq in by_symbol.values() for i, a in enumerate(seq) for b in seq[i + 1:] if b < a)
