"""Bugs the fault suite found in the service, each as a minimal test. Fixed ones stay as
regression tests; an open one is a strict xfail (it fails the suite the moment it starts
passing, so the mark is dropped when the bug is fixed)."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from pathlib import Path

import anyio
import psycopg
import pytest
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream

from ordermgr.actors.messages import ActorMessage
from ordermgr.actors.supervisor import open_supervisor
from ordermgr.amqp.broker import ORDER_UPDATES_QUEUE, SIGNAL_QUEUE
from tests import support
from tests.chaos.harness import post_sync
from tests.service import Daemon, paper_venue, publish, reset_queues, running_service


def market_signal(signal_id: str, side: str, amount: str, asset: str = "BTCUSDT") -> bytes:
    return json.dumps({"signal_id": signal_id, "signal_type": side, "asset": asset, "amount": amount,
                       "confidence": 0.95, "timestamp": "2026-11-23T10:00:00Z"}).encode()  # fmt: skip


def crash_reason(daemon: Daemon) -> str:
    """The last line of the traceback the daemon logged when it stopped on an unexpected error."""
    for line in reversed(daemon.lines):
        if line.get("message") == "ordermgr stopped by an unexpected error":
            trace = [text.strip(" |") for text in str(line.get("exc_info", "")).splitlines()]
            raised = [text for text in trace if re.match(r"[\w.]+(Error|Exception|Violation)\b", text)]
            return raised[-1] if raised else "?"
    return "no crash logged"


async def still_running_after(daemon: Daemon, message: str, **fields: object) -> None:
    """Wait for ``message``; if the daemon stopped instead, fail with the reason it logged."""
    try:
        await daemon.wait_for(message, timeout_s=30, **fields)
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {crash_reason(daemon)}") from None
    assert daemon.returncode is None


# --- F1: two actors for one symbol -------------------------------------------------------------


class SlowLoadingActor:
    """Stands in for SymbolActor: loads its state (from the database, slowly) before it reports
    started, as SymbolActor.run does."""

    started: list[str] = []

    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        SlowLoadingActor.started.append(symbol)

    async def run(self, inbox: MemoryObjectReceiveStream[ActorMessage], *,
                  task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:  # fmt: skip
        await anyio.sleep(0.05)  # SymbolBook.load(): three queries
        task_status.started()
        async with inbox:
            async for _ in inbox:
                pass


async def test_concurrent_routes_to_a_new_symbol_start_one_actor() -> None:
    """Seen in the SIGKILL scenario: at every restart the ws-gateway events left in the queue are
    routed while startup reconciliation starts the same symbols' actors; each symbol then had two
    actors ("symbol actor started" twice), both applying the same order's fills: order_fills held
    each fill twice (sum 0.028 for an order filled 0.014), the positions were written by two
    books, and the orphaned actor (its mailbox overwritten in the supervisor) never drains."""
    SlowLoadingActor.started = []
    with anyio.fail_after(5):
        async with open_supervisor(SlowLoadingActor, 16) as supervisor:  # type: ignore[arg-type]
            async with anyio.create_task_group() as tg:
                tg.start_soon(supervisor.ensure_actor, "BTCUSDT")  # startup reconciliation
                tg.start_soon(supervisor.ensure_actor, "BTCUSDT")  # an order event for the same symbol
            started = list(SlowLoadingActor.started)
            # Close what a duplicate left behind, so the block can end either way.
            assert len(started) == 1, f"actors started: {started}"


# --- F2: an ack on a channel RabbitMQ closed kills the daemon ----------------------------------


async def test_rabbitmq_lost_while_a_signal_is_in_hand_does_not_stop_the_daemon(
    clean_database: str, tmp_path: Path
) -> None:
    """Seen in the RabbitMQ scenario: the connection dropped while a symbol actor was placing an
    order; its ack raised ``aiormq.exceptions.ChannelInvalidStateError: <Channel: "2"> closed``
    out of Delivery.ack (broker.py), through the actor and the supervisor: "ordermgr stopped by
    an unexpected error", exit code 1. Contract §7.13: a broker outage must not stop the process;
    the lost ack only means a redelivery, which the signal's idempotency absorbs."""
    await reset_queues(SIGNAL_QUEUE, ORDER_UPDATES_QUEUE)
    venue = paper_venue(amqp_url=support.AMQP_URL)
    venue.faults.latency_s = 1.0  # the order call takes a second: the signal is in hand meanwhile
    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            url = await tg.start(venue.run)
            amqp = support.TcpProxy("127.0.0.1", 5672)
            await tg.start(amqp.run)
            daemon = Daemon({"BYBIT_REST_URL": url, "RABBITMQ_PORT": str(amqp.port)}, str(tmp_path))
            await tg.start(daemon.run)
            await daemon.wait_for("ready to take signals")
            await publish(market_signal("f2-1", "buy", "500"))
            await daemon.wait_for("order sent", signal_id="f2-1")
            await amqp.cut()  # RabbitMQ restarts while the order call is in flight
            try:
                await still_running_after(daemon, "signal acknowledged", signal_id="f2-1")  # the ack itself is lost
                amqp.restore()
                # The redelivery is recognised and acknowledged; the daemon never stopped.
                await still_running_after(daemon, "signal already handled; skipped", signal_id="f2-1")
            finally:
                if daemon.returncode is None:
                    daemon.kill()
                tg.cancel_scope.cancel()


