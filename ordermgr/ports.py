"""The ports: what the actors need of the outside world, as Protocols. The adapters implement
them (``bybit.exchange.BybitExchange`` the venue, ``db.store.PgStore`` the store,
``amqp.broker`` the deliveries and the publisher); unit tests pass typed fakes. The actors
import this module and ``ordermgr.domain``, never an adapter."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any, ParamSpec, Protocol, TypeVar

import anyio
import attrs

from ordermgr.domain.errors import StoreUnavailable
from ordermgr.domain.events import OrderEvent
from ordermgr.domain.model import (
    FillRecord, Instrument, OrderRecord, OrderRequest, OutboxRow, Signal, SignalRecord, Ticker, VenueExecution,
    VenueOrder, VenuePosition, WriteOutcome,
)  # fmt: skip
from ordermgr.domain.positions import Position
from ordermgr.domain.signals import InvalidSignal
from ordermgr.domain.trading import StateChange, TradingState, TradingStates

log = logging.getLogger(__name__)
P = ParamSpec("P")
T = TypeVar("T")


class Venue(Protocol):
    async def instruments(self) -> Mapping[str, Instrument]:
        """Every listed instrument (cached). Raises VenueUnavailable when unknown."""
        ...

    async def instrument(self, symbol: str) -> Instrument | None: ...

    async def ticker(self, symbol: str) -> Ticker: ...

    async def available_balance(self, coin: str = "USDT") -> Decimal: ...

    def invalidate_balance(self) -> None: ...

    async def place_order(self, req: OrderRequest) -> WriteOutcome:
        """Never raises for venue trouble: Accepted, Rejected, Unavailable or Unknown."""
        ...

    async def cancel_order(self, symbol: str, order_link_id: str) -> WriteOutcome: ...

    async def find_order(self, symbol: str, order_link_id: str) -> VenueOrder | None:
        """None only when the venue answered "not there"; VenueUnavailable when it could not tell."""
        ...

    async def open_orders(self, symbol: str | None = None) -> list[VenueOrder]: ...

    async def order_history(self, symbol: str | None = None, *, start_ms: int | None = None) -> list[VenueOrder]: ...

    async def executions(self, symbol: str, order_id: str) -> list[VenueExecution]:
        """The order's trades, oldest first. Raises VenueUnavailable when unknown."""
        ...

    async def positions(self) -> list[VenuePosition]: ...


class Store(Protocol):
    """The actors' writes and the reads they need to rebuild their state. Every call raises
    ``StoreUnavailable`` when the database cannot be reached, and every write is safe to redo
    (``until_stored`` redoes it): a COMMIT whose answer was lost may have happened."""

    async def begin_signal(self, signal: Signal, body_size: int, *, count_delivery: bool = True) -> SignalRecord:
        """Store the signal on its first delivery, count a repeat otherwise; tell what is known."""
        ...

    async def record_invalid(self, invalid: InvalidSignal, event: OrderEvent) -> None: ...

    async def record_decision(
        self,
        signal: Signal,
        attempt: int,
        *,
        status: str,
        decision: object = None,
        rejection: tuple[str, str, object] | None = None,
        orders: Sequence[OrderRecord] = (),
        allocations: Sequence[tuple[str, int, object, object]] = (),
        events: Sequence[OrderEvent] = (),
        first_delivery_size: int | None = None,
    ) -> SignalRecord | None:
        """Commit an evaluation (and the intents it makes) in one transaction; None when it was
        recorded, what is known when the signal turned out not to be new."""
        ...

    async def record_order(
        self,
        order: OrderRecord,
        events: Sequence[OrderEvent] = (),
        *,
        settle_signal: bool = False,
        fills: Sequence[FillRecord] = (),
        position: Position | None = None,
    ) -> None:
        """Commit an order's new state with its events, fills and the position they moved."""
        ...

    async def order_by_link_id(self, order_link_id: str) -> OrderRecord | None: ...

    async def order_by_key(self, key: str) -> OrderRecord | None:
        """By our id, the venue's order id or the orderLinkId."""
        ...

    async def record_intents(self, orders: Sequence[OrderRecord]) -> None:
        """Commit intents that belong to no signal (an operator's close), under the fence."""
        ...

    async def adopt_order(self, order: OrderRecord) -> None: ...

    async def signal_for_link_key(self, link_key: str) -> str | None: ...

    async def signal_payload(self, signal_id: str) -> dict[str, Any] | None: ...

    async def fills(self, asset: str) -> list[FillRecord]:
        """Every fill of ``asset`` in the order the venue made them."""
        ...

    async def last_fill_ms(self, asset: str) -> int: ...

    async def load_position(self, asset: str) -> Position | None: ...

    async def position_assets(self) -> list[str]: ...

    async def record_snapshot(self, position: Position) -> None: ...

    async def record_discrepancy(self, local: Position, venue: Position, resolution: str) -> None: ...

    async def orders_for_signal(self, signal_id: str) -> list[OrderRecord]: ...

    async def active_orders(self, asset: str | None = None) -> list[OrderRecord]: ...

    async def unpublished_events(self, limit: int = 100) -> list[OutboxRow]: ...

    async def mark_published(self, seqs: Sequence[int]) -> None: ...


