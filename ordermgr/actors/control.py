"""The trading controls (contract §11): the leader's view of the trading state, its changes,
and the automatic triggers that latch it.

An operator's change is in force once it is stored. An automatic trigger fails closed: its
restriction is in force at once, and stored just after (by :meth:`TradingControl.run`, which
writes every change in the order they came). A trigger only ever restricts: it never lifts a
state nor overwrites one at least as strict (an operator's halt stays the operator's); only an
operator lifts what a trigger latched.
"""

from __future__ import annotations

import logging
import uuid
from collections import deque
from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Protocol

import anyio
import attrs

from ordermgr.domain import trading
from ordermgr.domain.trading import Source, StateChange, Streak, TradingState, TradingStates, TriggerSettings
from ordermgr.ports import ControlStore, until_stored

log = logging.getLogger(__name__)


class TradingGate(Protocol):
    """What the symbol actors need of the controls: the state to obey, and what to report."""

    def effective(self, asset: str) -> TradingState: ...

    def order_outcome(self, asset: str, *, rejected: bool, detail: str = "") -> None:
        """A venue answer to one of our creates: a rejection, or an acceptance."""
        ...

    def position_mismatch(self, asset: str, detail: str) -> None: ...

    async def position_moved(self, asset: str, before: Decimal, after: Decimal) -> None:
        """An evaluation of the daily loss: the asset's net PnL before and after a fill (the
        same figure twice at a snapshot tick)."""
        ...


class AlwaysActive:
    """No controls (unit tests, tools): every asset active, reports dropped."""

    def effective(self, asset: str) -> TradingState:
        return TradingState.ACTIVE

    def order_outcome(self, asset: str, *, rejected: bool, detail: str = "") -> None:
        pass

    def position_mismatch(self, asset: str, detail: str) -> None:
        pass

    async def position_moved(self, asset: str, before: Decimal, after: Decimal) -> None:
        pass


@attrs.define(eq=False)
class _Pending:
    change: StateChange
    at: datetime | None  # when an automatic change came in force; None: an operator's, in force when stored
    request_id: uuid.UUID | None = None
    stored: anyio.Event = attrs.field(factory=anyio.Event)


