"""One symbol's open orders and position, and every change to them. Owned by the symbol
actor, so only one message at a time ever touches it.

Every source of order state — the venue's answer to a create, ws-gateway order events, sync
lookups — goes through ``orders.merge`` (or ``accept``/``reject``) and ``_commit``: the order,
the fill delta, the position it moves and the event are committed in one transaction. Because
the delta is the growth of the venue's cumulative figures, a duplicated, late or reordered
update adds nothing twice.
"""

from __future__ import annotations

import logging
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import attrs

from ordermgr.actors.deps import ActorDeps
from ordermgr.domain import decision, orders, trading
from ordermgr.domain.errors import StaleWrite, VenueUnavailable
from ordermgr.domain.events import order_event, text
from ordermgr.domain.model import (
    Accepted, Expired, FillRecord, OrderRecord, OrderRequest, OrderType, Rejected, Side, Signal, Unavailable,
    Unknown, VenueExecution, VenueOrder, VenuePosition, WriteOutcome,
)  # fmt: skip
from ordermgr.domain.positions import Position, apply_fill, unrealized_pnl
from ordermgr.metrics import MetricsRecorder, SymbolMetrics
from ordermgr.ports import Store, Venue, until_stored

log = logging.getLogger(__name__)

ACTIVE = ("submitting", "pending", "partially_filled")
RECENT_SIGNALS = 64  # signals kept in memory per symbol for their orders' events
# A size or price difference with the venue beyond this relative tolerance is a discrepancy.
PRICE_TOLERANCE = Decimal("0.0001")
# Fill ids of executions derive from the venue's execId, so one execution is stored once.
_EXECUTION_IDS = uuid.UUID("6f1b7a0e-5c1d-4d8e-9a57-0e6f3b1c2a90")


@attrs.frozen
class SyncResult:
    synced_orders: int = 0
    updated_orders: int = 0
    errors: tuple[str, ...] = ()

    def __add__(self, other: SyncResult) -> SyncResult:
        return SyncResult(self.synced_orders + other.synced_orders, self.updated_orders + other.updated_orders,
                          self.errors + other.errors)  # fmt: skip