class ControlStore(Protocol):
    """The trading state's storage (contract §11.4). Changes are written under the leader's
    fence (``Fenced`` when it no longer leads) and are safe to redo."""

    async def trading_states(self) -> TradingStates: ...

    async def change_trading_state(
        self, change: StateChange, previous: TradingState, at: datetime, event: Mapping[str, Any],
        request_id: uuid.UUID | None = None,
    ) -> None:  # fmt: skip
        """Record the change with its history row and its event (through the outbox)."""
        ...

    async def daily_baselines(self, day: date) -> Mapping[str, Decimal]: ...

    async def keep_daily_baseline(self, day: date, asset: str, net_pnl: Decimal) -> Decimal:
        """The asset's baseline for ``day``: the first one stored wins and is returned."""
        ...


async def until_stored(call: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run a store call, waiting out database outages with capped backoff (cancellable). Work
    that must be recorded before it is acknowledged simply waits for the database."""
    delay_s = 0.2
    while True:
        try:
            return await call(*args, **kwargs)
        except StoreUnavailable as exc:
            log.error("database unavailable; waiting to record", extra={"error": str(exc), "retry_in_s": delay_s})
            await anyio.sleep(delay_s)
            delay_s = min(5.0, delay_s * 2)


class Delivery(Protocol):
    """A broker message in hand: acknowledge it once its outcome is committed."""

    @property
    def body(self) -> bytes: ...

    @property
    def headers(self) -> Mapping[str, object]: ...

    @property
    def redelivered(self) -> bool: ...

    async def ack(self) -> None: ...

    async def requeue(self) -> None: ...


@attrs.frozen
class OrderEventDelivery:
    """A ws-gateway order event as its adapter read it: the venue's order, or None when the
    message could not be understood (the adapter has said why), and the delivery to ack."""

    order: VenueOrder | None
    delivery: Delivery


@attrs.frozen
class OutgoingMessage:
    """One persistent message for the default exchange, routed to ``queue``."""

    queue: str
    body: bytes
    message_id: str
    headers: Mapping[str, object] = attrs.field(factory=dict)


class EventPublisher(Protocol):
    async def publish(self, queue: str, body: bytes, *, message_id: str, headers: Mapping[str, object]) -> None:
        """Publish one persistent message and wait for the broker's confirm; raises
        ``BrokerUnavailable`` when it cannot."""
        ...

    async def publish_all(self, messages: Sequence[OutgoingMessage]) -> None:
        """Publish every message, in order, and wait for all their confirms together (one wait
        for the batch, not one per message); raises ``BrokerUnavailable`` unless every one was
        confirmed (then any of them may have arrived: publishing is at least once)."""
        ...