# --- F3: position rounding drift -------------------------------------------------------------


async def test_a_fill_learned_by_sync_keeps_the_position_equal_to_the_venue(
    clean_database: str, tmp_path: Path
) -> None:
    """Seen in every scenario (notes ``position_rounding_drift``, e.g. XRPUSDT realized PnL off by
    6e-5): when two executions of one order reach the service as one cumulative delta (a sync
    or cancel lookup, a dropped event), ``positions.apply_fill`` averages them in one step and
    quantizes the entry to 8 decimals once; the venue (like Bybit) quantizes after each
    execution. The entry then differs in the 8th decimal, and every later reduction realizes
    PnL against a different entry. Contract: positions equal to the venue's; lessons #4:
    fills come from executions. Now a delta learned by a lookup is taken from the venue's
    execution list, one fill per execution. (A dropped event whose successor covers two
    executions still arrives as one delta: nothing in an order event tells them apart.)"""
    await reset_queues(SIGNAL_QUEUE, ORDER_UPDATES_QUEUE)
    # No events: the fills reach the service only through sync, two executions as one delta.
    venue = paper_venue(market_fill_parts=2, initial_prices={"BTCUSDT": Decimal("50000")})
    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            url = await tg.start(venue.run)
            daemon = Daemon({"BYBIT_REST_URL": url, "ORDERMANAGER_SYNC_INTERVAL": "1"}, str(tmp_path))
            await tg.start(daemon.run)
            await daemon.wait_for("ready to take signals")
            # 0.008 BTC at 50000, then 0.006 at 50001.3 in two executions of 0.003: the venue's
            # entry is 50000.55714285, one averaging step gives 50000.55714286.
            for signal_id, amount, price in (("f3-1", "414", "50000"), ("f3-2", "333", "50001.3")):
                venue.set_price("BTCUSDT", Decimal(price))
                await publish(market_signal(signal_id, "buy", amount))
                await daemon.wait_for("fill applied", signal_id=signal_id)
            await post_sync(daemon.port)
            daemon.terminate()
            await daemon.wait_exit()
            tg.cancel_scope.cancel()
    theirs = venue.engine.positions["BTCUSDT"]
    with psycopg.connect(clean_database) as conn:
        [mine] = conn.execute("SELECT size, average_entry_price FROM positions WHERE asset = 'BTCUSDT'").fetchall()
    assert mine == (theirs.size, theirs.avg_price)


# --- F4: reduce-only decided on a stale position ----------------------------------------------


