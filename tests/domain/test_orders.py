from __future__ import annotations

import itertools
from decimal import Decimal

import attrs
import pytest

from ordermgr.domain.model import Side, VenueOrder
from ordermgr.domain.orders import (
    FillDelta,
    MergeResult,
    OrderState,
    OrderStatus,
    accept,
    bybit_status,
    merge,
    reject,
)

D = Decimal
S = OrderStatus


def update(
    status: str,
    cum_qty: str = "0",
    cum_value: str = "0",
    cum_fee: str = "0",
    updated_ms: int = 1,
    qty: str = "1",
    price: str | None = "100",
    reject_reason: str = "EC_NoError",
) -> VenueOrder:
    """A linear Limit order update as ws-gateway or sync would deliver it."""
    return VenueOrder(
        order_id="0b8f6a0e-venue",
        order_link_id="om-bbca3ee2f79c5b36f54e-1-1",
        symbol="BTCUSDT",
        side=Side.BUY,
        order_type="Limit",
        status=status,
        qty=D(qty),
        price=D(price) if price is not None else None,
        cum_exec_qty=D(cum_qty),
        cum_exec_value=D(cum_value),
        cum_exec_fee=D(cum_fee),
        avg_price=D(cum_value) / D(cum_qty) if D(cum_qty) else None,
        leaves_qty=D(qty) - D(cum_qty),
        reject_reason=reject_reason,
        created_ms=0,
        updated_ms=updated_ms,
    )


def state(
    status: OrderStatus = S.PENDING,
    filled: str = "0",
    value: str = "0",
    fees: str = "0",
    updated_ms: int = 1,
    qty: str = "1",
    price: str | None = "100",
    order_id: str | None = "0b8f6a0e-venue",
    reject_reason: str = "",
) -> OrderState:
    return OrderState(
        status=status,
        quantity=D(qty),
        price=D(price) if price is not None else None,
        order_id=order_id,
        filled_quantity=D(filled),
        filled_value=D(value),
        fees=D(fees),
        venue_updated_ms=updated_ms,
        reject_reason=reject_reason,
    )


def fill(qty: str, value: str, fee: str) -> FillDelta:
    return FillDelta(D(qty), D(value), D(fee))


SUBMITTING = OrderState.new(D("1"), D("100"))
POST_ONLY = "EC_PostOnlyWillTakeLiquidity"

# --------------------------------------------------------------------------- status map

BYBIT_STATUSES = [
    ("New", S.PENDING),
    ("Untriggered", S.PENDING),
    ("Triggered", S.PENDING),
    ("PartiallyFilled", S.PARTIALLY_FILLED),
    ("Filled", S.FILLED),
    ("Cancelled", S.CANCELLED),
    ("PartiallyFilledCanceled", S.CANCELLED),
    ("Deactivated", S.CANCELLED),
    ("Rejected", S.REJECTED),
    ("SomethingNew", None),
]


@pytest.mark.parametrize(("bybit", "ours"), BYBIT_STATUSES, ids=[b for b, _ in BYBIT_STATUSES])
def test_bybit_status_map(bybit: str, ours: OrderStatus | None) -> None:
    assert bybit_status(bybit) is ours


# --------------------------------------------------------------------------- one merge

