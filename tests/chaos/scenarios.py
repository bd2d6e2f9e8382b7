"""The scenarios of the fault suite. Each runs a stream of signals against the paper venue, breaks
something at a chosen moment, lets the daemon recover, and returns the checked ScenarioResult.

Waiting is on the daemon's log lines (acknowledgements, "ready to take signals", "consuming"),
process exits, the venue's fault counters and the events queue. The only sleeps are the faults
themselves (an outage's length, the random instant of a kill); the only polling is bounded and
for convergence at the end (``ChaosWorld.finish``, and the event-fault scenario's recovery).
"""

from __future__ import annotations

import math
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import psycopg

from ordermgr.amqp.broker import SIGNAL_QUEUE
from ordermgr.db.controls import TRADING_STATE_QUEUE
from ordermgr.paper import PaperVenue
from tests import support
from tests.chaos.harness import (
    API_KEY, OUR_PREFIX, STOPPED_LEADING, SYMBOLS, VENUE_TO_OURS, ChaosWorld, ObservedFaults, ScenarioResult, Sizes,
    chaos_world, first_time, get_metrics, plan_stream, poll_until, queue_ready,
)  # fmt: skip
from tests.service import Daemon, reset_queues

DRAIN_TIMEOUT_S = 10.0  # ORDERMANAGER_DRAIN_TIMEOUT in the daemon's environment (harness.daemon_env)
FLUSH_BOUND_S = 5.0  # the outbox flush after the drain (app._Roles._run_actors)


