"""Read-only SQL behind the REST API. Nothing here writes: every read runs in a READ ONLY,
REPEATABLE READ transaction (so a page and its total, or a signal and its orders, come from
one snapshot) with a statement timeout (so a slow query cannot hold a pooled connection the
actors need). psycopg errors never leave this module: callers see ``StoreUnavailable``."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

import attrs
import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from ordermgr.domain.errors import StoreUnavailable
from ordermgr.domain.model import ORDER_API_FIELDS

Row = Mapping[str, Any]

ORDER_STATUSES = ("submitting", "pending", "partially_filled", "filled", "cancelled", "rejected", "dry_run")
SIGNAL_STATUSES = ("received", "processing", "accepted", "rejected", "invalid")
SORT_FIELDS = ("created_at", "updated_at", "executed_at")
SORT_ORDERS = ("desc", "asc")

# The columns of an order as the API shows it (filled_value and venue_updated_ms are internal).
ORDER_COLUMNS = ORDER_API_FIELDS
POSITION_COLUMNS = (
    "asset", "mode", "size", "average_entry_price", "realized_pnl", "unrealized_pnl", "fees", "last_price",
    "last_updated",
)  # fmt: skip

_BEGIN_READ = "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY; SET LOCAL statement_timeout = {ms}"


@attrs.frozen
class OrderFilter:
    """Filters of ``GET /api/v1/orders``; ``None`` = not filtered. Values arrive normalised."""

    asset: str | None = None
    status: str | None = None
    signal_id: str | None = None
    order_id: str | None = None
    side: str | None = None
    is_dry_run: bool | None = None
    date_from: datetime | None = None  # created_at >= date_from
    date_to: datetime | None = None  # created_at <= date_to


# One SQL condition per OrderFilter field, in field order; the value is always a parameter.
_FILTER_SQL: Mapping[str, str] = {
    "asset": "asset = %s",
    "status": "status = %s",
    "signal_id": "signal_id = %s",
    "order_id": "order_id = %s",
    "side": "side = %s",
    "is_dry_run": "is_dry_run = %s",
    "date_from": "created_at >= %s",
    "date_to": "created_at <= %s",
}


@attrs.frozen
class OrderPage:
    page: int = 1
    page_size: int = 20
    sort_by: Literal["created_at", "updated_at", "executed_at"] = "created_at"
    sort_order: Literal["desc", "asc"] = "desc"

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.page_size


@attrs.frozen
class OrderList:
    rows: Sequence[Row]
    total: int


@attrs.frozen
class Lineage:
    """Everything recorded about one signal. ``orders`` rows carry the relationship columns
    (``relationship_type`` ... ``allocation_quantity``, null when the order has no link row)."""

    signal: Row
    orders: Sequence[Row]
    events: Sequence[Row]
    fills: Sequence[Row]
    position: Row | None


class Queries:
    def __init__(self, pool: AsyncConnectionPool[Any], *, statement_timeout_ms: int = 5000) -> None:
        self._pool = pool
        self._begin = _BEGIN_READ.format(ms=int(statement_timeout_ms))

    @asynccontextmanager
    async def _snapshot(self, timeout_s: float | None = None) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """One read-only, consistent snapshot on a pooled connection. ``timeout_s`` bounds both
        the wait for a connection and the statements (default: the pool's and the constructor's)."""
        begin = self._begin if timeout_s is None else _BEGIN_READ.format(ms=int(timeout_s * 1000))
        try:
            async with self._pool.connection(timeout=timeout_s) as conn, conn.transaction():
                await conn.execute(begin)
                yield conn
        except psycopg.OperationalError as exc:  # includes PoolTimeout and statement timeouts
            raise StoreUnavailable(f"{type(exc).__name__}: {exc}") from exc

    async def orders(self, where: OrderFilter, page: OrderPage) -> OrderList:
        (listing, listing_params), (count, count_params) = orders_statements(where, page)
        async with self._snapshot() as conn:
            rows = await _all(conn, listing, listing_params)
            total = await _one(conn, count, count_params)
        return OrderList(rows, total["total"] if total else 0)

    async def order(self, key: str) -> Row | None:
        """By internal id, venue ``order_id`` or ``order_link_id``, preferred in that order."""
        internal = _as_uuid(key)
        query = sql.SQL(
            "SELECT {columns} FROM orders WHERE id = %(id)s OR order_id = %(key)s OR order_link_id = %(key)s"
            " ORDER BY (id = %(id)s) IS TRUE DESC, (order_id = %(key)s) IS TRUE DESC LIMIT 1"
        ).format(columns=_columns(ORDER_COLUMNS))
        async with self._snapshot() as conn:
            return await _one(conn, query, {"id": internal, "key": key})

    async def positions(self, asset: str | None = None) -> list[Row]:
        query = sql.SQL("SELECT {columns} FROM positions WHERE %(asset)s::text IS NULL OR asset = %(asset)s"
                        " ORDER BY asset, mode").format(columns=_columns(POSITION_COLUMNS))  # fmt: skip
        async with self._snapshot() as conn:
            return await _all(conn, query, {"asset": asset})

    async def position(self, asset: str) -> Row | None:
        async with self._snapshot() as conn:
            return await _position(conn, asset)

    async def outbox_backlog(self, timeout_s: float = 1.0) -> int:
        """Order events written but not yet published. Bounded to ``timeout_s`` (a scrape must not
        wait on the pool's longer default); the count walks the outbox's partial index of exactly
        these rows, so it stays cheap while the broker is away and the backlog grows."""
        try:
            async with self._snapshot(timeout_s) as conn:
                row = await _one(conn, _OUTBOX_BACKLOG_SQL, ())
        except psycopg.Error as exc:  # e.g. no table yet: scraped before the migrations ran
            raise StoreUnavailable(f"{type(exc).__name__}: {exc}") from exc
        return int(row["backlog"]) if row else 0

    async def signal_lineage(self, signal_id: str) -> Lineage | None:
        async with self._snapshot() as conn:
            signal = await _one(conn, _SIGNAL_SQL, (signal_id,))
            if signal is None:
                return None
            orders = await _all(conn, _LINKED_ORDERS_SQL, {"signal_id": signal_id})
            events = await _all(conn, _EVENTS_SQL, (signal_id,))
            fills = await _fills(conn, [row["id"] for row in orders])
            position = await _position(conn, signal["asset"]) if signal["asset"] else None
        return Lineage(_decode_json(signal, _SIGNAL_JSON_COLUMNS), orders, events, fills, position)


# --- SQL pieces ----------------------------------------------------------------------------

Statement = tuple[sql.Composable, list[Any]]


def orders_statements(where: OrderFilter, page: OrderPage) -> tuple[Statement, Statement]:
    """The page query and the count query of ``GET /api/v1/orders`` with their parameters
    (public so that a benchmark can EXPLAIN exactly what the API runs)."""
    condition, params = _where(where)
    listing = sql.SQL("SELECT {columns} FROM orders WHERE {condition} {order} LIMIT %s OFFSET %s").format(
        columns=_columns(ORDER_COLUMNS), condition=condition, order=_order_by(page)
    )
    count = sql.SQL("SELECT count(*) AS total FROM orders WHERE {condition}").format(condition=condition)
    return (listing, [*params, page.page_size, page.offset]), (count, params)



def _columns(names: Sequence[str], table: str | None = None) -> sql.Composable:
    if table is None:
        return sql.SQL(", ").join(map(sql.Identifier, names))
    return sql.SQL(", ").join(sql.Identifier(table, name) for name in names)


def _where(where: OrderFilter) -> tuple[sql.Composable, list[Any]]:
    conditions: list[sql.Composable] = [sql.SQL("TRUE")]
    params: list[Any] = []
    for name, condition in _FILTER_SQL.items():
        value = getattr(where, name)
        if value is not None:
            conditions.append(sql.SQL(condition))  # literal text from _FILTER_SQL, never user input
            params.append(value)
    return sql.SQL(" AND ").join(conditions), params


def _order_by(page: OrderPage) -> sql.Composable:
    """The requested order, then ``id`` in the same direction, so pages never overlap or skip.
    Only executed_at can be null; unexecuted orders go last either way. The NOT NULL columns
    get no NULLS clause: it would stop PostgreSQL from walking their (asset, created_at) index."""
    if page.sort_by not in SORT_FIELDS or page.sort_order not in SORT_ORDERS:
        raise ValueError(f"unsupported sort {page.sort_by} {page.sort_order}")
    direction = sql.SQL(page.sort_order.upper())
    nulls = sql.SQL(" NULLS LAST") if page.sort_by == "executed_at" else sql.SQL("")
    return sql.SQL("ORDER BY {column} {direction}{nulls}, id {direction}").format(
        column=sql.Identifier(page.sort_by), direction=direction, nulls=nulls
    )


_SIGNAL_JSON_COLUMNS = ("raw_payload", "rejection_details", "decision")
_SIGNAL_SQL = """
    SELECT signal_id, status, raw_payload::text AS raw_payload, raw_text, body_size, signal_type, asset, amount,
           confidence, signal_timestamp, strategy_id, is_warmup, rejection_code, rejection_message,
           rejection_details::text AS rejection_details, decision::text AS decision, attempts, deliveries,
           trace_id, received_at, processed_at
    FROM signals WHERE signal_id = %s
"""

# Orders linked either way: by orders.signal_id, or by a relationship row (legs of a split).
_LINKED_ORDERS_SQL = sql.SQL("""
    SELECT {columns}, r.relationship_type, r.execution_sequence, r.allocation_amount, r.allocation_quantity
    FROM orders o LEFT JOIN signal_order_relationships r ON r.order_id = o.id
    WHERE o.signal_id = %(signal_id)s
       OR o.id IN (SELECT order_id FROM signal_order_relationships WHERE signal_id = %(signal_id)s)
    ORDER BY r.execution_sequence NULLS LAST, o.created_at, o.id
""").format(columns=_columns(ORDER_COLUMNS, "o"))

_EVENTS_SQL = """
    SELECT event_id, event_type, order_uuid, trace_id, created_at, published_at
    FROM order_events_outbox WHERE signal_id = %s ORDER BY seq
"""

_OUTBOX_BACKLOG_SQL = "SELECT count(*) AS backlog FROM order_events_outbox WHERE published_at IS NULL"

# Every execution of the orders, as the merge applied it to the position (order_fills: one row
# per increase of cumExecQty, whichever path saw it first).
_FILLS_SQL = """
    SELECT id, order_uuid, side, quantity, price, value, fee, source, filled_at
    FROM order_fills WHERE order_uuid = ANY(%s) ORDER BY filled_at, id
"""

# The service runs one-way mode; prefer that row should another mode ever appear.
_POSITION_SQL = sql.SQL(
    "SELECT {columns} FROM positions WHERE asset = %s ORDER BY (mode = 'one_way') DESC, mode LIMIT 1"
).format(columns=_columns(POSITION_COLUMNS))


# --- helpers ------------------------------------------------------------------------------


# Rows as dicts whatever row factory the pool's connections were given.


async def _all(conn: psycopg.AsyncConnection[Any], query: Any, params: Any) -> list[Row]:
    async with conn.cursor(row_factory=dict_row) as cursor:
        await cursor.execute(query, params)
        return list(await cursor.fetchall())


async def _one(conn: psycopg.AsyncConnection[Any], query: Any, params: Any) -> Row | None:
    async with conn.cursor(row_factory=dict_row) as cursor:
        await cursor.execute(query, params)
        return await cursor.fetchone()


async def _position(conn: psycopg.AsyncConnection[Any], asset: str) -> Row | None:
    return await _one(conn, _POSITION_SQL, (asset,))


async def _fills(conn: psycopg.AsyncConnection[Any], order_ids: Sequence[uuid.UUID]) -> list[Row]:
    return await _all(conn, _FILLS_SQL, (list(order_ids),)) if order_ids else []


def _as_uuid(key: str) -> uuid.UUID | None:
    """Only the canonical 36-character form: ``uuid.UUID`` also takes braces, ``urn:`` and
    32 bare hex digits, which would make a venue id of that shape look internal."""
    if len(key) != 36:
        return None
    try:
        return uuid.UUID(key)
    except ValueError:
        return None


def _decode_json(row: Row, columns: Sequence[str]) -> dict[str, Any]:
    """jsonb is read as text and decoded here with Decimal numbers: psycopg's default loader
    would turn them into floats."""
    decoded = dict(row)
    for column in columns:
        text = decoded[column]
        decoded[column] = None if text is None else json.loads(text, parse_float=Decimal)
    return decoded