class SymbolBook:
    def __init__(self, symbol: str, deps: ActorDeps) -> None:
        self.symbol = symbol
        self._deps = deps
        self.open: dict[str, OrderRecord] = {}  # order_link_id → our orders not yet final
        self.position = Position(symbol)
        self.last_price: Decimal | None = None
        # Recent signals, for the "signal" part of their orders' later events. Bounded: one that
        # has dropped out is read back from the database when an event needs it.
        self._signals: OrderedDict[str, Signal | Mapping[str, Any] | None] = OrderedDict()
        self.metrics = MetricsRecorder()
        self._last_fill_ms = 0  # venue time of the newest fill applied to the position

    @property
    def store(self) -> Store:
        return self._deps.store

    @property
    def venue(self) -> Venue:
        return self._deps.venue

    def now(self) -> datetime:
        return self._deps.now()

    async def load(self) -> None:
        store = self._deps.store
        for order in await until_stored(store.active_orders, self.symbol):
            self.open[order.order_link_id] = order
        loaded: Position | None = await until_stored(store.load_position, self.symbol)
        self.position = loaded or Position(self.symbol)
        self.last_price = self.position.last_price
        self._last_fill_ms = await until_stored(store.last_fill_ms, self.symbol)
        self.share_exposure()

    def remember(self, signal: Signal) -> None:
        self._keep_signal(signal.signal_id, signal)

    def _keep_signal(self, signal_id: str, signal: Signal | Mapping[str, Any] | None) -> None:
        self._signals[signal_id] = signal
        self._signals.move_to_end(signal_id)
        while len(self._signals) > RECENT_SIGNALS:
            self._signals.popitem(last=False)

    def track(self, records: list[OrderRecord]) -> None:
        for record in records:
            self.open[record.order_link_id] = record

    # --- changes ----------------------------------------------------------------------------

    async def settle(self, record: OrderRecord, outcome: WriteOutcome, *, settle_signal: bool) -> None:
        """Commit what the venue said to our create request for ``record``."""
        context = record_context(record)
        match outcome:
            case Accepted(order_id=order_id):
                log.info("order acknowledged", extra={**context, "order_id": order_id})
                self._deps.control.order_outcome(self.symbol, rejected=False)
                await self._commit_once(record, orders.accept(_state(record), order_id), "placement", settle_signal)
            case Rejected() if outcome.is_credentials:
                # Our configuration is wrong, not the order: keep the intent to send once fixed.
                log.critical("venue refused our credentials; the order stays an intent",
                             extra={**context, "code": outcome.code, "reason": outcome.message})  # fmt: skip
            case Rejected(code=code, message=message):
                self._deps.control.order_outcome(self.symbol, rejected=True, detail=f"{code} {message}")
                await self.reject(record, f"{code}: {message}", settle_signal=settle_signal)
            case Unavailable(reason=reason):
                await self.reject(record, f"venue_unavailable: {reason}", settle_signal=settle_signal)
            case Expired(reason=reason, code=code):  # stale waiting for the budget, or withheld by the state
                await self.reject(record, f"{code}: {reason}", settle_signal=settle_signal)
            case Unknown(reason=reason):
                # It may exist on the venue: keep the intent; sync settles it by orderLinkId.
                log.warning("order outcome unknown; left for reconciliation", extra={**context, "reason": reason})

    async def reject(self, record: OrderRecord, reason: str, *, settle_signal: bool = True) -> None:
        code, _, message = reason.partition(": ")
        log.warning("order rejected", extra={**record_context(record), "code": code, "reason": message})
        await self._commit_once(record, orders.reject(_state(record), reason), "placement", settle_signal)

    async def apply(self, record: OrderRecord, update: VenueOrder, source: str) -> bool:
        """Merge one venue report of ``record``; True when anything changed. When our copy of the
        order turns out stale, the report is merged again into the database's copy."""
        return await self.apply_all(record, [update], source)

    async def apply_all(self, record: OrderRecord, updates: list[VenueOrder], source: str) -> bool:
        """Merge several reports of one order, in the order they came, and commit what they
        change in one statement (contract §14.3): the same fills, position and events as one
        by one, in one write. True when anything changed."""
        try:
            return await self._commit(record, _merged(record, updates), source, settle_signal=True)
        except StaleWrite:
            fresh = self.open.get(record.order_link_id) or await until_stored(
                self._deps.store.order_by_link_id, record.order_link_id)  # fmt: skip
            if fresh is None:
                return False
            return await self._commit_once(fresh, _merged(fresh, updates), source, settle_signal=True)

    async def _commit_once(
        self, record: OrderRecord, result: orders.MergeResult | list[Step], source: str, settle_signal: bool
    ) -> bool:
        """Commit, or leave it when our copy was stale (reloaded by then; sync will tell the rest)."""
        try:
            return await self._commit(record, result, source, settle_signal)
        except StaleWrite:
            return False

    async def _commit(
        self, record: OrderRecord, result: orders.MergeResult | list[Step], source: str, settle_signal: bool
    ) -> bool:
        """Write the change: one merge result, or the steps of several reports of this order
        (oldest first), all in one write. Raises StaleWrite (after reloading this order and the
        position) when the database holds newer versions than our copies: then nothing was written."""
        steps = [(result, 0)] if isinstance(result, orders.MergeResult) else result
        steps = [(step, ms) for step, ms in steps if step.event_type is not None or step.fill is not None]
        if not steps:
            return False
        now = self._deps.now()
        updated = record
        fills: list[FillRecord] = []
        events = []
        for step, venue_time_ms in steps:
            after = _updated_record(updated, step, now)
            if step.fill is not None and not record.is_dry_run:
                fills += await self._fills_of(updated, after, step.fill, source, venue_time_ms)
            if step.event_type:
                events.append(await self._event(step.event_type, after))
            updated = after
        updated = attrs.evolve(updated, version=record.version + 1)  # one write: one version on
        position = await self._moved_position(fills) if fills else None
        try:
            await until_stored(self._deps.store.record_order, updated, events, fills=fills, position=position,
                               settle_signal=settle_signal and record.status == "submitting")  # fmt: skip
        except StaleWrite as exc:
            await self._reload(record.order_link_id, exc)
            raise
        if position is not None:
            before, self.position = self.position, position
            self._last_fill_ms = max(self._last_fill_ms, *(fill.venue_time_ms for fill in fills))
            self._deps.venue.invalidate_balance()
            await self._deps.control.position_moved(self.symbol, self._net(before), self._net(position))
        for fill in fills:
            log.info("fill applied", extra={**record_context(record), "quantity": text(fill.quantity),
                                            "price": text(fill.price), "fee": text(fill.fee),
                                            "position_size": text(self.position.size), "source": source})  # fmt: skip
        self._count(record.status, updated.status)
        if updated.status in ACTIVE:
            self.open[updated.order_link_id] = updated
        else:
            self.open.pop(updated.order_link_id, None)
        self.share_exposure()
        if events:
            self._deps.wake_outbox()
        return True

    async def _fills_of(
        self, before: OrderRecord, after: OrderRecord, delta: orders.FillDelta, source: str, venue_time_ms: int
    ) -> list[FillRecord]:
        """The fill delta as the executions it is made of. An order event reports each execution
        as it happens; a lookup (sync, cancel, adoption) may find several at once, and the venue
        moves the position, rounding its average entry, at every execution. Those are taken from
        its execution list, so the position comes out exactly as the venue's."""
        price = delta.price if delta.qty > 0 else None
        whole = [FillRecord(delta.qty, delta.value, price, delta.fee, source, venue_time_ms, before.side)]
        if source == "ws_gateway" or delta.qty <= 0 or not after.order_id:
            return whole
        try:
            executions = await self._deps.venue.executions(self.symbol, after.order_id)
        except VenueUnavailable as exc:
            log.warning("executions unknown; fill applied as one delta", extra={**record_context(before),
                                                                                "error": str(exc)})  # fmt: skip
            return whole
        new = _executions_after(executions, before.filled_quantity)
        if len(new) < 2 or sum(e.qty for e in new) != delta.qty:
            return whole  # one execution, or a list that lags behind the order: the delta it is
        return [FillRecord(e.qty, e.value, e.price, e.fee, source, e.time_ms, before.side,
                           fill_id=uuid.uuid5(_EXECUTION_IDS, e.exec_id)) for e in new]  # fmt: skip

    async def _moved_position(self, fills: list[FillRecord]) -> Position:
        """The position after ``fills`` (oldest first). Fills normally arrive in venue order and
        are applied one by one; one older than the newest applied (its events were dropped and
        sync found it late) is put in its place by replaying the symbol's stored fills with these
        in venue order, so average entry and realized PnL come out as the venue's."""
        moved = self.position
        if fills[0].venue_time_ms >= self._last_fill_ms:
            for fill in fills:
                moved = _with_fill(moved, fill)
        else:
            log.info("fill older than the last applied; replaying fills in venue order",
                     extra={"asset": self.symbol, "venue_time_ms": fills[0].venue_time_ms})  # fmt: skip
            history = await until_stored(self._deps.store.fills, self.symbol)
            moved = Position(self.symbol)
            for fill in sorted([*history, *fills], key=lambda f: f.venue_time_ms):  # stable: ties keep arrival order
                moved = _with_fill(moved, fill)
        return attrs.evolve(moved, last_price=self.last_price or fills[-1].price)

    async def _reload_position(self, exc: StaleWrite) -> None:
        log.error("stale position write refused; reloading the position from the database",
                  extra={"asset": self.symbol, "error": str(exc)})  # fmt: skip
        loaded: Position | None = await until_stored(self._deps.store.load_position, self.symbol)
        self.position = loaded or Position(self.symbol)
        self.share_exposure()

    async def _reload(self, order_link_id: str, exc: StaleWrite) -> None:
        """Our copy was refused as stale: someone else wrote this symbol (which leadership exists
        to prevent). Take the database's order and position, which hold every fill exactly once."""
        log.error("stale write refused; reloading the order and position from the database",
                  extra={"asset": self.symbol, "order_link_id": order_link_id, "error": str(exc)})  # fmt: skip
        store = self._deps.store
        fresh = await until_stored(store.order_by_link_id, order_link_id)
        if fresh is not None and fresh.status in ACTIVE:
            self.open[order_link_id] = fresh
        else:
            self.open.pop(order_link_id, None)
        loaded: Position | None = await until_stored(store.load_position, self.symbol)
        self.position = loaded or Position(self.symbol)
        self._last_fill_ms = await until_stored(store.last_fill_ms, self.symbol)
        self.share_exposure()

    def _count(self, before: str, after: str) -> None:
        if before == after:
            return
        if before == "submitting" and after != "rejected":
            self.metrics.order_placed()
        if after == "filled":
            self.metrics.order_filled()
        elif after == "cancelled":
            self.metrics.order_cancelled()

    def metrics_snapshot(self, mailbox_depth: int) -> SymbolMetrics:
        unrealized = unrealized_pnl(self.position, self.last_price) if self.last_price else Decimal(0)
        return self.metrics.snapshot(mailbox_depth, self.position.size, unrealized)

    # --- sync -------------------------------------------------------------------------------

    async def sync(self) -> SyncResult:
        """Look every open order up on the venue and merge what it says; settle intents the
        venue never received; cancel resting limit orders past their time-to-live."""
        if not self.open:
            return SyncResult()
        venue = self._deps.venue
        try:
            listed = {order.order_link_id: order for order in await venue.open_orders(self.symbol)}
        except VenueUnavailable as exc:
            return SyncResult(errors=(f"{self.symbol}: open orders unknown: {exc}",))
        result = SyncResult()
        for record in list(self.open.values()):
            result += await self._sync_one(record, listed.get(record.order_link_id))
        return result + await self._expire()

    async def sync_one(self, record: OrderRecord) -> SyncResult:
        """Look one order up on the venue and merge what it says."""
        return await self._sync_one(record, None)

    async def _sync_one(self, record: OrderRecord, listed: VenueOrder | None, *, resend_unseen: bool = True) -> SyncResult:
        link_id = record.order_link_id
        try:
            update = listed or await self._deps.venue.find_order(self.symbol, link_id)
        except VenueUnavailable as exc:  # unknown, not absent: try again next time
            return SyncResult(errors=(f"{link_id}: lookup failed: {exc}",))
        if update is not None:
            return SyncResult(1, int(await self.apply(record, update, "sync")))
        if record.status == "submitting" and resend_unseen:
            return SyncResult(1, int(await self._unseen_intent(record)))
        return SyncResult(1, 0, (f"{link_id}: {record.status} here but unknown to the venue",))

    def send_gate(self, record: OrderRecord) -> Callable[[], str | None] | None:
        """The last-moment check of ``record``'s send: the trading state may have turned against it
        since it was decided (§11; an operator's close goes in every state)."""
        if record.signal_id.startswith(trading.CLOSE_PREFIX):
            return None
        return lambda: trading.withheld(self._deps.control.effective(self.symbol), reduce_only=record.reduce_only)

    async def _unseen_intent(self, record: OrderRecord) -> bool:
        """An intent the venue never saw. Young: send it again with the same orderLinkId (the
        venue dedupes, so this cannot place it twice). Old: the moment has passed; reject it."""
        age = self._deps.now() - record.created_at
        if age > timedelta(seconds=self._deps.resubmit_window_s):
            await self.reject(record, "not_received_by_venue: the venue never received this order")
            return True
        log.info("resending an intent the venue never received", extra=record_context(record))
        request = attrs.evolve(request_of(record), allowed=self.send_gate(record))
        await self.settle(record, await self._deps.venue.place_order(request), settle_signal=True)
        return True

    async def _expire(self) -> SyncResult:
        ttl = timedelta(seconds=self._deps.limit_order_ttl_s)
        views = [open_view(record) for record in self.open.values() if record.status != "submitting"]
        result = SyncResult()
        for view in decision.expired(views, self._deps.now(), ttl):
            log.info("limit order past its time-to-live; cancelling", extra={"asset": self.symbol,
                                                                             "order_link_id": view.order_link_id})  # fmt: skip
            result += await self.cancel(view.order_link_id)
        return result

    async def cancel(self, order_link_id: str, *, resend_unseen: bool = True) -> SyncResult:
        """Cancel one of our orders, then merge the venue's word on it (it may have filled).
        ``resend_unseen``: an intent the venue turns out never to have received is sent again
        (a sync's cancel) or left for reconciliation (an operator's cancel)."""
        outcome = await self._deps.venue.cancel_order(self.symbol, order_link_id)
        record = self.open.get(order_link_id)
        if record is None:
            return SyncResult()
        log.info("cancel requested", extra={**record_context(record), "outcome": type(outcome).__name__})
        result = await self._sync_one(record, None, resend_unseen=resend_unseen)
        if not isinstance(outcome, Accepted) and order_link_id in self.open:  # refused, and still open
            result += SyncResult(errors=(f"{order_link_id}: the venue did not cancel it: {outcome}",))
        return result

    async def adopt(self, update: VenueOrder, signal_id: str) -> bool:
        """Take in an order with our prefix that the venue has and we do not (lessons §2, §16)."""
        record = _adopted_record(update, signal_id, self._deps.now())
        await until_stored(self._deps.store.adopt_order, record)
        log.warning("venue order adopted", extra={**record_context(record), "order_id": update.order_id})
        return await self.apply(record, update, "adoption")

    # --- positions ----------------------------------------------------------------------------

    async def snapshot(self) -> None:
        if self.position.size == 0 and self.position.realized_pnl == 0:
            return  # never held: nothing to snapshot
        await self.refresh_price()
        try:
            await until_stored(self._deps.store.record_snapshot, self.position)
        except StaleWrite as exc:
            await self._reload_position(exc)
        net = self._net(self.position)
        await self._deps.control.position_moved(self.symbol, net, net)

    def _net(self, position: Position) -> Decimal:
        """Realized PnL (fees included) plus unrealized at the last price: the daily-loss figure."""
        price = self.last_price or position.last_price
        return position.realized_pnl + (unrealized_pnl(position, price) if price else Decimal(0))

    async def refresh_price(self) -> None:
        try:
            self.last_price = (await self._deps.venue.ticker(self.symbol)).last_price
            self.position = attrs.evolve(self.position, last_price=self.last_price)
        except VenueUnavailable:
            pass  # keep the last known price

    async def validate(self, venue: VenuePosition | None) -> bool:
        """Compare with the venue's position (None = flat there); on a difference take the
        venue's size and average price, and record it. True when they differed."""
        venue_size = venue.size if venue else Decimal(0)
        venue_price = venue.avg_price if venue else Decimal(0)
        local = self.position
        if local.size == venue_size and _close(local.average_entry_price, venue_price):
            return False
        adopted = attrs.evolve(local, size=venue_size, average_entry_price=venue_price)
        log.error("position differs from the venue; taking the venue's", extra={
            "asset": self.symbol, "local_size": str(local.size), "venue_size": str(venue_size),
            "local_average_price": str(local.average_entry_price), "venue_average_price": str(venue_price)})  # fmt: skip
        self._deps.control.position_mismatch(self.symbol, f"our position {local.size} at {local.average_entry_price}, "
                                                          f"the venue's {venue_size} at {venue_price}")  # fmt: skip
        try:
            await until_stored(self._deps.store.record_discrepancy, local, adopted,
                               "adopted venue size and average price")  # fmt: skip
        except StaleWrite as exc:
            await self._reload_position(exc)
            return True
        self.position = adopted
        self.share_exposure()
        return True

    def share_exposure(self) -> None:
        """Tell the risk checks of every symbol this one's exposure (contract §7.6: |position| at
        the last price plus what open orders may still add) and that addition alone, the notional
        our open and in-flight orders commit (§14.2; Market ones at the last price)."""
        price = self.last_price or self.position.average_entry_price
        committed = sum(((o.quantity - o.filled_quantity) * (o.price or price) for o in self.open.values()),
                        Decimal(0))  # fmt: skip
        self._deps.exposure.set(self.symbol, abs(self.position.size) * price + committed, committed)

    async def _event(self, event_type: str, record: OrderRecord) -> Any:
        signal = self._signals.get(record.signal_id)
        if signal is None and record.signal_id not in self._signals:
            signal = await until_stored(self._deps.store.signal_payload, record.signal_id)
            self._keep_signal(record.signal_id, signal)
        rejection = None
        if event_type == "rejected" and record.rejection_reason:
            code, _, message = record.rejection_reason.partition(": ")
            rejection = (code, message)
        trace_id = signal.trace_id if isinstance(signal, Signal) else record.trace_id
        return order_event(event_type, order=record, signal=signal, signal_id=record.signal_id, trace_id=trace_id,
                           now=self._deps.now(), last_price=self.last_price, rejection=rejection)  # fmt: skip


