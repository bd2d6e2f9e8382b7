"""One measured run: fresh database, fresh queues, a fresh venue process, the subject, the
signals, and the figures. Also the long memory run (soak)."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import attrs

from bench import infra, measure, procs, publisher
from bench.listings import bench_listings, extra_symbols_needed, pick_symbols, prices
from bench.subjects import GATEWAY_KEY, PAPER_KEY, PAPER_SECRET, Subject

POLL_S = 0.5  # progress polling; the bench is not a test, polling is fine here
# Nothing settled for this long while the queue holds nothing ready: the missing signals went
# elsewhere (another consumer) or are stuck; stop waiting instead of running into --timeout.
STALL_S = 60.0
SOAK_SAMPLE_S = 5.0
SOAK_PURGE_S = 30.0
OUTPUT_QUEUE = "order-manager.order_events"


@attrs.frozen
class Settings:
    repo: Path
    results: Path
    symbols: int
    amount_usdt: Decimal
    timeout_s: float
    venue_events: bool
    enforce_limits: bool  # the venue keeps Bybit's rate limits (else lifted: see bench.venue)
    count_venue_calls: bool = False  # venue access log on: requests per signal by path
    quiet_pct: float = 25.0  # wait for the machine to be at most this busy before publishing
    quiet_wait_s: float = 120.0
    profile: bool = False  # py-spy on ordermgr during each of its runs
    daemon_env: Mapping[str, str] = attrs.field(factory=dict)  # more of ordermgr's variables
    # The venue's prices step (and its ticker stream publishes) this often, as Bybit pushes
    # tickers every 100 ms; 0 = frozen prices, and every reference price is read over REST.
    price_walk_s: float = 0.1

    @property
    def logs(self) -> Path:
        return self.results / "logs"


@attrs.define
class PhaseResult:
    subject: str
    phase: str
    signals: int
    rate: float  # requested publish rate, 0 = as fast as possible
    venue_latency_ms: float  # the network delay the venue added to every request (0 = none)
    publish_s: float
    publish_rate: float
    publish_max_lag_s: float
    settled: int
    refused: int
    placed: int  # venue orders matched to our signals
    throughput: float  # orders/s between first and last venue receipt
    latency: measure.LatencyStats
    wall_s: float  # first publish → last signal settled
    cpu_s: float  # subject's CPU between first publish and last settle
    cpu_ms_per_signal: float
    idle_cpu_pct: float  # the subject's CPU before any signal, % of one core (ordermgr: the ticker stream)
    peak_rss_mb: float  # VmHWM over the subject's life
    end_rss_mb: float
    venue_cpu_s: float
    system_busy_pct: float  # all cores, whole machine, first publish → settled
    baseline_busy_pct: float  # the same over 1 s before publishing: others' work on a shared box
    db_commits_per_signal: float  # subject's transactions (pg_stat_database), bench's own taken out
    db_rows_per_signal: float  # rows inserted + updated + deleted
    venue_calls_per_signal: dict[str, float]  # by "METHOD /path"; empty unless --count-venue-calls
    foreign_consumers: int  # most other consumers seen on the signal queue during the run
    log: str
    profile: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


@attrs.define
class SoakResult:
    subject: str
    seconds: float
    rate: float
    published: int
    settled: int
    max_backlog: int
    drained: bool
    start_rss_mb: float  # right before the first signal
    end_rss_mb: float
    peak_rss_mb: float
    trend: measure.Trend
    samples: list[tuple[float, float, int]]  # (seconds since start, RSS MiB, settled)
    venue_resets: int
    foreign_consumers: int
    log: str

    def as_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


class Stage:
    """Fresh database and queues, the venue process, then the subject, ready to consume."""

    def __init__(self, settings: Settings, subject: Subject, tag: str) -> None:
        self.settings, self.subject, self.tag = settings, subject, tag
        self.venue: procs.Child | None = None
        self.child: procs.Child | None = None
        self.control: infra.VenueControl | None = None

    async def __aenter__(self) -> Stage:
        try:
            return await self._start()
        except BaseException:
            await self.__aexit__()
            raise

    async def _start(self) -> Stage:
        s = self.settings
        await infra.delete_queues()
        await infra.fresh_database()
        port = infra.free_port()
        argv = [sys.executable, "-m", "bench.venue", "--host", "127.0.0.1", "--port", str(port),
                "--api-key", PAPER_KEY, "--api-secret", PAPER_SECRET, "--seed", "0",
                "--price-walk-interval", str(s.price_walk_s), "--initial-balance", "1000000000000",
                "--extra-symbols", str(extra_symbols_needed(s.symbols, s.amount_usdt)),
                "--ws-gateway", "--gateway-api-key", GATEWAY_KEY]  # fmt: skip
        if not s.enforce_limits:
            argv += ["--lift-rate-limits"]
        if s.venue_events:
            argv += ["--amqp-url", infra.AMQP_URL]
        if s.count_venue_calls:
            argv += ["--access-log"]
        self.venue = procs.spawn("venue", argv, env=procs.python_env(s.repo, {}), cwd=s.repo,
                                 log_path=s.logs / f"{self.tag}-venue.log")  # fmt: skip
        self.control = infra.VenueControl(f"http://127.0.0.1:{port}")
        await self.control.wait_up(30)
        # The market streams before the first signal, as it does in production (ws-gateway has the
        # channels from earlier or for other services): the venue publishes the run's tickers
        # for either subject, and ordermgr consumes them from its start.
        await self.control.subscribe_tickers(pick_symbols(s.symbols, s.amount_usdt), GATEWAY_KEY)
        self.child = self.subject.start(s.repo, self.control.base_url, s.logs / f"{self.tag}-{self.subject.name}.log",
                                        s.daemon_env)  # fmt: skip
        await procs.wait_for_line(self.child, self.subject.ready_line, 90)
        with anyio.fail_after(30):
            while await infra.consumer_count(infra.SIGNAL_QUEUE) < 1:
                await anyio.sleep(0.1)
        await check_alone()
        # Let start-up work (first balance/time checks, pool warm-up) finish before measuring.
        await anyio.sleep(1.0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        # Synchronous stops: they must finish even when the run is being cancelled.
        if self.child is not None:
            self.child.stop(20)
        if self.venue is not None:
            self.venue.stop(5)
        with anyio.CancelScope(shield=True), anyio.move_on_after(10):
            await infra.delete_queues()


async def check_alone() -> None:
    """The broker is shared: a test run's daemon consuming the same queue would take our
    signals. Refuse to measure rather than print wrong figures."""
    consumers = await infra.consumer_count(infra.SIGNAL_QUEUE)
    if consumers > 1:
        raise RuntimeError(f"{consumers} consumers on {infra.SIGNAL_QUEUE}: another process (a test run?) "
                           "consumes the bench's signals; run the bench alone")  # fmt: skip


async def wait_quiet(threshold_pct: float, limit_s: float) -> float:
    """Wait (at most ``limit_s``) for a 1-second window in which the whole machine is at most
    ``threshold_pct`` busy: the box is shared, and someone's test suite would skew one run and
    not the other. Returns the last window's figure."""
    deadline = time.monotonic() + limit_s
    while True:
        before = measure.system_cpu()
        await anyio.sleep(1.0)
        busy = measure.busy_percent(before, measure.system_cpu())
        if threshold_pct <= 0 or busy <= threshold_pct or time.monotonic() >= deadline:
            return busy


