"""The paper venue as a ws-gateway stand-in: ws-gateway's subscription API over HTTP, and the
ticker events of the subscribed symbols on a real RabbitMQ queue (contract §14.1)."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

import aiohttp
import pytest

from ordermgr.paper import PaperVenue
from ordermgr.paper.gateway import TickerStream
from tests.paper.helpers import running_venue
from tests.paper.test_events import consumed_queue, next_event
from tests.support import AMQP_URL

KEY = "gateway-test-key"


async def subscribe(venue: PaperVenue, body: dict[str, Any], key: str = KEY) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.post(
        f"{venue.base_url}/api/v1/subscriptions", json=body, headers={"X-API-Key": key}
    ) as response:
        return response.status, await response.json()


async def test_subscriptions_are_201_new_and_409_existing() -> None:
    async with running_venue(ws_gateway=True, gateway_api_key=KEY) as venue:
        order = {"channel_type": "order", "requesting_service": "order-manager"}
        status, created = await subscribe(venue, order)
        assert status == 201
        assert (created["channel_type"], created["symbol"], created["requesting_service"]) == ("order", None,
                                                                                               "order-manager")
        uuid.UUID(created["id"])
        status, again = await subscribe(venue, order)
        assert (status, again["code"], again["details"]["id"]) == (409, "subscription_exists", created["id"])
        ticker = {"channel_type": "ticker", "symbol": "btcusdt", "requesting_service": "order-manager"}
        status, created = await subscribe(venue, ticker)
        assert (status, created["symbol"]) == (201, "BTCUSDT")
        assert (await subscribe(venue, ticker))[0] == 409


@pytest.mark.parametrize(
    ("body", "key", "status", "parameter"),
    [
        ({"channel_type": "order", "requesting_service": "om"}, "wrong", 401, None),
        ({"channel_type": "trades", "requesting_service": "om"}, KEY, 400, "channel_type"),
        ({"channel_type": "order"}, KEY, 400, "requesting_service"),
        ({"channel_type": "ticker", "requesting_service": "om"}, KEY, 400, "symbol"),
        ({"channel_type": "ticker", "symbol": "NOPEUSDT", "requesting_service": "om"}, KEY, 400, "symbol"),
    ],
)
async def test_bad_subscription_requests_name_what_is_wrong(
    body: dict[str, Any], key: str, status: int, parameter: str | None
) -> None:
    async with running_venue(ws_gateway=True, gateway_api_key=KEY) as venue:
        got, answer = await subscribe(venue, body, key)
    assert got == status and set(answer) == {"error", "code", "details"}
    assert answer["details"].get("parameter") == parameter


async def test_without_the_flag_the_venue_does_not_answer_the_subscription_api() -> None:
    async with running_venue() as venue, aiohttp.ClientSession() as http, http.post(
        f"{venue.base_url}/api/v1/subscriptions", json={"channel_type": "order", "requesting_service": "om"}
    ) as response:
        assert response.status == 404


def test_a_ticker_stream_is_a_snapshot_then_deltas_of_what_changed() -> None:
    published: list[dict[str, Any]] = []
    stream = TickerStream(published.append)
    item = {"symbol": "BTCUSDT", "lastPrice": "50000.00", "markPrice": "50000.00", "volume24h": "0"}
    stream.changed(item, 1)  # not subscribed yet: nothing
    stream.snapshot(item, 2)
    stream.changed({**item, "lastPrice": "50010.00", "markPrice": "50010.00"}, 3)
    stream.changed({**item, "lastPrice": "50010.00", "markPrice": "50010.00"}, 4)  # the same price: nothing
    stream.changed({**item, "lastPrice": "49990.00", "markPrice": "50010.00"}, 5)
    assert published == [
        {**item, "tickDirection": "ZeroPlusTick", "type": "snapshot", "ts": 2},
        {"symbol": "BTCUSDT", "lastPrice": "50010.00", "markPrice": "50010.00", "tickDirection": "PlusTick",
         "type": "delta", "ts": 3},
        {"symbol": "BTCUSDT", "lastPrice": "49990.00", "tickDirection": "MinusTick", "type": "delta", "ts": 5},
    ]  # fmt: skip


async def test_ticker_events_of_subscribed_symbols_arrive_in_ws_gateway_envelope() -> None:
    async with consumed_queue() as (queue, events), running_venue(
        ws_gateway=True, gateway_api_key=KEY, amqp_url=AMQP_URL, ticker_queue=queue,
        initial_prices={"BTCUSDT": Decimal("50000"), "ETHUSDT": Decimal("3000")},
    ) as venue:  # fmt: skip
        assert (await subscribe(venue, {"channel_type": "ticker", "symbol": "BTCUSDT",
                                        "requesting_service": "order-manager"}))[0] == 201  # fmt: skip
        snapshot = await next_event(events)
        venue.set_price("ETHUSDT", Decimal("3001"))  # not subscribed: no event
        venue.set_price("BTCUSDT", Decimal("50000"))  # no change: no event
        venue.set_price("BTCUSDT", Decimal("50100.5"))
        delta = await next_event(events)
        venue.step_prices()  # the price walk: one event per subscribed symbol that moved
        walked = await next_event(events)

    assert set(snapshot) == {"event_id", "event_type", "topic", "timestamp", "received_at", "payload", "trace_id"}
    assert (snapshot["event_type"], snapshot["topic"], snapshot["trace_id"]) == ("ticker", "tickers.BTCUSDT", None)
    uuid.UUID(snapshot["event_id"])
    payload = snapshot["payload"]
    assert (payload["type"], payload["symbol"], payload["lastPrice"]) == ("snapshot", "BTCUSDT", "50000.00")
    assert (payload["bid1Price"], payload["ask1Price"], payload["markPrice"]) == ("49999.90", "50000.10", "50000.00")
    assert isinstance(payload["ts"], int)
    assert delta["payload"]["type"] == "delta" and delta["topic"] == "tickers.BTCUSDT"
    assert {k: delta["payload"][k] for k in ("lastPrice", "bid1Price", "ask1Price")} == {
        "lastPrice": "50100.50", "bid1Price": "50100.40", "ask1Price": "50100.60"}
    assert "volume24h" not in delta["payload"]  # only what changed
    assert delta["payload"]["ts"] >= payload["ts"]
    assert walked["payload"]["symbol"] == "BTCUSDT" and walked["payload"]["type"] == "delta"


async def test_a_stalled_stream_publishes_nothing_and_resumes_with_a_snapshot() -> None:
    async with consumed_queue() as (queue, events), running_venue(
        ws_gateway=True, gateway_api_key=KEY, amqp_url=AMQP_URL, ticker_queue=queue,
        initial_prices={"BTCUSDT": Decimal("50000"), "ETHUSDT": Decimal("3000")},
    ) as venue:  # fmt: skip
        await subscribe(venue, {"channel_type": "ticker", "symbol": "BTCUSDT", "requesting_service": "om"})
        assert (await next_event(events))["payload"]["type"] == "snapshot"
        venue.faults.ticker_stall = True
        venue.set_price("BTCUSDT", Decimal("50100"))
        # A subscription while stalled is recorded, its snapshot waits for the stream.
        assert (await subscribe(venue, {"channel_type": "ticker", "symbol": "ETHUSDT",
                                        "requesting_service": "om"}))[0] == 201  # fmt: skip
        venue.faults.ticker_stall = False
        venue.set_price("BTCUSDT", Decimal("50200"))
        venue.set_price("ETHUSDT", Decimal("3001"))
        venue.set_price("BTCUSDT", Decimal("50300"))
        after = [(await next_event(events))["payload"] for _ in range(3)]
    assert [(p["symbol"], p["type"], p["lastPrice"]) for p in after] == [
        ("BTCUSDT", "snapshot", "50200.00"), ("ETHUSDT", "snapshot", "3001.00"), ("BTCUSDT", "delta", "50300.00")]
    assert venue.ticker_events.stats.published == 4  # the first snapshot and these three: nothing while stalled
