"""The symbol actor: owns one symbol's open orders and position and handles its mailbox one
message at a time, so nothing else ever changes them concurrently (contract §7.1).

A signal's path: stored → decided (pure) → intents committed → venue → outcome committed →
acknowledged. A crash at any instant leaves either nothing acknowledged or a record that the
next delivery or the startup reconciliation settles, never a second order.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import anyio
import attrs
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream

from ordermgr import decision, failpoints
from ordermgr.errors import VenueUnavailable
from ordermgr.events import OrderEvent, order_event
from ordermgr.messages import ActorMessage, SignalReceived
from ordermgr.model import (
    Accepted, Instrument, OrderRecord, OrderRequest, OrderType, Rejected, Side, Signal, Unavailable, Unknown,
    WriteOutcome,
)  # fmt: skip
from ordermgr.ports import Venue
from ordermgr.store import PgStore, until_stored

log = logging.getLogger(__name__)

ACTIVE = ("submitting", "pending", "partially_filled")


class ExposureBook:
    """Each actor writes its own symbol's exposure; risk checks read the total. Only actors
    write, each its own key, so no two writers ever touch the same entry."""

    def __init__(self) -> None:
        self._by_symbol: dict[str, Decimal] = {}

    def set(self, symbol: str, exposure_usdt: Decimal) -> None:
        self._by_symbol[symbol] = exposure_usdt

    def total(self) -> Decimal:
        return sum(self._by_symbol.values(), Decimal(0))


@attrs.frozen
class ActorDeps:
    store: PgStore
    venue: Venue
    settings: decision.DecisionSettings
    exposure: ExposureBook
    wake_outbox: Callable[[], None]
    dry_run: bool = False
    # Instrument rules to use when the venue cannot be reached in dry-run (documented defaults).
    fallback_instruments: Callable[[], dict[str, Instrument]] = dict
    now: Callable[[], datetime] = lambda: datetime.now(UTC)


class SymbolActor:
    def __init__(self, symbol: str, deps: ActorDeps) -> None:
        self.symbol = symbol
        self._deps = deps
        self._open: dict[str, OrderRecord] = {}  # order_link_id → our active orders
        self._last_price: Decimal | None = None
        self.handled = 0

    async def run(
        self, inbox: MemoryObjectReceiveStream[ActorMessage], *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Load this symbol's state, then handle messages until every sender has closed."""
        for order in await until_stored(self._deps.store.active_orders, self.symbol):
            self._open[order.order_link_id] = order
        task_status.started()
        async with inbox:
            async for message in inbox:
                await self._on_signal(message)
                self.handled += 1
        log.info("symbol actor drained", extra={"asset": self.symbol})

    # --- signals ---------------------------------------------------------------------------

    async def _on_signal(self, message: SignalReceived) -> None:
        signal, store = message.signal, self._deps.store
        context = _context(signal)
        log.info("signal received", extra={**context, "redelivered": message.delivery.redelivered})
        known = await until_stored(store.begin_signal, signal, message.body_size)
        if known.status == "accepted":
            log.info("signal already handled; skipped", extra={**context, "deliveries": known.deliveries})
        elif known.status == "processing":
            await self._resume(signal)
        else:
            await self._evaluate(signal, attempt=known.attempts + 1)
        await message.delivery.ack()
        log.info("signal acknowledged", extra={**context, "latency_ms": _ms_since(message.received_monotonic)})

    async def _evaluate(self, signal: Signal, attempt: int) -> None:
        context = {**_context(signal), "attempt": attempt}
        market = await self._market_context(signal)
        chosen = market if isinstance(market, decision.Refusal) else decision.plan(signal, market, self._deps.settings)
        if isinstance(chosen, decision.Refusal):
            await self._refuse(signal, attempt, chosen)
            return
        log.info("signal validated; decision made", extra={**context, **_decision_log(chosen)})
        if not self._deps.dry_run:
            await self._cancel_opposite(signal, chosen.side)
        requests = decision.order_requests(chosen, signal.signal_id, attempt)
        await self._place(signal, attempt, chosen, requests)

    async def _refuse(self, signal: Signal, attempt: int, refusal: decision.Refusal) -> None:
        log.warning(
            "signal rejected",
            extra={**_context(signal), "code": refusal.code, "reason": refusal.message, "details": dict(refusal.details)},
        )
        event = self._event("rejected", None, signal, rejection=(refusal.code, refusal.message))
        await until_stored(
            self._deps.store.record_refusal, signal, attempt, refusal.code, refusal.message, refusal.details, event
        )
        self._deps.wake_outbox()

    async def _market_context(self, signal: Signal) -> decision.MarketContext | decision.Refusal:
        """What the decision needs from the venue. Live trading without the venue's answers
        refuses plainly; dry-run falls back to the snapshot price and default filters."""
        try:
            instrument = await self._deps.venue.instrument(self.symbol)
            self._last_price = (await self._deps.venue.ticker(self.symbol)).last_price
            balance = None if self._deps.dry_run else await self._deps.venue.available_balance()
        except VenueUnavailable as exc:
            if not self._deps.dry_run:
                return decision.Refusal("venue_unavailable", f"the venue could not be reached: {exc}", {})
            instrument = self._deps.fallback_instruments().get(self.symbol)
            balance = None
        if instrument is None:
            return decision.Refusal("unknown_symbol", f"{self.symbol} is not listed by the venue", {})
        return decision.MarketContext(
            instrument=instrument,
            last_price=self._last_price,
            available_balance=balance,
            position_size=Decimal(0),
            total_exposure_usdt=self._deps.exposure.total(),
            open_orders=tuple(_open_view(order) for order in self._open.values()),
        )

    # --- placement -------------------------------------------------------------------------

    async def _place(
        self, signal: Signal, attempt: int, chosen: decision.Plan, requests: tuple[OrderRequest, ...]
    ) -> None:
        now = self._deps.now()
        dry_run = self._deps.dry_run
        records = [_intent(request, signal, now, dry_run) for request in requests]
        relationship = "one_to_one" if len(records) == 1 else "one_to_many"
        allocations = [(relationship, leg.sequence, leg.allocation_usdt, leg.qty) for leg in chosen.legs]
        events = [self._event("created", record, signal) for record in records] if dry_run else []
        await until_stored(
            self._deps.store.record_intents, signal, attempt, _decision_record(chosen, attempt), records, allocations,
            signal_status="accepted" if dry_run else "processing", events=events,
        )  # fmt: skip
        if dry_run:
            for record in records:
                log.info("order simulated (dry-run)", extra={**_context(signal), **_order_context(record)})
            self._deps.wake_outbox()
            return
        for record in records:
            self._open[record.order_link_id] = record
        failpoints.hit(failpoints.AFTER_INTENT_COMMIT)
        await self._send_all(signal, records, settled=0)

    async def _send_all(self, signal: Signal, records: list[OrderRecord], *, settled: int) -> None:
        """Send each intent and commit its outcome; the last commit also settles the signal
        (``settled`` legs of it were already placed earlier)."""
        outcomes: list[WriteOutcome] = []
        for index, record in enumerate(records):
            log.info("order sent", extra={**_record_context(record), **_order_context(record)})
            outcomes.append(await self._deps.venue.place_order(_request(record)))
            failpoints.hit(failpoints.AFTER_VENUE_CALL)
            last = index == len(records) - 1
            status = _signal_status(outcomes, settled) if last else None
            await self._settle(signal, record, outcomes[-1], signal_status=status)

    async def _settle(
        self, signal: Signal | None, record: OrderRecord, outcome: WriteOutcome, *, signal_status: str | None = None
    ) -> None:
        """Commit what the venue said about one intent."""
        context = {**_record_context(record), **_order_context(record)}
        now = self._deps.now()
        match outcome:
            case Accepted(order_id=order_id):
                updated = attrs.evolve(record, order_id=order_id, status="pending", updated_at=now)
                log.info("order acknowledged", extra={**context, "order_id": order_id})
                await self._commit(updated, self._event("created", updated, signal), signal_status)
            case Rejected(code=code, message=message):
                await self._reject(signal, record, f"{code}: {message}", now, signal_status)
            case Unavailable(reason=reason):
                await self._reject(signal, record, f"venue_unavailable: {reason}", now, signal_status)
            case Unknown(reason=reason):
                # May exist on the venue: keep the intent; sync settles it by orderLinkId.
                log.warning("order outcome unknown; left for reconciliation", extra={**context, "reason": reason})

    async def _reject(
        self, signal: Signal | None, record: OrderRecord, reason: str, now: datetime, signal_status: str | None
    ) -> None:
        updated = attrs.evolve(record, status="rejected", rejection_reason=reason, updated_at=now)
        code, _, message = reason.partition(": ")
        log.warning("order rejected", extra={**_record_context(record), "code": code, "reason": message})
        await self._commit(updated, self._event("rejected", updated, signal, rejection=(code, message)), signal_status)

    async def _commit(self, record: OrderRecord, event: OrderEvent | None, signal_status: str | None = None) -> None:
        await until_stored(self._deps.store.record_order, record, [event] if event else [], signal_status=signal_status)
        if record.status in ACTIVE:
            self._open[record.order_link_id] = record
        else:
            self._open.pop(record.order_link_id, None)
        self._deps.exposure.set(self.symbol, self._exposure())
        if event is not None:
            self._deps.wake_outbox()

    async def _resume(self, signal: Signal) -> None:
        """An earlier delivery recorded intents and then died before settling them. Send each
        unsettled intent again with its own orderLinkId: the venue refuses a second order with
        the same id (110072), so this either places it once or finds the one placed."""
        records = await until_stored(self._deps.store.orders_for_signal, signal.signal_id)
        unsettled = [record for record in records if record.status == "submitting"]
        log.info("resuming an interrupted signal", extra={**_context(signal), "unsettled_orders": len(unsettled)})
        placed = sum(1 for record in records if record.status not in ("submitting", "rejected"))
        if unsettled:
            await self._send_all(signal, unsettled, settled=placed)

    async def _cancel_opposite(self, signal: Signal, side: Side) -> None:
        """Contract §7.7: a new signal cancels this symbol's open orders on the other side."""
        for view in decision.orders_to_cancel(side, [_open_view(order) for order in self._open.values()]):
            outcome = await self._deps.venue.cancel_order(self.symbol, view.order_link_id)
            log.info("opposite order cancel requested", extra={
                **_context(signal), "order_link_id": view.order_link_id, "outcome": type(outcome).__name__})  # fmt: skip

    def _exposure(self) -> Decimal:
        price = self._last_price or Decimal(0)
        return sum(((o.quantity - o.filled_quantity) * (o.price or price) for o in self._open.values()), Decimal(0))

    def _event(
        self,
        event_type: str,
        record: OrderRecord | None,
        signal: Signal | None,
        *,
        rejection: tuple[str, str] | None = None,
    ) -> OrderEvent:
        assert record is not None or signal is not None
        signal_id = record.signal_id if record is not None else signal.signal_id  # type: ignore[union-attr]
        trace_id = signal.trace_id if signal is not None else record.trace_id  # type: ignore[union-attr]
        return order_event(event_type, order=record, signal=signal, signal_id=signal_id, trace_id=trace_id,
                           now=self._deps.now(), last_price=self._last_price, rejection=rejection)  # fmt: skip


