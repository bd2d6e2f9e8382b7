"""record_decision against the real PostgreSQL: a new signal is stored with its outcome in one
statement; a repeat is told apart from a redo of the same statement after a lost answer."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal

import attrs
import psycopg
import pytest

from ordermgr.db.migrate import apply_migrations
from ordermgr.db.store import PgStore, SignalRecord
from ordermgr.domain.events import order_event
from ordermgr.domain.model import Side, Signal

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
