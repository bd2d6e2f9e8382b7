"""Trading state in PostgreSQL (contract §11.4): the current state per scope, every change with
its event (through the outbox, to ``order-manager.trading_state``), and the daily-loss
baselines. Read by every instance; written by the leader only, under its fence."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Final

from ordermgr.db.store import FENCE_CTE, PgStore, jsonb
from ordermgr.domain.trading import ScopeState, Source, StateChange, TradingState, TradingStates

TRADING_STATE_QUEUE: Final = "order-manager.trading_state"

_CHANGE = f"""
WITH {FENCE_CTE}, removed AS (
    DELETE FROM trading_state WHERE scope = %(scope)s AND %(remove)s AND (SELECT ok FROM fence)
), kept AS (
    INSERT INTO trading_state (scope, state, reason, message, source, operator, since)
    SELECT %(scope)s, %(state)s, %(reason)s, %(message)s, %(source)s, %(operator)s, %(at)s
    WHERE NOT %(remove)s AND (SELECT ok FROM fence)
    ON CONFLICT (scope) DO UPDATE SET state = EXCLUDED.state, reason = EXCLUDED.reason,
        message = EXCLUDED.message, source = EXCLUDED.source, operator = EXCLUDED.operator, since = EXCLUDED.since
), history AS (
    INSERT INTO trading_state_changes (scope, state, previous, reason, message, source, operator, request_id,
                                       epoch, at)
    SELECT %(scope)s, %(state)s, %(previous)s, %(reason)s, %(message)s, %(source)s, %(operator)s,
           %(request_id)s, %(fence_epoch)s, %(at)s
    WHERE (SELECT ok FROM fence)
), event AS (
    INSERT INTO order_events_outbox (event_id, event_type, body, queue)
    SELECT %(event_id)s, 'trading_state_changed', %(body)s, %(queue)s
    WHERE (SELECT ok FROM fence)
    ON CONFLICT (event_id) DO NOTHING
)
SELECT (SELECT ok FROM fence)
"""


class ControlStore:
    """The trading-state statements, on the store's pool and under its fence."""

    def __init__(self, store: PgStore) -> None:
        self._store = store

    async def trading_states(self) -> TradingStates:
        async with self._store.connection() as conn:
            cursor = await conn.execute("SELECT scope, state, reason, message, source, operator, since FROM trading_state")
            rows = await cursor.fetchall()
        return TradingStates.of((row["scope"], _scope_state(row)) for row in rows)

    async def change_trading_state(
        self, change: StateChange, previous: TradingState, at: datetime, event: Mapping[str, Any],
        request_id: uuid.UUID | None = None,
    ) -> None:  # fmt: skip
        """Record one change, its history row and its event in one statement. Safe to redo:
        the event id makes the redo publish nothing twice, and the history keeps one row per
        event (a redo after a lost answer may add a second identical history row, harmless)."""
        params = {
            "scope": change.scope, "remove": change.asset is not None and change.state is TradingState.ACTIVE,
            "state": change.state.value, "previous": previous.value, "reason": change.reason,
            "message": change.message, "source": change.source.value, "operator": change.operator,
            "request_id": request_id, "at": at, "event_id": event["event_id"], "body": jsonb(event),
            "queue": TRADING_STATE_QUEUE, **self._store.fence_params(),
        }  # fmt: skip
        async with self._store.connection() as conn:
            await conn.execute(_CHANGE, params)

    async def daily_baselines(self, day: date) -> dict[str, Decimal]:
        async with self._store.connection() as conn:
            cursor = await conn.execute("SELECT asset, net_pnl FROM daily_pnl_baselines WHERE day = %s", (day,))
            return {row["asset"]: row["net_pnl"] for row in await cursor.fetchall()}

    async def keep_daily_baseline(self, day: date, asset: str, net_pnl: Decimal) -> Decimal:
        """The asset's baseline for ``day``: the one stored first (by any instance) wins."""
        async with self._store.connection() as conn:
            cursor = await conn.execute(
                """
                WITH taken AS (
                    INSERT INTO daily_pnl_baselines (day, asset, net_pnl) VALUES (%(day)s, %(asset)s, %(net)s)
                    ON CONFLICT (day, asset) DO NOTHING RETURNING net_pnl
                )
                SELECT net_pnl FROM taken
                UNION ALL SELECT net_pnl FROM daily_pnl_baselines WHERE day = %(day)s AND asset = %(asset)s
                LIMIT 1
                """,
                {"day": day, "asset": asset, "net": net_pnl},
            )
            row = await cursor.fetchone()
        return row["net_pnl"] if row else net_pnl


def _scope_state(row: Mapping[str, Any]) -> ScopeState:
    return ScopeState(TradingState(row["state"]), row["reason"], row["message"], Source(row["source"]),
                      row["operator"], row["since"])  # fmt: skip
