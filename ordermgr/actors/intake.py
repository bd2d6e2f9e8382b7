"""Intake: decodes each delivery from the signal queue. Invalid messages are stored with their
reasons, answered with a ``rejected`` event and acknowledged here; valid ones go to their
symbol's actor."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream

from ordermgr.actors.messages import OrderUpdate, SignalReceived
from ordermgr.actors.supervisor import Supervisor
from ordermgr.domain.decision import is_own_order_link_id
from ordermgr.domain.errors import VenueUnavailable
from ordermgr.domain.events import order_event
from ordermgr.domain.signals import InvalidSignal, decode_signal
from ordermgr.ports import Delivery, OrderEventDelivery, Store, until_stored

log = logging.getLogger(__name__)

KnownSymbols = Callable[[], Awaitable[frozenset[str]]]


async def run_intake(
    deliveries: MemoryObjectReceiveStream[Delivery],
    supervisor: Supervisor,
    store: Store,
    known_symbols: KnownSymbols,
    wake_outbox: Callable[[], None],
) -> None:
    """Handle deliveries until the stream closes."""
    async with deliveries:
        async for delivery in deliveries:
            received = time.monotonic()
            symbols = await _symbols_when_known(known_symbols)
            now = datetime.now(UTC)
            result = decode_signal(delivery.body, headers=delivery.headers, is_known_symbol=symbols.__contains__,
                                   now=now)  # fmt: skip
            if isinstance(result, InvalidSignal):
                await _answer_invalid(result, delivery, store, wake_outbox, now)
            else:
                await supervisor.route(result.asset, SignalReceived(result, delivery, len(delivery.body), received))


async def _symbols_when_known(known_symbols: KnownSymbols) -> frozenset[str]:
    """The venue's trading symbols. While they cannot be learned, wait: rejecting signals as
    'unknown symbol' because the venue is down would lose them."""
    delay_s = 0.5
    while True:
        try:
            return await known_symbols()
        except VenueUnavailable as exc:
            log.error("instrument list unavailable; intake waits", extra={"error": str(exc)})
            await anyio.sleep(delay_s)
            delay_s = min(10.0, delay_s * 2)


async def _answer_invalid(
    invalid: InvalidSignal, delivery: Delivery, store: Store, wake_outbox: Callable[[], None], now: datetime
) -> None:
    context = {"trace_id": invalid.trace_id, "signal_id": invalid.signal_id, "asset": invalid.asset}
    problems = [{"field": p.field, "rule": p.rule} for p in invalid.problems]
    log.warning("signal invalid", extra={**context, "code": invalid.code, "reason": invalid.message, "problems": problems})
    event = order_event(
        "rejected", order=None, signal=invalid.payload, signal_id=invalid.signal_id, trace_id=invalid.trace_id,
        now=now, rejection=(invalid.code, invalid.message),
    )  # fmt: skip
    await until_stored(store.record_invalid, invalid, event)
    wake_outbox()
    await delivery.ack()


async def run_order_updates(events: MemoryObjectReceiveStream[OrderEventDelivery], supervisor: Supervisor) -> None:
    """ws-gateway order events: ours go to their symbol's actor (which acks after merging);
    others, and those the adapter could not read, are counted and acknowledged (contract §3.2)."""
    async with events:
        async for event in events:
            order = event.order
            if order is None or not is_own_order_link_id(order.order_link_id):
                await event.delivery.ack()
                continue
            await supervisor.route(order.symbol, OrderUpdate(order, event.delivery))
