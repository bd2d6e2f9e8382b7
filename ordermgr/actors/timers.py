"""Timer actors: they hold no state and only send ticks, so they are the first to go at stop."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import anyio

from ordermgr.actors.messages import SnapshotTick, SyncRequest, ValidatePosition
from ordermgr.actors.supervisor import Supervisor
from ordermgr.domain.errors import VenueUnavailable
from ordermgr.ports import Venue

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]


async def every(interval_s: float, action: Callable[[], Awaitable[None]], *, sleep: Sleep = anyio.sleep) -> None:
    """Run ``action`` every ``interval_s`` (after each interval, not at once), until cancelled."""
    while True:
        await sleep(interval_s)
        await action()


def sync_tick(supervisor: Supervisor) -> Callable[[], Awaitable[None]]:
    async def tick() -> None:
        if skipped := supervisor.broadcast(SyncRequest):
            log.warning("sync tick skipped for busy symbols", extra={"skipped": skipped})

    return tick


def snapshot_tick(supervisor: Supervisor) -> Callable[[], Awaitable[None]]:
    async def tick() -> None:
        supervisor.broadcast(SnapshotTick)

    return tick


def validation_tick(supervisor: Supervisor, venue: Venue) -> Callable[[], Awaitable[None]]:
    """Fetch the venue's positions once and hand each actor its own. When the fetch fails the
    tick is skipped: an unknown answer must never read as "flat" (lessons §14)."""

    async def tick() -> None:
        try:
            positions = {position.symbol: position for position in await venue.positions()}
        except VenueUnavailable as exc:
            log.error("position validation skipped: venue positions unknown", extra={"error": str(exc)})
            return
        for symbol in supervisor.symbols:
            supervisor.broadcast_to(symbol, ValidatePosition(positions.get(symbol)))

    return tick