async def test_a_sell_after_a_closing_sell_is_placed_even_before_the_first_fill_is_seen(clean_database: str) -> None:
    """Seen in every scenario: 2-7 % of the signals end ``rejected`` with ``110017: Reduce-only rule
    not satisfied`` (and reduce-only orders larger than the venue's position are clipped:
    ``cancelled`` with a partial fill). The symbol actor decides ``reduce_only`` from its own
    position, which does not yet include the fills of orders it placed a moment ago (their order
    events wait in its mailbox behind the next signal). Long 0.02, a sell of 0.02 placed and
    filled on the venue, then a sell of 0.01: the service still sees long 0.02, sends the new
    sell ``reduceOnly``, the flat venue refuses it, and a valid signal is lost as "rejected".
    Contract §7.6: only an order that *only reduces the current position* is sent reduceOnly —
    the current position includes what our in-flight orders have done."""
    await reset_queues(SIGNAL_QUEUE)
    venue = paper_venue()  # no order events: the service learns fills by sync only
    async with running_service(venue=venue) as service:
        await publish(market_signal("f4-open", "buy", "1000"))  # long 0.02
        await service.logs.wait_for("signal acknowledged", count=1)
        await post_sync(service.port)  # the service now knows the fill: long 0.02
        await publish(market_signal("f4-close", "sell", "1000"))  # reduce-only 0.02: flat on the venue
        await service.logs.wait_for("signal acknowledged", count=2)
        await publish(market_signal("f4-short", "sell", "500"))  # a new short of 0.01
        await service.logs.wait_for("signal acknowledged", count=3)
    with psycopg.connect(clean_database) as conn:
        [(status,)] = conn.execute("SELECT status FROM signals WHERE signal_id = 'f4-short'").fetchall()
    assert (status, venue.engine.positions["BTCUSDT"].size) == ("accepted", Decimal("-0.010"))


# --- F5: a commit whose answer is lost is retried and crashes the daemon -----------------------


class CommitAnswerLosingProxy:
    """A PostgreSQL proxy that, once armed, lets through the first statement that inserts into
    ``orders`` (an autocommit statement: its own transaction) and then drops the connection before
    the server's answer comes back: the write is committed, the client cannot know it (what a
    server stop or a network cut at that instant does)."""

    def __init__(self) -> None:
        self.port = 0
        self.armed = False
        self.fired = anyio.Event()

    async def run(self, *, task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED) -> None:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
        self.port = listener.extra(anyio.abc.SocketAttribute.local_port)
        async with listener:
            task_status.started(self.port)
            await listener.serve(self._handle)

    async def _handle(self, client: anyio.abc.SocketStream) -> None:
        server = await anyio.connect_tcp(support.PG_HOST, support.PG_PORT)
        dropping = False
        async with client, server, anyio.create_task_group() as tg:

            async def upstream() -> None:
                nonlocal dropping
                async for chunk in client:
                    if self.armed and b"INSERT INTO orders (" in chunk:
                        self.armed, dropping = False, True
                        await server.send(chunk)
                        await anyio.sleep(0.2)  # the server commits; its answer is not relayed
                        self.fired.set()
                        break
                    await server.send(chunk)
                tg.cancel_scope.cancel()

            async def downstream() -> None:
                async for chunk in server:
                    if not dropping:
                        await client.send(chunk)
                tg.cancel_scope.cancel()

            tg.start_soon(upstream)
            tg.start_soon(downstream)


async def test_a_commit_answer_lost_with_the_database_connection_does_not_stop_the_daemon(
    clean_database: str, tmp_path: Path
) -> None:
    """Seen in the PostgreSQL scenario (1 run in 3): the proxy cut the connection while
    ``record_order`` committed; psycopg raised OperationalError, ``until_stored`` ran the whole
    transaction again, and its INSERT of the same outbox event failed with ``UniqueViolation:
    duplicate key value violates unique constraint "order_events_outbox_event_id_key"`` — not a
    StoreUnavailable, so it went up through the actor: "ordermgr stopped by an unexpected error",
    exit 1. The same holds for every non-idempotent write (record_intents: the orders row,
    record_refusal / record_invalid: their event). Contract §7.13: the database going away must
    not stop the process; a commit whose outcome is unknown must be resolved, not blindly redone."""
    await reset_queues(SIGNAL_QUEUE, ORDER_UPDATES_QUEUE)
    venue = paper_venue()
    proxy = CommitAnswerLosingProxy()
    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            url = await tg.start(venue.run)
            await tg.start(proxy.run)
            daemon = Daemon({"BYBIT_REST_URL": url, "POSTGRES_PORT": str(proxy.port)}, str(tmp_path))
            await tg.start(daemon.run)
            await daemon.wait_for("ready to take signals")
            proxy.armed = True  # the next commit of an intent (record_intents) loses its answer
            await publish(market_signal("f5-1", "buy", "500"))
            try:
                await still_running_after(daemon, "signal acknowledged", signal_id="f5-1")
            finally:
                if daemon.returncode is None:
                    daemon.kill()
                tg.cancel_scope.cancel()
    assert proxy.fired.is_set()
    assert len([o for o in venue.engine.orders.values() if o.order_link_id]) == 1
