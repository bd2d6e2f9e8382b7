"""PostgreSQL through psycopg's async pool. All SQL lives here; psycopg errors never leave
this module (callers see ``StoreUnavailable``)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from decimal import Decimal
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

import anyio

import attrs
import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from ordermgr.decision import link_key
from ordermgr.errors import StoreUnavailable
from ordermgr.events import OrderEvent, dumps
from ordermgr.model import OrderRecord, Signal
from ordermgr.positions import Position, unrealized_pnl
from ordermgr.signals import InvalidSignal

log = logging.getLogger(__name__)
P = ParamSpec("P")
POSITION_MODE = "one_way"  # Bybit linear one-way mode: one signed position per symbol
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
                                     confidence, signal_timestamp, strategy_id, is_warmup, trace_id, link_key)
                VALUES (%s, 'received', %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
                ON CONFLICT (signal_id) DO UPDATE SET deliveries = signals.deliveries + 1
                RETURNING status, attempts, deliveries, (xmax = 0) AS is_new
                """,
                (signal.signal_id, _jsonb(signal.payload), body_size, signal.side.value.lower(), signal.asset,
                 signal.amount, signal.confidence, signal.timestamp, signal.strategy_id, signal.is_warmup,
                 signal.trace_id, link_key(signal.signal_id)),
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
                    f"INSERT INTO orders ({_ORDER_COLUMNS}) VALUES ({', '.join(['%s'] * len(_ORDER_FIELDS))})"
                    " ON CONFLICT (order_link_id) DO NOTHING",  # a redo after a lost COMMIT answer
                    [attrs.astuple(order, recurse=False) for order in orders],
                )
                await cursor.executemany(
                    """
                    INSERT INTO signal_order_relationships (signal_id, order_id, relationship_type,
                           execution_sequence, allocation_amount, allocation_quantity)
                    VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (order_id) DO NOTHING
                    """,
                    [(signal.signal_id, order.id, *allocation) for order, allocation in zip(orders, allocations)],
                )
            await _insert_events(conn, events)

    async def record_order(
        self,
        order: OrderRecord,
        events: Sequence[OrderEvent] = (),
        *,
        settle_signal: bool = False,
        fill: FillRecord | None = None,
        position: Position | None = None,
    ) -> None:
        """Commit an order's new state with what it causes, in one transaction: the events, the
        signal's status (``settle_signal``: derived from all its orders), the fill delta and the
        position it moved. One transaction is what makes each fill reach the position once."""
        async with self._transaction() as conn:
            await conn.execute(
                """
                UPDATE orders SET order_id = %s, status = %s, filled_quantity = %s, filled_value = %s,
                       average_price = %s, fees = %s, executed_at = %s, rejection_reason = %s,
                       updated_at = %s, venue_updated_ms = %s, quantity = %s, price = %s
                WHERE id = %s
                """,
                (order.order_id, order.status, order.filled_quantity, order.filled_value, order.average_price,
                 order.fees, order.executed_at, order.rejection_reason, order.updated_at, order.venue_updated_ms,
                 order.quantity, order.price, order.id),
            )  # fmt: skip
            if settle_signal:
                await _settle_signal(conn, order.signal_id)
            if fill is not None:
                await conn.execute(
                    "INSERT INTO order_fills (order_uuid, signal_id, asset, side, quantity, value, price, fee, source,"
                    " venue_time_ms, fill_id) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                    " ON CONFLICT (fill_id) DO NOTHING",
                    (order.id, order.signal_id, order.asset, order.side, fill.quantity, fill.value, fill.price,
                     fill.fee, fill.source, fill.venue_time_ms, fill.fill_id),
                )  # fmt: skip
            if position is not None:
                await _upsert_position(conn, position)
            await _insert_events(conn, events)

    async def order_by_link_id(self, order_link_id: str) -> OrderRecord | None:
        async with self._transaction() as conn:
            cursor = await conn.execute(f"SELECT {_ORDER_COLUMNS} FROM orders WHERE order_link_id = %s", (order_link_id,))
            row = await cursor.fetchone()
        return _order(row) if row else None

    async def adopt_order(self, order: OrderRecord) -> None:
        """Record an order found on the venue with our prefix but unknown here (a crash between
        the venue call and the intent commit of an older version, or a lost database write)."""
        async with self._transaction() as conn:
            await conn.execute(
                f"INSERT INTO orders ({_ORDER_COLUMNS}) VALUES ({', '.join(['%s'] * len(_ORDER_FIELDS))})"
                " ON CONFLICT (order_link_id) DO NOTHING",
                attrs.astuple(order, recurse=False),
            )

    async def signal_for_link_key(self, link_key: str) -> str | None:
        async with self._transaction() as conn:
            cursor = await conn.execute("SELECT signal_id FROM signals WHERE link_key = %s LIMIT 1", (link_key,))
            row = await cursor.fetchone()
        return row["signal_id"] if row else None

    async def signal_payload(self, signal_id: str) -> dict[str, Any] | None:
        """The stored signal, for the ``signal`` part of later order events."""
        async with self._transaction() as conn:
            cursor = await conn.execute("SELECT raw_payload FROM signals WHERE signal_id = %s", (signal_id,))
            row = await cursor.fetchone()
        return row["raw_payload"] if row else None

    async def fills(self, asset: str) -> list[FillRecord]:
        """Every fill of ``asset`` in the order the venue made them."""
        async with self._transaction() as conn:
            cursor = await conn.execute(
                "SELECT quantity, value, price, fee, source, venue_time_ms, side FROM order_fills"
                " WHERE asset = %s ORDER BY venue_time_ms, id",
                (asset,),
            )
            return [FillRecord(**row) for row in await cursor.fetchall()]

    async def last_fill_ms(self, asset: str) -> int:
        async with self._transaction() as conn:
            cursor = await conn.execute("SELECT max(venue_time_ms) AS t FROM order_fills WHERE asset = %s", (asset,))
            row = await cursor.fetchone()
        return int(row["t"]) if row and row["t"] is not None else 0

    # --- positions -------------------------------------------------------------------------

    async def load_position(self, asset: str) -> Position | None:
        async with self._transaction() as conn:
            cursor = await conn.execute(
                "SELECT asset, size, average_entry_price, realized_pnl, fees, last_price FROM positions"
                " WHERE asset = %s AND mode = %s",
                (asset, POSITION_MODE),
            )
            row = await cursor.fetchone()
        return Position(**row) if row else None

    async def position_assets(self) -> list[str]:
        """Assets with a non-zero position: their actors start at boot (contract §1)."""
        async with self._transaction() as conn:
            cursor = await conn.execute("SELECT asset FROM positions WHERE size <> 0 ORDER BY asset")
            return [row["asset"] for row in await cursor.fetchall()]

    async def save_position(self, position: Position) -> None:
        async with self._transaction() as conn:
            await _upsert_position(conn, position)

    async def record_snapshot(self, position: Position) -> None:
        async with self._transaction() as conn:
            await _upsert_position(conn, position)
            await conn.execute(
                """
                INSERT INTO position_snapshots (asset, mode, size, average_entry_price, realized_pnl, unrealized_pnl,
                       fees, last_price)
                VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
                """,
                (position.asset, POSITION_MODE, position.size, position.average_entry_price, position.realized_pnl,
                 _unrealized(position), position.fees, position.last_price),
            )  # fmt: skip
            await conn.execute(
                "UPDATE positions SET last_snapshot_at = now() WHERE asset = %s AND mode = %s",
                (position.asset, POSITION_MODE),
            )

    async def record_discrepancy(self, local: Position, venue: Position, resolution: str) -> None:
        """Log a difference with the venue and take the venue's figures, in one transaction."""
        async with self._transaction() as conn:
            await conn.execute(
                """
                INSERT INTO position_discrepancies (asset, local_size, venue_size, local_average_price,
                       venue_average_price, resolution)
                VALUES (%s, %s, %s, %s, %s, %s)
                """,
                (local.asset, local.size, venue.size, local.average_entry_price, venue.average_entry_price, resolution),
            )
            await _upsert_position(conn, venue)

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