# --- pure helpers -----------------------------------------------------------------------------


def _intent(request: OrderRequest, signal: Signal, now: datetime, dry_run: bool) -> OrderRecord:
    return OrderRecord(
        id=uuid.uuid4(), order_id=None, order_link_id=request.order_link_id, signal_id=signal.signal_id,
        asset=request.symbol, side=request.side.value, order_type=request.order_type.value,
        status="dry_run" if dry_run else "submitting", quantity=request.qty, price=request.price,
        created_at=now, updated_at=now, is_dry_run=dry_run, trace_id=signal.trace_id, category=request.category,
        time_in_force=request.time_in_force, reduce_only=request.reduce_only,
    )  # fmt: skip


def _request(record: OrderRecord) -> OrderRequest:
    return OrderRequest(
        symbol=record.asset, side=Side(record.side), order_type=OrderType(record.order_type), qty=record.quantity,
        price=record.price, order_link_id=record.order_link_id, time_in_force=record.time_in_force,
        reduce_only=record.reduce_only, category=record.category,
    )  # fmt: skip


def _open_view(record: OrderRecord) -> decision.OpenOrder:
    return decision.OpenOrder(
        order_link_id=record.order_link_id, side=Side(record.side), order_type=OrderType(record.order_type),
        qty=record.quantity, filled=record.filled_quantity, price=record.price, created_at=record.created_at,
    )  # fmt: skip


