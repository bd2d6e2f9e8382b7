"""On-demand sync (``POST /api/v1/sync``): every symbol's open orders looked up on the venue;
with scope ``all`` also the orders the venue has under our prefix that we do not (adopted),
and the positions compared (contract §7.10)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from ordermgr.actors.book import SyncResult
from ordermgr.actors.messages import AdoptOrder, GetState, SyncRequest, ValidatePosition
from ordermgr.actors.supervisor import Supervisor
from ordermgr.domain.decision import link_key_of
from ordermgr.domain.errors import SyncInProgress, UnknownAsset, VenueUnavailable
from ordermgr.domain.model import SyncReport
from ordermgr.metrics import SymbolMetrics
from ordermgr.ports import Store, Venue

log = logging.getLogger(__name__)

ADOPTION_LOOKBACK = timedelta(days=7)  # Bybit keeps order history for seven days


class SyncService:
    """Bound to the supervisor once trading has started; until then it reports failure."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._venue: Venue | None = None
        self._supervisor: Supervisor | None = None
        self._running = False

    def attach(self, supervisor: Supervisor | None, venue: Venue | None = None) -> None:
        self._supervisor, self._venue = supervisor, venue

    def symbol_metrics(self) -> Mapping[str, SymbolMetrics]:
        """Also the API's metrics source: the running actors' figures, none while not trading."""
        return self._supervisor.symbol_metrics() if self._supervisor else {}

    async def sync(self, scope: str, asset: str | None) -> SyncReport:
        supervisor = self._supervisor
        if supervisor is None or self._venue is None:
            return SyncReport("failed", 0, 0, ("the service is not trading yet (starting or stopping)",))
        if self._running:
            raise SyncInProgress("a sync is already running")
        self._running = True
        try:
            return await self._sync(supervisor, self._venue, scope, asset)
        finally:
            self._running = False

    async def is_listed(self, asset: str) -> bool | None:
        """Whether the venue lists ``asset`` (or we trade it already); None when it cannot tell now."""
        supervisor, venue = self._supervisor, self._venue
        if supervisor is not None and asset in supervisor.symbols:
            return True  # an actor runs for it: it has orders or a position, listed or not
        if venue is None:
            return None
        try:
            return await venue.instrument(asset) is not None
        except VenueUnavailable:
            return None

    async def _sync(self, supervisor: Supervisor, venue: Venue, scope: str, asset: str | None) -> SyncReport:
        if asset is not None:
            listed = await self.is_listed(asset)
            if listed is None:  # unknown: no actor is started on a guess
                return SyncReport("failed", 0, 0, (f"{asset}: the venue's instrument list is unavailable",))
            if not listed:
                raise UnknownAsset(asset)
        symbols = [asset] if asset else supervisor.symbols
        replies = await supervisor.ask(lambda reply: SyncRequest(reply), symbols)
        result = sum(replies.values(), SyncResult())
        if scope == "all":
            result += await self._adopt(supervisor, venue, asset)
            result += await self._compare_positions(supervisor, venue, asset)
        log.info("sync done", extra={"scope": scope, "asset": asset, "synced_orders": result.synced_orders,
                                     "updated_orders": result.updated_orders, "errors": list(result.errors)})  # fmt: skip
        return _report(result)

    async def _adopt(self, supervisor: Supervisor, venue: Venue, asset: str | None) -> SyncResult:
        """Venue orders with our orderLinkId prefix unknown here are adopted; others are left alone."""
        since_ms = int((datetime.now(UTC) - ADOPTION_LOOKBACK).timestamp() * 1000)
        try:
            found = await venue.open_orders(asset) + await venue.order_history(asset, start_ms=since_ms)
        except VenueUnavailable as exc:
            return SyncResult(errors=(f"venue orders unknown: {exc}",))
        adopted: set[str] = set()
        for order in {o.order_link_id: o for o in found}.values():
            key = link_key_of(order.order_link_id)
            if key is None or await self._store.order_by_link_id(order.order_link_id) is not None:
                continue
            signal_id = await self._store.signal_for_link_key(key) or f"adopted:{order.order_link_id}"
            await supervisor.route(order.symbol, AdoptOrder(order, signal_id))
            adopted.add(order.symbol)
        await supervisor.ask(GetState, adopted)  # barrier: the adoptions are committed
        return SyncResult(len(adopted), len(adopted))

    async def _compare_positions(self, supervisor: Supervisor, venue: Venue, asset: str | None) -> SyncResult:
        try:
            positions = {p.symbol: p for p in await venue.positions()}
        except VenueUnavailable as exc:
            return SyncResult(errors=(f"venue positions unknown: {exc}",))
        symbols = [asset] if asset else sorted(set(supervisor.symbols) | set(positions))
        for symbol in symbols:
            await supervisor.route(symbol, ValidatePosition(positions.get(symbol)))
        await supervisor.ask(GetState, symbols)
        return SyncResult()


def _report(result: SyncResult) -> SyncReport:
    if not result.errors:
        status = "completed"
    else:
        status = "partial" if result.synced_orders else "failed"
    return SyncReport(status, result.synced_orders, result.updated_orders, result.errors)
