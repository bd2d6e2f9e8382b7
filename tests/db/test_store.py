"""record_decision against the real PostgreSQL: a new signal is stored with its outcome in one
statement; a repeat is told apart from a redo of the same statement after a lost answer."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any
from datetime import UTC, datetime
from decimal import Decimal

import anyio
import attrs
import psycopg
import pytest

from ordermgr.db.lease import LeaseStore
from ordermgr.db.migrate import apply_migrations
from ordermgr.db.store import PgStore, SignalRecord
from ordermgr.domain.errors import Fenced, StaleWrite
from ordermgr.domain.events import order_event
from ordermgr.domain.model import Fence, FillRecord, OrderRecord, Side, Signal
from ordermgr.domain.positions import Position

pytestmark = pytest.mark.anyio


@pytest.fixture
async def store(clean_database: str) -> AsyncIterator[PgStore]:
    await apply_migrations(clean_database)
    async with PgStore(clean_database) as opened:
        yield opened


def a_signal(signal_id: str) -> Signal:
    return Signal(signal_id=signal_id, side=Side.BUY, asset="BTCUSDT", amount=Decimal("100"),
                  confidence=Decimal("0.9"), timestamp=datetime.now(UTC), trace_id=f"trace-{signal_id}")  # fmt: skip


async def refuse(store: PgStore, signal: Signal, event_id: uuid.UUID | None = None) -> SignalRecord | None:
    event = order_event("rejected", order=None, signal=signal, signal_id=signal.signal_id, trace_id=signal.trace_id,
                        now=datetime.now(UTC), rejection=("risk_limit", "too big"))  # fmt: skip
    if event_id is not None:
        event = attrs.evolve(event, event_id=event_id)
    return await store.record_decision(signal, 1, status="rejected", rejection=("risk_limit", "too big", {}),
                                       events=[event], first_delivery_size=120)  # fmt: skip


def stored(database: str, signal_id: str) -> tuple[tuple[object, ...], int]:
    with psycopg.connect(database) as conn:
        row = conn.execute("SELECT status, attempts, deliveries, rejection_code FROM signals WHERE signal_id = %s",
                           (signal_id,)).fetchone()  # fmt: skip
        events = conn.execute("SELECT count(*) FROM order_events_outbox WHERE signal_id = %s", (signal_id,)).fetchone()
    assert row is not None and events is not None
    return row, events[0]


async def test_a_new_signal_is_stored_with_its_rejection_in_one_statement(store: PgStore, clean_database: str) -> None:
    assert await refuse(store, a_signal("s-new")) is None
    assert stored(clean_database, "s-new") == (("rejected", 1, 1, "risk_limit"), 1)


async def test_a_repeat_writes_nothing_but_its_delivery_and_says_what_is_known(
    store: PgStore, clean_database: str
) -> None:
    await refuse(store, a_signal("s-repeat"))
    known = await refuse(store, a_signal("s-repeat"))  # a second delivery, evaluated afresh
    assert known is not None and (known.status, known.attempts, known.deliveries) == ("rejected", 1, 2)
    assert stored(clean_database, "s-repeat") == (("rejected", 1, 2, "risk_limit"), 1)


async def test_the_same_statement_redone_after_a_lost_answer_is_not_a_repeat(
    store: PgStore, clean_database: str
) -> None:
    """until_stored redoes a statement whose answer was lost with the connection; it may have
    committed. The redo must not count a delivery or send the signal down the repeat path (that
    would evaluate it again and publish a second rejection)."""
    signal, event_id = a_signal("s-redo"), uuid.uuid4()
    assert await refuse(store, signal, event_id) is None
    assert await refuse(store, signal, event_id) is None  # the very same writes again
    assert stored(clean_database, "s-redo") == (("rejected", 1, 1, "risk_limit"), 1)


# --- guarded writes (contract §13): a stale copy never overwrites, a deposed leader writes nothing


def an_intent(signal: Signal) -> OrderRecord:
    now = datetime.now(UTC)
    return OrderRecord(id=uuid.uuid4(), order_id=None, order_link_id=f"om-{signal.signal_id}-1-1",
                       signal_id=signal.signal_id, asset=signal.asset, side="Buy", order_type="Market",
                       status="submitting", quantity=Decimal("0.010"), price=None, created_at=now, updated_at=now)  # fmt: skip


async def placed(store: PgStore, signal_id: str) -> OrderRecord:
    signal = a_signal(signal_id)
    intent = an_intent(signal)
    assert await store.record_decision(signal, 1, status="processing", orders=[intent], first_delivery_size=100) is None
    return intent


def filled(record: OrderRecord, qty: str) -> tuple[OrderRecord, FillRecord, Position]:
    """``record`` one version on, with ``qty`` more filled at 50000, and the position that fill makes."""
    fill = FillRecord(Decimal(qty), Decimal(qty) * 50000, Decimal(50000), Decimal(0), "ws_gateway", 1)
    after = attrs.evolve(record, status="partially_filled", filled_quantity=record.filled_quantity + fill.quantity,
                         version=record.version + 1, last_write=uuid.uuid4())  # fmt: skip
    return after, fill, Position(record.asset, size=after.filled_quantity, average_entry_price=Decimal(50000))


def fills_and_position(database: str, order: OrderRecord) -> tuple[int, object]:
    with psycopg.connect(database) as conn:
        fills = conn.execute("SELECT count(*) FROM order_fills WHERE order_uuid = %s", (order.id,)).fetchone()
        size = conn.execute("SELECT size FROM positions WHERE asset = %s", (order.asset,)).fetchone()
    assert fills is not None
    return fills[0], size[0] if size else None


async def test_a_write_from_a_stale_copy_of_the_order_is_refused_whole(store: PgStore, clean_database: str) -> None:
    """Two writers each read version 0 and both apply 'their' fill: the second is stale, and
    neither its fill nor its position reaches the database."""
    intent = await placed(store, "s-stale-order")
    first, fill, position = filled(intent, "0.004")
    await store.record_order(first, fills=[fill], position=position)
    second, fill, position = filled(intent, "0.004")  # from the same old copy
    with pytest.raises(StaleWrite):
        await store.record_order(second, fills=[fill], position=position)
    assert fills_and_position(clean_database, intent) == (1, Decimal("0.004"))


async def test_a_position_written_elsewhere_since_it_was_read_is_not_overwritten(
    store: PgStore, clean_database: str
) -> None:
    intent = await placed(store, "s-stale-position")
    await store.load_position("BTCUSDT")
    async with PgStore(clean_database) as other:  # another process with its own view
        await other.load_position("BTCUSDT")
        other_intent = await placed(other, "s-other")
        after, fill, position = filled(other_intent, "0.002")
        await other.record_order(after, fills=[fill], position=position)
    after, fill, position = filled(intent, "0.004")
    with pytest.raises(StaleWrite):
        await store.record_order(after, fills=[fill], position=position)
    assert fills_and_position(clean_database, intent) == (0, Decimal("0.002"))
    await store.load_position("BTCUSDT")  # the stale holder reloads, then writes on top
    await store.record_order(after, fills=[fill], position=attrs.evolve(position, size=Decimal("0.006")))
    assert fills_and_position(clean_database, intent) == (1, Decimal("0.006"))


async def test_an_order_write_redone_after_a_lost_answer_recognises_itself(store: PgStore, clean_database: str) -> None:
    intent = await placed(store, "s-redo-order")
    after, fill, position = filled(intent, "0.004")
    await store.record_order(after, fills=[fill], position=position)
    store._position_versions["BTCUSDT"] -= 1  # as if the answer, and so our bookkeeping, was lost
    await store.record_order(after, fills=[fill], position=position)  # until_stored's redo
    assert fills_and_position(clean_database, intent) == (1, Decimal("0.004"))


async def test_a_deposed_leader_commits_no_intent_and_no_order_change(store: PgStore, clean_database: str) -> None:
    lease = LeaseStore(store, "instance-a")
    fence = await lease.acquire(ttl_s=30)
    assert fence is not None
    store.fence = fence
    intent = await placed(store, "s-fenced-1")  # while it leads
    with psycopg.connect(clean_database, autocommit=True) as conn:  # the lease passes to another
        conn.execute("UPDATE leader_lease SET expires_at = clock_timestamp()")
    assert await LeaseStore(store, "instance-b").acquire(ttl_s=30) == Fence("instance-b", fence.epoch + 1)
    with pytest.raises(Fenced):
        await placed(store, "s-fenced-2")
    after, fill, position = filled(intent, "0.004")
    with pytest.raises(Fenced):
        await store.record_order(after, fills=[fill], position=position)
    with psycopg.connect(clean_database) as conn:
        intents = conn.execute("SELECT count(*) FROM orders WHERE signal_id = 's-fenced-2'").fetchone()
    assert intents == (0,) and fills_and_position(clean_database, intent) == (0, None)


# --- group commit (contract §14.3): several actors' writes in one round trip, each its own outcome


def b_signal(signal_id: str, asset: str) -> Signal:
    return attrs.evolve(a_signal(signal_id), asset=asset)


async def placed_on(store: PgStore, signal_id: str, asset: str) -> OrderRecord:
    signal = b_signal(signal_id, asset)
    intent = attrs.evolve(an_intent(signal), order_link_id=f"om-{signal_id}-1-1")
    recorded = await store.record_decision(signal, 1, status="processing", orders=[intent], first_delivery_size=100)
    assert recorded is None
    return intent


async def together(*writes: Any) -> list[object]:
    """Start the writes in one go, as actors whose writes queue while the writer is busy; each
    outcome (None or the exception) in order."""
    outcomes: list[object] = [None] * len(writes)

    async def one(index: int, write: Any) -> None:
        try:
            await write
        except Exception as exc:  # noqa: BLE001
            outcomes[index] = exc

    async with anyio.create_task_group() as tg:
        for index, write in enumerate(writes):
            tg.start_soon(one, index, write)
    return outcomes


async def test_writes_committed_together_each_get_their_own_outcome(store: PgStore, clean_database: str) -> None:
    """Three actors' fills in one round trip, one of them from a stale copy: the two others are
    committed (fill and position), the stale one is refused whole and told so; nothing else is."""
    eth, sol, btc = [await placed_on(store, f"s-group-{a}", a) for a in ("ETHUSDT", "SOLUSDT", "BTCUSDT")]
    first, fill, position = filled(btc, "0.004")
    await store.record_order(first, fills=[fill], position=position)
    rounds = store.writer.stats.rounds
    writes = [filled(eth, "0.5"), filled(btc, "0.004"), filled(sol, "2")]  # btc's from the same old copy
    outcomes = await together(*(store.record_order(after, fills=[f], position=p) for after, f, p in writes))
    assert store.writer.stats.rounds == rounds + 1  # they went together
    assert outcomes[0] is None and outcomes[2] is None
    assert isinstance(outcomes[1], StaleWrite)
    assert fills_and_position(clean_database, eth) == (1, Decimal("0.5"))
    assert fills_and_position(clean_database, sol) == (1, Decimal("2"))
    assert fills_and_position(clean_database, btc) == (1, Decimal("0.004"))


async def test_new_signals_recorded_together_and_a_repeat_among_them_is_told_apart(
    store: PgStore, clean_database: str
) -> None:
    await refuse(store, a_signal("s-known"))
    outcomes: list[object] = []

    async def decide(signal_id: str) -> None:
        outcomes.append((signal_id, await refuse(store, a_signal(signal_id))))

    rounds = store.writer.stats.rounds
    async with anyio.create_task_group() as tg:
        for signal_id in ("s-new-1", "s-known", "s-new-2"):
            tg.start_soon(decide, signal_id)
    assert store.writer.stats.rounds == rounds + 1
    known = dict(outcomes)
    assert known["s-new-1"] is None and known["s-new-2"] is None
    assert isinstance(known["s-known"], SignalRecord) and known["s-known"].deliveries == 2
    assert stored(clean_database, "s-new-1") == (("rejected", 1, 1, "risk_limit"), 1)
    assert stored(clean_database, "s-known") == (("rejected", 1, 2, "risk_limit"), 1)


async def test_a_deposed_leader_commits_nothing_of_a_group(store: PgStore, clean_database: str) -> None:
    lease = LeaseStore(store, "instance-a")
    fence = await lease.acquire(ttl_s=30)
    assert fence is not None
    store.fence = fence
    eth, sol = [await placed_on(store, f"s-gf-{a}", a) for a in ("ETHUSDT", "SOLUSDT")]
    with psycopg.connect(clean_database, autocommit=True) as conn:
        conn.execute("UPDATE leader_lease SET expires_at = clock_timestamp()")
    assert await LeaseStore(store, "instance-b").acquire(ttl_s=30) is not None
    writes = [filled(eth, "0.5"), filled(sol, "2")]
    outcomes = await together(*(store.record_order(after, fills=[f], position=p) for after, f, p in writes))
    assert all(isinstance(outcome, Fenced) for outcome in outcomes)
    assert fills_and_position(clean_database, eth) == (0, None)
    assert fills_and_position(clean_database, sol) == (0, None)


async def test_round_after_round_with_refusals_the_connection_stays_usable(
    store: PgStore, clean_database: str
) -> None:
    """Refused rounds roll back on a connection whose statements psycopg prepares after a few
    uses: later rounds and lone writes still work."""
    for n in range(8):
        good, stale = [await placed_on(store, f"s-rr-{n}-{a}", a) for a in ("ETHUSDT", "BTCUSDT")]
        await store.load_position("ETHUSDT")
        await store.load_position("BTCUSDT")
        first, fill, position = filled(stale, "0.001")
        moved = attrs.evolve(position, size=Decimal("0.001") * (n + 1))
        await store.record_order(first, fills=[fill], position=moved)
        ok, refused = filled(good, "0.1"), filled(stale, "0.001")
        outcomes = await together(
            store.record_order(ok[0], fills=[ok[1]], position=attrs.evolve(ok[2], size=Decimal("0.1") * (n + 1))),
            store.record_order(refused[0], fills=[refused[1]], position=refused[2]),
        )
        assert outcomes[0] is None and isinstance(outcomes[1], StaleWrite), n
    assert store.writer.stats.rounds >= 8
    assert fills_and_position(clean_database, good) == (1, Decimal("0.8"))
