"""One merge for every source of order state (contract §7.9).

Order updates come from ws-gateway and from REST sync, each possibly twice, late, or out of
order. All of them pass through :func:`merge`, whose rules make repetition and reordering
harmless:

- **cumulative amounts never decrease**: ``cumExecQty``, ``cumExecValue`` and ``cumExecFee``
  are each merged by maximum, so a stale update with lower values changes nothing;
- **the fill delta is the increase of those amounts**, so applying the same or an older update
  again yields no delta, and every fill reaches the position exactly once;
- **status only moves forward**: submitting < pending < partially_filled < terminal. Terminal
  states (filled, cancelled, rejected) never go back, with one exception: cancelled or rejected
  may still become *filled*, because executions win over status. Bybit documents a cancel racing
  a fill that ends in ``Filled`` messages after the cancel (bybit.md §2, race note);
- **executions imply status**: cumulative quantity above zero means at least
  partially_filled, and reaching the order quantity means filled, whatever status the update
  carried. Together with the maximum rule this makes the final state independent of the order
  in which updates arrive.

The amounts are merged field by field. Bybit sends the three as one consistent snapshot, so
in practice they move together; taking each maximum separately keeps the guarantees even when
they do not.
"""

from __future__ import annotations

import enum
from decimal import Decimal
from typing import Final

import attrs

from ordermgr.domain.model import VenueOrder

_ZERO: Final = Decimal(0)


class OrderStatus(enum.StrEnum):
    SUBMITTING = "submitting"  # intent written, venue not yet confirmed
    PENDING = "pending"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCELLED = "cancelled"
    REJECTED = "rejected"
    DRY_RUN = "dry_run"  # never sent; no venue update applies to it

    @property
    def is_terminal(self) -> bool:
        return _RANK[self] == _TERMINAL_RANK

    @property
    def is_open(self) -> bool:
        """Open or in flight: counts as exposure and is swept by sync."""
        return _RANK[self] < _TERMINAL_RANK


_TERMINAL_RANK: Final = 3
_RANK: Final = {
    OrderStatus.SUBMITTING: 0,
    OrderStatus.PENDING: 1,
    OrderStatus.PARTIALLY_FILLED: 2,
    OrderStatus.FILLED: _TERMINAL_RANK,
    OrderStatus.CANCELLED: _TERMINAL_RANK,
    OrderStatus.REJECTED: _TERMINAL_RANK,
    OrderStatus.DRY_RUN: _TERMINAL_RANK,
}

_BYBIT_STATUS: Final = {
    "New": OrderStatus.PENDING,
    "Untriggered": OrderStatus.PENDING,
    "Triggered": OrderStatus.PENDING,
    "PartiallyFilled": OrderStatus.PARTIALLY_FILLED,
    "Filled": OrderStatus.FILLED,
    "Cancelled": OrderStatus.CANCELLED,
    "PartiallyFilledCanceled": OrderStatus.CANCELLED,
    "Deactivated": OrderStatus.CANCELLED,
    "Rejected": OrderStatus.REJECTED,
}


def bybit_status(order_status: str) -> OrderStatus | None:
    """Our status for a Bybit ``orderStatus``; None for a value Bybit may add later."""
    return _BYBIT_STATUS.get(order_status)


@attrs.frozen
class OrderState:
    """What we know of one order. Cumulative amounts mirror Bybit's ``cumExec*`` fields."""

    status: OrderStatus
    quantity: Decimal
    price: Decimal | None = None  # the Limit price; None for Market
    order_id: str | None = None  # the venue's id, once known
    filled_quantity: Decimal = _ZERO  # cumExecQty
    filled_value: Decimal = _ZERO  # cumExecValue
    fees: Decimal = _ZERO  # cumExecFee
    venue_updated_ms: int = 0  # updatedTime of the freshest update applied
    reject_reason: str = ""  # Bybit rejectReason that ended the order, if any

    @property
    def average_price(self) -> Decimal | None:
        """Volume-weighted fill price, ``cumExecValue / cumExecQty``; None before any fill."""
        return self.filled_value / self.filled_quantity if self.filled_quantity > 0 else None

    @property
    def remaining_quantity(self) -> Decimal:
        return max(self.quantity - self.filled_quantity, _ZERO)

    @classmethod
    def new(cls, quantity: Decimal, price: Decimal | None, *, dry_run: bool = False) -> OrderState:
        """The state of an intent before any venue call (or of a dry-run order)."""
        status = OrderStatus.DRY_RUN if dry_run else OrderStatus.SUBMITTING
        return cls(status=status, quantity=quantity, price=price)


@attrs.frozen
class FillDelta:
    """Increase of the cumulative amounts by one merge: what the position must absorb."""

    qty: Decimal
    value: Decimal
    fee: Decimal

    @property
    def price(self) -> Decimal:
        """``value / qty``; 0 for a fee-only delta (``apply_fill`` ignores it then)."""
        return self.value / self.qty if self.qty > 0 else _ZERO


@attrs.frozen
class MergeResult:
    """The merged state, the fill to apply (if any) and the order event to publish (if any)."""

    state: OrderState
    fill: FillDelta | None = None
    # created, modified, partially_filled, filled, cancelled or rejected; None: nothing to tell
    event_type: str | None = None


