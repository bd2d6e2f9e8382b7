"""One writer (contract §13): an instance trades only while it holds the leader lease.

A standby tries to take the lease whenever the leader gives it back (NOTIFY) and every
``poll_s``; it serves probes and the read API meanwhile. The leader renews the lease every
``ttl / 5``. It counts its lease as valid until ``ttl − margin`` after it *sent* its last
successful renewal — the database set the expiry later than that, from its own clock — so a
leader that cannot renew (the database gone, the process frozen) stops trading before the lease
can pass to another. Losing it cancels the trading at once; the intent commit checks the epoch
too, so nothing a deposed leader still has in hand can be placed.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable
from typing import Final

import anyio
import attrs

from ordermgr.db.lease import LEADER_CHANNEL, LeaseStore
from ordermgr.db.listen import Listener, notified_or_timeout
from ordermgr.domain.errors import Fenced, StoreUnavailable
from ordermgr.domain.model import Fence

log = logging.getLogger(__name__)

LEADER: Final = "leader"
STANDBY: Final = "standby"


def instance_id() -> str:
    """Host (the pod's name under Kubernetes), process and a random part: unique per start."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@attrs.define
class Leadership:
    lease: LeaseStore
    listener: Listener
    ttl_s: float = 5.0
    poll_s: float = 1.0
    fence: Fence | None = None  # set while leading
    on_change: Callable[[Fence | None], None] = lambda fence: None
    # Until when (monotonic) the lease surely stays ours: ttl − margin after the last renewal sent.
    _valid_until: float = attrs.field(default=0.0, init=False)

    @property
    def role(self) -> str:
        return LEADER if self.fence is not None else STANDBY

    @property
    def _renew_every_s(self) -> float:
        return self.ttl_s / 5

    @property
    def _margin_s(self) -> float:
        return self.ttl_s / 5

    async def wait_for_lease(self) -> Fence:
        """Stand by until the lease is ours."""
        failures, announced = 0, False
        while True:
            woken = self.listener.next(LEADER_CHANNEL)
            sent = anyio.current_time()
            try:
                fence = await self.lease.acquire(self.ttl_s)
                failures = 0
            except StoreUnavailable as exc:
                fence, failures = None, failures + 1
                if failures == 1:
                    log.warning("leader lease unknown: database unavailable", extra={"error": str(exc)})
            if fence is not None:
                self._valid_until = sent + self.ttl_s - self._margin_s
                return fence
            if not announced and failures == 0:
                leader = await self._current_leader()
                log.info("standing by", extra={"leader": leader})
                announced = True
            await notified_or_timeout(woken, self.poll_s)

    async def lead(self, fence: Fence, work: Callable[[], Awaitable[None]]) -> bool:
        """Run ``work`` while the lease stays ours; True when it ended by itself (then the
        lease is given back for the next leader), False when the lease was lost first."""
        self.fence = fence
        self.on_change(fence)
        log.info("leading", extra={"epoch": fence.epoch, "holder": fence.holder})
        lost = False
        try:
            async with anyio.create_task_group() as tg:

                async def keep() -> None:
                    nonlocal lost
                    await self._keep(fence)
                    lost = True
                    tg.cancel_scope.cancel()

                tg.start_soon(keep)
                await work()
                log.info("trading stopped; giving the lease back", extra={"epoch": fence.epoch})
                tg.cancel_scope.cancel()
        except* Fenced as group:  # a guarded write found the epoch deposed before the renewal did
            lost = True
            log.critical("fenced: another instance leads; trading stopped",
                         extra={"epoch": fence.epoch, "error": str(group.exceptions[0])})  # fmt: skip
        finally:
            self.fence = None
            self.on_change(None)
        if not lost:
            with anyio.move_on_after(2, shield=True):
                await self._release(fence)
        return not lost

    async def _keep(self, fence: Fence) -> None:
        """Renew until the lease is lost: taken by another, or not renewable in time."""
        while True:
            now = anyio.current_time()
            if now >= self._valid_until:
                log.critical("leader lease could not be renewed in time; trading stopped",
                             extra={"epoch": fence.epoch})  # fmt: skip
                return
            with anyio.move_on_after(self._valid_until - now):
                try:
                    if not await self.lease.renew(fence, self.ttl_s):
                        log.critical("leader lease lost to another instance; trading stopped",
                                     extra={"epoch": fence.epoch})  # fmt: skip
                        return
                    self._valid_until = now + self.ttl_s - self._margin_s
                except StoreUnavailable as exc:
                    log.error("leader lease not renewed: database unavailable", extra={"error": str(exc)})
            await anyio.sleep(max(0.0, min(self._renew_every_s, self._valid_until - anyio.current_time())))

    async def _current_leader(self) -> str | None:
        try:
            leader = await self.lease.current()
        except StoreUnavailable:
            return None
        return leader.holder if leader else None

    async def _release(self, fence: Fence) -> None:
        try:
            await self.lease.release(fence)
            log.info("leader lease given back", extra={"epoch": fence.epoch})
        except StoreUnavailable as exc:
            log.warning("leader lease not given back; it lapses by itself", extra={"error": str(exc)})
