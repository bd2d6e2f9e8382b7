"""The symbol actor: handles one symbol's mailbox one message at a time, so nothing else ever
changes its orders or position concurrently (contract §7.1). Its state lives in a SymbolBook.

A signal's path: stored → decided (pure) → intents committed → venue → outcome committed →
acknowledged. A crash at any instant leaves either nothing acknowledged or a record that the
next delivery or the startup reconciliation settles, never a second order.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import deque
from datetime import datetime
from decimal import Decimal
from typing import Any, assert_never

import anyio
import attrs
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream

from ordermgr.domain import decision, trading

from ordermgr import failpoints
from ordermgr.actors import actions
from ordermgr.actors.book import SymbolBook, SyncResult, open_view, record_context, request_of
from ordermgr.actors.deps import ActorDeps
from ordermgr.actors.messages import (
    ActorMessage, AdoptOrder, CancelAll, CancelOrder, ClosePosition, GetState, Nudge, OrderUpdate, SignalReceived,
    SnapshotTick, SyncRequest, ValidatePosition,
)  # fmt: skip
from ordermgr.domain.errors import VenueAuthError, VenueUnavailable
from ordermgr.domain.events import order_event
from ordermgr.domain.signals import reused_signal_id
from ordermgr.domain.model import (
    Accepted, OrderRecord, OrderRequest, Rejected, Side, Signal, SignalRecord, Unknown, WriteOutcome,
)  # fmt: skip
from ordermgr.ports import until_stored

log = logging.getLogger(__name__)

CREDENTIALS_BACKOFF_S = 5.0


@attrs.frozen
class ActorState:
    """What GetState answers: a copy, safe to read outside the actor."""

    symbol: str
    open_orders: tuple[OrderRecord, ...]
    position_size: Decimal
    average_entry_price: Decimal
    realized_pnl: Decimal
    last_price: Decimal | None
    handled: int


class SymbolActor:
    def __init__(self, symbol: str, deps: ActorDeps) -> None:
        self.symbol = symbol
        self._deps = deps
        self.book = SymbolBook(symbol, deps)
        self.handled = 0
        # Operator actions: handled before the next message of the mailbox, however long it is.
        self.urgent: deque[ActorMessage] = deque()

    async def run(
        self, inbox: MemoryObjectReceiveStream[ActorMessage], *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Load this symbol's state, then handle messages until every sender has closed."""
        await self.book.load()
        task_status.started()
        async with inbox:
            async for first in inbox:
                message: ActorMessage | None = first
                while message is not None:
                    while self.urgent:
                        await self._handle(self.urgent.popleft())
                    if isinstance(message, OrderUpdate):
                        # Order updates queued one after another are taken together (contract
                        # §14.3); the message that ends the run is handled next.
                        run, message = _run_of_updates(message, inbox)
                        await self._on_order_updates(run)
                        self.handled += len(run)
                        continue
                    if not isinstance(message, Nudge):
                        await self._handle(message)
                        self.handled += 1
                    message = None
        log.info("symbol actor drained", extra={"asset": self.symbol})

    async def _handle(self, message: ActorMessage) -> None:
        match message:
            case CancelOrder(order_link_id=link, reply=reply):
                _answer(reply, await actions.cancel_one(self.book, link))
            case CancelAll(reply=reply):
                _answer(reply, await actions.cancel_all(self.book))
            case ClosePosition(request_id=request_id, operator=operator, reply=reply):
                _answer(reply, await actions.close(self.book, request_id, operator))
            case Nudge():
                pass
            case SignalReceived():
                await self._on_signal(message)
            case OrderUpdate():
                await self._on_order_updates([message])
            case SyncRequest():
                await self._on_sync(message)
            case AdoptOrder(order=order, signal_id=signal_id):
                if order.order_link_id not in self.book.open:
                    await self.book.adopt(order, signal_id)
            case SnapshotTick():
                await self.book.snapshot()
            case ValidatePosition(venue_position=venue_position):
                await self.book.validate(venue_position)
            case GetState(reply=reply):
                with reply:
                    reply.send_nowait(self.state())
            case _:
                assert_never(message)

    def state(self) -> ActorState:
        position = self.book.position
        return ActorState(self.symbol, tuple(self.book.open.values()), position.size, position.average_entry_price,
                          position.realized_pnl, self.book.last_price, self.handled)  # fmt: skip

    # --- order updates and sync ---------------------------------------------------------------

    async def _on_order_updates(self, run: list[OrderUpdate]) -> None:
        """Reports of the same order that follow one another are merged and committed in one
        statement; each delivery is acked once what it reported is committed."""
        for group in _same_order_groups(run):
            link_id = group[0].order.order_link_id
            record = self.book.open.get(link_id) or await until_stored(self._deps.store.order_by_link_id, link_id)
            if record is None:
                log.info("order update for an order we do not know; sync will adopt it if it is ours",
                         extra={"asset": self.symbol, "order_link_id": link_id})  # fmt: skip
            else:
                await self.book.apply_all(record, [message.order for message in group], "ws_gateway")
            for message in group:
                if message.delivery is not None:
                    await message.delivery.ack()

    async def _on_sync(self, message: SyncRequest) -> None:
        result = await self.book.sync()
        delay_s = 0.5
        while message.strict and result.errors:
            log.error("startup reconciliation incomplete; retrying", extra={"asset": self.symbol,
                                                                            "errors": list(result.errors)})  # fmt: skip
            await anyio.sleep(delay_s)
            delay_s = min(10.0, delay_s * 2)
            result = await self.book.sync()
        if message.reply is not None:
            with message.reply:
                message.reply.send_nowait(result)

    # --- signals ------------------------------------------------------------------------------

    async def _on_signal(self, message: SignalReceived) -> None:
        signal = message.signal
        context = _context(signal)
        log.info("signal received", extra={**context, "redelivered": message.delivery.redelivered})
        self.book.metrics.signal_received()
        self.book.remember(signal)
        try:
            # Most signals are new: evaluate at once and store the signal with its outcome in
            # one statement. One that turns out to be known comes back with what is known.
            known = await self._evaluate(signal, attempt=1, first_delivery_size=message.body_size)
            if known is not None:
                await self._repeat(message, known)
        except VenueAuthError as exc:
            await until_stored(self._deps.store.begin_signal, signal, message.body_size, count_delivery=False)
            await self._hold(message, exc)
            return
        await message.delivery.ack()
        latency_ms = _ms_since(message.received_monotonic)
        self.book.metrics.ack_latency(latency_ms)
        log.info("signal acknowledged", extra={**context, "latency_ms": latency_ms})

    async def _repeat(self, message: SignalReceived, known: SignalRecord) -> None:
        """A signal id seen before: skip it once placed, finish it if interrupted, else evaluate it
        again; with another body it is another signal under a used id, refused."""
        signal = message.signal
        if not known.same_payload and known.status != "invalid":  # an invalid message is no signal to keep
            await self._refuse_reuse(message, known)
        elif known.status == "accepted":
            log.info("signal already handled; skipped", extra={**_context(signal), "deliveries": known.deliveries})
        elif known.status == "processing":
            await self._resume(signal)
        else:
            await self._evaluate(signal, attempt=known.attempts + 1)

    async def _refuse_reuse(self, message: SignalReceived, known: SignalRecord) -> None:
        """One signal per id (§7.2): a different body under a known id is never traded nor
        dropped. It is filed under an id of its own with its body, and answered ``rejected``
        once (its redeliveries find it filed and are only counted)."""
        signal = message.signal
        filed = attrs.evolve(signal, signal_id=reused_signal_id(signal.signal_id, message.delivery.body))
        code = "signal_id_reused"
        reason = (f"signal_id {signal.signal_id!r} was already used by a different signal (now {known.status}); "
                  f"this one is not traded and is kept as {filed.signal_id}")  # fmt: skip
        details = {"field": "signal_id", "signal_id": signal.signal_id, "first_status": known.status}
        event = order_event("rejected", order=None, signal=signal, signal_id=filed.signal_id, trace_id=signal.trace_id,
                            now=self._deps.now(), rejection=(code, reason))  # fmt: skip
        again = await until_stored(self._deps.store.record_decision, filed, 1, status="rejected",
                                   rejection=(code, reason, details), events=[event],
                                   first_delivery_size=message.body_size)  # fmt: skip
        if again is None:
            self.book.metrics.signal_rejected()
            log.warning("signal rejected", extra={**_context(signal), "code": code, "reason": reason,
                                                  "details": details})  # fmt: skip
            self._deps.wake_outbox()

    async def _hold(self, message: SignalReceived, exc: VenueAuthError) -> None:
        """Contract §7.13: refused credentials are a configuration error. The signal (stored) goes
        back to the queue (after a pause, so it does not spin) instead of being rejected."""
        log.critical("venue refused our credentials; signal returned to the queue",
                     extra={**_context(message.signal), "error": str(exc), "retry_in_s": CREDENTIALS_BACKOFF_S})  # fmt: skip
        await anyio.sleep(CREDENTIALS_BACKOFF_S)
        await message.delivery.requeue()

    async def _evaluate(
        self, signal: Signal, attempt: int, first_delivery_size: int | None = None
    ) -> SignalRecord | None:
        """Decide and record; None when recorded, what is known when the signal was not new."""
        stale = decision.stale(signal, self._deps.now(), self._deps.signal_max_age_s)
        if stale is not None:
            return await self._refuse(signal, attempt, stale, first_delivery_size)
        admission = self._admission(signal)
        if isinstance(admission, trading.Refused):
            return await self._refuse(signal, attempt, _refusal(admission), first_delivery_size)
        market = await self._market_context(signal)
        chosen = market if isinstance(market, decision.Refusal) else decision.plan(signal, market, self._deps.settings,
                                                                                     admission)  # fmt: skip
        if isinstance(chosen, decision.Refusal):
            return await self._refuse(signal, attempt, chosen, first_delivery_size)
        cancels = not self._deps.dry_run and bool(self._opposite_orders(chosen.side))
        if cancels and first_delivery_size is not None:
            # Cancelling touches the venue: make sure this is not a repeat first.
            known = await until_stored(self._deps.store.begin_signal, signal, first_delivery_size)
            if not known.is_new:
                return known
            first_delivery_size = None
        if first_delivery_size is None:  # stored already: this decision is the signal's
            _log_decision(signal, attempt, chosen)
        if cancels:
            await self._cancel_opposite(chosen.side)
        requests = decision.order_requests(chosen, signal.signal_id, attempt)
        return await self._place(signal, attempt, chosen, requests, first_delivery_size)

    async def _refuse(
        self, signal: Signal, attempt: int, refusal: decision.Refusal, first_delivery_size: int | None
    ) -> SignalRecord | None:
        event = order_event("rejected", order=None, signal=signal, signal_id=signal.signal_id, trace_id=signal.trace_id,
                            now=self._deps.now(), last_price=self.book.last_price,
                            rejection=(refusal.code, refusal.message))  # fmt: skip
        known = await until_stored(
            self._deps.store.record_decision, signal, attempt, status="rejected",
            rejection=(refusal.code, refusal.message, refusal.details), events=[event],
            first_delivery_size=first_delivery_size,
        )  # fmt: skip
        if known is None:
            self.book.metrics.signal_rejected()
            log.warning("signal rejected", extra={**_context(signal), "code": refusal.code, "reason": refusal.message,
                                                  "details": dict(refusal.details)})  # fmt: skip
            self._deps.wake_outbox()
        return known

    def _admission(self, signal: Signal) -> trading.Admission | trading.Refused:
        """What the trading state allows this signal (contract §11.3), before any venue call: a
        halted symbol costs the venue nothing. The reducing cap counts our open and in-flight
        orders on the signal's side."""
        state = self._deps.control.effective(self.symbol)
        if state is trading.TradingState.ACTIVE:
            return trading.FREE
        position = Decimal(0) if self._deps.dry_run else self.book.position.size
        same_side = sum((open_view(o).remaining for o in self.book.open.values() if o.side == signal.side.value),
                        Decimal(0))  # fmt: skip
        return trading.admit(state, signal.side, position, same_side)

    async def _market_context(self, signal: Signal) -> decision.MarketContext | decision.Refusal:
        """What the decision needs from the venue. Live trading without the venue's answers
        refuses plainly; dry-run falls back to the snapshot price and default filters."""
        venue, book = self._deps.venue, self.book
        try:
            instrument = await venue.instrument(self.symbol)
            book.last_price = (await venue.ticker(self.symbol)).last_price
            balance = None if self._deps.dry_run else await venue.available_balance()
        except VenueAuthError:
            raise
        except VenueUnavailable as exc:
            if not self._deps.dry_run:
                return decision.Refusal("venue_unavailable", f"the venue could not be reached: {exc}", {})
            instrument, balance = self._deps.fallback_instruments().get(self.symbol), None
        if instrument is None:
            return decision.Refusal("unknown_symbol", f"{self.symbol} is not listed by the venue", {})
        book.share_exposure()
        # Contract §14.2: the venue's figure (read in the background) less what our open and
        # in-flight orders commit. Bybit's own figure already holds margin for resting orders,
        # so this counts them twice: it errs on the safe side.
        committed = self._deps.exposure.committed()
        return decision.MarketContext(
            instrument=instrument,
            last_price=book.last_price,
            available_balance=None if balance is None else balance - committed,
            position_size=Decimal(0) if self._deps.dry_run else book.position.size,
            total_exposure_usdt=self._deps.exposure.total(),
            open_orders=tuple(open_view(order) for order in book.open.values()),
        )

    async def _place(
        self, signal: Signal, attempt: int, chosen: decision.Plan, requests: tuple[OrderRequest, ...],
        first_delivery_size: int | None,
    ) -> SignalRecord | None:  # fmt: skip
        now, dry_run = self._deps.now(), self._deps.dry_run
        records = [_intent(request, signal, now, dry_run) for request in requests]
        allocations = [(chosen.relationship, leg.sequence, leg.allocation_usdt, leg.qty) for leg in chosen.legs]
        events = [order_event("created", order=record, signal=signal, signal_id=signal.signal_id,
                              trace_id=signal.trace_id, now=now, last_price=self.book.last_price)
                  for record in records] if dry_run else []  # fmt: skip
        known = await until_stored(
            self._deps.store.record_decision, signal, attempt, status="accepted" if dry_run else "processing",
            decision=_decision_record(chosen, attempt), orders=records, allocations=allocations, events=events,
            first_delivery_size=first_delivery_size,
        )  # fmt: skip
        if known is not None:
            return known
        if first_delivery_size is not None:  # stored just now, with this decision
            _log_decision(signal, attempt, chosen)
        if dry_run:
            for record in records:
                log.info("order simulated (dry-run)", extra={**_context(signal), **_order_context(record)})
            self.book.metrics.signal_accepted()
            self._deps.wake_outbox()
            return None
        self.book.track(records)
        failpoints.hit(failpoints.AFTER_INTENT_COMMIT)
        outcomes = await self._send_all(records, decision.deadline(signal, self._deps.signal_max_age_s))
        placed = any(isinstance(outcome, Accepted | Unknown) for outcome in outcomes)
        (self.book.metrics.signal_accepted if placed else self.book.metrics.signal_rejected)()
        return None

    async def _send_all(self, records: list[OrderRecord], not_after: datetime | None = None) -> list[WriteOutcome]:
        """Send each intent and commit the venue's answer; the last commit settles the signal.
        ``not_after``: a first send gives up (Expired) when its signal goes stale waiting for the
        rate-limit budget; a resent intent has none, as an earlier send may have landed."""
        outcomes = []
        for index, record in enumerate(records):
            log.info("order sent", extra={**record_context(record), **_order_context(record)})
            request = attrs.evolve(request_of(record), not_after=not_after, allowed=self.book.send_gate(record))
            outcome = await self._deps.venue.place_order(request)
            failpoints.hit(failpoints.AFTER_VENUE_CALL)
            await self.book.settle(record, outcome, settle_signal=index == len(records) - 1)
            outcomes.append(outcome)
            if isinstance(outcome, Rejected) and outcome.is_credentials:
                raise VenueAuthError(outcome.message)
        return outcomes

    async def _resume(self, signal: Signal) -> None:
        """An earlier delivery recorded intents and then died before settling them. Send each
        unsettled intent again with its own orderLinkId: the venue refuses a second order with
        the same id (110072), so this either places it once or finds the one placed."""
        records = await until_stored(self._deps.store.orders_for_signal, signal.signal_id)
        unsettled = [self.book.open.get(r.order_link_id, r) for r in records if r.status == "submitting"]
        log.info("resuming an interrupted signal", extra={**_context(signal), "unsettled_orders": len(unsettled)})
        self.book.track(unsettled)
        await self._send_all(unsettled)

    def _opposite_orders(self, side: Side) -> list[decision.OpenOrder]:
        """Contract §7.7: a new signal cancels this symbol's open orders on the other side."""
        return decision.orders_to_cancel(side, [open_view(order) for order in self.book.open.values()])

    async def _cancel_opposite(self, side: Side) -> SyncResult:
        result = SyncResult()
        for view in self._opposite_orders(side):
            result += await self.book.cancel(view.order_link_id)
        return result