# --- conversions --------------------------------------------------------------------------------

Step = tuple[orders.MergeResult, int]  # a merge result and the venue time of the report behind it


def _merged(record: OrderRecord, updates: list[VenueOrder]) -> list[Step]:
    """Each report merged into the state the one before it left, oldest first."""
    steps: list[Step] = []
    state = _state(record)
    for update in updates:
        result = orders.merge(state, update)
        steps.append((result, update.updated_ms))
        state = result.state
    return steps


def _executions_after(executions: list[VenueExecution], filled: Decimal) -> list[VenueExecution]:
    """The executions (oldest first) beyond the first ``filled`` quantity: those not yet applied."""
    seen, new = Decimal(0), []
    for execution in executions:
        if seen >= filled:
            new.append(execution)
        seen += execution.qty
    return new


def _with_fill(position: Position, fill: FillRecord) -> Position:
    price = fill.price if fill.price is not None else Decimal(0)  # a fee-only delta has no price
    return apply_fill(position, Side(fill.side), fill.quantity, price, fill.fee)


def _state(record: OrderRecord) -> orders.OrderState:
    return orders.OrderState(
        status=orders.OrderStatus(record.status), quantity=record.quantity, price=record.price,
        order_id=record.order_id, filled_quantity=record.filled_quantity, filled_value=record.filled_value,
        fees=record.fees, venue_updated_ms=record.venue_updated_ms or 0,
    )  # fmt: skip


