"""Group commit (contract §14.3): one writer task commits the hot writes that several actors have
ready in one round trip. Each actor still waits for its own write's outcome.

The writer takes whatever is queued when it is free: at low load that is one write, sent at once
(no timer, no added delay); under load, everything that queued while the previous round trip was
out. A round commits its writes in one transaction. If any of them fails (a stale copy, a lost
fence, any refusal), the transaction commits nothing, and each write of the round is then run
alone, in a transaction of its own, so one actor's refusal never fails another's write, and each
is told its own outcome. A connection lost mid-round leaves every write of the round unknown
(``StoreUnavailable``), as a lost answer does for a single statement; the writers redo them, and
every hot write recognises its own redo (the Store's contract), also after a round that failed.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

import anyio
import anyio.abc
import attrs

from ordermgr.domain.errors import StoreUnavailable

log = logging.getLogger(__name__)

R = TypeVar("R")


@attrs.define(eq=False)
class Write(Generic[R]):
    """One statement and its parameters, and, once done, its result or its error."""

    statement: str
    params: dict[str, Any]
    done: anyio.Event = attrs.field(factory=anyio.Event)
    result: R | None = None
    error: BaseException | None = None

    def succeed(self, result: R | None) -> None:
        self.result = result
        self.done.set()

    def fail(self, error: BaseException) -> None:
        self.error = error
        self.done.set()


@attrs.define
class GroupStats:
    rounds: int = 0  # round trips that committed several writes together (or tried to)
    writes: int = 0
    alone: int = 0  # writes run alone after their round failed
    largest: int = 0


class GroupWriter(Generic[R]):
    """``together`` commits a list of writes in one transaction and one round trip, returning each
    one's result, or raises (then nothing of it is committed, or for ``StoreUnavailable``: not
    known); ``alone`` commits one write in its own transaction."""

    def __init__(
        self,
        together: Callable[[Sequence[Write[R]]], Awaitable[list[R | None]]],
        alone: Callable[[Write[R]], Awaitable[R | None]],
        *,
        max_batch: int = 64,
    ) -> None:
        self._together = together
        self._alone = alone
        self._max_batch = max_batch
        self._queue: list[Write[R]] = []
        self._inflight: list[Write[R]] = []
        self._wakeup = anyio.Event()
        self._running = False
        self.stats = GroupStats()

    async def execute(self, statement: str, params: dict[str, Any]) -> R | None:
        """Queue the write and wait for its own outcome (raised as it would be alone)."""
        if not self._running:
            raise StoreUnavailable("the database writer is not running")
        write: Write[R] = Write(statement, params)
        self._queue.append(write)
        self._wakeup.set()
        await write.done.wait()
        if write.error is not None:
            raise write.error
        return write.result

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Commit what is queued, round after round, until cancelled."""
        self._running = True
        task_status.started()
        try:
            while True:
                if not self._queue:
                    self._wakeup = anyio.Event()
                    await self._wakeup.wait()
                batch, self._queue = self._queue[: self._max_batch], self._queue[self._max_batch :]
                self._inflight = batch
                await self._commit(batch)
                self._inflight = []
        finally:
            self._running = False
            closing = StoreUnavailable("the database writer stopped")
            for write in [*self._inflight, *self._queue]:
                if not write.done.is_set():
                    write.fail(closing)
            self._queue, self._inflight = [], []

    async def _commit(self, batch: list[Write[R]]) -> None:
        self.stats.writes += len(batch)
        self.stats.largest = max(self.stats.largest, len(batch))
        if len(batch) == 1:
            await self._one(batch[0])
            return
        self.stats.rounds += 1
        try:
            results = await self._together(batch)
        except StoreUnavailable as exc:
            for write in batch:
                write.fail(exc)
            return
        except Exception as exc:  # noqa: BLE001 - each write learns its own outcome alone
            log.info("a write of a group commit was refused; committing each alone",
                     extra={"writes": len(batch), "error": str(exc)})  # fmt: skip
            for write in batch:
                self.stats.alone += 1
                await self._one(write)
            return
        for write, result in zip(batch, results):
            write.succeed(result)

    async def _one(self, write: Write[R]) -> None:
        try:
            write.succeed(await self._alone(write))
        except Exception as exc:  # noqa: BLE001 - handed to the writer that waits for it
            write.fail(exc)