async def quiesce(
    pid: int, *, idle_rate: float = 0.0, idle_cpu_s: float = 0.01, window_s: float = 0.5, limit_s: float = 15.0
) -> None:
    """Wait until the process is idle (trailing work such as fills and outbox publishing is part
    of the cost of the signals), at most ``limit_s``. ``idle_rate``: the CPU seconds per second
    it spends with no signal at all (ordermgr consuming the ticker stream), which never stops."""
    deadline = time.monotonic() + limit_s
    before = measure.cpu_seconds(pid)
    while time.monotonic() < deadline:
        await anyio.sleep(window_s)
        now = measure.cpu_seconds(pid)
        if now - before <= idle_cpu_s + 1.5 * idle_rate * window_s:
            return
        before = now


async def idle_cpu_rate(pid: int, window_s: float = 1.0) -> float:
    """CPU seconds per second the process spends before any signal (ordermgr: the ticker stream)."""
    before = measure.cpu_seconds(pid)
    await anyio.sleep(window_s)
    return (measure.cpu_seconds(pid) - before) / window_s


@attrs.define
class ConsumerWatch:
    """Samples the signal queue's consumers every second for the whole run: the broker is shared,
    and a test run's daemon would take some of the bench's signals."""

    most: int = 0

    async def run(self) -> None:
        while True:
            self.most = max(self.most, await infra.consumer_count(infra.SIGNAL_QUEUE))
            await anyio.sleep(1.0)

    @property
    def foreign(self) -> int:
        return max(0, self.most - 1)


