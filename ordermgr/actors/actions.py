"""Operator actions on one symbol (contract §12), run inside its actor like any other change.

They touch only our own orders (orderLinkIds in our namespace) and never ask the trading state:
a halt must never stop an operator from getting flat. A close is an intent like any other: its
orderLinkIds derive from the close request, and it is stored before the venue is called, so a
close interrupted by a crash is resumed (by the startup reconciliation, and by the request being
carried out again) and never sent twice or sized twice into a flip.
"""

from __future__ import annotations

import logging
import uuid
from decimal import ROUND_FLOOR, Decimal

import attrs

from ordermgr import failpoints
from ordermgr.actors.book import ACTIVE, SymbolBook, SyncResult, record_context, request_of
from ordermgr.domain import decision, trading
from ordermgr.domain.errors import VenueUnavailable
from ordermgr.domain.model import (
    Accepted, Instrument, OrderRecord, OrderRequest, OrderType, Priority, Side, Unknown, VenuePosition, WriteOutcome,
)  # fmt: skip
from ordermgr.domain.positions import Position
from ordermgr.ports import until_stored

log = logging.getLogger(__name__)


@attrs.frozen
class CancelResult:
    order: OrderRecord | None  # after the cancel; None when the order is unknown
    was_open: bool = True
    errors: tuple[str, ...] = ()


@attrs.frozen
class CancelAllResult:
    cancelled: int
    failed: tuple[tuple[str, str], ...]  # (order_link_id, why)


@attrs.frozen
class CloseResult:
    status: str  # closed, already_flat, failed
    orders: tuple[OrderRecord, ...]
    position: Position
    venue_size: Decimal | None = None  # the venue's position as read before the close
    error: str | None = None


def close_signal_id(request_id: uuid.UUID) -> str:
    """What a close's orders carry as their signal: the close request (no signal produced them)."""
    return f"{trading.CLOSE_PREFIX}{request_id}"


async def cancel_one(book: SymbolBook, order_link_id: str) -> CancelResult:
    record = book.open.get(order_link_id) or await until_stored(book.store.order_by_link_id, order_link_id)
    if record is None:
        return CancelResult(None, was_open=False)
    if record.status not in ACTIVE:
        return CancelResult(record, was_open=False)
    result = await book.cancel(order_link_id, resend_unseen=False)
    after = book.open.get(order_link_id) or await until_stored(book.store.order_by_link_id, order_link_id)
    return CancelResult(after, errors=result.errors)


async def cancel_all(book: SymbolBook, *, keep_signal: str | None = None) -> CancelAllResult:
    """Cancel every open order of ours on the symbol (but those of ``keep_signal``)."""
    cancelled, failed = 0, []
    for link in [link for link, order in book.open.items() if order.signal_id != keep_signal]:
        result = await cancel_one(book, link)
        status = result.order.status if result.order else "unknown"
        if status == "cancelled":
            cancelled += 1
        else:
            why = "; ".join(result.errors) or f"the order is {status} after the cancel"
            failed.append((link, why))
    return CancelAllResult(cancelled, tuple(failed))


