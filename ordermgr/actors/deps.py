"""What a symbol actor is given: its ports, settings and the few shared views."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal

import attrs

from ordermgr.actors.control import AlwaysActive, TradingGate
from ordermgr.domain.decision import DecisionSettings
from ordermgr.domain.model import Instrument
from ordermgr.ports import Store, Venue


class ExposureBook:
    """Each actor writes its own symbol's exposure, and what its open and in-flight orders
    commit (their remaining notional); risk checks read the totals. Only actors write, each its
    own key, so no two writers ever touch the same entry."""

    def __init__(self) -> None:
        self._by_symbol: dict[str, Decimal] = {}
        self._committed: dict[str, Decimal] = {}

    def set(self, symbol: str, exposure_usdt: Decimal, committed_usdt: Decimal) -> None:
        self._by_symbol[symbol] = exposure_usdt
        self._committed[symbol] = committed_usdt

    def total(self) -> Decimal:
        return sum(self._by_symbol.values(), Decimal(0))

    def committed(self) -> Decimal:
        """USDT our open and in-flight orders may still use, across all symbols (contract §14.2)."""
        return sum(self._committed.values(), Decimal(0))


@attrs.frozen
class ActorDeps:
    store: Store
    venue: Venue
    settings: DecisionSettings
    exposure: ExposureBook
    wake_outbox: Callable[[], None]
    dry_run: bool = False
    # Instrument rules to use when the venue cannot be reached in dry-run (documented defaults).
    fallback_instruments: Callable[[], dict[str, Instrument]] = dict
    # An intent the venue never received is sent again while younger than this, else rejected.
    resubmit_window_s: float = 300.0
    limit_order_ttl_s: float = 3600.0  # 0 = resting limit orders never expire
    # A signal older than this (0 = no limit) is rejected stale_signal, also while its order
    # waits for the rate-limit budget (contract §15).
    signal_max_age_s: float = 0.0
    # The trading state to obey, and where rejections, mismatches and PnL are reported (§11).
    control: TradingGate = attrs.field(factory=AlwaysActive)
    now: Callable[[], datetime] = lambda: datetime.now(UTC)