MERGES = [
    # before, update, after, fill, event
    pytest.param(
        SUBMITTING, update("New"), state(S.PENDING), None, "created", id="created",
    ),
    pytest.param(
        state(), update("PartiallyFilled", "0.4", "40", "0.04", 2),
        state(S.PARTIALLY_FILLED, "0.4", "40", "0.04", 2), fill("0.4", "40", "0.04"),
        "partially_filled", id="first-partial-fill",
    ),
    pytest.param(
        state(S.PARTIALLY_FILLED, "0.4", "40", "0.04", 2),
        update("PartiallyFilled", "0.7", "71", "0.07", 3),
        state(S.PARTIALLY_FILLED, "0.7", "71", "0.07", 3), fill("0.3", "31", "0.03"),
        "partially_filled", id="further-partial-fill",
    ),
    pytest.param(
        state(S.PARTIALLY_FILLED, "0.7", "71", "0.07", 3), update("Filled", "1", "101", "0.1", 4),
        state(S.FILLED, "1", "101", "0.1", 4), fill("0.3", "30", "0.03"), "filled",
        id="completing-fill",
    ),
    pytest.param(
        state(S.FILLED, "1", "101", "0.1", 4), update("Filled", "1", "101", "0.1", 4),
        state(S.FILLED, "1", "101", "0.1", 4), None, None, id="duplicate",
    ),
    pytest.param(
        state(S.PARTIALLY_FILLED, "0.7", "71", "0.07", 3),
        update("PartiallyFilled", "0.4", "40", "0.04", 2),
        state(S.PARTIALLY_FILLED, "0.7", "71", "0.07", 3), None, None, id="stale-lower-cum-values",
    ),
    pytest.param(
        state(S.PARTIALLY_FILLED, "0.4", "40", "0.04", 2), update("New", updated_ms=1),
        state(S.PARTIALLY_FILLED, "0.4", "40", "0.04", 2), None, None, id="stale-status",
    ),
    pytest.param(
        state(S.FILLED, "1", "101", "0.1", 4), update("PartiallyFilled", "0.4", "40", "0.04", 9),
        state(S.FILLED, "1", "101", "0.1", 9), None, None, id="filled-never-regresses",
    ),
    pytest.param(
        state(S.FILLED, "1", "101", "0.1", 4), update("Cancelled", "1", "101", "0.1", 5),
        state(S.FILLED, "1", "101", "0.1", 5), None, None, id="cancel-after-fill-ignored",
    ),
    pytest.param(
        state(S.CANCELLED, updated_ms=4), update("New", updated_ms=5),
        state(S.CANCELLED, updated_ms=5), None, None, id="cancelled-never-reopens",
    ),
    pytest.param(
        state(S.REJECTED, reject_reason="EC_Others"), update("New", updated_ms=5),
        state(S.REJECTED, updated_ms=5, reject_reason="EC_Others"), None, None,
        id="rejected-never-reopens",
    ),
    pytest.param(
        state(S.PENDING), update("Cancelled", updated_ms=2, reject_reason=POST_ONLY),
        state(S.CANCELLED, updated_ms=2, reject_reason=POST_ONLY), None,
        "cancelled", id="cancelled-with-reason",
    ),
    pytest.param(
        SUBMITTING, update("Rejected", updated_ms=2, reject_reason="EC_Others"),
        state(S.REJECTED, updated_ms=2, reject_reason="EC_Others"), None, "rejected",
        id="rejected",
    ),
    pytest.param(
        state(S.CANCELLED, "0.4", "40", "0.04", 3), update("Cancelled", "0.6", "60", "0.06", 4),
        state(S.CANCELLED, "0.6", "60", "0.06", 4), fill("0.2", "20", "0.02"), "partially_filled",
        id="late-partial-fill-after-cancel",
    ),
    pytest.param(
        state(S.CANCELLED, "0.4", "40", "0.04", 3), update("Filled", "1", "100", "0.1", 4),
        state(S.FILLED, "1", "100", "0.1", 4), fill("0.6", "60", "0.06"), "filled",
        id="late-fill-after-cancel-completes",
    ),
    pytest.param(
        state(S.CANCELLED, "0.4", "40", "0.04", 3, reject_reason="EC_OrigClOrdIDDoesNotExist"),
        update("Cancelled", "1", "100", "0.1", 4),
        state(S.FILLED, "1", "100", "0.1", 4), fill("0.6", "60", "0.06"), "filled",
        id="executions-win-over-cancelled-status",
    ),
    pytest.param(
        state(), update("Filled", "0.6", "60", "0.06", 2),
        state(S.FILLED, "0.6", "60", "0.06", 2), fill("0.6", "60", "0.06"), "filled",
        id="filled-status-before-last-fill",
    ),
    pytest.param(
        state(S.FILLED, "0.6", "60", "0.06", 2), update("Filled", "1", "100", "0.1", 3),
        state(S.FILLED, "1", "100", "0.1", 3), fill("0.4", "40", "0.04"), "filled",
        id="last-fill-after-filled-status",
    ),
    pytest.param(
        state(), update("New", "0.5", "50", "0.05", 2),
        state(S.PARTIALLY_FILLED, "0.5", "50", "0.05", 2), fill("0.5", "50", "0.05"),
        "partially_filled", id="executions-imply-partially-filled",
    ),
    pytest.param(
        state(), update("New", updated_ms=2, qty="2", price="99"),
        state(updated_ms=2, qty="2", price="99"), None, "modified", id="amended",
    ),
    pytest.param(
        state(updated_ms=5, qty="2", price="99"), update("New", updated_ms=4),
        state(updated_ms=5, qty="2", price="99"), None, None, id="stale-amend-ignored",
    ),
    pytest.param(
        state(price=None), update("New", updated_ms=2, price="105"),
        state(updated_ms=2, price=None), None, None, id="market-protection-price-ignored",
    ),
    pytest.param(
        state(S.PARTIALLY_FILLED, "0.4", "40", "0.04", 2),
        update("PartiallyFilled", "0.4", "40", "0.05", 3),
        state(S.PARTIALLY_FILLED, "0.4", "40", "0.05", 3), fill("0", "0", "0.01"), "modified",
        id="fee-only-adjustment",
    ),
    pytest.param(
        state(updated_ms=1), update("New", updated_ms=7), state(updated_ms=7), None, None,
        id="newer-but-unchanged",
    ),
    pytest.param(
        OrderState.new(D("1"), D("100"), dry_run=True), update("Filled", "1", "100", "0.1", 2),
        OrderState.new(D("1"), D("100"), dry_run=True), None, None, id="dry-run-untouched",
    ),
]


