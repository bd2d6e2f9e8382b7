"""The trading-state rules (contract §11): every state × signal direction × position, the cap
that keeps a reducing signal from flipping the position, scopes, and the triggers' arithmetic."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from ordermgr.domain import decision
from ordermgr.domain.model import Side
from ordermgr.domain.trading import (
    FREE, Admission, Refused, Source, StateChange, Streak, TradingState, TradingStates, TriggerSettings, admit,
    breaches_daily_loss, daily_loss,
)  # fmt: skip
from tests.domain.test_decision import context, signal

ACTIVE, REDUCING, HALTED = TradingState.ACTIVE, TradingState.REDUCING, TradingState.HALTED
D = Decimal
NOW = datetime(2026, 12, 7, 12, tzinfo=UTC)

# (state, side, position, same-side open qty) -> what is allowed
CASES = [
    (ACTIVE, Side.BUY, D(0), D(0), FREE),
    (ACTIVE, Side.SELL, D("0.5"), D(0), FREE),
    (ACTIVE, Side.BUY, D("-0.5"), D("0.2"), FREE),
    (HALTED, Side.BUY, D(0), D(0), "trading_halted"),
    (HALTED, Side.SELL, D("0.5"), D(0), "trading_halted"),  # even one that would reduce
    (HALTED, Side.BUY, D("-0.5"), D(0), "trading_halted"),
    (REDUCING, Side.BUY, D(0), D(0), "trading_reducing"),  # from flat: opens
    (REDUCING, Side.SELL, D(0), D(0), "trading_reducing"),
    (REDUCING, Side.BUY, D("0.5"), D(0), "trading_reducing"),  # grows a long
    (REDUCING, Side.SELL, D("-0.5"), D(0), "trading_reducing"),  # grows a short
    (REDUCING, Side.SELL, D("0.5"), D(0), Admission(max_qty=D("0.5"), reduce_only=True)),
    (REDUCING, Side.BUY, D("-0.5"), D(0), Admission(max_qty=D("0.5"), reduce_only=True)),
    (REDUCING, Side.SELL, D("0.5"), D("0.2"), Admission(max_qty=D("0.3"), reduce_only=True)),  # in-flight counted
    (REDUCING, Side.SELL, D("0.5"), D("0.5"), "trading_reducing"),  # already covered by open orders
    (REDUCING, Side.BUY, D("-0.5"), D("0.7"), "trading_reducing"),
]


@pytest.mark.parametrize(("state", "side", "position", "open_qty", "expected"), CASES)
def test_every_state_direction_and_position(
    state: TradingState, side: Side, position: Decimal, open_qty: Decimal, expected: Admission | str
) -> None:
    admitted = admit(state, side, position, open_qty)
    if isinstance(expected, str):
        assert isinstance(admitted, Refused) and admitted.code == expected
        assert admitted.details["state"] == state.value
    else:
        assert admitted == expected


def test_a_reducing_signal_larger_than_the_position_closes_it_exactly_and_reduce_only() -> None:
    """5000 USDT at 50000 is 0.1 BTC against a long of 0.04: capped at 0.04, never a flip."""
    sig = signal(side=Side.SELL, amount="5000", confidence="0.95")
    admission = admit(REDUCING, Side.SELL, D("0.04"), D(0))
    assert isinstance(admission, Admission)
    chosen = decision.plan(sig, context(position="0.04"), decision.DecisionSettings(), admission)
    assert isinstance(chosen, decision.Plan)
    assert chosen.total_qty == D("0.04") and chosen.reduce_only


def test_a_reducing_signal_smaller_than_the_position_is_left_as_it_is_but_reduce_only() -> None:
    sig = signal(side=Side.SELL, amount="1000", confidence="0.95")
    admission = admit(REDUCING, Side.SELL, D("0.5"), D(0))
    assert isinstance(admission, Admission)
    chosen = decision.plan(sig, context(position="0.5"), decision.DecisionSettings(), admission)
    assert isinstance(chosen, decision.Plan)
    assert chosen.total_qty == D("0.02") and chosen.reduce_only


def test_a_cap_below_the_minimum_quantity_is_refused_naming_the_cap() -> None:
    sig = signal(side=Side.SELL, amount="1000", confidence="0.95")
    capped = decision.plan(sig, context(position="0.0004"), decision.DecisionSettings(),
                           Admission(max_qty=D("0.0004"), reduce_only=True))  # fmt: skip
    assert isinstance(capped, decision.Refusal)
    assert capped.code == "qty_below_min" and capped.details["capped_at"] == "0.0004"


def test_split_legs_are_capped_together_within_the_position() -> None:
    settings = decision.DecisionSettings(max_single_order_usdt=D(2000), enable_splitting=True)
    sig = signal(side=Side.SELL, amount="6000", confidence="0.95")
    chosen = decision.plan(sig, context(position="0.06"), settings, Admission(max_qty=D("0.06"), reduce_only=True))
    assert isinstance(chosen, decision.Plan)
    assert len(chosen.legs) == 3 and chosen.total_qty <= D("0.06") and chosen.reduce_only


def change(state: TradingState, asset: str | None = None, source: Source = Source.OPERATOR) -> StateChange:
    return StateChange(state, asset, "test", source)


def test_an_asset_takes_the_stricter_of_its_own_state_and_the_global_one() -> None:
    states = TradingStates().changed(change(REDUCING), NOW).changed(change(HALTED, "ETHUSDT"), NOW)
    assert states.effective("ETHUSDT") is HALTED
    assert states.effective("BTCUSDT") is REDUCING
    lifted = states.changed(change(ACTIVE), NOW)
    assert lifted.effective("BTCUSDT") is ACTIVE and lifted.effective("ETHUSDT") is HALTED


def test_returning_an_asset_to_active_removes_its_own_state() -> None:
    states = TradingStates().changed(change(HALTED, "ETHUSDT"), NOW).changed(change(ACTIVE, "ETHUSDT"), NOW)
    assert states.assets == {}


def test_an_automatic_change_only_restricts_further() -> None:
    halted = TradingStates().changed(change(HALTED), NOW)
    assert not halted.restricts_further(change(REDUCING, source=Source.AUTOMATIC))
    assert TradingStates().restricts_further(change(REDUCING, source=Source.AUTOMATIC))
    assert not TradingStates().restricts_further(change(ACTIVE, source=Source.AUTOMATIC))


def test_a_streak_fires_at_its_threshold_and_never_when_off() -> None:
    streak = Streak()
    for _ in range(2):
        streak = streak.hit(3)
    assert not streak.fired and streak.hit(3).fired
    assert not Streak(count=99).hit(0).fired  # 0 = the trigger is off


def test_daily_loss_counts_only_what_moved_since_each_assets_baseline() -> None:
    baselines = {"BTCUSDT": D(-100), "ETHUSDT": D(50)}
    assert daily_loss({"BTCUSDT": D(-130), "ETHUSDT": D(45)}, baselines) == D(-35)
    assert daily_loss({"BTCUSDT": D(-130)}, baselines) == D(-30)  # ETHUSDT not seen since its baseline
    settings = TriggerSettings(max_daily_loss=D(30))
    assert breaches_daily_loss(D(-30), settings) and not breaches_daily_loss(D("-29.99"), settings)
    assert not breaches_daily_loss(D(-1000), TriggerSettings())  # off
