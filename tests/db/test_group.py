"""Group commit (contract §14.3) with its database stood in for: what goes together, what goes
alone, and who is told what. Barriers, not timers: the test holds a round trip open and looks
at what queued meanwhile."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import anyio
import pytest

from ordermgr.db.group import GroupWriter, Write
from ordermgr.domain.errors import StaleWrite, StoreUnavailable

pytestmark = pytest.mark.anyio

Row = dict[str, Any]


class Database:
    """Records each round trip (the statements it carried); a round trip waits for ``gate``.
    A write whose statement is in ``refused`` fails (alone, or its whole round together)."""

    def __init__(self) -> None:
        self.trips: list[tuple[str, list[str]]] = []
        self.gate = anyio.Event()
        self.gate.set()
        self.refused: dict[str, Exception] = {}
        self.down = False

    async def together(self, writes: Sequence[Write[Row]]) -> list[Row | None]:
        self.trips.append(("together", [w.statement for w in writes]))
        await self.gate.wait()
        if self.down:
            raise StoreUnavailable("connection lost")
        for write in writes:
            if write.statement in self.refused:
                raise self.refused[write.statement]
        return [{"done": w.statement} for w in writes]

    async def alone(self, write: Write[Row]) -> Row | None:
        self.trips.append(("alone", [write.statement]))
        await self.gate.wait()
        if write.statement in self.refused:
            raise self.refused[write.statement]
        return {"done": write.statement}


@pytest.fixture
async def writer_and_db() -> AsyncIterator[tuple[GroupWriter[Row], Database]]:
    db = Database()
    writer: GroupWriter[Row] = GroupWriter(db.together, db.alone)
    async with anyio.create_task_group() as tg:
        await tg.start(writer.run)
        yield writer, db
        tg.cancel_scope.cancel()


async def submit(
    tg: anyio.abc.TaskGroup, writer: GroupWriter[Row], statement: str, outcomes: dict[str, object]
) -> None:
    async def one() -> None:
        try:
            outcomes[statement] = await writer.execute(statement, {})
        except Exception as exc:  # noqa: BLE001
            outcomes[statement] = exc

    tg.start_soon(one)


async def queue_behind_a_round_trip(
    tg: anyio.abc.TaskGroup, writer: GroupWriter[Row], outcomes: dict[str, object]
) -> None:
    """"a" goes alone and its round trip is held open (``db.gate``); "b", "c" and "d" queue behind it."""
    await submit(tg, writer, "a", outcomes)
    await anyio.wait_all_tasks_blocked()
    for statement in ("b", "c", "d"):
        await submit(tg, writer, statement, outcomes)
    await anyio.wait_all_tasks_blocked()


async def test_a_lone_write_goes_at_once_and_alone(writer_and_db: tuple[GroupWriter[Row], Database]) -> None:
    writer, db = writer_and_db
    db.gate = anyio.Event()  # hold the round trip open to look at it
    outcomes: dict[str, object] = {}
    async with anyio.create_task_group() as tg:
        await submit(tg, writer, "a", outcomes)
        await anyio.wait_all_tasks_blocked()
        # Nothing else has happened and nothing waited for more: it is out, alone.
        assert db.trips == [("alone", ["a"])]
        db.gate.set()
    assert outcomes == {"a": {"done": "a"}}


async def test_writes_that_queue_meanwhile_go_together_in_one_round_trip(
    writer_and_db: tuple[GroupWriter[Row], Database],
) -> None:
    writer, db = writer_and_db
    db.gate = anyio.Event()
    outcomes: dict[str, object] = {}
    async with anyio.create_task_group() as tg:
        await queue_behind_a_round_trip(tg, writer, outcomes)
        assert db.trips == [("alone", ["a"])]  # b, c, d wait for the round trip in flight
        assert outcomes == {}
        db.gate.set()
    assert db.trips == [("alone", ["a"]), ("together", ["b", "c", "d"])]
    assert outcomes == {s: {"done": s} for s in "abcd"}
    assert (writer.stats.rounds, writer.stats.writes, writer.stats.largest) == (1, 4, 3)


async def test_one_refused_write_fails_neither_the_others_nor_their_outcomes(
    writer_and_db: tuple[GroupWriter[Row], Database],
) -> None:
    """c's copy is stale: its round commits nothing, then each write runs alone. c alone is
    told StaleWrite; b and d are committed and told their own results."""
    writer, db = writer_and_db
    db.refused["c"] = StaleWrite("stale write: order c changed since it was read")
    db.gate = anyio.Event()
    outcomes: dict[str, object] = {}
    async with anyio.create_task_group() as tg:
        await queue_behind_a_round_trip(tg, writer, outcomes)
        db.gate.set()
    assert db.trips[1:] == [("together", ["b", "c", "d"]), ("alone", ["b"]), ("alone", ["c"]), ("alone", ["d"])]
    assert outcomes["b"] == {"done": "b"} and outcomes["d"] == {"done": "d"}
    assert isinstance(outcomes["c"], StaleWrite)


async def test_a_connection_lost_mid_round_leaves_every_write_of_it_unknown(
    writer_and_db: tuple[GroupWriter[Row], Database],
) -> None:
    """As for a single statement whose answer was lost: each writer is told StoreUnavailable
    and redoes its write (until_stored), which recognises itself if it had committed."""
    writer, db = writer_and_db
    db.gate = anyio.Event()
    outcomes: dict[str, object] = {}
    async with anyio.create_task_group() as tg:
        await submit(tg, writer, "a", outcomes)
        await anyio.wait_all_tasks_blocked()
        for statement in ("b", "c"):
            await submit(tg, writer, statement, outcomes)
        await anyio.wait_all_tasks_blocked()
        db.down = True
        db.gate.set()
    assert outcomes["a"] == {"done": "a"}
    assert isinstance(outcomes["b"], StoreUnavailable) and isinstance(outcomes["c"], StoreUnavailable)
    assert db.trips[1:] == [("together", ["b", "c"])]  # not retried here: the callers redo


async def test_a_stopped_writer_leaves_no_one_waiting() -> None:
    db = Database()
    db.gate = anyio.Event()
    writer: GroupWriter[Row] = GroupWriter(db.together, db.alone)
    outcomes: dict[str, object] = {}
    async with anyio.create_task_group() as outer:
        async with anyio.create_task_group() as tg:
            await tg.start(writer.run)
            await submit(outer, writer, "a", outcomes)
            await anyio.wait_all_tasks_blocked()
            await submit(outer, writer, "b", outcomes)
            await anyio.wait_all_tasks_blocked()
            tg.cancel_scope.cancel()
    assert isinstance(outcomes["a"], StoreUnavailable) and isinstance(outcomes["b"], StoreUnavailable)
    with pytest.raises(StoreUnavailable):
        await writer.execute("c", {})