async def _wait_settled(stage: Stage, expected: int, deadline: float) -> int:
    """Poll the subject's database until ``expected`` signals are settled, the deadline passes,
    or progress has stalled with nothing left in the queue."""
    assert stage.child is not None
    settled, changed_at = -1, time.monotonic()
    while time.monotonic() < deadline:
        now_settled = await infra.scalar(stage.subject.settled_sql)
        if now_settled >= expected:
            return now_settled
        if now_settled != settled:
            settled, changed_at = now_settled, time.monotonic()
        elif time.monotonic() - changed_at >= STALL_S and (await infra.queue_state(infra.SIGNAL_QUEUE))[0] == 0:
            print(f"  ! {stage.subject.name}: stalled at {settled}/{expected} with the queue empty", flush=True)
            return settled
        if not stage.child.alive():
            raise RuntimeError(f"{stage.subject.name} died mid-run; see {stage.child.log_path}\n"
                               f"{procs.tail(stage.child.log_path)}")  # fmt: skip
        await anyio.sleep(POLL_S)
    return max(settled, 0)


async def run_phase(
    settings: Settings, subject: Subject, phase: str, count: int, rate: float, venue_latency_ms: float = 0.0
) -> PhaseResult:
    """One run; ``venue_latency_ms``: a network delay added to every venue request (market data
    included) once the subject is ready, so each round trip on a signal's path shows."""
    tag = f"{subject.name}-{phase}"
    symbols = pick_symbols(settings.symbols, settings.amount_usdt)
    items = publisher.plan(tag, count, symbols)
    prices = _prices(settings)
    async with Stage(settings, subject, tag) as stage:
        assert stage.child is not None and stage.venue is not None and stage.control is not None
        if venue_latency_ms:
            await stage.control.set_faults(network_latency_s=venue_latency_ms / 1000)
        pid, venue_pid = stage.child.pid, stage.venue.pid
        profiled = settings.profile and subject.name == "ordermgr"
        spy = _start_profiler(settings, stage.child, tag) if profiled else None
        if spy is not None:
            await anyio.sleep(0.5)  # let py-spy attach before the first signal
        baseline_busy = await wait_quiet(settings.quiet_pct, settings.quiet_wait_s)
        idle_rate = await idle_cpu_rate(pid)
        if baseline_busy > settings.quiet_pct > 0:
            print(f"  ! {tag}: the machine is {baseline_busy:.0f} % busy before the run (others' work?); "
                  "figures will be noisy", flush=True)  # fmt: skip
        db0, own0 = await infra.db_counters(), infra.own_queries
        venue_log0 = stage.venue.log_path.stat().st_size
        cpu0, venue_cpu0, system0 = measure.cpu_seconds(pid), measure.cpu_seconds(venue_pid), measure.system_cpu()
        watch = ConsumerWatch()
        async with anyio.create_task_group() as tg:
            tg.start_soon(watch.run)
            report = await publisher.publish(items, rate=rate, amount_usdt=settings.amount_usdt, prices=prices)
            settled = await _wait_settled(stage, count, time.monotonic() + settings.timeout_s)
            tg.cancel_scope.cancel()
        wall_s = time.monotonic() - report.started
        system_busy = measure.busy_percent(system0, measure.system_cpu())
        await quiesce(pid, idle_rate=idle_rate)
        cpu_s = measure.cpu_seconds(pid) - cpu0
        venue_cpu_s = measure.cpu_seconds(venue_pid) - venue_cpu0
        peak, end = measure.peak_rss_mb(pid), measure.rss_mb(pid)
        profile = _stop_profiler(spy) if spy is not None else None
        refused = await infra.scalar(subject.refused_sql)
        calls = infra.venue_calls(stage.venue.log_path, venue_log0, stage.venue.log_path.stat().st_size)
        receipts = await anyio.to_thread.run_sync(
            infra.venue_receipts, stage.control.base_url, PAPER_KEY, PAPER_SECRET
        )
        links = await infra.pairs(subject.links_sql)
    # After the stop: exiting backends have published their counters.
    db = await infra.db_counters() - db0
    own = infra.own_queries - own0
    ours = {links[link]: at for link, at in receipts.items() if links.get(link) in report.published_ms}
    latencies = [at - report.published_ms[signal_id] for signal_id, at in ours.items()]
    if settled < count:
        print(f"  ! {tag}: only {settled}/{count} signals settled within {settings.timeout_s:.0f} s", flush=True)
    if watch.foreign:
        print(f"  ! {tag}: another consumer was on {infra.SIGNAL_QUEUE} during the run: figures are not "
              "trustworthy (run the bench alone)", flush=True)  # fmt: skip
    if refused:
        print(f"  ! {tag}: {refused} signals refused (no venue order); see {stage.child.log_path}", flush=True)
    return PhaseResult(
        subject=subject.name, phase=phase, signals=count, rate=rate, venue_latency_ms=venue_latency_ms,
        publish_s=report.duration_s, publish_rate=report.achieved_rate, publish_max_lag_s=report.max_lag_s,
        settled=settled, refused=refused, placed=len(ours),
        throughput=measure.throughput(list(ours.values())), latency=measure.LatencyStats.of(latencies),
        wall_s=wall_s, cpu_s=cpu_s, cpu_ms_per_signal=cpu_s * 1000 / count if count else math.nan,
        idle_cpu_pct=idle_rate * 100,
        peak_rss_mb=peak, end_rss_mb=end, venue_cpu_s=venue_cpu_s, system_busy_pct=system_busy,
        baseline_busy_pct=baseline_busy, db_commits_per_signal=(db.commits - own) / count,
        db_rows_per_signal=db.rows_written / count,
        venue_calls_per_signal={k: v / count for k, v in sorted(calls.items())}, foreign_consumers=watch.foreign,
        log=str(stage.child.log_path),
        profile=profile,
    )  # fmt: skip