async def close(book: SymbolBook, request_id: uuid.UUID, operator: str | None) -> CloseResult:
    """Cancel our open orders, read the venue's position and close it with reduce-only Market
    orders (split by ``maxMktOrderQty``). Carried out again for the same request, it finds its
    own intents and resumes them instead of sizing a new close."""
    signal_id = close_signal_id(request_id)
    context = {"asset": book.symbol, "request_id": str(request_id), "operator": operator}
    await cancel_all(book, keep_signal=signal_id)
    earlier = await until_stored(book.store.orders_for_signal, signal_id)
    if earlier:
        log.info("close already under way; resuming it", extra=context)
        return await _send(book, [book.open.get(r.order_link_id, r) for r in earlier], resume=True)
    try:
        venue_size = _venue_size(book.symbol, await book.venue.positions())
        instrument = await book.venue.instrument(book.symbol)
    except VenueUnavailable as exc:
        return CloseResult("failed", (), book.position, error=f"the venue's position is unknown: {exc}")
    if venue_size == 0:
        log.info("close: already flat on the venue", extra=context)
        return CloseResult("already_flat", (), book.position, venue_size)
    if instrument is None:
        return CloseResult("failed", (), book.position, venue_size, f"{book.symbol} is not listed by the venue")
    intents = [_intent(request, signal_id, book) for request in close_requests(instrument, venue_size, signal_id)]
    await until_stored(book.store.record_intents, intents)
    failpoints.hit(failpoints.AFTER_CLOSE_INTENT)
    log.warning("closing the position", extra={**context, "venue_size": str(venue_size), "orders": len(intents)})
    result = await _send(book, intents, resume=False)
    return attrs.evolve(result, venue_size=venue_size)


def close_requests(instrument: Instrument, venue_size: Decimal, signal_id: str) -> list[OrderRequest]:
    """Reduce-only Market orders that take ``venue_size`` (signed) to zero, each at most the
    instrument's market-order cap. The position is a multiple of the step, so the parts add up."""
    side = Side.SELL if venue_size > 0 else Side.BUY
    left, leg, requests = abs(venue_size), 1, []
    cap = decision.round_to_step(instrument.max_mkt_qty, instrument.qty_step, ROUND_FLOOR)
    while left > 0:
        qty = min(left, cap)
        requests.append(OrderRequest(
            symbol=instrument.symbol, side=side, order_type=OrderType.MARKET, qty=qty, price=None,
            order_link_id=decision.order_link_id(signal_id, 1, leg), time_in_force="IOC", reduce_only=True,
            priority=Priority.CLOSE,
        ))  # fmt: skip
        left, leg = left - qty, leg + 1
    return requests


async def _send(book: SymbolBook, records: list[OrderRecord], *, resume: bool) -> CloseResult:
    """Send the close's orders that are still intents, then look each one up so the answer
    carries its fill (a Market order fills at once)."""
    outcomes: list[WriteOutcome] = []
    book.track([r for r in records if r.status in ACTIVE])
    for record in records:
        if record.status == "submitting":
            log.info("order sent", extra={**record_context(record), "reduce_only": True, "resumed": resume})
            outcome = await book.venue.place_order(attrs.evolve(request_of(record), priority=Priority.CLOSE))
            await book.settle(record, outcome, settle_signal=False)
            outcomes.append(outcome)
    result = SyncResult()
    for record in records:
        current = book.open.get(record.order_link_id)
        if current is not None:
            result += await book.sync_one(current)
    after = [book.open.get(r.order_link_id) or await until_stored(book.store.order_by_link_id, r.order_link_id) or r
             for r in records]  # fmt: skip
    failed = [o for o in outcomes if not isinstance(o, Accepted | Unknown)]
    status = "failed" if failed or any(o.status == "rejected" for o in after) else "closed"
    error = "; ".join(str(o) for o in failed) or None
    return CloseResult(status, tuple(after), book.position, error=error)


def _venue_size(symbol: str, positions: list[VenuePosition]) -> Decimal:
    """The venue's signed size of ``symbol``; the list holds only non-flat positions."""
    return next((p.size for p in positions if p.symbol == symbol), Decimal(0))


def _intent(request: OrderRequest, signal_id: str, book: SymbolBook) -> OrderRecord:
    now = book.now()
    return OrderRecord(
        id=uuid.uuid4(), order_id=None, order_link_id=request.order_link_id, signal_id=signal_id,
        asset=request.symbol, side=request.side.value, order_type=request.order_type.value, status="submitting",
        quantity=request.qty, price=None, created_at=now, updated_at=now, time_in_force=request.time_in_force,
        reduce_only=True, category=request.category,
    )  # fmt: skip

