"""PostgreSQL LISTEN/NOTIFY on one dedicated connection: wakes whoever waits on a channel (a
standby when the leader gives its lease back, the leader when an operator request arrives).
A notification may be lost while the connection is down, so every waiter also polls; after a
reconnect every channel is woken once, as anything may have been missed."""

from __future__ import annotations

import logging
from collections.abc import Iterable

import anyio
import psycopg
from anyio.abc import TaskStatus
from psycopg import sql

log = logging.getLogger(__name__)


class Listener:
    def __init__(self, conninfo: str, channels: Iterable[str], *, max_backoff_s: float = 5.0) -> None:
        self._conninfo = conninfo
        self._events = {channel: anyio.Event() for channel in channels}
        self._max_backoff_s = max_backoff_s

    def next(self, channel: str) -> anyio.Event:
        """Set by the next notification on ``channel``. Take it *before* looking at the state the
        notification is about, so one that comes in between is not missed."""
        return self._events[channel]

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()  # a database that is down must not hold the start (contract §7.13)
        failures = 0
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True) as conn:
                    for channel in self._events:
                        await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
                    failures = 0
                    self._wake(*self._events)
                    async for notify in conn.notifies():
                        self._wake(notify.channel)
            except psycopg.OperationalError as exc:
                failures += 1
                if failures == 1:
                    log.warning("database notifications interrupted; reconnecting", extra={"error": str(exc)})
                await anyio.sleep(min(self._max_backoff_s, 0.2 * 2**failures))

    def _wake(self, *channels: str) -> None:
        for channel in channels:
            if channel in self._events:
                event, self._events[channel] = self._events[channel], anyio.Event()
                event.set()


async def notified_or_timeout(event: anyio.Event, timeout_s: float) -> bool:
    """Wait for ``event`` at most ``timeout_s``; True when it came."""
    with anyio.move_on_after(timeout_s):
        await event.wait()
        return True
    return False