async def run_soak(
    settings: Settings, subject: Subject, seconds: float, rate: float, venue_reset_every: int
) -> SoakResult:
    """Publish at ``rate`` for ``seconds`` and sample the subject's RSS every few seconds.

    The paper venue keeps every order and execution in memory and its queries scan them; the
    soak therefore resets it every ``venue_reset_every`` orders (its market orders are all
    filled, nothing is lost that the soak measures). The daemon's output queue has no consumer here and is purged now and
    then so RabbitMQ does not hold a day's worth of events."""
    tag = f"{subject.name}-soak"
    count = int(seconds * rate)
    symbols = pick_symbols(settings.symbols, settings.amount_usdt)
    items = publisher.plan(tag, count, symbols)
    samples: list[tuple[float, float, int]] = []
    resets = 0
    max_backlog = 0
    report = publisher.PublishReport()
    async with Stage(settings, subject, tag) as stage:
        assert stage.child is not None and stage.control is not None
        pid, control = stage.child.pid, stage.control
        start_rss = measure.rss_mb(pid)
        started = time.monotonic()
        last_purge = started

        async def sample() -> None:
            nonlocal resets, max_backlog, last_purge
            settled = await infra.scalar(subject.settled_sql)
            samples.append((time.monotonic() - started, measure.rss_mb(pid), settled))
            max_backlog = max(max_backlog, len(report.published_ms) - settled)
            if len(samples) % 12 == 1:  # about once a minute
                t, mb, _ = samples[-1]
                print(f"bench:   soak {t:4.0f} s: RSS {mb:.1f} MiB, published {len(report.published_ms)}, "
                      f"settled {settled}", flush=True)  # fmt: skip
            if venue_reset_every and await control.order_count() >= venue_reset_every:
                await control.reset()
                resets += 1
            if time.monotonic() - last_purge >= SOAK_PURGE_S:
                await infra.purge_queue(OUTPUT_QUEUE)
                last_purge = time.monotonic()

        async def sampler() -> None:
            while True:
                await sample()
                if not stage.child or not stage.child.alive():
                    return
                await anyio.sleep(SOAK_SAMPLE_S)

        watch = ConsumerWatch()
        async with anyio.create_task_group() as tg:
            tg.start_soon(sampler)
            tg.start_soon(watch.run)
            await publisher.publish(items, rate=rate, amount_usdt=settings.amount_usdt, prices=_prices(settings),
                                    report=report)  # fmt: skip
            settled = await _wait_settled(stage, count, time.monotonic() + settings.timeout_s)
            tg.cancel_scope.cancel()
        await sample()
        end_rss, peak = measure.rss_mb(pid), measure.peak_rss_mb(pid)
    # The trend is judged while signals flow: samples after the last publish only show the drain.
    publishing = [(t, mb) for t, mb, _ in samples if t <= seconds]
    return SoakResult(
        subject=subject.name, seconds=seconds, rate=rate, published=len(report.published_ms), settled=settled,
        max_backlog=max_backlog, drained=settled >= count, start_rss_mb=start_rss, end_rss_mb=end_rss,
        peak_rss_mb=peak, trend=measure.rss_trend(publishing), samples=samples, venue_resets=resets,
        foreign_consumers=watch.foreign, log=str(stage.child.log_path),
    )  # fmt: skip


