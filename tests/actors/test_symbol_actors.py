"""Symbol actors with a fake venue (our own port) and the real PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import anyio
import attrs
import psycopg
import pytest

from ordermgr.actors.deps import ActorDeps, ExposureBook
from ordermgr.actors.messages import GetState, OrderUpdate, SignalReceived
from ordermgr.actors.supervisor import open_supervisor
from ordermgr.actors.symbol import SymbolActor
from ordermgr.db.migrate import apply_migrations
from ordermgr.db.store import PgStore
from ordermgr.domain.decision import DecisionSettings
from ordermgr.domain.model import (
    Accepted, Expired, Instrument, OrderRequest, Side, Signal, Ticker, VenueExecution, VenueOrder, VenuePosition,
    WriteOutcome,
)  # fmt: skip
from ordermgr.paper.instruments import LISTINGS


class FakeVenue:
    """Implements ``ports.Venue``. Orders for symbols in ``stalled`` wait until released; with
    ``budget_exhausted`` an order with a deadline waits past it (Expired, never placed)."""

    def __init__(
        self, *, stalled: set[str] = frozenset(), budget_exhausted: bool = False  # type: ignore[assignment]
    ) -> None:
        self.placed: list[OrderRequest] = []
        self.expired: list[OrderRequest] = []
        self.cancelled: list[str] = []
        self.stalled = set(stalled)
        self.budget_exhausted = budget_exhausted
        self.release = anyio.Event()
        self.placed_event = anyio.Event()

    async def instruments(self) -> dict[str, Instrument]:
        return {symbol: listing.instrument for symbol, listing in LISTINGS.items()}

    async def instrument(self, symbol: str) -> Instrument | None:
        return (await self.instruments()).get(symbol)

    async def ticker(self, symbol: str) -> Ticker:
        await anyio.lowlevel.checkpoint()
        return Ticker(symbol, LISTINGS[symbol].initial_price)

    async def available_balance(self, coin: str = "USDT") -> Decimal:
        return Decimal("100000")

    def invalidate_balance(self) -> None:
        pass

    async def place_order(self, req: OrderRequest) -> WriteOutcome:
        if self.budget_exhausted and req.not_after is not None:
            self.expired.append(req)
            return Expired(f"not sent: no budget before {req.not_after.isoformat()}")
        if req.symbol in self.stalled:
            await self.release.wait()
        self.placed.append(req)
        self.placed_event.set()
        return Accepted(f"venue-{len(self.placed)}", req.order_link_id)

    async def cancel_order(self, symbol: str, order_link_id: str) -> WriteOutcome:
        self.cancelled.append(order_link_id)
        return Accepted("", order_link_id)

    async def find_order(self, symbol: str, order_link_id: str) -> VenueOrder | None:
        return None

    async def open_orders(self, symbol: str | None = None) -> list[VenueOrder]:
        return []

    async def order_history(self, symbol: str | None = None, *, start_ms: int | None = None) -> list[VenueOrder]:
        return []

    async def executions(self, symbol: str, order_id: str) -> list[VenueExecution]:
        return []

    async def positions(self) -> list[VenuePosition]:
        return []


class FakeDelivery:
    def __init__(self) -> None:
        self.redelivered = False
        self.acked = anyio.Event()

    async def ack(self) -> None:
        self.acked.set()

    async def requeue(self) -> None:
        raise AssertionError("not expected")


def received(
    signal_id: str, asset: str, side: Side = Side.BUY, confidence: str = "0.95", age_s: float = 0.0
) -> tuple[SignalReceived, FakeDelivery]:
    delivery = FakeDelivery()
    signal = Signal(signal_id=signal_id, side=side, asset=asset, amount=Decimal("100"), confidence=Decimal(confidence),
                    timestamp=datetime.now(UTC) - timedelta(seconds=age_s), trace_id=f"trace-{signal_id}")  # fmt: skip
    return SignalReceived(signal, delivery, 100, time.monotonic()), delivery


@pytest.fixture
async def store(clean_database: str) -> AsyncIterator[PgStore]:
    await apply_migrations(clean_database)
    async with PgStore(clean_database) as opened:
        yield opened


def deps(store: PgStore, venue: FakeVenue) -> ActorDeps:
    return ActorDeps(store=store, venue=venue, settings=DecisionSettings(), exposure=ExposureBook(),
                     wake_outbox=lambda: None)  # fmt: skip


async def test_a_slow_symbol_does_not_hold_up_another(store: PgStore) -> None:
    venue = FakeVenue(stalled={"ETHUSDT"})
    with anyio.fail_after(10):
        async with open_supervisor(lambda symbol: SymbolActor(symbol, deps(store, venue)), 8) as supervisor:
            eth, eth_delivery = received("slow-eth", "ETHUSDT")
            btc, btc_delivery = received("fast-btc", "BTCUSDT")
            await supervisor.route("ETHUSDT", eth)
            await supervisor.route("BTCUSDT", btc)
            await btc_delivery.acked.wait()  # BTC placed and acknowledged while ETH's venue call hangs
            assert [request.symbol for request in venue.placed] == ["BTCUSDT"]
            assert not eth_delivery.acked.is_set()
            venue.release.set()
            await eth_delivery.acked.wait()
    assert [request.symbol for request in venue.placed] == ["BTCUSDT", "ETHUSDT"]


async def test_closing_the_mailboxes_drains_every_actor(store: PgStore) -> None:
    venue = FakeVenue()
    deliveries = []
    with anyio.fail_after(10):
        async with open_supervisor(lambda symbol: SymbolActor(symbol, deps(store, venue)), 8) as supervisor:
            for n in range(6):
                message, delivery = received(f"drain-{n}", ("BTCUSDT", "ETHUSDT")[n % 2])
                deliveries.append(delivery)
                await supervisor.route(message.signal.asset, message)
        # Leaving the block closed the mailboxes; every message in them was handled first.
    assert all(delivery.acked.is_set() for delivery in deliveries)
    assert len(venue.placed) == 6


async def test_a_repeated_signal_cancels_nothing_before_it_is_known_to_be_a_repeat(store: PgStore) -> None:
    """New signals are stored with their decision in one statement; a sell that would cancel
    resting buys must first learn whether it is a repeat, or a duplicate delivery would cancel
    orders placed after the original."""
    venue = FakeVenue()
    resting_buy = ("BTCUSDT", Side.BUY, "0.5")  # low confidence: a resting Limit order
    with anyio.fail_after(10):
        async with open_supervisor(lambda symbol: SymbolActor(symbol, deps(store, venue)), 8) as supervisor:
            for signal_id, (asset, side, confidence) in [("rest-1", resting_buy), ("flip", ("BTCUSDT", Side.SELL, "0.95")),
                                                         ("rest-2", resting_buy), ("flip", ("BTCUSDT", Side.SELL, "0.95"))]:
                message, delivery = received(signal_id, asset, side, confidence)
                await supervisor.route(asset, message)
                await delivery.acked.wait()
    first_buy, sell, second_buy = venue.placed
    assert (first_buy.order_type.value, sell.order_type.value, second_buy.order_type.value) == ("Limit", "Market", "Limit")
    assert venue.cancelled == [first_buy.order_link_id]  # the repeat of "flip" left rest-2's order alone


def stored(conninfo: str, sql: str) -> list[tuple[object, ...]]:
    with psycopg.connect(conninfo) as conn:
        return conn.execute(sql).fetchall()


async def run_one(store: PgStore, venue: FakeVenue, message: SignalReceived, delivery: FakeDelivery,
                  max_age_s: float) -> None:  # fmt: skip
    actor_deps = attrs.evolve(deps(store, venue), signal_max_age_s=max_age_s)
    with anyio.fail_after(10):
        async with open_supervisor(lambda symbol: SymbolActor(symbol, actor_deps), 8) as supervisor:
            await supervisor.route(message.signal.asset, message)
            await delivery.acked.wait()


async def test_a_signal_older_than_the_limit_is_rejected_stale_before_the_venue_is_asked(
    store: PgStore, clean_database: str
) -> None:
    venue = FakeVenue()
    message, delivery = received("old-1", "BTCUSDT", age_s=12)
    await run_one(store, venue, message, delivery, max_age_s=5)
    assert venue.placed == [] and venue.expired == []
    [(status, code, details)] = stored(clean_database, "SELECT status, rejection_code, rejection_details FROM signals")
    assert (status, code, details["max_age_s"]) == ("rejected", "stale_signal", "5")  # type: ignore[index]
    [(event,)] = stored(clean_database, "SELECT body FROM order_events_outbox")
    answer: dict[str, Any] = event  # type: ignore[assignment]
    assert answer["event_type"] == "rejected" and answer["rejection_reason"]["code"] == "stale_signal"


async def test_an_order_whose_signal_goes_stale_waiting_for_the_budget_is_rejected_unsent(
    store: PgStore, clean_database: str
) -> None:
    venue = FakeVenue(budget_exhausted=True)
    message, delivery = received("late-1", "BTCUSDT", age_s=1)
    await run_one(store, venue, message, delivery, max_age_s=5)
    [request] = venue.expired
    assert request.not_after == message.signal.timestamp + timedelta(seconds=5)  # the signal's own deadline
    [(status,)] = stored(clean_database, "SELECT status FROM signals")
    [(order_status, reason)] = stored(clean_database, "SELECT status, rejection_reason FROM orders")
    assert (status, order_status) == ("rejected", "rejected") and str(reason).startswith("stale_signal: not sent")
    assert len(stored(clean_database, "SELECT 1 FROM order_events_outbox")) == 1  # answered: one rejected event


async def test_without_an_age_limit_orders_carry_no_deadline(store: PgStore) -> None:
    venue = FakeVenue(budget_exhausted=True)
    message, delivery = received("any-age-1", "BTCUSDT", age_s=3600)
    await run_one(store, venue, message, delivery, max_age_s=0)
    assert [request.not_after for request in venue.placed] == [None]


def report(request: OrderRequest, order_id: str, status: str, filled: str, price: str, ms: int) -> VenueOrder:
    qty, cum = request.qty, Decimal(filled)
    return VenueOrder(order_id=order_id, order_link_id=request.order_link_id, symbol=request.symbol,
                      side=request.side, order_type="Market", status=status, qty=qty, price=None, cum_exec_qty=cum,
                      cum_exec_value=cum * Decimal(price), cum_exec_fee=cum * Decimal("0.0001"),
                      avg_price=Decimal(price), leaves_qty=qty - cum, reject_reason="", created_ms=ms,
                      updated_ms=ms)  # fmt: skip


async def test_order_updates_queued_together_are_merged_into_one_write(store: PgStore, clean_database: str) -> None:
    """Three reports of one order wait in the mailbox behind a slow signal: they are taken
    together and committed in one statement, with the same fills, position and events as one
    by one, and each delivery is acked once they are committed."""
    venue = FakeVenue()
    writes: list[str] = []
    record_order = store.record_order

    async def counted(order: Any, *args: Any, **kwargs: Any) -> None:
        writes.append(order.order_link_id)
        await record_order(order, *args, **kwargs)

    store.record_order = counted  # type: ignore[method-assign]
    with anyio.fail_after(10):
        async with open_supervisor(lambda symbol: SymbolActor(symbol, deps(store, venue)), 16) as supervisor:
            message, delivery = received("merge-1", "BTCUSDT")
            await supervisor.route("BTCUSDT", message)
            await delivery.acked.wait()
            [placed] = venue.placed
            venue.stalled.add("BTCUSDT")  # the next signal's venue call hangs: updates queue behind it
            slow, slow_delivery = received("merge-2", "BTCUSDT")
            await supervisor.route("BTCUSDT", slow)
            await anyio.wait_all_tasks_blocked()
            half = placed.qty / 2
            updates = [report(placed, "venue-1", "PartiallyFilled", str(half / 2), "100", 1),
                       report(placed, "venue-1", "PartiallyFilled", str(half), "100", 2),
                       report(placed, "venue-1", "Filled", str(placed.qty), "100", 3)]  # fmt: skip
            deliveries = [FakeDelivery() for _ in updates]
            writes.clear()
            for update, update_delivery in zip(updates, deliveries):
                await supervisor.route("BTCUSDT", OrderUpdate(update, update_delivery))
            venue.release.set()
            await slow_delivery.acked.wait()
            for update_delivery in deliveries:
                await update_delivery.acked.wait()
            second = venue.placed[1]
            await supervisor.ask(GetState)  # a barrier: everything before it is handled
    assert writes == [second.order_link_id, placed.order_link_id]  # merge-2's placement, then one write of three
    fills = stored(clean_database, "SELECT quantity FROM order_fills WHERE signal_id = 'merge-1' ORDER BY id")
    assert [row[0] for row in fills] == [half / 2, half / 2, half]
    [(status, filled, version)] = stored(clean_database, "SELECT status, filled_quantity, version FROM orders"
                                                         f" WHERE order_link_id = '{placed.order_link_id}'")
    assert (status, filled, version) == ("filled", placed.qty, 2)  # placement, then the merged write
    events = stored(clean_database,
                    "SELECT event_type FROM order_events_outbox WHERE signal_id = 'merge-1' ORDER BY seq")
    assert [row[0] for row in events] == ["created", "partially_filled", "partially_filled", "filled"]
    [(size,)] = stored(clean_database, "SELECT size FROM positions WHERE asset = 'BTCUSDT'")
    assert size == placed.qty


async def test_a_symbol_loaded_at_start_counts_what_its_open_orders_commit(store: PgStore) -> None:
    """After a restart the risk checks of every symbol see what a loaded symbol's resting orders
    commit, before that symbol handles anything (contract §14.2)."""
    venue = FakeVenue()
    with anyio.fail_after(10):
        async with open_supervisor(lambda symbol: SymbolActor(symbol, deps(store, venue)), 8) as supervisor:
            message, delivery = received("resting", "BTCUSDT", Side.BUY, "0.5")  # a resting Limit buy
            await supervisor.route("BTCUSDT", message)
            await delivery.acked.wait()
        restarted = deps(store, venue)
        async with open_supervisor(lambda symbol: SymbolActor(symbol, restarted), 8) as supervisor:
            await supervisor.ensure_actor("BTCUSDT")
            [order] = supervisor.actors["BTCUSDT"].book.open.values()
            assert restarted.exposure.committed() == order.quantity * order.price
