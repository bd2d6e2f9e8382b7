"""Mutable records the engine keeps: orders, executions and positions (no I/O)."""

from __future__ import annotations

from decimal import Decimal
from typing import Final

import attrs

from ordermgr.domain.model import OrderType, Side

OPEN_STATUSES: Final = frozenset({"New", "PartiallyFilled", "Untriggered"})
ZERO: Final = Decimal(0)


@attrs.define
class Order:
    """One order as the venue keeps it. ``price`` of a Market order is its protection
    price, as Bybit stores it (bybit.md §1.1)."""

    order_id: str
    order_link_id: str
    symbol: str
    side: Side
    order_type: OrderType
    qty: Decimal
    price: Decimal
    time_in_force: str
    reduce_only: bool
    created_ms: int
    updated_ms: int
    seq: int  # creation order; breaks createdTime ties when sorting
    last_price_on_created: Decimal
    status: str = "New"
    reject_reason: str = "EC_NoError"
    cancel_type: str = "UNKNOWN"
    cum_exec_qty: Decimal = ZERO
    cum_exec_value: Decimal = ZERO
    cum_exec_fee: Decimal = ZERO
    closed_pnl: Decimal = ZERO

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    @property
    def leaves_qty(self) -> Decimal:
        # Bybit reports 0 left once an order is closed, even when it was cancelled early.
        return self.qty - self.cum_exec_qty if self.is_open else ZERO

    @property
    def avg_price(self) -> Decimal | None:
        if not self.cum_exec_qty:
            return None
        return self.cum_exec_value / self.cum_exec_qty


@attrs.frozen
class Execution:
    """One trade of an order (``/v5/execution/list``)."""

    exec_id: str
    order_id: str
    order_link_id: str
    symbol: str
    side: Side
    order_type: OrderType
    order_price: Decimal
    order_qty: Decimal
    leaves_qty: Decimal
    exec_price: Decimal
    exec_qty: Decimal
    exec_fee: Decimal
    fee_rate: Decimal
    is_maker: bool
    closed_size: Decimal
    exec_pnl: Decimal
    mark_price: Decimal
    exec_ms: int
    seq: int

    @property
    def exec_value(self) -> Decimal:
        return self.exec_price * self.exec_qty


@attrs.define
class Position:
    """One-way-mode position; ``size`` is signed (Sell = negative)."""

    symbol: str
    size: Decimal = ZERO
    avg_price: Decimal = ZERO
    cur_realised_pnl: Decimal = ZERO  # since the position last opened from flat
    cum_realised_pnl: Decimal = ZERO  # all time; includes fees, as on Bybit
    created_ms: int = 0
    updated_ms: int = 0
    seq: int = -1  # Bybit: -1 = never traded
