"""PostgreSQL through psycopg's async pool. All SQL lives here; psycopg errors never leave
this module (callers see ``StoreUnavailable``)."""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from decimal import Decimal
from types import TracebackType
from typing import Any
from zoneinfo import ZoneInfo

import anyio
import anyio.to_thread
import attrs
import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from ordermgr.db.group import GroupWriter, Write
from ordermgr.domain.decision import link_key
from ordermgr.domain.errors import Fenced, StaleWrite, StoreUnavailable
from ordermgr.domain.events import OrderEvent, dumps
from ordermgr.domain.model import Fence, FillRecord, OrderRecord, OutboxRow, Signal, SignalRecord
from ordermgr.domain.positions import Position, unrealized_pnl
from ordermgr.domain.signals import InvalidSignal

log = logging.getLogger(__name__)
POSITION_MODE = "one_way"  # Bybit linear one-way mode: one signed position per symbol
# SQLSTATEs raised by ordermgr_require (migration 012) when a guarded write must not apply.
FENCED_STATE, STALE_STATE = "OM001", "OM002"


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
            # Autocommit: a single statement is its own transaction, one round trip instead of
            # three (BEGIN, statement, COMMIT). The hot writes are single statements.
            # Sessions in UTC: psycopg loads the session's time zone from disk on connect, and
            # __aenter__ loads UTC once in a thread, so no connect blocks the event loop on it.
            kwargs={"row_factory": dict_row, "autocommit": True, "options": "-c TimeZone=UTC"},
        )
        # Set while this instance leads: the intent commit and every order change check it.
        self.fence: Fence | None = None
        # The version of each asset's position row as last read or written here: the next write
        # of that position expects it (a stale copy is refused, contract §13).
        self._position_versions: dict[str, int] = {}
        # The hot writes (record_decision, record_order) of all actors go through one writer
        # that commits what is queued together (group commit, contract §14.3).
        self.writer: GroupWriter[dict[str, Any]] = GroupWriter(self._commit_together, self._commit_alone)
        self._tasks: contextlib.AsyncExitStack | None = None

    @property
    def pool(self) -> AsyncConnectionPool[Any]:
        """For read-only queries (the API); writes go through this class."""
        return self._pool

    async def __aenter__(self) -> PgStore:
        await anyio.to_thread.run_sync(ZoneInfo, "UTC")  # cached by zoneinfo from now on
        await self._pool.open(wait=False)
        async with contextlib.AsyncExitStack() as stack:
            tasks = await stack.enter_async_context(anyio.create_task_group())
            stack.callback(tasks.cancel_scope.cancel)  # runs first on the way out
            await tasks.start(self.writer.run)
            self._tasks = stack.pop_all()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._tasks is not None:
            await self._tasks.aclose()
        await self._pool.close(timeout=5)

    async def _commit_together(self, writes: Sequence[Write[dict[str, Any]]]) -> list[dict[str, Any] | None]:
        """Several hot writes in one transaction and one round trip (pipeline mode, one Sync at
        the end): all are committed, or, when one fails, none."""
        async with self.connection() as conn:
            cursors = []
            async with conn.pipeline():
                for write in writes:
                    cursors.append(await conn.execute(write.statement, write.params))
            return [await cursor.fetchone() for cursor in cursors]

    async def _commit_alone(self, write: Write[dict[str, Any]]) -> dict[str, Any] | None:
        async with self.connection() as conn:
            cursor = await conn.execute(write.statement, write.params)
            return await cursor.fetchone()

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
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A pooled connection for single statements; connection trouble → StoreUnavailable, a
        guarded write that must not apply → Fenced or StaleWrite."""
        try:
            async with self._pool.connection() as conn:
                yield conn
        except psycopg.OperationalError as exc:  # includes the pool's PoolTimeout
            raise unavailable(exc) from exc
        except psycopg.Error as exc:
            raise _refusal(exc) or exc

    def fence_params(self) -> dict[str, Any]:
        fence = self.fence
        return {"fence_holder": fence.holder if fence else None, "fence_epoch": fence.epoch if fence else None}

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """Several statements in one transaction (rare paths: snapshots, discrepancies)."""
        async with self.connection() as conn:
            try:
                async with conn.transaction():
                    yield conn
            except psycopg.OperationalError as exc:
                raise unavailable(exc) from exc
            except psycopg.Error as exc:
                raise _refusal(exc) or exc

    # --- signals ---------------------------------------------------------------------------

    async def begin_signal(self, signal: Signal, body_size: int, *, count_delivery: bool = True) -> SignalRecord:
        """Store the signal on its first delivery, count a repeat otherwise; tell what is known."""
        async with self.connection() as conn:
            cursor = await conn.execute(
                f"WITH {_NEW_SIGNAL} SELECT status, attempts, deliveries, applies, same_payload FROM signal_row",
                {**_new_signal_params(signal, body_size), "status": "received", "attempt": 0, "decision": None,
                 "code": None, "message": None, "details": None, "count": int(count_delivery), "witness": None},
            )  # fmt: skip
            row = await cursor.fetchone()
        assert row is not None
        return SignalRecord(signal.signal_id, row["status"], row["attempts"], row["deliveries"], row["applies"],
                            row["same_payload"])  # fmt: skip

    async def record_invalid(self, invalid: InvalidSignal, event: OrderEvent) -> None:
        """Store a message that is not a usable signal, with its reasons, and its answer."""
        details = [attrs.asdict(problem) for problem in invalid.problems]
        async with self.connection() as conn:
            await conn.execute(
                f"""
                WITH stored AS (
                    INSERT INTO signals (signal_id, status, raw_payload, raw_text, body_size, asset, rejection_code,
                                         rejection_message, rejection_details, trace_id, processed_at)
                    VALUES (%(signal_id)s, 'invalid', %(payload)s, %(raw_text)s, %(body_size)s, %(asset)s, %(code)s,
                            %(message)s, %(details)s, %(trace_id)s, now())
                    ON CONFLICT (signal_id) DO UPDATE SET deliveries = signals.deliveries + 1
                ), {_EVENTS_CTE}
                SELECT 1
                """,
                {"signal_id": invalid.signal_id, "body_size": invalid.body_size, "asset": invalid.asset,
                 "payload": jsonb(invalid.payload) if invalid.payload is not None else None,
                 "raw_text": None if invalid.payload is not None else invalid.raw_text, "code": invalid.code,
                 "message": invalid.message, "details": jsonb(details), "trace_id": invalid.trace_id,
                 "events": _events(event)},
            )  # fmt: skip

    async def record_decision(
        self,
        signal: Signal,
        attempt: int,
        *,
        status: str,
        decision: object = None,
        rejection: tuple[str, str, object] | None = None,
        orders: Sequence[OrderRecord] = (),
        allocations: Sequence[tuple[str, int, object, object]] = (),
        events: Sequence[OrderEvent] = (),
        first_delivery_size: int | None = None,
    ) -> SignalRecord | None:
        """Commit an evaluation in one statement: the signal's status with its decision or its
        rejection, the order intents and their links (write-ahead: committed before the venue is
        called, so a crash at any later instant leaves a record to reconcile) and the events.

        With ``first_delivery_size`` the signal is stored by this same statement when it is new,
        so a new signal costs one round trip. If it turns out to be known already, only its
        delivery is counted and what is known is returned: the caller takes the repeat path.
        Safe to redo after a lost answer (ON CONFLICT everywhere)."""
        code, message, details = rejection if rejection is not None else (None, None, None)
        relationships = [
            {"order_id": order.id, "relationship_type": kind, "execution_sequence": sequence,
             "allocation_amount": amount, "allocation_quantity": quantity}
            for order, (kind, sequence, amount, quantity) in zip(orders, allocations)
        ]  # fmt: skip
        params = {
            "signal_id": signal.signal_id, "payload": jsonb(signal.payload), "status": status, "attempt": attempt,
            "decision": None if decision is None else jsonb(decision), "code": code, "message": message,
            "details": None if rejection is None else jsonb(details), "count": 1,
            "orders": jsonb([attrs.asdict(order, recurse=False) for order in orders]),
            "relationships": jsonb(relationships), "events": _events(*events),
            "witness": orders[0].id if orders else events[0].event_id if events else None,
            **self.fence_params(),
        }  # fmt: skip
        if first_delivery_size is not None:
            params.update(_new_signal_params(signal, first_delivery_size))
        statement = _RECORD_DECISION if first_delivery_size is None else _RECORD_NEW_DECISION
        row = await self.writer.execute(statement, params)
        if row is None or row["applies"]:
            return None
        return SignalRecord(signal.signal_id, row["status"], row["attempts"], row["deliveries"], False,
                            row["same_payload"])  # fmt: skip

    async def record_order(
        self,
        order: OrderRecord,
        events: Sequence[OrderEvent] = (),
        *,
        settle_signal: bool = False,
        fills: Sequence[FillRecord] = (),
        position: Position | None = None,
    ) -> None:
        """Commit an order's new state with what it causes, in one statement (so one transaction
        and one round trip): the events, the signal's status (``settle_signal``: derived from all
        its orders), the fills and the position they moved. One transaction is what makes each
        fill reach the position once.

        ``order.version`` is the version this write makes: the row must still hold the one
        before it, and the position the version last read here, else nothing is written and
        :class:`StaleWrite` says our copy was stale; under a fence the epoch must still lead
        (:class:`Fenced`). ``order.last_write`` is this write's id (made once by the caller), so
        a redo of the same write after a lost answer recognises itself."""
        fill_rows = [{
            "order_uuid": order.id, "signal_id": order.signal_id, "asset": order.asset, "side": order.side,
            "quantity": fill.quantity, "value": fill.value, "price": fill.price, "fee": fill.fee,
            "source": fill.source, "venue_time_ms": fill.venue_time_ms, "fill_id": fill.fill_id,
        } for fill in fills]  # fmt: skip
        write_id = order.last_write or uuid.uuid4()
        await self.writer.execute(
            _RECORD_ORDER,
            {**attrs.asdict(order, recurse=False), "settle": settle_signal, "fills": jsonb(fill_rows),
             **self._position_params(position, write_id), "events": _events(*events), **self.fence_params()},
        )  # fmt: skip
        self._wrote_position(position)

    async def record_intents(self, orders: Sequence[OrderRecord]) -> None:
        """Commit order intents that belong to no signal (an operator's close), under the fence;
        a redo inserts nothing twice."""
        async with self.connection() as conn:
            await conn.execute(
                f"""
                WITH {FENCE_CTE}, intents AS (
                    INSERT INTO orders ({_ORDER_COLUMNS})
                    SELECT {_ORDER_COLUMNS} FROM jsonb_populate_recordset(NULL::orders, %(orders)s)
                    WHERE (SELECT ok FROM fence)
                    ON CONFLICT (order_link_id) DO NOTHING
                )
                SELECT (SELECT ok FROM fence)
                """,
                {"orders": jsonb([attrs.asdict(order, recurse=False) for order in orders]), **self.fence_params()},
            )

    async def order_by_key(self, key: str) -> OrderRecord | None:
        """An order by our id, the venue's order id or its orderLinkId (as the API names them)."""
        as_uuid = _uuid_or_none(key)
        async with self.connection() as conn:
            cursor = await conn.execute(
                f"SELECT {_ORDER_COLUMNS} FROM orders WHERE id = %s OR order_id = %s OR order_link_id = %s LIMIT 1",
                (as_uuid, key, key),
            )
            row = await cursor.fetchone()
        return _order(row) if row else None

    async def order_by_link_id(self, order_link_id: str) -> OrderRecord | None:
        async with self.connection() as conn:
            cursor = await conn.execute(f"SELECT {_ORDER_COLUMNS} FROM orders WHERE order_link_id = %s", (order_link_id,))
            row = await cursor.fetchone()
        return _order(row) if row else None

    async def adopt_order(self, order: OrderRecord) -> None:
        """Record an order found on the venue with our prefix but unknown here (a crash between
        the venue call and the intent commit of an older version, or a lost database write)."""
        async with self.connection() as conn:
            await conn.execute(
                f"INSERT INTO orders ({_ORDER_COLUMNS}) VALUES ({', '.join(['%s'] * len(_ORDER_FIELDS))})"
                " ON CONFLICT (order_link_id) DO NOTHING",
                attrs.astuple(order, recurse=False),
            )

    async def signal_for_link_key(self, link_key: str) -> str | None:
        async with self.connection() as conn:
            cursor = await conn.execute("SELECT signal_id FROM signals WHERE link_key = %s LIMIT 1", (link_key,))
            row = await cursor.fetchone()
        return row["signal_id"] if row else None

    async def signal_payload(self, signal_id: str) -> dict[str, Any] | None:
        """The stored signal, for the ``signal`` part of later order events."""
        async with self.connection() as conn:
            cursor = await conn.execute("SELECT raw_payload FROM signals WHERE signal_id = %s", (signal_id,))
            row = await cursor.fetchone()
        return row["raw_payload"] if row else None

    async def fills(self, asset: str) -> list[FillRecord]:
        """Every fill of ``asset`` in the order the venue made them."""
        async with self.connection() as conn:
            cursor = await conn.execute(
                "SELECT quantity, value, price, fee, source, venue_time_ms, side FROM order_fills"
                " WHERE asset = %s ORDER BY venue_time_ms, id",
                (asset,),
            )
            return [FillRecord(**row) for row in await cursor.fetchall()]

    async def last_fill_ms(self, asset: str) -> int:
        async with self.connection() as conn:
            cursor = await conn.execute("SELECT max(venue_time_ms) AS t FROM order_fills WHERE asset = %s", (asset,))
            row = await cursor.fetchone()
        return int(row["t"]) if row and row["t"] is not None else 0

    # --- positions -------------------------------------------------------------------------

    async def load_position(self, asset: str) -> Position | None:
        async with self.connection() as conn:
            cursor = await conn.execute(
                "SELECT asset, size, average_entry_price, realized_pnl, fees, last_price, version FROM positions"
                " WHERE asset = %s AND mode = %s",
                (asset, POSITION_MODE),
            )
            row = await cursor.fetchone()
        self._position_versions[asset] = row.pop("version") if row else 0
        return Position(**row) if row else None

    def _position_params(self, position: Position | None, write_id: uuid.UUID) -> dict[str, Any]:
        version = self._position_versions.get(position.asset, 0) if position else None
        return {**_position_params(position), "p_version": version, "p_write": write_id}

    def _wrote_position(self, position: Position | None) -> None:
        if position is not None:
            self._position_versions[position.asset] = self._position_versions.get(position.asset, 0) + 1

    async def position_assets(self) -> list[str]:
        """Assets with a non-zero position: their actors start at boot (contract §1)."""
        async with self.connection() as conn:
            cursor = await conn.execute("SELECT asset FROM positions WHERE size <> 0 ORDER BY asset")
            return [row["asset"] for row in await cursor.fetchall()]

    async def record_snapshot(self, position: Position) -> None:
        async with self._transaction() as conn:
            await self._upsert_position(conn, position)
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
            await self._upsert_position(conn, venue)

    async def _upsert_position(self, conn: psycopg.AsyncConnection[Any], position: Position) -> None:
        """Write a position outside an order's statement (snapshot, discrepancy), version-checked
        like every position write; the caller's transaction is undone when it is refused."""
        write_id = uuid.uuid4()
        cursor = await conn.execute(f"WITH moved AS ({_UPSERT_POSITION}) SELECT count(*) AS n FROM moved",
                                    self._position_params(position, write_id))  # fmt: skip
        row = await cursor.fetchone()
        if not row or row["n"] != 1:
            raise StaleWrite(f"position {position.asset} changed since it was read here")
        self._wrote_position(position)

    async def orders_for_signal(self, signal_id: str) -> list[OrderRecord]:
        async with self.connection() as conn:
            cursor = await conn.execute(
                f"SELECT {_ORDER_COLUMNS} FROM orders WHERE signal_id = %s ORDER BY order_link_id", (signal_id,)
            )
            return [_order(row) for row in await cursor.fetchall()]

    async def active_orders(self, asset: str | None = None) -> list[OrderRecord]:
        """Orders not yet final (submitting, pending, partially_filled), oldest first."""
        async with self.connection() as conn:
            cursor = await conn.execute(
                f"SELECT {_ORDER_COLUMNS} FROM orders WHERE status IN ('submitting', 'pending', 'partially_filled')"
                " AND (%s::text IS NULL OR asset = %s) ORDER BY created_at, order_link_id",
                (asset, asset),
            )
            return [_order(row) for row in await cursor.fetchall()]

    # --- outbox ----------------------------------------------------------------------------

    async def unpublished_events(self, limit: int = 100) -> list[OutboxRow]:
        async with self.connection() as conn:
            cursor = await conn.execute(
                "SELECT seq, event_id, trace_id, body::text AS body, queue FROM order_events_outbox"
                " WHERE published_at IS NULL ORDER BY seq LIMIT %s",
                (limit,),
            )
            return [OutboxRow(r["seq"], r["event_id"], r["trace_id"], r["body"].encode(), r["queue"])
                    for r in await cursor.fetchall()]  # fmt: skip

    async def mark_published(self, seqs: Sequence[int]) -> None:
        async with self.connection() as conn:
            await conn.execute("UPDATE order_events_outbox SET published_at = now() WHERE seq = ANY(%s)", (list(seqs),))


# The orders columns in OrderRecord's field order, so a record maps onto a row one to one.
_ORDER_FIELDS = tuple(field.name for field in attrs.fields(OrderRecord))
_ORDER_COLUMNS = ", ".join(_ORDER_FIELDS)


# Parts of single-statement writes (data-modifying WITH clauses). Every part sees the database as
# it was before the statement, so the signal's settled status substitutes this order's new status.
_SETTLE_SIGNAL = """
    UPDATE signals SET status = derived.status, processed_at = now()
    FROM (SELECT CASE WHEN bool_or(status = 'submitting') THEN 'processing'
                      WHEN bool_and(status = 'rejected') THEN 'rejected'
                      ELSE 'accepted' END AS status
          FROM (SELECT CASE WHEN id = %(id)s THEN %(status)s ELSE status END AS status
                FROM orders WHERE signal_id = %(signal_id)s) AS latest) AS derived
    WHERE %(settle)s AND signals.signal_id = %(signal_id)s AND derived.status IS NOT NULL
"""

# The position as the writer computed it from the version it read (p_version); a row that has
# moved on since (and not by this very write, redone) is left alone, and the guard refuses.
_UPSERT_POSITION = """
    INSERT INTO positions (asset, mode, size, average_entry_price, realized_pnl, unrealized_pnl, fees, last_price,
                           last_updated, version, last_write)
    SELECT %(p_asset)s::text, %(p_mode)s::text, %(p_size)s::numeric, %(p_average_entry_price)s::numeric,
           %(p_realized_pnl)s::numeric, %(p_unrealized_pnl)s::numeric, %(p_fees)s::numeric,
           %(p_last_price)s::numeric, now(), %(p_version)s::integer + 1, %(p_write)s::uuid
    WHERE %(has_position)s
    ON CONFLICT (asset, mode) DO UPDATE SET size = EXCLUDED.size,
        average_entry_price = EXCLUDED.average_entry_price, realized_pnl = EXCLUDED.realized_pnl,
        unrealized_pnl = EXCLUDED.unrealized_pnl, fees = EXCLUDED.fees, last_price = EXCLUDED.last_price,
        last_updated = now(), version = EXCLUDED.version, last_write = EXCLUDED.last_write
    WHERE positions.version = %(p_version)s OR positions.last_write = %(p_write)s
    RETURNING 1
"""

# Under a fence (this instance leads), the epoch must still hold a valid lease (contract §13.2).
FENCE_CTE = """fence AS (
    SELECT ordermgr_require(
        %(fence_epoch)s::bigint IS NULL OR EXISTS (
            SELECT 1 FROM leader_lease WHERE name = 'trading' AND holder = %(fence_holder)s
            AND epoch = %(fence_epoch)s AND expires_at > clock_timestamp()),
        'OM001', 'fenced: epoch ' || %(fence_epoch)s::text || ' no longer leads') AS ok
)"""

# The signal's row as an evaluation leaves it: "applies" is false when the signal turned out to be
# known already (then only its delivery is counted and nothing else in the statement is written).
# This very statement ran before and its answer was lost (until_stored redoes it): its first
# order or event is there. A redo must apply again (idempotently), not look like a repeat.
_REDONE = """(EXISTS (SELECT 1 FROM orders WHERE id = %(witness)s)
               OR EXISTS (SELECT 1 FROM order_events_outbox WHERE event_id = %(witness)s))"""

# A known id arriving with another body is another signal, not a delivery of this one.
_OTHER_BODY = "(signals.raw_payload IS DISTINCT FROM %(payload)s::jsonb)"

_NEW_SIGNAL = f"""signal_row AS (
    INSERT INTO signals (signal_id, status, raw_payload, body_size, signal_type, asset, amount, confidence,
                         signal_timestamp, strategy_id, is_warmup, trace_id, link_key, attempts, decision,
                         rejection_code, rejection_message, rejection_details, processed_at)
    VALUES (%(signal_id)s, %(status)s, %(payload)s, %(body_size)s, %(signal_type)s, %(asset)s, %(amount)s,
            %(confidence)s, %(signal_timestamp)s, %(strategy_id)s, %(is_warmup)s, %(trace_id)s, %(link_key)s,
            %(attempt)s, %(decision)s, %(code)s, %(message)s, %(details)s,
            CASE WHEN %(status)s IN ('accepted', 'rejected') THEN now() END)
    ON CONFLICT (signal_id) DO UPDATE
        SET deliveries = signals.deliveries + CASE WHEN {_REDONE} OR {_OTHER_BODY} THEN 0 ELSE %(count)s END
    RETURNING status, attempts, deliveries, (xmax = 0 OR {_REDONE}) AS applies, NOT {_OTHER_BODY} AS same_payload
)"""

_DECIDED_SIGNAL = """signal_row AS (
    UPDATE signals SET status = %(status)s, attempts = %(attempt)s, raw_payload = %(payload)s,
           decision = COALESCE(%(decision)s, signals.decision), rejection_code = %(code)s,
           rejection_message = %(message)s, rejection_details = %(details)s,
           processed_at = CASE WHEN %(status)s IN ('accepted', 'rejected') THEN now() END
    WHERE signal_id = %(signal_id)s
    RETURNING status, attempts, deliveries, true AS applies, true AS same_payload
)"""

# Events keep their list order in the outbox's seq, which is the order they are published in.
def _outbox(where: str = "") -> str:
    return f"""outbox AS (
    INSERT INTO order_events_outbox (event_id, event_type, signal_id, order_uuid, trace_id, body)
    SELECT event_id, event_type, signal_id, order_uuid, trace_id, body
    FROM ROWS FROM (jsonb_to_recordset(%(events)s)
                    AS (event_id uuid, event_type text, signal_id text, order_uuid uuid, trace_id text, body jsonb))
         WITH ORDINALITY AS e(event_id, event_type, signal_id, order_uuid, trace_id, body, n)
    {where}
    ORDER BY n
    ON CONFLICT (event_id) DO NOTHING
)"""


_EVENTS_CTE = _outbox()


def _decision_statement(signal_row: str) -> str:
    applies = "WHERE (SELECT applies FROM signal_row) AND (SELECT ok FROM fence)"
    return f"""
    WITH {FENCE_CTE}, {signal_row}, intents AS (
        INSERT INTO orders ({_ORDER_COLUMNS})
        SELECT {_ORDER_COLUMNS} FROM jsonb_populate_recordset(NULL::orders, %(orders)s)
        {applies}
        ON CONFLICT (order_link_id) DO NOTHING
    ), links AS (
        INSERT INTO signal_order_relationships (signal_id, order_id, relationship_type, execution_sequence,
                                                allocation_amount, allocation_quantity)
        SELECT %(signal_id)s, order_id, relationship_type, execution_sequence, allocation_amount, allocation_quantity
        FROM jsonb_to_recordset(%(relationships)s) AS r(order_id uuid, relationship_type text,
             execution_sequence integer, allocation_amount numeric, allocation_quantity numeric)
        {applies}
        ON CONFLICT (order_id) DO NOTHING
    ), {_outbox(applies)}
    SELECT status, attempts, deliveries, applies, same_payload, (SELECT ok FROM fence) AS fenced_ok FROM signal_row
    """


_RECORD_NEW_DECISION = _decision_statement(_NEW_SIGNAL)
_RECORD_DECISION = _decision_statement(_DECIDED_SIGNAL)

# One order change: the row (version-checked), the signal's status, the fills, the position
# and the events. The guard refuses the whole statement when the row or the position moved on
# since they were read, or when the fence no longer leads: then nothing of it is written.
_RECORD_ORDER = f"""
WITH {FENCE_CTE}, merged AS (
    UPDATE orders SET order_id = %(order_id)s, status = %(status)s,
           filled_quantity = %(filled_quantity)s, filled_value = %(filled_value)s,
           average_price = %(average_price)s, fees = %(fees)s, executed_at = %(executed_at)s,
           rejection_reason = %(rejection_reason)s, updated_at = %(updated_at)s,
           venue_updated_ms = %(venue_updated_ms)s, quantity = %(quantity)s, price = %(price)s,
           version = %(version)s, last_write = %(last_write)s
    WHERE id = %(id)s AND (version = %(version)s - 1 OR last_write = %(last_write)s)
    RETURNING id
), settled AS (
    {_SETTLE_SIGNAL}
), fills AS (
    INSERT INTO order_fills (order_uuid, signal_id, asset, side, quantity, value, price, fee, source,
                             venue_time_ms, fill_id)
    SELECT order_uuid, signal_id, asset, side, quantity, value, price, fee, source, venue_time_ms, fill_id
    FROM jsonb_populate_recordset(NULL::order_fills, %(fills)s)
    WHERE EXISTS (SELECT 1 FROM merged)
    ON CONFLICT (fill_id) DO NOTHING
), moved AS (
    {_UPSERT_POSITION}
), {_outbox("WHERE EXISTS (SELECT 1 FROM merged)")}
SELECT ordermgr_require(EXISTS (SELECT 1 FROM merged), 'OM002',
                        'stale write: order ' || %(order_link_id)s || ' changed since it was read')
   AND ordermgr_require(NOT %(has_position)s OR EXISTS (SELECT 1 FROM moved), 'OM002',
                        'stale write: position ' || coalesce(%(p_asset)s, '') || ' changed since it was read')
   AND (SELECT ok FROM fence)
"""


def _new_signal_params(signal: Signal, body_size: int) -> dict[str, Any]:
    return {
        "signal_id": signal.signal_id, "payload": jsonb(signal.payload), "body_size": body_size,
        "signal_type": signal.side.value.lower(), "asset": signal.asset, "amount": signal.amount,
        "confidence": signal.confidence, "signal_timestamp": signal.timestamp, "strategy_id": signal.strategy_id,
        "is_warmup": signal.is_warmup, "trace_id": signal.trace_id, "link_key": link_key(signal.signal_id),
    }  # fmt: skip


def _position_params(position: Position | None) -> dict[str, Any]:
    if position is None:
        return {"has_position": False, **dict.fromkeys(_POSITION_PARAMS)}
    return {
        "has_position": True, "p_asset": position.asset, "p_mode": POSITION_MODE, "p_size": position.size,
        "p_average_entry_price": position.average_entry_price, "p_realized_pnl": position.realized_pnl,
        "p_unrealized_pnl": _unrealized(position), "p_fees": position.fees, "p_last_price": position.last_price,
    }  # fmt: skip


_POSITION_PARAMS = ("p_asset", "p_mode", "p_size", "p_average_entry_price", "p_realized_pnl", "p_unrealized_pnl",
                    "p_fees", "p_last_price")  # fmt: skip


def _unrealized(position: Position) -> Decimal:
    return unrealized_pnl(position, position.last_price) if position.last_price is not None else Decimal(0)


def _events(*events: OrderEvent) -> Jsonb:
    return jsonb([{"event_id": e.event_id, "event_type": e.event_type, "signal_id": e.signal_id,
                    "order_uuid": e.order_uuid, "trace_id": e.trace_id, "body": e.body} for e in events])  # fmt: skip


def unavailable(exc: psycopg.Error) -> StoreUnavailable:
    return StoreUnavailable(f"{type(exc).__name__}: {exc}")


def _refusal(exc: psycopg.Error) -> Fenced | StaleWrite | None:
    """A guarded write refused by ordermgr_require, as our error; None for anything else."""
    message = exc.diag.message_primary or str(exc)
    if exc.sqlstate == FENCED_STATE:
        return Fenced(message)
    if exc.sqlstate == STALE_STATE:
        return StaleWrite(message)
    return None


# --- rows --------------------------------------------------------------------------------

def _uuid_or_none(text: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(text)
    except ValueError:
        return None


def _order(row: dict[str, Any]) -> OrderRecord:
    return OrderRecord(**row)


def jsonb(value: object) -> Jsonb:
    return Jsonb(value, dumps=dumps)  # psycopg takes the bytes as they are
