"""Positions from fills (contract §7.11): signed size, average entry, realized PnL and fees.

One-way mode: one signed position per symbol, positive long, negative short. Pure and
synchronous; the symbol actor applies each fill delta from :mod:`ordermgr.domain.orders` exactly once.

Fees follow Bybit's ``cumRealisedPnl``: every fee is charged to realized PnL as it is paid,
opening fills included, so a freshly opened position already shows a small negative realized
PnL, and ``realized_pnl`` can be compared with the venue's figure directly. ``fees`` is the
running total of those fees, kept separately for reporting; it is *already included* in
``realized_pnl`` (gross trading PnL = ``realized_pnl + fees``). A negative fee is a maker
rebate and raises realized PnL.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal
from typing import Final

import attrs

from ordermgr.domain.model import Side

_ZERO: Final = Decimal(0)


@attrs.frozen
class Position:
    """One symbol's position. ``average_entry_price`` is 0 whenever ``size`` is 0."""

    asset: str
    size: Decimal = _ZERO  # signed, base units
    average_entry_price: Decimal = _ZERO
    realized_pnl: Decimal = _ZERO  # net of fees, like Bybit's cumRealisedPnl
    fees: Decimal = _ZERO  # cumulative, already included in realized_pnl
    last_price: Decimal | None = None  # for unrealized PnL and exposure; None until known

    @property
    def is_flat(self) -> bool:
        return self.size == 0

    @property
    def side(self) -> Side | None:
        """Buy for a long, Sell for a short, None when flat (Bybit's position ``side``)."""
        if self.size == 0:
            return None
        return Side.BUY if self.size > 0 else Side.SELL


def apply_fill(
    position: Position, side: Side, qty: Decimal, price: Decimal, fee: Decimal
) -> Position:
    """The position after a fill of ``qty`` at ``price`` on ``side`` that cost ``fee``.

    - increasing (or opening): the entry becomes the quantity-weighted average;
    - reducing: PnL ``(price − entry) × closed × sign(position)`` is realized, entry unchanged;
      closing to zero resets the entry to 0;
    - through zero: the closed part is realized and the rest opens at ``price``.

    A ``qty`` of 0 is a fee-only delta (the venue raised ``cumExecFee`` alone): only the fee
    is applied and ``price`` is ignored.

    :raises ValueError: if ``qty`` is negative, or ``price`` is not positive for a real fill.
    """
    if qty < 0:
        raise ValueError(f"fill quantity must not be negative, got {qty}")
    if qty > 0 and price <= 0:
        raise ValueError(f"fill price must be positive, got {price}")
    # Fees are charged to realized PnL as paid, as Bybit's cumRealisedPnl does.
    charged = attrs.evolve(
        position, realized_pnl=position.realized_pnl - fee, fees=position.fees + fee
    )
    if qty == 0:
        return charged
    if position.size * side.sign >= 0:
        return _increase(charged, side, qty, price)
    return _reduce(charged, side, qty, price)


# Bybit reports a position's avgPrice with 8 decimals and realizes PnL against that figure;
# keeping ours the same way makes both agree to the last digit.
AVERAGE_PRICE_QUANTUM = Decimal("0.00000001")


def _increase(position: Position, side: Side, qty: Decimal, price: Decimal) -> Position:
    held = abs(position.size)
    entry = ((held * position.average_entry_price + qty * price) / (held + qty)).quantize(
        AVERAGE_PRICE_QUANTUM, rounding=ROUND_HALF_EVEN
    )
    return attrs.evolve(position, size=position.size + side.sign * qty, average_entry_price=entry)


def _reduce(position: Position, side: Side, qty: Decimal, price: Decimal) -> Position:
    held = abs(position.size)
    closed = min(qty, held)
    direction = 1 if position.size > 0 else -1
    realized = position.realized_pnl + (price - position.average_entry_price) * closed * direction
    size = position.size + side.sign * qty
    if size == 0:
        entry = _ZERO
    elif qty > held:  # flipped through zero: what is left was opened at this fill's price
        entry = price
    else:
        entry = position.average_entry_price
    return attrs.evolve(position, size=size, average_entry_price=entry, realized_pnl=realized)


def unrealized_pnl(position: Position, last_price: Decimal) -> Decimal:
    """``(last − entry) × size``: positive when a long is above or a short below its entry."""
    if position.size == 0:
        return _ZERO
    return (last_price - position.average_entry_price) * position.size


def with_last_price(position: Position, last_price: Decimal) -> Position:
    """The position marked at ``last_price`` (for unrealized PnL and exposure)."""
    return attrs.evolve(position, last_price=last_price)


def exposure_usdt(position: Position) -> Decimal:
    """|size| valued at the last price, else at the entry price when no price is known yet."""
    price = position.last_price if position.last_price is not None else position.average_entry_price
    return abs(position.size) * price