def _updated_record(record: OrderRecord, result: orders.MergeResult, now: datetime) -> OrderRecord:
    state = result.state
    reason = record.rejection_reason
    if state.status in (orders.OrderStatus.REJECTED, orders.OrderStatus.CANCELLED) and state.reject_reason:
        reason = record.rejection_reason or state.reject_reason
    return attrs.evolve(
        record, status=state.status.value, order_id=state.order_id, quantity=state.quantity, price=state.price,
        filled_quantity=state.filled_quantity, filled_value=state.filled_value, fees=state.fees,
        average_price=state.average_price, venue_updated_ms=state.venue_updated_ms or None,
        rejection_reason=reason, updated_at=now, executed_at=now if result.fill else record.executed_at,
        version=record.version + 1, last_write=uuid.uuid4(),
    )  # fmt: skip


def _adopted_record(update: VenueOrder, signal_id: str, now: datetime) -> OrderRecord:
    created = datetime.fromtimestamp(update.created_ms / 1000, now.tzinfo) if update.created_ms else now
    return OrderRecord(
        id=uuid.uuid4(), order_id=update.order_id, order_link_id=update.order_link_id, signal_id=signal_id,
        asset=update.symbol, side=update.side.value, order_type=update.order_type, status="submitting",
        quantity=update.qty, price=update.price if update.order_type == "Limit" else None, created_at=created,
        updated_at=now, reduce_only=update.reduce_only,
    )  # fmt: skip


def request_of(record: OrderRecord) -> OrderRequest:
    return OrderRequest(
        symbol=record.asset, side=Side(record.side), order_type=OrderType(record.order_type), qty=record.quantity,
        price=record.price, order_link_id=record.order_link_id, time_in_force=record.time_in_force,
        reduce_only=record.reduce_only, category=record.category,
    )  # fmt: skip


def open_view(record: OrderRecord) -> decision.OpenOrder:
    return decision.OpenOrder(
        order_link_id=record.order_link_id, side=Side(record.side), order_type=OrderType(record.order_type),
        qty=record.quantity, filled=record.filled_quantity, price=record.price, created_at=record.created_at,
    )  # fmt: skip


def _close(a: Decimal, b: Decimal) -> bool:
    return a == b or abs(a - b) <= PRICE_TOLERANCE * max(abs(a), abs(b))


def record_context(record: OrderRecord) -> dict[str, Any]:
    return {"trace_id": record.trace_id, "signal_id": record.signal_id, "asset": record.asset,
            "order_link_id": record.order_link_id}  # fmt: skip