class TradingControl:
    def __init__(
        self, store: ControlStore, settings: TriggerSettings, wake_outbox: Callable[[], None],
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:  # fmt: skip
        self._store = store
        self._settings = settings
        self._wake_outbox = wake_outbox
        self._now = now
        self._stored = TradingStates()
        self._latched: list[_Pending] = []  # automatic changes in force, not stored yet
        self._queue: deque[_Pending] = deque()  # changes to store, in the order they came
        self._queued = anyio.Event()
        self._venue_errors = Streak()
        self._rejections: dict[str, Streak] = {}
        self._daily = Streak()
        self._day: date | None = None
        self._baselines: dict[str, Decimal] = {}
        self._net: dict[str, Decimal] = {}

    # --- the state -------------------------------------------------------------------------

    @property
    def states(self) -> TradingStates:
        """What is in force: the stored states with the latched restrictions on top."""
        states = self._stored
        for pending in self._latched:
            if states.restricts_further(pending.change):
                states = states.changed(pending.change, pending.at or self._now())
        return states

    def effective(self, asset: str) -> TradingState:
        return self.states.effective(asset)

    async def load(self) -> None:
        self._stored = await until_stored(self._store.trading_states)

    async def change(self, change: StateChange, request_id: uuid.UUID | None = None) -> TradingStates:
        """An operator's change: stored (after any automatic one that came before it), then in force."""
        pending = _Pending(change, None, request_id)
        self._enqueue(pending)
        await pending.stored.wait()
        return self.states

    def _enqueue(self, pending: _Pending) -> None:
        self._queue.append(pending)
        self._queued.set()

    async def run(self) -> None:
        """Store every change in the order they came; until cancelled."""
        while True:
            while self._queue:
                await self._store_change(self._queue[0])
                self._queue.popleft()
            self._queued = anyio.Event()
            await self._queued.wait()

    async def _store_change(self, pending: _Pending) -> None:
        change = pending.change
        previous = self._stored.scope(change.scope).state
        if change.source is Source.AUTOMATIC and not self._stored.restricts_further(change):
            self._latched.remove(pending)  # something at least as strict was stored meanwhile
            pending.stored.set()
            return
        at = pending.at or self._now()
        event = trading.state_event(change, previous, at, uuid.uuid4())
        await until_stored(self._store.change_trading_state, change, previous, at, event, pending.request_id)
        self._stored = self._stored.changed(change, at)
        if pending in self._latched:
            self._latched.remove(pending)
        if change.source is Source.OPERATOR:
            self._forget_streaks(change)
        fields = {"scope": change.scope, "state": change.state.value, "previous": previous.value,
                  "reason": change.reason, "note": change.message, "source": change.source.value,
                  "operator": change.operator}  # fmt: skip
        if change.state.strictness > previous.strictness:
            log.warning("trading state restricted", extra=fields)
        else:
            log.info("trading state changed", extra=fields)
        self._wake_outbox()
        pending.stored.set()

    def _latch(self, change: StateChange) -> None:
        if not self.states.restricts_further(change):
            return
        pending = _Pending(change, self._now())
        self._latched.append(pending)
        self._enqueue(pending)
        log.critical("trading state latched by a trigger", extra={
            "scope": change.scope, "state": change.state.value, "reason": change.reason, "note": change.message})  # fmt: skip

    def _forget_streaks(self, change: StateChange) -> None:
        """An operator has looked: a trigger must see its condition anew before it fires again."""
        if change.asset is None:
            self._venue_errors, self._daily = Streak(), Streak()
        else:
            self._rejections.pop(change.asset, None)

    # --- the automatic triggers (§11.6) -------------------------------------------------------

    def venue_answer(self, kind: str, detail: str = "") -> None:
        """Every venue answer: ``trading.FAILED`` (unknown or unavailable) extends the streak,
        ``trading.ANSWERED`` ends it, ``trading.NEITHER`` (a rate limit) does neither."""
        if kind == trading.ANSWERED:
            self._venue_errors = Streak()
        elif kind == trading.FAILED:
            self._venue_errors = self._venue_errors.hit(self._settings.halt_after_venue_errors)
            if self._venue_errors.fired:
                self._latch(StateChange(TradingState.HALTED, None, trading.VENUE_ERRORS, Source.AUTOMATIC,
                                        f"{self._venue_errors.count} venue answers in a row were unknown or "
                                        f"unavailable; the last: {detail}"))  # fmt: skip

    def order_outcome(self, asset: str, *, rejected: bool, detail: str = "") -> None:
        if not rejected:
            self._rejections.pop(asset, None)
            return
        streak = self._rejections[asset] = self._rejections.get(asset, Streak()).hit(
            self._settings.halt_after_rejections)  # fmt: skip
        if streak.fired:
            self._latch(StateChange(TradingState.HALTED, asset, trading.VENUE_REJECTIONS, Source.AUTOMATIC,
                                    f"{streak.count} orders in a row rejected by the venue; the last: {detail}"))  # fmt: skip

    def position_mismatch(self, asset: str, detail: str) -> None:
        self._latch(StateChange(TradingState.HALTED, asset, trading.POSITION_MISMATCH, Source.AUTOMATIC, detail))

    async def position_moved(self, asset: str, before: Decimal, after: Decimal) -> None:
        settings = self._settings
        if settings.max_daily_loss <= 0:
            return
        day = self._now().date()
        if day != self._day:  # a new UTC day: measure from each asset's first evaluation in it
            self._baselines = dict(await until_stored(self._store.daily_baselines, day))
            self._day, self._net, self._daily = day, {}, Streak()
        if asset not in self._baselines:
            self._baselines[asset] = await until_stored(self._store.keep_daily_baseline, day, asset, before)
        self._net[asset] = after
        today = trading.daily_loss(self._net, self._baselines)
        self._daily = self._daily.hit(2) if trading.breaches_daily_loss(today, settings) else Streak()
        if self._daily.fired:
            self._latch(StateChange(TradingState.REDUCING, None, trading.DAILY_LOSS_LIMIT, Source.AUTOMATIC,
                                    f"PnL since 00:00 UTC is {today.normalize():f} USDT, at or below "
                                    f"-{settings.max_daily_loss.normalize():f} twice in a row"))  # fmt: skip