async def _settle_signal(conn: psycopg.AsyncConnection[Any], signal_id: str) -> None:
    """A signal is processing while any of its orders awaits the venue's word, rejected when
    every order was, accepted once any reached the venue."""
    await conn.execute(
        """
        UPDATE signals SET status = derived.status, processed_at = now()
        FROM (SELECT CASE WHEN bool_or(status = 'submitting') THEN 'processing'
                          WHEN bool_and(status = 'rejected') THEN 'rejected'
                          ELSE 'accepted' END AS status
              FROM orders WHERE signal_id = %s) AS derived
        WHERE signals.signal_id = %s AND derived.status IS NOT NULL
        """,
        (signal_id, signal_id),
    )


async def _upsert_position(conn: psycopg.AsyncConnection[Any], position: Position) -> None:
    await conn.execute(
        """
        INSERT INTO positions (asset, mode, size, average_entry_price, realized_pnl, unrealized_pnl, fees,
                               last_price, last_updated)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, now())
        ON CONFLICT (asset, mode) DO UPDATE SET size = EXCLUDED.size,
            average_entry_price = EXCLUDED.average_entry_price, realized_pnl = EXCLUDED.realized_pnl,
            unrealized_pnl = EXCLUDED.unrealized_pnl, fees = EXCLUDED.fees, last_price = EXCLUDED.last_price,
            last_updated = now()
        """,
        (position.asset, POSITION_MODE, position.size, position.average_entry_price, position.realized_pnl,
         _unrealized(position), position.fees, position.last_price),
    )  # fmt: skip


def _unrealized(position: Position) -> Decimal:
    return unrealized_pnl(position, position.last_price) if position.last_price is not None else Decimal(0)


async def _insert_events(conn: psycopg.AsyncConnection[Any], events: Sequence[OrderEvent]) -> None:
    if not events:
        return
    async with conn.cursor() as cursor:
        await cursor.executemany(
            "INSERT INTO order_events_outbox (event_id, event_type, signal_id, order_uuid, trace_id, body)"
            " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (event_id) DO NOTHING",
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
class FillRecord:
    """One fill delta as it is applied to the position."""

    quantity: Decimal
    value: Decimal
    price: Decimal | None
    fee: Decimal
    source: str
    venue_time_ms: int
    side: str = ""  # Buy / Sell, as read back for a replay
    # Made once per delta: a transaction redone after a lost COMMIT answer inserts it once.
    fill_id: uuid.UUID = attrs.field(factory=uuid.uuid4)


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
    that must be recorded before it is acknowledged simply waits for the database. Every write
    is safe to redo: a COMMIT whose answer was lost with the connection may have happened."""
    delay_s = 0.2
    while True:
        try:
            return await call(*args, **kwargs)
        except StoreUnavailable as exc:
            log.error("database unavailable; waiting to record", extra={"error": str(exc), "retry_in_s": delay_s})
            await anyio.sleep(delay_s)
            delay_s = min(5.0, delay_s * 2)
