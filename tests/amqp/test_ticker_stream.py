"""The ticker stream end to end: the ticker-channel subscription over ws-gateway's HTTP API (the
paper venue's stand-in), the events on a real ``ws-gateway.ticker`` queue, the consumer."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal

import aiormq
import anyio
import pytest
from aiohttp import web
from anyio.streams.memory import MemoryObjectReceiveStream

from ordermgr.amqp.broker import TICKER_QUEUE, Broker
from ordermgr.amqp.ws_gateway import TickerSubscriptions, follow_tickers
from ordermgr.domain.market import TickerItem
from tests import support
from tests.paper.helpers import running_venue
from tests.service import reset_queues

KEY = "gateway-key"
WAIT_S = 10


@asynccontextmanager
async def taken_tickers() -> AsyncIterator[MemoryObjectReceiveStream[TickerItem]]:
    """A broker connection and the consumer of ``ws-gateway.ticker``; what it takes, in order."""
    send, receive = anyio.create_memory_object_stream[TickerItem](100)
    broker = Broker(support.AMQP_URL)
    async with anyio.create_task_group() as tg:
        await tg.start(broker.run)
        tg.start_soon(lambda: follow_tickers(broker, send.send_nowait))
        with send, receive:
            yield receive
        tg.cancel_scope.cancel()


async def publish_raw(body: bytes, queue: str) -> None:
    """Publish to a queue that exists already, without declaring it (its arguments are ws-gateway's)."""
    connection = await aiormq.connect(support.AMQP_URL)
    try:
        await (await connection.channel()).basic_publish(body, routing_key=queue)
    finally:
        await connection.close()


async def next_item(items: MemoryObjectReceiveStream[TickerItem]) -> TickerItem:
    with anyio.fail_after(WAIT_S):
        return await items.receive()


async def test_the_first_ask_subscribes_and_the_stream_is_consumed_snapshot_then_deltas(
    caplog: pytest.LogCaptureFixture,
) -> None:
    await reset_queues(TICKER_QUEUE)
    caplog.set_level(logging.WARNING, logger="ordermgr")
    prices = {"BTCUSDT": Decimal("50000")}
    async with running_venue(ws_gateway=True, gateway_api_key=KEY, amqp_url=support.AMQP_URL, initial_prices=prices
                             ) as venue, taken_tickers() as items:  # fmt: skip
        assert venue.base_url is not None
        subscriptions = TickerSubscriptions(venue.base_url, KEY, "order-manager")
        async with anyio.create_task_group() as tg:
            tg.start_soon(subscriptions.run)
            subscriptions.want("BTCUSDT")  # returns at once: the ask happens in the background
            snapshot = await next_item(items)
            await publish_raw(b"not a ticker event", TICKER_QUEUE)  # logged, acknowledged, not fatal
            venue.set_price("BTCUSDT", Decimal("50010"))
            delta = await next_item(items)
            subscriptions.want("BTCUSDT")  # asked once only
            tg.cancel_scope.cancel()
    assert (snapshot.symbol, snapshot.is_snapshot, snapshot.last_price) == ("BTCUSDT", True, Decimal("50000.00"))
    assert (delta.is_snapshot, delta.last_price) == (False, Decimal("50010.00"))
    assert "ticker event not understood; dropped" in [r.getMessage() for r in caplog.records]
    [subscription] = venue.gateway.subscriptions.values()
    assert (subscription.channel_type, subscription.symbol, subscription.requesting_service) == (
        "ticker", "BTCUSDT", "order-manager")


async def test_a_failed_subscription_is_retried_in_the_background() -> None:
    """ws-gateway (a stand-in over HTTP) fails the first ask; the second one is made by itself."""
    asked: list[dict[str, str]] = []
    answered = anyio.Event()

    async def subscriptions_api(request: web.Request) -> web.Response:
        asked.append(json.loads(await request.read()) | {"key": request.headers["X-API-Key"]})
        if len(asked) == 1:
            return web.json_response({"error": "starting up"}, status=503)
        answered.set()
        return web.json_response({"id": "s1"}, status=201)

    app = web.Application()
    app.router.add_post("/api/v1/subscriptions", subscriptions_api)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        subscriptions = TickerSubscriptions(f"http://127.0.0.1:{port}", KEY, "om", retry_base_s=0.01)
        with anyio.fail_after(WAIT_S):
            async with anyio.create_task_group() as tg:
                tg.start_soon(subscriptions.run)
                subscriptions.want("ETHUSDT")
                await answered.wait()
                tg.cancel_scope.cancel()
    finally:
        await runner.cleanup()
    expected = {"channel_type": "ticker", "symbol": "ETHUSDT", "requesting_service": "om", "key": KEY}
    assert asked == [expected, expected]
