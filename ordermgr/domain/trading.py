"""Trading state (contract §11): what the service may place, per asset and globally.

Pure rules, no I/O. ``actors.control`` owns the current states and their changes; the symbol
actor asks :func:`admit` before it sizes a signal's orders, and operator actions (cancels,
closes), sync and reconciliation never ask at all: a halt must never stop an operator from
getting flat (§11.1).
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime
from decimal import Decimal
from typing import Final

import attrs

from ordermgr.domain.model import Side

GLOBAL: Final = "global"  # the scope of the global state; every other scope is an asset


class TradingState(enum.StrEnum):
    ACTIVE = "active"  # normal
    REDUCING = "reducing"  # only orders that shrink the position
    HALTED = "halted"  # no new orders at all

    @property
    def strictness(self) -> int:
        return _STRICTNESS[self]

    def stricter(self, other: TradingState) -> TradingState:
        return self if self.strictness >= other.strictness else other


_STRICTNESS: Final = {TradingState.ACTIVE: 0, TradingState.REDUCING: 1, TradingState.HALTED: 2}


class Source(enum.StrEnum):
    OPERATOR = "operator"
    AUTOMATIC = "automatic"


# Reason codes of the automatic triggers (§11.6).
DAILY_LOSS_LIMIT: Final = "daily_loss_limit"
VENUE_ERRORS: Final = "venue_errors"
VENUE_REJECTIONS: Final = "venue_rejections"
POSITION_MISMATCH: Final = "position_mismatch"
OPERATOR_REASON: Final = "operator"  # the reason of an operator's change that gives none

# Signals refused by the state (§11.3).
TRADING_HALTED: Final = "trading_halted"
TRADING_REDUCING: Final = "trading_reducing"
# An operator's close carries this as its orders' signal id (no signal produced them).
CLOSE_PREFIX: Final = "close:"


@attrs.frozen
class ScopeState:
    """One scope's state as stored and shown (``GET /api/v1/trading-state``)."""

    state: TradingState
    reason: str | None = None
    message: str | None = None
    source: Source | None = None
    operator: str | None = None
    since: datetime | None = None  # None: never set, the default ``active``


DEFAULT: Final = ScopeState(TradingState.ACTIVE)


@attrs.frozen
class StateChange:
    """A requested change of one scope (``asset`` None = global)."""

    state: TradingState
    asset: str | None
    reason: str
    source: Source
    message: str | None = None
    operator: str | None = None

    @property
    def scope(self) -> str:
        return self.asset or GLOBAL


@attrs.frozen
class TradingStates:
    """Every scope's current state: the global one and the assets that have their own."""

    global_state: ScopeState = DEFAULT
    assets: Mapping[str, ScopeState] = attrs.field(factory=dict)

    @classmethod
    def of(cls, scopes: Iterable[tuple[str, ScopeState]]) -> TradingStates:
        by_scope = dict(scopes)
        return cls(by_scope.pop(GLOBAL, DEFAULT), by_scope)

    def scope(self, scope: str) -> ScopeState:
        return self.global_state if scope == GLOBAL else self.assets.get(scope, DEFAULT)

    def effective(self, asset: str) -> TradingState:
        """§11.2: the stricter of the global state and the asset's own."""
        return self.global_state.state.stricter(self.scope(asset).state)

    def changed(self, change: StateChange, at: datetime) -> TradingStates:
        """These states after ``change``. An asset returned to ``active`` loses its own state (§11.5)."""
        shown = ScopeState(change.state, change.reason, change.message, change.source, change.operator, at)
        if change.asset is None:
            return attrs.evolve(self, global_state=shown)
        assets = {k: v for k, v in self.assets.items() if k != change.asset}
        if change.state is not TradingState.ACTIVE:
            assets[change.asset] = shown
        return attrs.evolve(self, assets=assets)

    def restricts_further(self, change: StateChange) -> bool:
        """Whether an automatic ``change`` makes its scope stricter: triggers latch, never relax,
        and never overwrite a state at least as strict (an operator's halt stays the operator's)."""
        return change.state.strictness > self.scope(change.scope).state.strictness


# --------------------------------------------------------------------------- admitting a signal


@attrs.frozen
class Admission:
    """How a signal may trade under the current state: ``max_qty`` None = no cap; ``reduce_only``
    forces the order to be sent reduce-only."""

    max_qty: Decimal | None = None
    reduce_only: bool = False


