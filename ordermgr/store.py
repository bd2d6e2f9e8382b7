"""PostgreSQL through psycopg's async pool. All SQL lives here; psycopg errors never leave
this module (callers see ``StoreUnavailable``)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

import anyio

import attrs
import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from ordermgr.errors import StoreUnavailable
from ordermgr.events import OrderEvent, dumps
from ordermgr.model import OrderRecord, Signal
from ordermgr.signals import InvalidSignal

log = logging.getLogger(__name__)
P = ParamSpec("P")
T = TypeVar("T")


class PgStore:
    """Opens the pool without waiting for the server: a database that is down at startup
    must not stop the process; the pool keeps trying in the background."""

    def __init__(self, conninfo: str, *, min_size: int = 2, max_size: int = 10, timeout_s: float = 5.0) -> None:
        self._pool = AsyncConnectionPool(
            conninfo,
            open=False,
            min_size=min_size,
            max_size=max_size,
            timeout=timeout_s,
            name="ordermgr",
            kwargs={"row_factory": dict_row},
        )

    @property
    def pool(self) -> AsyncConnectionPool[Any]:
        """For read-only queries (the API); writes go through this class."""
        return self._pool

    async def __aenter__(self) -> PgStore:
        await self._pool.open(wait=False)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._pool.close(timeout=5)

    async def ping(self, timeout_s: float = 1.0) -> bool:
        """True when a connection answers ``SELECT 1``. After an outage the pool may still
        hold dead idle connections, so a failure makes the pool check them and we try once more."""
        for attempt in (1, 2):
            try:
                async with self._pool.connection(timeout=timeout_s) as conn:
                    await conn.execute("SELECT 1")
                return True
            except psycopg.Error as exc:
                log.debug("database ping failed", extra={"error": str(exc), "attempt": attempt})
                if attempt == 1:
                    await self._pool.check()
        return False


    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """One transaction on a pooled connection; connection trouble → StoreUnavailable."""
        try:
            async with self._pool.connection() as conn, conn.transaction():
                yield conn
        except psycopg.OperationalError as exc:  # includes the pool's PoolTimeout
            raise unavailable(exc) from exc

    # --- signals ---------------------------------------------------------------------------

    async def begin_signal(self, signal: Signal, body_size: int) -> SignalRecord:
        """Store the signal on its first delivery, count a repeat otherwise; tell what is known."""
        async with self._transaction() as conn:
            cursor = await conn.execute(
                """
                INSERT INTO signals (signal_id, status, raw_payload, body_size, signal_type, asset, amount,
                                     confidence, signal_timestamp, strategy_id, is_warmup, trace_id)
                VALUES (%s, 'received', %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
                ON CONFLICT (signal_id) DO UPDATE SET deliveries = signals.deliveries + 1
                RETURNING status, attempts, deliveries, (xmax = 0) AS is_new
                """,
                (signal.signal_id, _jsonb(signal.payload), body_size, signal.side.value.lower(), signal.asset,
                 signal.amount, signal.confidence, signal.timestamp, signal.strategy_id, signal.is_warmup,
                 signal.trace_id),
            )  # fmt: skip
            row = await cursor.fetchone()
        assert row is not None
        return SignalRecord(signal.signal_id, row["status"], row["attempts"], row["deliveries"], row["is_new"])

    async def record_invalid(self, invalid: InvalidSignal, event: OrderEvent) -> None:
        """Store a message that is not a usable signal, with its reasons, and its answer."""
        details = [attrs.asdict(problem) for problem in invalid.problems]
        async with self._transaction() as conn:
            await conn.execute(
                """
                INSERT INTO signals (signal_id, status, raw_payload, raw_text, body_size, asset, rejection_code,
                                     rejection_message, rejection_details, trace_id, processed_at)
                VALUES (%s, 'invalid', %s, %s, %s, %s, %s, %s, %s, %s, now())
                ON CONFLICT (signal_id) DO UPDATE SET deliveries = signals.deliveries + 1
                """,
                (invalid.signal_id, _jsonb(invalid.payload) if invalid.payload is not None else None,
                 None if invalid.payload is not None else invalid.raw_text, invalid.body_size, invalid.asset,
                 invalid.code, invalid.message, _jsonb(details), invalid.trace_id),
            )  # fmt: skip
            await _insert_events(conn, [event])

    async def record_refusal(
        self, signal: Signal, attempt: int, code: str, message: str, details: object, event: OrderEvent
    ) -> None:
        """The signal was evaluated and refused before any order existed."""
        async with self._transaction() as conn:
            await conn.execute(
                """
                UPDATE signals SET status = 'rejected', attempts = %s, rejection_code = %s, rejection_message = %s,
                       rejection_details = %s, raw_payload = %s, processed_at = now()
                WHERE signal_id = %s
                """,
                (attempt, code, message, _jsonb(details), _jsonb(signal.payload), signal.signal_id),
            )
            await _insert_events(conn, [event])

    async def record_intents(
        self,
        signal: Signal,
        attempt: int,
        decision: object,
        orders: Sequence[OrderRecord],
        allocations: Sequence[tuple[str, int, object, object]],
        *,
        signal_status: str,
        events: Sequence[OrderEvent] = (),
    ) -> None:
        """Write-ahead: the orders (and their links to the signal) are committed before the venue
        is called, so a crash at any later instant leaves a record to reconcile."""
        async with self._transaction() as conn:
            await conn.execute(
                """
                UPDATE signals SET status = %s, attempts = %s, decision = %s, raw_payload = %s,
                       rejection_code = NULL, rejection_message = NULL, rejection_details = NULL,
                       processed_at = CASE WHEN %s = 'accepted' THEN now() END
                WHERE signal_id = %s
                """,
                (signal_status, attempt, _jsonb(decision), _jsonb(signal.payload), signal_status, signal.signal_id),
            )
            async with conn.cursor() as cursor:
                await cursor.executemany(
                    f"INSERT INTO orders ({_ORDER_COLUMNS}) VALUES ({', '.join(['%s'] * len(_ORDER_FIELDS))})",
                    [attrs.astuple(order, recurse=False) for order in orders],
                )
                await cursor.executemany(
                    """
                    INSERT INTO signal_order_relationships (signal_id, order_id, relationship_type,
                           execution_sequence, allocation_amount, allocation_quantity)
                    VALUES (%s, %s, %s, %s, %s, %s)
                    """,
                    [(signal.signal_id, order.id, *allocation) for order, allocation in zip(orders, allocations)],
                )
            await _insert_events(conn, events)

    async def record_order(
        self, order: OrderRecord, events: Sequence[OrderEvent] = (), *, signal_status: str | None = None
    ) -> None:
        """Commit an order's new state with the events it causes (and the signal's status)."""
        async with self._transaction() as conn:
            await conn.execute(
                """
                UPDATE orders SET order_id = %s, status = %s, filled_quantity = %s, filled_value = %s,
                       average_price = %s, fees = %s, executed_at = %s, rejection_reason = %s,
                       updated_at = %s, venue_updated_ms = %s
                WHERE id = %s
                """,
                (order.order_id, order.status, order.filled_quantity, order.filled_value, order.average_price,
                 order.fees, order.executed_at, order.rejection_reason, order.updated_at, order.venue_updated_ms,
                 order.id),
            )  # fmt: skip
            if signal_status is not None:
                await conn.execute(
                    "UPDATE signals SET status = %s, processed_at = now() WHERE signal_id = %s",
                    (signal_status, order.signal_id),
                )
            await _insert_events(conn, events)

    async def orders_for_signal(self, signal_id: str) -> list[OrderRecord]:
        async with self._transaction() as conn:
            cursor = await conn.execute(
                f"SELECT {_ORDER_COLUMNS} FROM orders WHERE signal_id = %s ORDER BY order_link_id", (signal_id,)
            )
            return [_order(row) for row in await cursor.fetchall()]

    async def active_orders(self, asset: str | None = None) -> list[OrderRecord]:
        """Orders not yet final (submitting, pending, partially_filled), oldest first."""
        async with self._transaction() as conn:
            cursor = await conn.execute(
                f"SELECT {_ORDER_COLUMNS} FROM orders WHERE status IN ('submitting', 'pending', 'partially_filled')"
                " AND (%s::text IS NULL OR asset = %s) ORDER BY created_at, order_link_id",
                (asset, asset),
            )
            return [_order(row) for row in await cursor.fetchall()]

    # --- outbox ----------------------------------------------------------------------------

    async def unpublished_events(self, limit: int = 100) -> list[OutboxRow]:
        async with self._transaction() as conn:
            cursor = await conn.execute(
                "SELECT seq, event_id, trace_id, body::text AS body FROM order_events_outbox"
                " WHERE published_at IS NULL ORDER BY seq LIMIT %s",
                (limit,),
            )
            return [OutboxRow(r["seq"], r["event_id"], r["trace_id"], r["body"].encode()) for r in await cursor.fetchall()]

    async def mark_published(self, seqs: Sequence[int]) -> None:
        async with self._transaction() as conn:
            await conn.execute("UPDATE order_events_outbox SET published_at = now() WHERE seq = ANY(%s)", (list(seqs),))


async def _insert_events(conn: psycopg.AsyncConnection[Any], events: Sequence[OrderEvent]) -> None:
    if not events:
        return
    async with conn.cursor() as cursor:
        await cursor.executemany(
            "INSERT INTO order_events_outbox (event_id, event_type, signal_id, order_uuid, trace_id, body)"
            " VALUES (%s, %s, %s, %s, %s, %s)",
            [(e.event_id, e.event_type, e.signal_id, e.order_uuid, e.trace_id, _jsonb(e.body)) for e in events],
        )


def unavailable(exc: psycopg.Error) -> StoreUnavailable:
    return StoreUnavailable(f"{type(exc).__name__}: {exc}")


# --- rows --------------------------------------------------------------------------------

# The orders columns in OrderRecord's field order, so a record maps onto a row one to one.
_ORDER_FIELDS = tuple(field.name for field in attrs.fields(OrderRecord))
_ORDER_COLUMNS = ", ".join(_ORDER_FIELDS)


def _order(row: dict[str, Any]) -> OrderRecord:
    return OrderRecord(**row)


@attrs.frozen
class SignalRecord:
    """What we already know of a signal id when it arrives (again)."""

    signal_id: str
    status: str
    attempts: int
    deliveries: int
    is_new: bool


@attrs.frozen
class OutboxRow:
    seq: int
    event_id: uuid.UUID
    trace_id: str | None
    body: bytes


def _jsonb(value: object) -> Jsonb:
    return Jsonb(value, dumps=lambda v: dumps(v).decode())


async def until_stored(call: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run a store call, waiting out database outages with capped backoff (cancellable). Work
    that must be recorded before it is acknowledged simply waits for the database."""
    delay_s = 0.2
    while True:
        try:
            return await call(*args, **kwargs)
        except StoreUnavailable as exc:
            log.error("database unavailable; waiting to record", extra={"error": str(exc), "retry_in_s": delay_s})
            await anyio.sleep(delay_s)
            delay_s = min(5.0, delay_s * 2)