async def sigkill(conninfo: str, log_dir: Path, sizes: Sizes, result: ScenarioResult) -> ScenarioResult:
    """SIGKILL at random instants (seeded) during the stream, restarted each time. After the 3rd,
    7th, 11th, ... kill the restarted daemon is killed once more while it reconciles at startup
    (between "schema up to date" and "ready to take signals", when it gets there in time), then
    started again.

    recover_s: the longest time from a restart (process spawned) to its first acknowledgement."""
    # A restarted single instance first waits for its killed predecessor's lease to lapse; a
    # short lease keeps this scenario about crash recovery (two instances test the failover).
    async with chaos_world("sigkill", conninfo, log_dir, seed=11, ORDERMANAGER_LEADER_LEASE_SECONDS="2") as world:
        planned = plan_stream("kill", sizes.kill_signals, world.rng)
        result.signals = len(planned)
        total = len(planned)
        margin = max(2, total // 20)
        points = sorted(world.rng.sample(range(margin, total - margin), sizes.kills))
        await world.start_daemon()
        world.start_stream(planned, sizes.rate)
        recoveries, startup_kills = [], 0
        for index, point in enumerate(points, start=1):
            await world.wait_acked(point, timeout_s=sizes.timeout_s)
            await anyio.sleep(world.rng.uniform(0.0, 0.05))  # the random instant: somewhere in a signal's handling
            await world.kill()
            if index % 4 == 3:
                starting = await world.spawn_daemon()
                await starting.wait_for("schema up to date", timeout_s=30)
                await anyio.sleep(world.rng.uniform(0.0, 0.1))  # somewhere in startup reconciliation
                await world.kill()
                startup_kills += 1
            restarted = time.monotonic()
            await world.start_daemon()
            recoveries.append(await world.next_ack(total=total, since=restarted))
        result.recover_s = max(recoveries)
        result.notes["kills"] = {"mid_stream": len(points), "during_startup": startup_kills}
        await world.finish(planned, result, timeout_s=sizes.timeout_s)
    return result


async def rabbitmq_restart(conninfo: str, log_dir: Path, sizes: Sizes, result: ScenarioResult) -> ScenarioResult:
    """The daemon's RabbitMQ connection cut mid-stream for ``amqp_outage_s`` (every connection
    dropped, new ones refused), as a broker restart looks from the daemon; the broker keeps the
    messages and requeues the unacknowledged ones.

    recover_s: from the restore to the first acknowledgement after the signal queue is consumed
    again."""
    async with chaos_world("rabbitmq-restart", conninfo, log_dir, seed=12) as world:
        planned = plan_stream("amqp", sizes.signals, world.rng)
        result.signals = len(planned)
        await world.start_daemon()
        world.start_stream(planned, sizes.rate)
        await world.wait_acked(len(planned) // 3, timeout_s=sizes.timeout_s)
        subscriptions = world.daemon.count("consuming", queue=SIGNAL_QUEUE)
        await world.amqp_proxy.cut()
        await anyio.sleep(sizes.amqp_outage_s)  # the outage
        world.amqp_proxy.restore()
        restored = time.monotonic()
        await world.daemon.wait_until(lambda: world.daemon.count("consuming", queue=SIGNAL_QUEUE) > subscriptions,
                                      timeout_s=30, what="the signal queue consumed again")  # fmt: skip
        result.recover_s = await world.next_ack(total=len(planned), since=restored)
        result.notes["reconnects"] = world.daemon.count("rabbitmq connection lost; reconnecting")
        await world.finish(planned, result, timeout_s=sizes.timeout_s)
    return result


async def postgres_stop(conninfo: str, log_dir: Path, sizes: Sizes, result: ScenarioResult) -> ScenarioResult:
    """PostgreSQL unreachable for the daemon mid-stream for ``pg_outage_s`` (connections dropped,
    new ones refused), as a stopped server looks.

    recover_s: from the restore to the next acknowledgement."""
    async with chaos_world("postgres-stop", conninfo, log_dir, seed=13) as world:
        planned = plan_stream("pg", sizes.signals, world.rng)
        result.signals = len(planned)
        await world.start_daemon()
        world.start_stream(planned, sizes.rate)
        await world.wait_acked(len(planned) // 3, timeout_s=sizes.timeout_s)
        await world.pg_proxy.cut()
        await anyio.sleep(sizes.pg_outage_s)  # the outage
        world.pg_proxy.restore()
        restored = time.monotonic()
        result.recover_s = await world.next_ack(total=len(planned), since=restored)
        await world.finish(planned, result, timeout_s=sizes.timeout_s)
    return result


VENUE_FAULTS = ("lose_response_next", "rate_limit_next", "http_error_next")


async def venue_faults(conninfo: str, log_dir: Path, sizes: Sizes, result: ScenarioResult) -> ScenarioResult:
    """Bursts of venue faults during the stream, one kind after the other: orders executed whose
    response is lost (the request times out: outcome unknown), 10006 "too many visits" answers,
    and HTTP 502 answers (every private request they hit: balance, create, lookups).

    recover_s: the longest time from a burst used up (its counter back to 0) to the next
    acknowledgement."""
    async with chaos_world("venue-faults", conninfo, log_dir, seed=14) as world:
        planned = plan_stream("venue", sizes.signals, world.rng)
        result.signals = len(planned)
        total = len(planned)
        await world.start_daemon()
        world.start_stream(planned, sizes.rate)
        # The HTTP server reads venue.faults at each request: request faults that say when used up.
        faults = world.venue.faults = ObservedFaults()
        steps = [kind for _ in range(sizes.bursts) for kind in VENUE_FAULTS]
        recoveries: dict[str, float] = {}
        for index, kind in enumerate(steps, start=1):
            await world.wait_acked(total * index // (len(steps) + 1), timeout_s=sizes.timeout_s)
            with anyio.fail_after(sizes.timeout_s):
                await faults.arm(kind, sizes.burst_length).wait()
            ended = time.monotonic()
            took = await world.next_ack(total=total, since=ended)
            recoveries[kind] = max(recoveries.get(kind, 0.0), took)
        result.recover_s = max(recoveries.values())
        result.notes["recover_s_by_fault"] = {k: round(v, 2) for k, v in recoveries.items()}
        await world.finish(planned, result, timeout_s=sizes.timeout_s)
    return result


RATE_LIMIT_MAX_AGE_S = 2.0


async def rate_limit_flood(conninfo: str, log_dir: Path, sizes: Sizes, result: ScenarioResult) -> ScenarioResult:
    """The stream at 2.5 times Bybit's 10 creates/s against a venue that enforces it, with a 2 s
    signal age limit: the budget makes orders wait instead of meeting 10006, cancels (of resting
    Limit orders, by opposite-side signals) go before waiting creates, and what cannot go in time
    is rejected stale_signal, answered, never sent. Besides the invariants: 10006 answers at most
    1 % of the venue's create requests, the budget's cancel lane never waited, and no signal
    refused for anything but its age.

    recover_s: from the last publish to the last acknowledgement (the backlog the quota leaves)."""
    async with chaos_world("rate-limit-flood", conninfo, log_dir, seed=17, enforce_rate_limits=True,
                           ORDERMANAGER_SIGNAL_MAX_AGE_SECONDS=str(RATE_LIMIT_MAX_AGE_S)) as world:  # fmt: skip
        planned = plan_stream("flood", sizes.signals, world.rng, limit_share=0.3)
        result.signals = len(planned)
        await world.start_daemon()
        world.start_stream(planned, sizes.rate)
        await world.publishing_done(sizes.timeout_s)
        published = time.monotonic()
        await world.wait_acked(len(planned), timeout_s=sizes.timeout_s)
        result.recover_s = time.monotonic() - published
        budget = (await get_metrics(world.daemon.port))["rate_limits"]
        await world.finish(planned, result, timeout_s=sizes.timeout_s)
    create = world.venue.limits.totals.get("/v5/order/create", {"requests": 0, "refused": 0})
    cancel_lane = budget["lanes"]["cancel"]
    result.notes["rate_limits"] = {"venue_create": create, "venue_cancel": world.venue.limits.totals.get(
        "/v5/order/cancel"), "cancel_lane": cancel_lane, "create_waited": budget["endpoints"]["/v5/order/create"]
        ["waited"]}  # fmt: skip
    if create["refused"] > 0.01 * create["requests"]:
        result.problems.append(f"10006 storm: {create['refused']} of {create['requests']} creates refused")
    if cancel_lane["requests"] == 0 or cancel_lane["waited"]:
        result.problems.append(f"cancels: {cancel_lane} (expected some, none of them waiting)")
    refusals = rejection_codes(conninfo)
    if set(refusals) - {"stale_signal"}:
        result.problems.append(f"signals refused for something else than their age: {refusals}")
    result.notes["rejections"] = refusals
    return result


def rejection_codes(conninfo: str) -> dict[str, int]:
    """Why signals were rejected: their code, or their orders' (a create that waited too long)."""
    with psycopg.connect(conninfo) as conn:
        rows = conn.execute("""
            SELECT coalesce(s.rejection_code, (SELECT split_part(min(o.rejection_reason), ':', 1) FROM orders o
                                               WHERE o.signal_id = s.signal_id)), count(*)
            FROM signals s WHERE s.status = 'rejected' GROUP BY 1""").fetchall()  # fmt: skip
    return {str(code): int(n) for code, n in rows}


async def event_faults(conninfo: str, log_dir: Path, sizes: Sizes, result: ScenarioResult) -> ScenarioResult:
    """ws-gateway order events duplicated (30 %), dropped (20 %), delayed and reordered for the
    whole stream. Dropped fills can only come back through the daemon's own periodic sync.

    recover_s: from the faults switched off (stream done, prices frozen) until the database
    agrees with the venue on every order by the daemon's periodic sync alone."""
    async with chaos_world("event-faults", conninfo, log_dir, seed=15, market_fill_parts=3) as world:
        planned = plan_stream("events", sizes.signals, world.rng)
        result.signals = len(planned)
        faults = world.venue.faults
        faults.event_duplicate, faults.event_drop, faults.event_reorder, faults.event_delay_s = 0.3, 0.2, True, 0.002
        await world.start_daemon()
        world.start_stream(planned, sizes.rate)
        await world.publishing_done(sizes.timeout_s)
        await world.wait_acked(len(planned), timeout_s=sizes.timeout_s)
        world.stop_prices()
        faults.event_duplicate, faults.event_drop, faults.event_reorder, faults.event_delay_s = 0.0, 0.0, False, 0.0
        off = time.monotonic()
        await poll_until(lambda: orders_agree(world), 30, "the periodic sync bringing every order in line",
                         every_s=0.1)  # fmt: skip
        result.recover_s = time.monotonic() - off
        stats = world.venue.events.stats
        result.notes["events"] = {"dropped": stats.dropped, "duplicated": stats.duplicated}
        if not (stats.dropped and stats.duplicated):
            result.problems.append(f"the event faults did not fire: {stats}")
        await world.finish(planned, result, timeout_s=sizes.timeout_s)
    return result


async def sigterm(conninfo: str, log_dir: Path, sizes: Sizes, result: ScenarioResult) -> ScenarioResult:
    """SIGTERM mid-stream: the daemon drains the signals in hand and exits 0 within the drain
    bound; a restart finishes the rest.

    recover_s: from the restart (process spawned) to its first acknowledgement."""
    async with chaos_world("sigterm", conninfo, log_dir, seed=16) as world:
        planned = plan_stream("term", sizes.signals, world.rng)
        result.signals = len(planned)
        stopping = await world.start_daemon()
        world.start_stream(planned, sizes.rate)
        await world.wait_acked(len(planned) // 2, timeout_s=sizes.timeout_s)
        stopping.terminate()
        asked = time.monotonic()
        bound_s = DRAIN_TIMEOUT_S + FLUSH_BOUND_S + 3.0
        try:
            code = await stopping.wait_exit(timeout_s=bound_s)
        except TimeoutError:
            code = None
            result.problems.append(f"no exit within {bound_s}s of SIGTERM")
            stopping.kill()
            await stopping.wait_exit()
        result.notes["exit_s"] = round(time.monotonic() - asked, 2)
        if code != 0:
            result.problems.append(f"SIGTERM: exit code {code}, expected 0")
        in_hand = signal_ids(stopping, "signal received")
        finished = signal_ids(stopping, "signal acknowledged")
        stop_at = next((i for i, line in enumerate(stopping.lines) if line.get("message") == "stop requested"), 0)
        result.notes["acknowledged_while_draining"] = sum(
            1 for line in stopping.lines[stop_at:] if line.get("message") == "signal acknowledged")
        if stopping.count("drain timed out; unacknowledged signals return to the queue"):
            # Allowed (contract §7.12: the drain is bounded; the rest returns to the queue).
            result.notes["drain"] = "timed out"
        elif in_hand - finished:
            result.problems.append(f"SIGTERM: signals in hand not finished before exit: {sorted(in_hand - finished)}")
        restarted = time.monotonic()
        await world.start_daemon()
        result.recover_s = await world.next_ack(total=len(planned), since=restarted)
        await world.finish(planned, result, timeout_s=sizes.timeout_s)
    return result


def signal_ids(daemon: Daemon, message: str) -> set[str]:
    return {str(line.get("signal_id")) for line in daemon.lines if line.get("message") == message}


def orders_agree(world: ChaosWorld) -> bool:
    """Every venue order of ours has its row with the venue's status and cumulative fill."""
    with psycopg.connect(world.conninfo) as conn:
        mine = {link: (status, filled) for link, status, filled in conn.execute(
            "SELECT order_link_id, status, filled_quantity FROM orders").fetchall()}  # fmt: skip
    return all(
        mine.get(o.order_link_id) == (VENUE_TO_OURS.get(o.status), o.cum_exec_qty)
        for o in world.venue.engine.orders.values()
        if o.order_link_id.startswith(OUR_PREFIX)
    )


# --------------------------------------------------------------------------- two instances (contract §13)

FAILOVER_DRAINED_S = 2.0  # a SIGTERMed leader's standby leads within this of the drain's end
FAILOVER_LOST_S = 10.0  # ... of a SIGKILLed or frozen leader's end


async def _standby(world: ChaosWorld, **env: str) -> Daemon:
    daemon = await world.spawn_daemon(**env)
    await daemon.wait_for("standing by", timeout_s=30)
    return daemon


def _failover(result: ScenarioResult, seconds: float, bound: float) -> None:
    result.notes["failover_s"] = round(seconds, 2)
    if seconds > bound:
        result.problems.append(f"failover took {seconds:.2f}s, over the bound of {bound}s")


async def two_instances(conninfo: str, log_dir: Path, sizes: Sizes, result: ScenarioResult) -> ScenarioResult:
    """Two daemons on one database and one broker from the start, as ``replicas: 2``: one leads,
    the other stands by (consuming nothing) for the whole stream."""
    async with chaos_world("two-instances", conninfo, log_dir, seed=21) as world:
        planned = plan_stream("two", sizes.signals, world.rng)
        result.signals = len(planned)
        await world.start_daemon()
        await _standby(world)
        started = time.monotonic()
        world.start_stream(planned, sizes.rate)
        result.recover_s = await world.next_ack(total=len(planned), since=started)
        await world.finish(planned, result, timeout_s=sizes.timeout_s, several=True)
    return result


async def rolling_deploy(conninfo: str, log_dir: Path, sizes: Sizes, result: ScenarioResult) -> ScenarioResult:
    """An orchestrator's rolling deploy: the new instance starts (a standby) a quarter into the
    stream, the old one gets SIGTERM half way and drains; the new one leads.

    recover_s: from the old leader's end of trading to the new leader's first acknowledgement."""
    async with chaos_world("rolling-deploy", conninfo, log_dir, seed=22) as world:
        planned = plan_stream("roll", sizes.signals, world.rng)
        result.signals = len(planned)
        old = await world.start_daemon()
        world.start_stream(planned, sizes.rate)
        await world.wait_acked(len(planned) // 4, timeout_s=sizes.timeout_s)
        new = await _standby(world)
        await world.wait_acked(len(planned) // 2, timeout_s=sizes.timeout_s)
        old.terminate()
        assert await old.wait_exit(timeout_s=DRAIN_TIMEOUT_S + FLUSH_BOUND_S + 10) == 0
        await new.wait_for("ready to take signals", timeout_s=30)
        handed_over = first_time(old, "trading stopped; giving the lease back")
        leading = first_time(new, "leading")
        assert handed_over is not None and leading is not None
        _failover(result, leading - handed_over, FAILOVER_DRAINED_S)
        result.recover_s = await world.next_ack(total=len(planned), since=time.monotonic() - (time.time() -
                                                                                              handed_over))  # fmt: skip
        await world.finish(planned, result, timeout_s=sizes.timeout_s, several=True)
    return result


async def leader_sigkill(conninfo: str, log_dir: Path, sizes: Sizes, result: ScenarioResult) -> ScenarioResult:
    """The leader SIGKILLed mid-stream with a standby running; the killed one comes back as a standby.

    recover_s: from the kill to the next acknowledgement (by the new leader)."""
    async with chaos_world("leader-sigkill", conninfo, log_dir, seed=23) as world:
        planned = plan_stream("lkill", sizes.signals, world.rng)
        result.signals = len(planned)
        leader = await world.start_daemon()
        standby = await _standby(world)
        world.start_stream(planned, sizes.rate)
        await world.wait_acked(len(planned) // 3, timeout_s=sizes.timeout_s)
        await anyio.sleep(world.rng.uniform(0.0, 0.05))  # the random instant: somewhere in a signal's handling
        killed, killed_wall = time.monotonic(), time.time()
        leader.kill()
        assert await leader.wait_exit() == -9
        await standby.wait_for("leading", timeout_s=30)
        leading = first_time(standby, "leading")
        assert leading is not None
        _failover(result, leading - killed_wall, FAILOVER_LOST_S)
        result.recover_s = await world.next_ack(total=len(planned), since=killed)
        await _standby(world)  # the killed one restarted: it stands by
        await world.finish(planned, result, timeout_s=sizes.timeout_s, several=True)
    return result


async def leader_cut_from_postgres(
    conninfo: str, log_dir: Path, sizes: Sizes, result: ScenarioResult
) -> ScenarioResult:
    """The leader's PostgreSQL connections cut (only the leader's: the standby reaches the
    database through a proxy of its own) mid-stream: it must stop trading before its lease can
    pass; the standby takes over; the old one, reconnected, stands by.

    recover_s: from the cut to the next acknowledgement (by the new leader)."""
    async with chaos_world("leader-cut-from-postgres", conninfo, log_dir, seed=24) as world:
        planned = plan_stream("pgcut", sizes.signals, world.rng)
        result.signals = len(planned)
        own_proxy = support.TcpProxy(support.PG_HOST, support.PG_PORT)
        await world.tg.start(own_proxy.run)
        leader = await world.start_daemon()
        standby = await _standby(world, POSTGRES_PORT=str(own_proxy.port))
        world.start_stream(planned, sizes.rate)
        await world.wait_acked(len(planned) // 3, timeout_s=sizes.timeout_s)
        cut, cut_wall = time.monotonic(), time.time()
        await world.pg_proxy.cut()
        await standby.wait_for("leading", timeout_s=30)
        stopped = next((t for m in STOPPED_LEADING if (t := first_time(leader, m, cut_wall)) is not None), None)
        leading = first_time(standby, "leading")
        assert leading is not None
        if stopped is None or stopped >= leading:
            result.problems.append(f"the cut-off leader stopped trading at {stopped}, the standby led at {leading}")
        else:
            result.notes["stopped_before_takeover_s"] = round(leading - stopped, 2)
        _failover(result, leading - cut_wall, FAILOVER_LOST_S)
        result.recover_s = await world.next_ack(total=len(planned), since=cut)
        world.pg_proxy.restore()
        await leader.wait_for("standing by", timeout_s=30)
        await world.finish(planned, result, timeout_s=sizes.timeout_s, several=True)
    return result


async def leader_frozen(conninfo: str, log_dir: Path, sizes: Sizes, result: ScenarioResult) -> ScenarioResult:
    """The leader frozen (SIGSTOP) mid-stream, as a stalled VM: the standby takes over within the
    bound; thawed, the old leader finds its lease gone and stands by, having placed nothing.

    recover_s: from the freeze to the next acknowledgement (by the new leader)."""
    async with chaos_world("leader-frozen", conninfo, log_dir, seed=26) as world:
        planned = plan_stream("frozen", sizes.signals, world.rng)
        result.signals = len(planned)
        leader = await world.start_daemon()
        standby = await _standby(world)
        world.start_stream(planned, sizes.rate)
        await world.wait_acked(len(planned) // 3, timeout_s=sizes.timeout_s)
        frozen, frozen_wall = time.monotonic(), time.time()
        leader.freeze()
        try:
            await standby.wait_for("leading", timeout_s=30)
            leading = first_time(standby, "leading")
            assert leading is not None
            _failover(result, leading - frozen_wall, FAILOVER_LOST_S)
            result.recover_s = await world.next_ack(total=len(planned), since=frozen)
        finally:
            leader.thaw()
            world.frozen[world.daemons.index(leader) + 1] = (frozen_wall, time.time())
        await leader.wait_for("standing by", timeout_s=30)
        await world.finish(planned, result, timeout_s=sizes.timeout_s, several=True)
    return result
PRICE_MAX_AGE_S = 1.0  # ORDERMANAGER_PRICE_MAX_AGE_MS, the default
# From the daemon's ticker read to its order's decision time (orders.created_at): the check's
# allowance for a busy event loop. A stale stream price is seconds old here, not a fraction.
DECISION_SLACK_S = 0.25
TICKERS = "/v5/market/tickers"


class PriceTape:
    """Prices that rise one tick per step, every symbol, so a price once left is never the
    venue's again; every change is recorded with its wall-clock time (the daemon's clock too)."""

    def __init__(self, venue: PaperVenue) -> None:
        self._venue = venue
        now = time.time()
        self.history = {symbol: [(now, venue.price(symbol))] for symbol in SYMBOLS}

    def step(self) -> None:
        now = time.time()
        for symbol in SYMBOLS:
            price = self._venue.price(symbol) + self._venue.listings[symbol].instrument.tick_size
            self._venue.set_price(symbol, price)
            self.history[symbol].append((now, price))

    def left_at(self, symbol: str, price: Decimal) -> float | None:
        """When the venue's price stopped being ``price`` (infinity while it still is); None if
        it never was."""
        changes = self.history[symbol]
        for (_, was), (changed_at, _) in zip(changes, changes[1:]):
            if was == price:
                return changed_at
        return math.inf if changes[-1][1] == price else None


async def ticker_stall(conninfo: str, log_dir: Path, sizes: Sizes, result: ScenarioResult) -> ScenarioResult:
    """ws-gateway's ticker stream stalls for ``ticker_stall_s`` mid-stream while prices keep rising
    a tick every 50 ms: the daemon must notice the streamed prices age and size orders on the
    REST ticker instead. Besides the invariants: every order was sized on a price the venue still
    had at most the age limit (plus the decision's slack) before the order was decided. A stale
    stream price fails that: the venue left it when the stall began, seconds before. And some
    prices were read over REST during the stall (else the stall tested nothing).

    recover_s: from the stream's return to the first price the daemon takes from it again."""
    async with chaos_world("ticker-stall", conninfo, log_dir, seed=18) as world:
        planned = plan_stream("ticker", sizes.ticker_signals, world.rng)
        result.signals = len(planned)
        tape = PriceTape(world.venue)
        await world.start_daemon()
        world.start_stream(planned, sizes.rate, step=tape.step)
        await world.wait_acked(len(planned) // 5, timeout_s=sizes.timeout_s)
        rest_reads = [world.venue.request_counts.get(TICKERS, 0)]
        world.venue.faults.ticker_stall = True
        stalled = time.monotonic()
        await anyio.sleep(sizes.ticker_stall_s)  # the fault
        world.venue.faults.ticker_stall = False
        resumed, acked_in_stall = time.monotonic(), len(world.acked())
        rest_reads.append(world.venue.request_counts.get(TICKERS, 0))
        from_stream = world.daemon.count("reference price from the ticker stream")
        try:
            await world.daemon.wait_until(lambda: world.daemon.count("reference price from the ticker stream")
                                          > from_stream, timeout_s=30, what="a streamed price again")  # fmt: skip
            result.recover_s = time.monotonic() - resumed
        except TimeoutError:
            result.problems.append("no price was taken from the ticker stream after it came back")
        await world.finish(planned, result, timeout_s=sizes.timeout_s)
    rest_reads.append(world.venue.request_counts.get(TICKERS, 0))
    during = rest_reads[1] - rest_reads[0]
    result.notes["rest_ticker_reads"] = {"before": rest_reads[0], "during_stall": during,
                                         "after": rest_reads[2] - rest_reads[1]}  # fmt: skip
    result.notes["stall"] = {"seconds": round(resumed - stalled, 2), "acknowledged_by_its_end": acked_in_stall}
    if during == 0:
        result.problems.append("no REST ticker read during the stall: the fallback was not exercised")
    result.problems.extend(stale_sizings(conninfo, tape, result))
    return result


def stale_sizings(conninfo: str, tape: PriceTape, result: ScenarioResult) -> list[str]:
    """Orders whose reference price the venue had left more than the age limit (and the slack)
    before the order was decided."""
    with psycopg.connect(conninfo) as conn:
        rows = conn.execute("""
            SELECT o.order_link_id, o.asset, o.created_at, s.decision->>'reference_price', s.decision->>'attempt'
            FROM orders o JOIN signals s USING (signal_id) WHERE s.decision IS NOT NULL""").fetchall()
    problems, ages, checked = [], [], 0
    for link, asset, decided_at, reference, attempt in rows:
        if link.rsplit("-", 2)[1] != attempt:
            continue  # an earlier attempt's order: the decision stored is the last attempt's
        checked += 1
        left_at = tape.left_at(asset, Decimal(reference))
        if left_at is None:
            problems.append(f"order {link}: sized on {reference}, never the venue's {asset} price")
            continue
        age_s = max(0.0, decided_at.timestamp() - left_at)
        ages.append(age_s)
        if age_s > PRICE_MAX_AGE_S + DECISION_SLACK_S:
            problems.append(f"order {link}: sized on {asset} {reference}, a price the venue left {age_s:.2f} s before")
    result.notes["sizing_prices"] = {"orders_checked": checked, "oldest_price_s": round(max(ages, default=0.0), 3)}
    return problems[:50]


# --------------------------------------------------------------------------- trading controls (contract §11, §12)


async def operator_call(port: int, method: str, path: str, body: object = None) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        async with http.request(method, f"http://127.0.0.1:{port}{path}", json=body,
                                headers={"X-API-Key": API_KEY, "X-Operator": "chaos"}) as response:  # fmt: skip
            return response.status, await response.json()


async def halt_close_resume(conninfo: str, log_dir: Path, sizes: Sizes, result: ScenarioResult) -> ScenarioResult:
    """An incident under a stream of signals: halt a third in, close every position, resume two
    thirds in. On top of the invariants: no order of a signal reaches the venue while halted
    (closes only), every position is flat right after the close-all, and the signals that came
    meanwhile are answered trading_halted, not placed later.

    recover_s: from the resume to the next signal placed on the venue."""
    await reset_queues(TRADING_STATE_QUEUE)
    async with chaos_world("halt-close-resume", conninfo, log_dir, seed=25) as world:
        planned = plan_stream("halt", sizes.signals, world.rng)
        result.signals = len(planned)
        leader = await world.start_daemon()
        world.start_stream(planned, sizes.rate)
        await world.wait_acked(len(planned) // 3, timeout_s=sizes.timeout_s)
        status, body = await operator_call(leader.port, "PUT", "/api/v1/trading-state",
                                           {"state": "halted", "reason": "chaos", "message": "halt under a stream"})
        assert status == 200 and body["global"]["state"] == "halted", body
        halted_ms = int(time.time() * 1000)
        await world.wait_acked(len(planned) // 2, timeout_s=sizes.timeout_s)
        status, closed = await operator_call(leader.port, "POST", "/api/v1/positions/close-all")
        assert status == 200, closed
        not_flat = {s: str(p.size) for s, p in world.venue.engine.positions.items() if p.size != 0}
        if not_flat:
            result.problems.append(f"not flat after close-all: {not_flat}")
        result.notes["closed"] = {symbol: r["status"] for symbol, r in closed["results"].items()}
        await world.wait_acked(2 * len(planned) // 3, timeout_s=sizes.timeout_s)
        resumed, resumed_ms = time.monotonic(), int(time.time() * 1000)
        status, body = await operator_call(leader.port, "PUT", "/api/v1/trading-state", {"state": "active"})
        assert status == 200 and body["global"]["state"] == "active", body
        while_halted = [o for o in world.venue.engine.orders.values()
                        if halted_ms <= o.created_ms < resumed_ms and o.order_link_id.startswith(OUR_PREFIX)]
        opened = [o.order_link_id for o in while_halted if not o.reduce_only]
        if opened:
            result.problems.append(f"{len(opened)} orders placed while halted: {opened[:5]}")
        result.notes["orders_while_halted"] = {"closes": len(while_halted) - len(opened), "others": len(opened)}
        placed_before = len(world.venue.engine.orders)
        await poll_until(lambda: len(world.venue.engine.orders) > placed_before or world.published >= len(planned),
                         sizes.timeout_s, "a signal placed after the resume")  # fmt: skip
        result.recover_s = time.monotonic() - resumed
        await world.finish(planned, result, timeout_s=sizes.timeout_s)
        with psycopg.connect(conninfo) as conn:
            refused = conn.execute("SELECT count(*) FROM signals WHERE rejection_code = 'trading_halted'").fetchone()
        result.notes["refused_while_halted"] = refused[0] if refused else 0
        published = await queue_ready(TRADING_STATE_QUEUE)
        if published != 2:
            result.problems.append(f"{published} events on {TRADING_STATE_QUEUE}, not 2 (halted, active)")
    return result
