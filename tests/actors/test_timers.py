"""Timer actors with an injected clock, and what their ticks do in a symbol actor."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal

import anyio
import psycopg
import pytest

from ordermgr.actors.messages import GetState, ValidatePosition
from ordermgr.actors.supervisor import open_supervisor
from ordermgr.actors.symbol import ActorState, SymbolActor
from ordermgr.actors.timers import every, snapshot_tick
from ordermgr.db.migrate import apply_migrations
from ordermgr.db.store import PgStore
from ordermgr.domain.model import VenuePosition
from tests.actors.test_symbol_actors import FakeVenue, deps


class ManualClock:
    """``sleep`` parks until the test advances the clock past the deadline."""

    def __init__(self) -> None:
        self.now = 0.0
        self._sleepers: list[tuple[float, anyio.Event]] = []

    async def sleep(self, seconds: float) -> None:
        woken = anyio.Event()
        self._sleepers.append((self.now + seconds, woken))
        await woken.wait()

    async def advance(self, seconds: float) -> None:
        self.now += seconds
        for deadline, woken in list(self._sleepers):
            if deadline <= self.now:
                self._sleepers.remove((deadline, woken))
                woken.set()
        await anyio.wait_all_tasks_blocked()


async def test_every_acts_once_per_interval_and_never_early() -> None:
    clock, ticks = ManualClock(), []

    async def action() -> None:
        ticks.append(clock.now)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: every(300, action, sleep=clock.sleep))
            await anyio.wait_all_tasks_blocked()
            await clock.advance(299)
            assert ticks == []
            for _ in range(3):
                await clock.advance(1 if not ticks else 300)
            tg.cancel_scope.cancel()
    assert ticks == [300, 600, 900]


@pytest.fixture
async def store(clean_database: str) -> AsyncIterator[PgStore]:
    await apply_migrations(clean_database)
    with psycopg.connect(clean_database) as conn:
        conn.execute("INSERT INTO positions (asset, size, average_entry_price, realized_pnl, fees)"
                     " VALUES ('BTCUSDT', 0.5, 48000, -12.5, 12.5)")  # fmt: skip
    async with PgStore(clean_database) as opened:
        yield opened


async def test_each_snapshot_tick_writes_a_snapshot_at_the_last_price(store: PgStore, clean_database: str) -> None:
    clock, venue = ManualClock(), FakeVenue()
    with anyio.fail_after(10):
        async with open_supervisor(lambda symbol: SymbolActor(symbol, deps(store, venue)), 8) as supervisor, \
                anyio.create_task_group() as timers:  # fmt: skip
            await supervisor.ensure_actor("BTCUSDT")
            timers.start_soon(lambda: every(300, snapshot_tick(supervisor), sleep=clock.sleep))
            await anyio.wait_all_tasks_blocked()
            for _ in range(2):
                await clock.advance(300)
                await supervisor.ask(GetState)  # barrier: the tick has been handled
            timers.cancel_scope.cancel()
    with psycopg.connect(clean_database) as conn:
        snapshots = conn.execute("SELECT size, average_entry_price, last_price, unrealized_pnl FROM position_snapshots"
                                 " ORDER BY id").fetchall()  # fmt: skip
    # FakeVenue's BTCUSDT last price is the paper table's; unrealized = (last − entry) × size.
    last = snapshots[0][2]
    assert snapshots == [(Decimal("0.5"), Decimal("48000"), last, (last - 48000) * Decimal("0.5"))] * 2


async def test_validation_takes_the_venues_position_and_records_the_difference(
    store: PgStore, clean_database: str
) -> None:
    venue = FakeVenue()
    with anyio.fail_after(10):
        async with open_supervisor(lambda symbol: SymbolActor(symbol, deps(store, venue)), 8) as supervisor:
            await supervisor.route("BTCUSDT", ValidatePosition(VenuePosition("BTCUSDT", Decimal("0.3"), Decimal("47000"),
                                                                             Decimal(0), Decimal(0))))  # fmt: skip
            [state] = (await supervisor.ask(GetState, ["BTCUSDT"])).values()
    assert isinstance(state, ActorState)
    assert (state.position_size, state.average_entry_price) == (Decimal("0.3"), Decimal("47000"))
    with psycopg.connect(clean_database) as conn:
        [found] = conn.execute("SELECT local_size, venue_size, resolution FROM position_discrepancies").fetchall()
        [position] = conn.execute("SELECT size, average_entry_price FROM positions").fetchall()
    assert found[:2] == (Decimal("0.5"), Decimal("0.3")) and position == (Decimal("0.3"), Decimal("47000"))
