"""JSON views the API and the operator desk share (decimals and times are left to
``events.dumps``): an order as ``GET /api/v1/orders/{id}`` shows it, a position, a close's
answer, and the trading state as ``GET /api/v1/trading-state`` shows it."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from ordermgr.domain.model import ORDER_API_FIELDS, OrderRecord
from ordermgr.domain.positions import Position, unrealized_pnl
from ordermgr.domain.trading import ScopeState, TradingStates


def order_json(order: OrderRecord) -> dict[str, Any]:
    return {field: getattr(order, field) for field in ORDER_API_FIELDS}


def position_json(position: Position) -> dict[str, Any]:
    price = position.last_price
    return {"asset": position.asset, "size": position.size, "average_entry_price": position.average_entry_price,
            "realized_pnl": position.realized_pnl, "fees": position.fees, "last_price": price,
            "unrealized_pnl": unrealized_pnl(position, price) if price else Decimal(0)}  # fmt: skip


def close_json(status: str, orders: Sequence[OrderRecord], position: Position, venue_size: Decimal | None,
               error: str | None) -> dict[str, Any]:  # fmt: skip
    """The answer of ``POST /api/v1/positions/{asset}/close`` (contract §12)."""
    body: dict[str, Any] = {"status": status, "orders": [order_json(o) for o in orders],
                            "position": position_json(position), "venue_size": venue_size}  # fmt: skip
    if error:
        body["error"] = error
    return body


def scope_json(state: ScopeState) -> dict[str, Any]:
    return {"state": state.state.value, "reason": state.reason, "message": state.message,
            "source": state.source.value if state.source else None, "operator": state.operator,
            "since": state.since}  # fmt: skip


def trading_states_json(states: TradingStates) -> dict[str, Any]:
    return {"global": scope_json(states.global_state),
            "assets": {asset: scope_json(state) for asset, state in sorted(states.assets.items())}}  # fmt: skip