def merge(state: OrderState, update: VenueOrder) -> MergeResult:
    """Fold one venue update into ``state`` by the rules in the module docstring."""
    if state.status is OrderStatus.DRY_RUN:
        return MergeResult(state)
    fill = _fill_delta(state, update)
    filled_qty = state.filled_quantity + (fill.qty if fill else _ZERO)
    fresh = update.updated_ms >= state.venue_updated_ms
    quantity, price = _terms(state, update, fresh)
    status = _next_status(state.status, bybit_status(update.status), filled_qty, quantity)
    merged = attrs.evolve(
        state,
        status=status,
        quantity=quantity,
        price=price,
        order_id=state.order_id or update.order_id or None,
        filled_quantity=filled_qty,
        filled_value=state.filled_value + (fill.value if fill else _ZERO),
        fees=state.fees + (fill.fee if fill else _ZERO),
        venue_updated_ms=max(state.venue_updated_ms, update.updated_ms),
        reject_reason=_reject_reason(state, status, update),
    )
    return MergeResult(merged, fill, _event_type(state, merged, fill))


def accept(state: OrderState, order_id: str) -> MergeResult:
    """The venue acknowledged our create request: submitting → pending (event ``created``).
    A no-op when an order update already moved the order further."""
    if state.status is not OrderStatus.SUBMITTING:
        return MergeResult(state)
    merged = attrs.evolve(state, status=OrderStatus.PENDING, order_id=state.order_id or order_id)
    return MergeResult(merged, None, "created")


def reject(state: OrderState, reason: str) -> MergeResult:
    """Our create request was refused, or sync proved the venue never received it: submitting
    → rejected (event ``rejected``). Any other status is left alone: the venue knows the order."""
    if state.status is not OrderStatus.SUBMITTING:
        return MergeResult(state)
    merged = attrs.evolve(state, status=OrderStatus.REJECTED, reject_reason=reason)
    return MergeResult(merged, None, "rejected")


# --------------------------------------------------------------------------- helpers


def _fill_delta(state: OrderState, update: VenueOrder) -> FillDelta | None:
    delta = FillDelta(
        qty=max(update.cum_exec_qty - state.filled_quantity, _ZERO),
        value=max(update.cum_exec_value - state.filled_value, _ZERO),
        fee=max(update.cum_exec_fee - state.fees, _ZERO),
    )
    return delta if delta.qty or delta.value or delta.fee else None


def _terms(state: OrderState, update: VenueOrder, fresh: bool) -> tuple[Decimal, Decimal | None]:
    """Quantity and Limit price after an amend. Only a live order can be amended, and only a
    fresh update (not older than what we applied) may change them."""
    if state.status.is_terminal or not fresh:
        return state.quantity, state.price
    # Bybit reports a protection price on Market orders; our price stays None for them.
    price = update.price if state.price is not None and update.price else state.price
    return update.qty or state.quantity, price


def _next_status(
    current: OrderStatus, reported: OrderStatus | None, filled: Decimal, quantity: Decimal
) -> OrderStatus:
    status = current
    for candidate in (reported, _implied_by_fills(filled, quantity)):
        if candidate is not None and _moves_forward(status, candidate):
            status = candidate
    return status


def _implied_by_fills(filled: Decimal, quantity: Decimal) -> OrderStatus | None:
    if filled <= 0:
        return None
    if quantity > 0 and filled >= quantity:
        return OrderStatus.FILLED
    return OrderStatus.PARTIALLY_FILLED


def _moves_forward(current: OrderStatus, candidate: OrderStatus) -> bool:
    if current.is_terminal:
        # Late fills: executions win over a cancel or a rejection; nothing else leaves a terminal.
        return candidate is OrderStatus.FILLED and current is not OrderStatus.FILLED
    return _RANK[candidate] > _RANK[current]


def _reject_reason(state: OrderState, status: OrderStatus, update: VenueOrder) -> str:
    """Bybit's ``rejectReason`` of the update that cancelled or rejected the order. Cleared when
    late fills turn it into filled, so the final state does not depend on arrival order."""
    if status not in (OrderStatus.CANCELLED, OrderStatus.REJECTED):
        return ""
    if status is not state.status and update.reject_reason != "EC_NoError":
        return update.reject_reason
    return state.reject_reason


def _event_type(before: OrderState, after: OrderState, fill: FillDelta | None) -> str | None:
    if after.status is not before.status:
        if after.status is OrderStatus.PENDING:
            return "created"
        return after.status.value
    if fill is not None and fill.qty > 0:
        # More executions without a status change: a further partial fill, a late fill on a
        # cancelled order, or the last fill arriving after a "Filled" status (lessons.md 4).
        filled = after.status is OrderStatus.FILLED
        return OrderStatus.FILLED.value if filled else OrderStatus.PARTIALLY_FILLED.value
    if after != attrs.evolve(before, venue_updated_ms=after.venue_updated_ms):
        return "modified"  # an amend (quantity or price), or a fee-only adjustment
    return None