@pytest.mark.parametrize(("before", "venue", "after", "delta", "event"), MERGES)
def test_merge(
    before: OrderState,
    venue: VenueOrder,
    after: OrderState,
    delta: FillDelta | None,
    event: str | None,
) -> None:
    assert merge(before, venue) == MergeResult(after, delta, event)


# --------------------------------------------------------------------------- order independence

SEQUENCES = [
    # updates of one order, final status
    pytest.param(
        [
            update("New", updated_ms=1),
            update("PartiallyFilled", "0.4", "40", "0.02", 2),
            update("PartiallyFilled", "0.7", "70.3", "0.035", 3),
            update("Filled", "1", "100.6", "0.05", 4),
        ],
        S.FILLED, id="fills-to-completion",
    ),
    pytest.param(
        [
            update("New", updated_ms=1),
            update("PartiallyFilled", "0.4", "40", "0.02", 2),
            update("Cancelled", "0.4", "40", "0.02", 3, reject_reason="EC_CancelByUser"),
        ],
        S.CANCELLED, id="partial-then-cancel",
    ),
    pytest.param(
        [
            update("New", updated_ms=1),
            update("PartiallyFilled", "0.5", "50", "0.025", 2),
            update("Cancelled", "0.5", "50", "0.025", 3),
            update("Filled", "1", "100", "0.05", 4),
        ],
        S.FILLED, id="late-fill-after-cancel",
    ),
    pytest.param(
        [
            update("New", updated_ms=1),
            update("Filled", "1", "100", "0.05", 2),
            update("Filled", "1", "100", "0.05", 3, reject_reason="EC_OrigClOrdIDDoesNotExist"),
        ],
        S.FILLED, id="bybit-cancel-fill-race",
    ),
    pytest.param(
        [update("New", updated_ms=1), update("Rejected", updated_ms=2, reject_reason="EC_Others")],
        S.REJECTED, id="rejected",
    ),
]


