"""Pure position and margin arithmetic (signed sizes, average price, realized PnL)."""

from __future__ import annotations

from decimal import Decimal
from typing import Final

import attrs

from ordermgr.paper.records import ZERO, Position

AVG_PRICE_QUANTUM: Final = Decimal("0.00000001")  # Bybit shows avgPrice with ≤ 8 decimals


@attrs.frozen
class FillEffect:
    """What one fill did to a position: the PnL it realized and the size it closed."""

    realized_pnl: Decimal  # gross of fees
    closed_size: Decimal


@attrs.frozen
class Account:
    """The USDT margin picture of the UNIFIED account."""

    wallet_balance: Decimal
    unrealised_pnl: Decimal
    cum_realised_pnl: Decimal
    position_im: Decimal
    position_mm: Decimal
    order_im: Decimal

    @property
    def equity(self) -> Decimal:
        return self.wallet_balance + self.unrealised_pnl

    @property
    def initial_margin(self) -> Decimal:
        return self.position_im + self.order_im

    @property
    def available(self) -> Decimal:
        return max(ZERO, self.equity - self.initial_margin)


def apply_fill(position: Position, signed_qty: Decimal, price: Decimal) -> FillEffect:
    """Move ``position`` by ``signed_qty`` at ``price``; handles closing and flipping."""
    size = position.size
    if size == 0 or (size > 0) == (signed_qty > 0):
        # Opening or adding: the average price is the size-weighted mean.
        total = abs(size) + abs(signed_qty)
        position.avg_price = _round_avg((abs(size) * position.avg_price + abs(signed_qty) * price) / total)
        position.size = size + signed_qty
        return FillEffect(ZERO, ZERO)
    closed = min(abs(size), abs(signed_qty))
    direction = 1 if size > 0 else -1
    pnl = closed * (price - position.avg_price) * direction
    position.size = size + signed_qty
    if position.size == 0:
        position.avg_price = ZERO
    elif (position.size > 0) != (size > 0):
        # Flipped through zero: the remainder opened a new position at the fill price.
        position.avg_price = price
    return FillEffect(pnl, closed)


def unrealised_pnl(position: Position, mark: Decimal) -> Decimal:
    return position.size * (mark - position.avg_price) if position.size else ZERO


def closable_qty(position: Position, is_buy: bool) -> Decimal:
    """How much of an order on this side would reduce the position rather than open."""
    if position.size == 0 or (position.size > 0) == is_buy:
        return ZERO
    return abs(position.size)


def order_cost(qty: Decimal, price: Decimal, leverage: Decimal, taker_fee: Decimal) -> Decimal:
    """Initial margin of the opening part of an order plus the fee to open it."""
    value = qty * price
    return value / leverage + value * taker_fee


def _round_avg(value: Decimal) -> Decimal:
    return value.quantize(AVG_PRICE_QUANTUM).normalize()