@attrs.frozen
class Refused:
    code: str
    message: str
    details: Mapping[str, str] = attrs.field(factory=dict)


FREE: Final = Admission()


def admit(
    state: TradingState, side: Side, position_size: Decimal, same_side_open_qty: Decimal
) -> Admission | Refused:
    """§11.3. ``position_size`` is signed; ``same_side_open_qty`` is what our open and in-flight
    orders on ``side`` may still fill. Under ``reducing`` a signal that opens or grows the position
    is refused; one that reduces it is capped at what those orders leave of the position, so
    that even if every one of them fills, the new order cannot take the position through zero."""
    if state is TradingState.ACTIVE:
        return FREE
    if state is TradingState.HALTED:
        return Refused(TRADING_HALTED, "Trading is halted: no new orders are placed.", {"state": state.value})
    details = {"state": state.value, "position": _text(position_size), "side": side.value,
               "open_qty_same_side": _text(same_side_open_qty)}  # fmt: skip
    if position_size * side.sign >= 0:
        what = "open a position" if position_size == 0 else "grow the position"
        return Refused(TRADING_REDUCING, f"Trading is reducing: a {side.value} signal would {what}.", details)
    left = abs(position_size) - same_side_open_qty
    if left <= 0:
        return Refused(TRADING_REDUCING, "Trading is reducing: open orders already cover the whole position.",
                       details)  # fmt: skip
    return Admission(max_qty=left, reduce_only=True)


def withheld(state: TradingState, *, reduce_only: bool) -> str | None:
    """Whether an order decided earlier may still go now (at the last moment before the venue):
    the refusal code when the state turned against it meanwhile, else None."""
    if state is TradingState.HALTED:
        return TRADING_HALTED
    if state is TradingState.REDUCING and not reduce_only:
        return TRADING_REDUCING
    return None


def _text(value: Decimal) -> str:
    return format(value.normalize(), "f")


# --------------------------------------------------------------------------- automatic triggers


@attrs.frozen
class TriggerSettings:
    """§11.6; each trigger is off at 0."""

    max_daily_loss: Decimal = Decimal(0)  # USDT; ORDERMANAGER_MAX_DAILY_LOSS
    halt_after_venue_errors: int = 20  # ORDERMANAGER_HALT_AFTER_VENUE_ERRORS
    halt_after_rejections: int = 10  # ORDERMANAGER_HALT_AFTER_REJECTIONS


# How a venue answer counts for the venue-error streak: only a certain answer (accepted or a
# rejection) ends it; 10006 is the budget's business, neither an error nor an answer.
ANSWERED, FAILED, NEITHER = "answered", "failed", "neither"


@attrs.frozen
class Streak:
    """Consecutive events toward a trigger; ``fired`` once it reached its threshold."""

    count: int = 0
    fired: bool = False

    def hit(self, threshold: int) -> Streak:
        count = self.count + 1
        return Streak(count, threshold > 0 and count >= threshold)

    def reset(self) -> Streak:
        return Streak()


def daily_loss(net_pnl: Mapping[str, Decimal], baselines: Mapping[str, Decimal]) -> Decimal:
    """Today's PnL summed over the assets evaluated today: each asset's net PnL (realized, fees
    included, plus unrealized) less its figure just before its first evaluation of the day (its
    baseline). An asset not seen since its baseline was taken (by another instance) adds 0."""
    return sum((net_pnl.get(asset, start) - start for asset, start in baselines.items()), Decimal(0))


def breaches_daily_loss(pnl_today: Decimal, settings: TriggerSettings) -> bool:
    return settings.max_daily_loss > 0 and pnl_today <= -settings.max_daily_loss


def state_event(
    change: StateChange, previous: TradingState, at: datetime, event_id: uuid.UUID
) -> dict[str, object]:
    """The ``trading_state_changed`` event published on ``order-manager.trading_state`` (§11.5)."""
    return {
        "event_id": event_id, "event_type": "trading_state_changed",
        "scope": GLOBAL if change.asset is None else "asset", "asset": change.asset, "state": change.state.value,
        "previous": previous.value, "reason": change.reason, "message": change.message,
        "source": change.source.value, "operator": change.operator, "timestamp": at,
    }  # fmt: skip