def _run(updates: list[VenueOrder]) -> tuple[OrderState, FillDelta]:
    current, total = SUBMITTING, fill("0", "0", "0")
    for venue in updates:
        result = merge(current, venue)
        current = result.state
        if result.fill is not None:
            total = FillDelta(
                total.qty + result.fill.qty,
                total.value + result.fill.value,
                total.fee + result.fill.fee,
            )
    return current, total


@pytest.mark.parametrize(("updates", "status"), SEQUENCES)
def test_any_order_and_repetition_ends_the_same(
    updates: list[VenueOrder], status: OrderStatus
) -> None:
    expected, expected_total = _run(updates)
    last = updates[-1]
    assert expected.status is status
    # Every fill is counted once: the deltas add up to the final cumulative amounts.
    assert expected_total == FillDelta(last.cum_exec_qty, last.cum_exec_value, last.cum_exec_fee)
    for order in itertools.permutations(updates):
        assert _run(list(order)) == (expected, expected_total), order
        assert _run([*order, *order]) == (expected, expected_total), order
        assert _run([u for u in order for _ in range(2)]) == (expected, expected_total), order


# --------------------------------------------------------------------------- acknowledgement

ACKS = [
    pytest.param(SUBMITTING, state(S.PENDING, updated_ms=0), "created", id="submitting-to-pending"),
    pytest.param(
        state(S.PARTIALLY_FILLED, "0.4", "40", "0.04", 2),
        state(S.PARTIALLY_FILLED, "0.4", "40", "0.04", 2), None, id="update-came-first",
    ),
    pytest.param(
        OrderState.new(D("1"), D("100"), dry_run=True),
        OrderState.new(D("1"), D("100"), dry_run=True), None, id="dry-run",
    ),
]


@pytest.mark.parametrize(("before", "after", "event"), ACKS)
def test_accept(before: OrderState, after: OrderState, event: str | None) -> None:
    assert accept(before, "0b8f6a0e-venue") == MergeResult(after, None, event)


REJECTS = [
    pytest.param(
        SUBMITTING,
        attrs.evolve(SUBMITTING, status=S.REJECTED, reject_reason="not_received_by_venue"),
        "rejected",
        id="submitting-to-rejected",
    ),
    pytest.param(state(S.PENDING), state(S.PENDING), None, id="venue-knows-it"),
    pytest.param(state(S.FILLED, "1", "100"), state(S.FILLED, "1", "100"), None, id="filled"),
]


@pytest.mark.parametrize(("before", "after", "event"), REJECTS)
def test_reject(before: OrderState, after: OrderState, event: str | None) -> None:
    assert reject(before, "not_received_by_venue") == MergeResult(after, None, event)


# --------------------------------------------------------------------------- derived values

DERIVED = [
    # state, average price, remaining quantity, is open
    pytest.param(SUBMITTING, None, D("1"), True, id="submitting"),
    pytest.param(state(S.PARTIALLY_FILLED, "0.4", "40.2"), D("100.5"), D("0.6"), True, id="part"),
    pytest.param(state(S.FILLED, "1", "100.6"), D("100.6"), D("0"), False, id="filled"),
    pytest.param(state(S.CANCELLED), None, D("1"), False, id="cancelled"),
    pytest.param(OrderState.new(D("1"), None, dry_run=True), None, D("1"), False, id="dry-run"),
]


@pytest.mark.parametrize(("order", "average", "remaining", "is_open"), DERIVED)
def test_derived(
    order: OrderState, average: Decimal | None, remaining: Decimal, is_open: bool
) -> None:
    assert (order.average_price, order.remaining_quantity, order.status.is_open) == (
        average,
        remaining,
        is_open,
    )


FILL_PRICES = [
    pytest.param(fill("0.1", "119.015", "0.071409"), D("1190.15"), id="bybit-execution-example"),
    pytest.param(fill("0", "0", "0.01"), D("0"), id="fee-only"),
]


@pytest.mark.parametrize(("delta", "price"), FILL_PRICES)
def test_fill_price(delta: FillDelta, price: Decimal) -> None:
    assert delta.price == price