# --- pure helpers -----------------------------------------------------------------------------

MAX_UPDATE_RUN = 64  # order updates taken from the mailbox in one go


def _run_of_updates(
    first: OrderUpdate, inbox: MemoryObjectReceiveStream[ActorMessage]
) -> tuple[list[OrderUpdate], ActorMessage | None]:
    """``first`` and the order updates queued right behind it (only what is there now: nothing
    waits for more), and the message that ended the run, if any, to be handled next."""
    run = [first]
    while len(run) < MAX_UPDATE_RUN:
        try:
            message = inbox.receive_nowait()
        except (anyio.WouldBlock, anyio.EndOfStream):
            return run, None
        if not isinstance(message, OrderUpdate):
            return run, message
        run.append(message)
    return run, None


def _same_order_groups(run: list[OrderUpdate]) -> list[list[OrderUpdate]]:
    """Consecutive reports of one order together; the order of reports is kept."""
    groups: list[list[OrderUpdate]] = []
    for message in run:
        if groups and groups[-1][0].order.order_link_id == message.order.order_link_id:
            groups[-1].append(message)
        else:
            groups.append([message])
    return groups


def _answer(reply: Any, value: object) -> None:
    """Reply to whoever asked; if they gave up meanwhile, the action stands all the same."""
    with reply:
        try:
            reply.send_nowait(value)
        except (anyio.BrokenResourceError, anyio.WouldBlock):
            pass