def _prices(settings: Settings) -> dict[str, Decimal]:
    return prices(bench_listings(extra_symbols_needed(settings.symbols, settings.amount_usdt)))


def _start_profiler(settings: Settings, child: procs.Child, tag: str) -> tuple[procs.Child, Path] | None:
    """py-spy (installed into the venv by hand: ``pip install py-spy``) attached to the subject;
    raw collapsed stacks, summarised by ``bench.profile``. ``--gil`` keeps only samples of the
    thread holding the GIL: one asyncio process can use one core of Python at most, so that is
    the time to cut (threads waiting in sockets or queues would otherwise count as busy)."""
    spy = Path(sys.executable).parent / "py-spy"
    if not spy.exists():
        print("  ! --profile: py-spy is not installed in the venv (.venv/bin/pip install py-spy)", flush=True)
        return None
    out = settings.results / f"profile-{tag}.txt"
    argv = [str(spy), "record", "--pid", str(child.pid), "--rate", "200", "--format", "raw", "--threads", "--gil",
            "--nonblocking", "--output", str(out)]  # fmt: skip
    started = procs.spawn("py-spy", argv, env=procs.python_env(settings.repo, {}), cwd=settings.repo,
                          log_path=settings.logs / f"{tag}-py-spy.log")  # fmt: skip
    return started, out


def _stop_profiler(spy: tuple[procs.Child, Path] | None) -> str | None:
    if spy is None:
        return None
    child, out = spy
    # py-spy writes its output on SIGINT, not on SIGTERM.
    child.process.send_signal(2)
    try:
        child.process.wait(30)
    finally:
        child.stop(5)
    return str(out)
