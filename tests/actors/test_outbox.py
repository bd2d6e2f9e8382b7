"""The outbox publisher takes what is waiting in one go: one publish of the batch (one confirm
wait), one statement to mark it published; nothing is marked that was not confirmed."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import anyio
import pytest

from ordermgr.actors.outbox import OutboxWakeup, publish_pending, run_outbox
from ordermgr.domain.errors import BrokerUnavailable
from ordermgr.domain.model import OutboxRow
from ordermgr.ports import OutgoingMessage

pytestmark = pytest.mark.anyio


class Outbox:
    def __init__(self, rows: list[OutboxRow]) -> None:
        self.rows = rows
        self.marked: list[list[int]] = []
        self.reads = 0

    async def unpublished_events(self, limit: int = 100) -> list[OutboxRow]:
        self.reads += 1
        published = {seq for batch in self.marked for seq in batch}
        return [row for row in self.rows if row.seq not in published][:limit]

    async def mark_published(self, seqs: Sequence[int]) -> None:
        self.marked.append(list(seqs))


class Publisher:
    def __init__(self, fail: bool = False) -> None:
        self.batches: list[list[OutgoingMessage]] = []
        self.fail = fail
        self.published = anyio.Event()

    async def publish(self, queue: str, body: bytes, *, message_id: str, headers: object) -> None:
        raise AssertionError("the outbox publishes in batches")

    async def publish_all(self, messages: Sequence[OutgoingMessage]) -> None:
        if self.fail:
            raise BrokerUnavailable("down")
        self.batches.append(list(messages))
        self.published.set()
        self.published = anyio.Event()


def rows(n: int) -> list[OutboxRow]:
    queues = ("order-manager.order_events", "order-manager.trading_state")
    return [OutboxRow(seq, uuid.uuid4(), f"t{seq}", f"e{seq}".encode(), queues[seq % 7 == 0])
            for seq in range(1, n + 1)]


async def test_what_is_waiting_goes_as_one_batch_in_commit_order_and_is_marked_in_one_statement() -> None:
    waiting = rows(30)
    store, publisher = Outbox(waiting), Publisher()
    assert await publish_pending(store, publisher) == 30  # type: ignore[arg-type]
    assert [[(m.queue, m.body, m.message_id) for m in batch] for batch in publisher.batches] == [
        [(r.queue, r.body, str(r.event_id)) for r in waiting]
    ]
    assert publisher.batches[0][0].headers == {"trace_id": "t1"}
    assert store.marked == [list(range(1, 31))]
    assert await publish_pending(store, publisher) == 0  # type: ignore[arg-type]
    assert len(publisher.batches) == 1


async def test_a_lone_event_goes_alone_at_once() -> None:
    store, publisher = Outbox(rows(1)), Publisher()
    assert await publish_pending(store, publisher) == 1  # type: ignore[arg-type]
    assert len(publisher.batches) == 1 and len(publisher.batches[0]) == 1


async def test_a_batch_the_broker_did_not_confirm_stays_unpublished() -> None:
    store = Outbox(rows(5))
    with pytest.raises(BrokerUnavailable):
        await publish_pending(store, Publisher(fail=True))  # type: ignore[arg-type]
    assert store.marked == []
    assert await publish_pending(store, Publisher()) == 5  # type: ignore[arg-type]


class CommitDuringRead(Outbox):
    """The first read misses an event committed while it runs; the commit wakes the outbox."""

    def __init__(self, rows: list[OutboxRow], wakeup: OutboxWakeup) -> None:
        super().__init__(rows[:1])
        self._late, self._wakeup = rows[1:], wakeup

    async def unpublished_events(self, limit: int = 100) -> list[OutboxRow]:
        seen = await super().unpublished_events(limit)
        if self._late:
            self.rows += self._late
            self._late = []
            self._wakeup.notify()
        return seen


async def test_after_a_batch_the_outbox_reads_again_only_when_a_commit_wakes_it() -> None:
    """No read that could only find nothing: after a partial batch the next read waits for a
    commit's wakeup (or the poll, an hour here). An event committed during a read still goes
    at once: its wakeup comes after the read began."""
    wakeup = OutboxWakeup()
    waiting = rows(3)
    store, publisher = CommitDuringRead(waiting, wakeup), Publisher()
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: run_outbox(store, publisher, wakeup, poll_s=3600))  # type: ignore[arg-type]
            while len(publisher.batches) < 2:
                await publisher.published.wait()
            await anyio.wait_all_tasks_blocked()
            assert store.reads == 2  # the first batch's read, then the one the late commit woke
            store.rows.append(rows(4)[-1])
            wakeup.notify()
            await publisher.published.wait()
            await anyio.wait_all_tasks_blocked()
            tg.cancel_scope.cancel()
    assert [[m.body for m in batch] for batch in publisher.batches] == [[b"e1"], [b"e2", b"e3"], [b"e4"]]
    assert store.reads == 3