def _signal_status(outcomes: list[WriteOutcome], settled: int) -> str | None:
    """accepted once any leg is on the venue, rejected when none is, None while one is unknown."""
    if any(isinstance(outcome, Unknown) for outcome in outcomes):
        return None
    placed = settled + sum(1 for outcome in outcomes if isinstance(outcome, Accepted))
    return "accepted" if placed else "rejected"


def _decision_record(chosen: decision.Plan, attempt: int) -> dict[str, Any]:
    return {
        "attempt": attempt,
        "order_type": chosen.order_type.value,
        "side": chosen.side.value,
        "price": chosen.price,
        "reference_price": chosen.reference_price,
        "time_in_force": chosen.time_in_force,
        "reduce_only": chosen.reduce_only,
        "type_reason": chosen.type_reason,
        "legs": [{"sequence": leg.sequence, "qty": leg.qty, "allocation_usdt": leg.allocation_usdt} for leg in chosen.legs],
    }


def _decision_log(chosen: decision.Plan) -> dict[str, Any]:
    return {
        "order_type": chosen.order_type.value,
        "side": chosen.side.value,
        "price": str(chosen.price) if chosen.price is not None else None,
        "quantity": str(sum((leg.qty for leg in chosen.legs), Decimal(0))),
        "legs": len(chosen.legs),
        "reduce_only": chosen.reduce_only,
        "type_reason": chosen.type_reason,
    }


def _context(signal: Signal) -> dict[str, Any]:
    return {"trace_id": signal.trace_id, "signal_id": signal.signal_id, "asset": signal.asset}


def _record_context(record: OrderRecord) -> dict[str, Any]:
    return {"trace_id": record.trace_id, "signal_id": record.signal_id, "asset": record.asset}


def _order_context(record: OrderRecord) -> dict[str, Any]:
    return {"order_link_id": record.order_link_id, "order_type": record.order_type, "side": record.side,
            "quantity": str(record.quantity), "price": str(record.price) if record.price is not None else None}  # fmt: skip


def _ms_since(start: float) -> float:
    return round((time.monotonic() - start) * 1000, 1)
