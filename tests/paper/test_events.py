"""Order events on a real RabbitMQ queue, in ws-gateway's envelope (contract §3.2)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import aiormq
import anyio
import pytest
from anyio.streams.memory import MemoryObjectReceiveStream

from ordermgr.paper import PaperVenue
from ordermgr.paper.events import QUEUE_ARGUMENTS
from tests.paper.helpers import call, make_session, place, running_venue
from tests.support import AMQP_URL, TcpProxy

WAIT_S = 5


@asynccontextmanager
async def consumed_queue() -> AsyncIterator[tuple[str, MemoryObjectReceiveStream[dict[str, Any]]]]:
    """A uniquely named queue, its decoded messages, and its deletion afterwards."""
    name = f"test.paper.order.{uuid.uuid4().hex}"
    try:
        connection = await aiormq.connect(AMQP_URL)
    except (aiormq.exceptions.AMQPConnectionError, OSError) as exc:
        pytest.skip(f"RabbitMQ not reachable at {AMQP_URL}: {exc!r}")
    send, receive = anyio.create_memory_object_stream[dict[str, Any]](1000)

    async def on_message(message: aiormq.abc.DeliveredMessage) -> None:
        send.send_nowait(json.loads(message.body))  # aiormq's task: hand over, nothing else

    try:
        channel = await connection.channel()
        await channel.queue_declare(name, durable=True, arguments=QUEUE_ARGUMENTS)
        await channel.basic_consume(name, on_message, no_ack=True)
        with send, receive:
            yield name, receive
        await channel.queue_delete(name)
    finally:
        with anyio.move_on_after(2, shield=True):
            await connection.close()


async def next_event(events: MemoryObjectReceiveStream[dict[str, Any]]) -> dict[str, Any]:
    with anyio.fail_after(WAIT_S):
        return await events.receive()


@asynccontextmanager
async def venue_publishing(queue: str, **overrides: Any) -> AsyncIterator[PaperVenue]:
    async with running_venue(amqp_url=AMQP_URL, order_queue=queue, **overrides) as venue:
        venue.set_price("BTCUSDT", Decimal("50000"))
        yield venue


async def test_order_changes_arrive_in_ws_gateway_envelope() -> None:
    async with consumed_queue() as (queue, events), venue_publishing(queue) as venue:
        assert venue.base_url is not None
        session = make_session(venue.base_url)
        await place(session, side="Buy", orderType="Limit", price="49000", qty="0.01", orderLinkId="ev-1")
        event = await next_event(events)
        assert set(event) == {"event_id", "event_type", "topic", "timestamp", "received_at", "payload", "trace_id"}
        assert (event["event_type"], event["topic"], event["trace_id"]) == ("order", "order", None)
        uuid.UUID(event["event_id"])
        payload = event["payload"]
        assert (payload["orderLinkId"], payload["orderStatus"], payload["category"]) == ("ev-1", "New", "linear")
        assert (payload["qty"], payload["cumExecQty"], payload["leavesQty"]) == ("0.010", "0.000", "0.010")
        assert isinstance(payload["positionIdx"], int) and payload["reduceOnly"] is False

        venue.set_price("BTCUSDT", Decimal("48000"))  # fills the resting order
        filled = (await next_event(events))["payload"]
        assert (filled["orderStatus"], filled["cumExecQty"], filled["avgPrice"]) == ("Filled", "0.010", "49000")
        assert filled["cumExecFee"] == "0.098"
        await call(session.client.close)


async def test_market_fill_parts_publish_one_event_per_execution() -> None:
    async with consumed_queue() as (queue, events), venue_publishing(queue, market_fill_parts=2) as venue:
        assert venue.base_url is not None
        session = make_session(venue.base_url)
        await place(session, side="Sell", orderType="Market", qty="0.01", orderLinkId="ev-parts")
        statuses = [(await next_event(events))["payload"]["orderStatus"] for _ in range(2)]
        assert statuses == ["PartiallyFilled", "Filled"]
        await call(session.client.close)


async def test_event_drop_and_duplicate_faults() -> None:
    async with consumed_queue() as (queue, events), venue_publishing(queue) as venue:
        assert venue.base_url is not None
        session = make_session(venue.base_url)
        venue.faults.event_drop = 1.0
        await place(session, side="Buy", orderType="Market", qty="0.01", orderLinkId="dropped")
        venue.faults.event_drop, venue.faults.event_duplicate = 0.0, 1.0
        await place(session, side="Buy", orderType="Market", qty="0.01", orderLinkId="twice")
        first, second = await next_event(events), await next_event(events)
        # The dropped event never arrives: the next ones are the duplicated pair.
        assert first["payload"] == second["payload"] and first["payload"]["orderLinkId"] == "twice"
        assert first["event_id"] != second["event_id"]
        assert venue.events.stats.dropped == 1 and venue.events.stats.duplicated == 1
        await call(session.client.close)


async def test_event_reorder_shuffles_but_loses_nothing() -> None:
    async with consumed_queue() as (queue, events), venue_publishing(queue, seed=3) as venue:
        venue.faults.event_reorder = True
        engine = venue.engine
        links = [f"ro-{n}" for n in range(8)]
        for link in links:  # straight into the engine: eight events in one burst
            engine.create_order({"category": "linear", "symbol": "BTCUSDT", "side": "Buy", "orderType": "Limit",
                                 "price": "49000", "qty": "0.01", "orderLinkId": link})
        received = [(await next_event(events))["payload"]["orderLinkId"] for _ in links]
        assert sorted(received) == sorted(links)
        assert received != links  # seed 3 shuffles this burst


async def test_requests_never_wait_for_an_unreachable_broker() -> None:
    # Nothing listens on port 1: the publisher keeps retrying, HTTP keeps answering.
    async with running_venue(amqp_url="amqp://guest:guest@127.0.0.1:1/", event_buffer=2) as venue:
        assert venue.base_url is not None
        session = make_session(venue.base_url)
        with anyio.fail_after(WAIT_S):
            for n in range(4):
                await place(session, side="Buy", orderType="Market", qty="0.01", orderLinkId=f"nb-{n}")
        assert venue.events.stats.offered == 4 and venue.events.stats.overflowed >= 1
        assert venue.events.stats.connected is False
        await call(session.client.close)


async def test_publisher_reconnects_when_the_broker_goes_away() -> None:
    broker = urlsplit(AMQP_URL)
    proxy = TcpProxy(broker.hostname or "127.0.0.1", broker.port or 5672)
    async with consumed_queue() as (queue, events), anyio.create_task_group() as tg:
        proxy_port = await tg.start(proxy.run)
        url = f"amqp://guest:guest@127.0.0.1:{proxy_port}{broker.path}"
        async with running_venue(amqp_url=url, order_queue=queue) as venue:
            venue.set_price("BTCUSDT", Decimal("50000"))
            engine = venue.engine
            order = {"category": "linear", "symbol": "BTCUSDT", "side": "Buy", "orderType": "Market", "qty": "0.01"}
            engine.create_order(order | {"orderLinkId": "before-cut"})
            assert (await next_event(events))["payload"]["orderLinkId"] == "before-cut"
            await proxy.cut()
            engine.create_order(order | {"orderLinkId": "during-cut"})  # accepted while away
            proxy.restore()
            assert (await next_event(events))["payload"]["orderLinkId"] == "during-cut"
            assert venue.events.stats.reconnects >= 1
        tg.cancel_scope.cancel()