def _refusal(refused: trading.Refused) -> decision.Refusal:
    return decision.Refusal(refused.code, refused.message, refused.details)


def _intent(request: OrderRequest, signal: Signal, now: datetime, dry_run: bool) -> OrderRecord:
    return OrderRecord(
        id=uuid.uuid4(), order_id=None, order_link_id=request.order_link_id, signal_id=signal.signal_id,
        asset=request.symbol, side=request.side.value, order_type=request.order_type.value,
        status="dry_run" if dry_run else "submitting", quantity=request.qty, price=request.price,
        created_at=now, updated_at=now, is_dry_run=dry_run, trace_id=signal.trace_id, category=request.category,
        time_in_force=request.time_in_force, reduce_only=request.reduce_only,
    )  # fmt: skip


def _decision_record(chosen: decision.Plan, attempt: int) -> dict[str, Any]:
    return {
        "attempt": attempt, "order_type": chosen.order_type.value, "side": chosen.side.value, "price": chosen.price,
        "reference_price": chosen.reference_price, "time_in_force": chosen.time_in_force,
        "reduce_only": chosen.reduce_only, "type_reason": chosen.type_reason,
        "legs": [{"sequence": leg.sequence, "qty": leg.qty, "allocation_usdt": leg.allocation_usdt}
                 for leg in chosen.legs],
    }  # fmt: skip


def _log_decision(signal: Signal, attempt: int, chosen: decision.Plan) -> None:
    """Logged once the decision is known to be recorded, so a duplicate delivery (whose
    decision is dropped) never shows one."""
    log.info("signal validated; decision made",
             extra={**_context(signal), "attempt": attempt, **_decision_log(chosen)})  # fmt: skip


def _decision_log(chosen: decision.Plan) -> dict[str, Any]:
    return {
        "order_type": chosen.order_type.value, "side": chosen.side.value,
        "price": str(chosen.price) if chosen.price is not None else None, "quantity": str(chosen.total_qty),
        "legs": len(chosen.legs), "reduce_only": chosen.reduce_only, "type_reason": chosen.type_reason,
    }  # fmt: skip


def _context(signal: Signal) -> dict[str, Any]:
    return {"trace_id": signal.trace_id, "signal_id": signal.signal_id, "asset": signal.asset}


def _order_context(record: OrderRecord) -> dict[str, Any]:
    return {"order_link_id": record.order_link_id, "order_type": record.order_type, "side": record.side,
            "quantity": str(record.quantity), "price": str(record.price) if record.price is not None else None}  # fmt: skip


def _ms_since(start: float) -> float:
    return round((time.monotonic() - start) * 1000, 1)
