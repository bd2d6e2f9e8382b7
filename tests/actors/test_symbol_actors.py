"""Symbol actors with a fake venue (our own port) and the real PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal

import anyio
import pytest

from ordermgr.actors.deps import ActorDeps, ExposureBook
from ordermgr.actors.messages import SignalReceived
from ordermgr.actors.supervisor import open_supervisor
from ordermgr.actors.symbol import SymbolActor
from ordermgr.db.migrate import apply_migrations
from ordermgr.db.store import PgStore
from ordermgr.domain.decision import DecisionSettings
from ordermgr.domain.model import (
    Accepted, Instrument, OrderRequest, Side, Signal, Ticker, VenueExecution, VenueOrder, VenuePosition, WriteOutcome,
)  # fmt: skip
from ordermgr.paper.instruments import LISTINGS


class FakeVenue:
    """Implements ``ports.Venue``. Orders for symbols in ``stalled`` wait until released."""

    def __init__(self, *, stalled: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        self.placed: list[OrderRequest] = []
        self.cancelled: list[str] = []
        self.stalled = set(stalled)
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
    signal_id: str, asset: str, side: Side = Side.BUY, confidence: str = "0.95"
) -> tuple[SignalReceived, FakeDelivery]:
    delivery = FakeDelivery()
    signal = Signal(signal_id=signal_id, side=side, asset=asset, amount=Decimal("100"), confidence=Decimal(confidence),
                    timestamp=datetime.now(UTC), trace_id=f"trace-{signal_id}")  # fmt: skip
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
