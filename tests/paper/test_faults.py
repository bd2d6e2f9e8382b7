"""Fault injection, in-process (``venue.faults``) and over HTTP (``/paper/*``)."""

from __future__ import annotations

import json
import time
from decimal import Decimal

import aiohttp
import anyio
import pytest
import requests
from pybit.exceptions import FailedRequestError
from pybit.unified_trading import HTTP

from ordermgr.paper import PaperConfig, PaperVenue
from ordermgr.paper.auth import sign
from tests.paper.helpers import call, make_session, order_by_link, place, rejected, running_venue

MARKET_BUY = {"category": "linear", "symbol": "BTCUSDT", "side": "Buy", "orderType": "Market", "qty": "0.01"}


async def test_rate_limit_answers_10006_with_a_future_reset(venue: PaperVenue, session: HTTP) -> None:
    venue.faults.rate_limit_next = 2
    for n in range(2):
        error = await rejected(session.place_order, **MARKET_BUY, orderLinkId=f"rl-{n}")
        assert (error.status_code, error.message) == (10006, "Too many visits!")
        headers = error.resp_headers
        assert headers["X-Bapi-Limit"] == "10" and headers["X-Bapi-Limit-Status"] == "0"
        assert int(headers["X-Bapi-Limit-Reset-Timestamp"]) > time.time() * 1000
    assert venue.faults.rate_limit_next == 0
    assert venue.engine.orders == {}  # refused requests were not executed
    await place(session, **{k: v for k, v in MARKET_BUY.items() if k != "category"}, orderLinkId="rl-0")


async def test_pybit_own_retry_survives_the_reset_timestamp(venue: PaperVenue) -> None:
    # pybit sleeps until the reset; a past timestamp would crash it (bybit.md §0.5).
    assert venue.base_url is not None
    session = HTTP(api_key="paper-key", api_secret="paper-secret", max_retries=2, timeout=5)
    session.endpoint = venue.base_url
    venue.faults.rate_limit_next = 1
    reply = await call(session.get_positions, category="linear", symbol="BTCUSDT")
    assert reply["retCode"] == 0
    await call(session.client.close)


async def test_error_next_answers_the_code_without_executing(venue: PaperVenue, session: HTTP) -> None:
    venue.faults.error_next = 1
    error = await rejected(session.place_order, **MARKET_BUY, orderLinkId="e-1")
    assert (error.status_code, error.message) == (10016, "Server error.")
    assert (await call(session.get_open_orders, category="linear", symbol="BTCUSDT", orderLinkId="e-1"))["result"][
        "list"
    ] == []
    venue.faults.error_next, venue.faults.error_code = 1, 10000
    assert (await rejected(session.get_wallet_balance, accountType="UNIFIED")).status_code == 10000


async def test_http_error_next_is_a_non_json_status(venue: PaperVenue, session: HTTP) -> None:
    venue.faults.http_error_next = 1
    with pytest.raises(FailedRequestError) as info:
        await call(session.place_order, **MARKET_BUY, orderLinkId="h-1")
    assert info.value.status_code == 502
    assert venue.engine.orders == {}
    assert venue.faults.http_error_next == 0


async def test_lost_response_executes_but_never_answers(venue: PaperVenue) -> None:
    assert venue.base_url is not None
    impatient = make_session(venue.base_url, timeout=0.3)
    venue.faults.lose_response_next = 1
    with pytest.raises(requests.exceptions.ReadTimeout):
        await call(impatient.place_order, **MARKET_BUY, orderLinkId="lost-1")
    assert venue.faults.lose_response_next == 0
    # The order exists: the caller must resolve "unknown" by looking it up.
    assert (await order_by_link(impatient, "lost-1"))["orderStatus"] == "Filled"
    await call(impatient.client.close)


async def test_latency_delays_private_answers(venue: PaperVenue, session: HTTP) -> None:
    venue.faults.latency_s = 0.2
    started = anyio.current_time()
    await call(session.get_positions, category="linear", symbol="BTCUSDT")
    assert anyio.current_time() - started >= 0.2
    started = anyio.current_time()
    await call(session.get_server_time)  # public: not delayed
    assert anyio.current_time() - started < 0.2


async def test_network_latency_delays_every_bybit_path_market_data_included(venue: PaperVenue, session: HTTP) -> None:
    venue.faults.network_latency_s = 0.2
    calls = [(session.get_server_time, {}), (session.get_tickers, {"category": "linear", "symbol": "BTCUSDT"}),
             (session.get_positions, {"category": "linear", "symbol": "BTCUSDT"})]  # fmt: skip
    for method, params in calls:
        started = anyio.current_time()
        await call(method, **params)
        assert anyio.current_time() - started >= 0.2


async def test_requests_are_counted_by_path_as_they_arrive(venue: PaperVenue, session: HTTP) -> None:
    await call(session.get_tickers, category="linear", symbol="BTCUSDT")
    await call(session.get_tickers, category="linear")
    await call(session.get_wallet_balance, accountType="UNIFIED", coin="USDT")
    venue.faults.http_error_next = 1
    with pytest.raises(FailedRequestError):
        await call(session.get_wallet_balance, accountType="UNIFIED", coin="USDT")  # refused: still arrived
    async with aiohttp.ClientSession() as client, client.get(f"{venue.base_url}/paper/state") as response:
        counts = (await response.json())["requests"]
    assert counts == {"/v5/market/tickers": 2, "/v5/account/wallet-balance": 2}
    venue.reset()
    assert venue.state()["requests"] == {}


async def test_shutdown_releases_a_held_request_promptly() -> None:
    venue = PaperVenue(PaperConfig(price_walk_interval_s=0))
    executed = anyio.Event()
    venue.order_listeners.append(lambda payload: executed.set())
    venue.faults.lose_response_next = 1
    outcome: list[object] = []
    body = json.dumps({**MARKET_BUY, "orderLinkId": "held-1"}).encode()

    async def post(client: aiohttp.ClientSession, url: str) -> None:
        try:
            async with client.post(f"{url}/v5/order/create", data=body, headers=_signed(body)) as response:
                outcome.append(response.status)
        except aiohttp.ClientError as exc:
            outcome.append(exc)

    with anyio.fail_after(5):
        async with aiohttp.ClientSession() as client, anyio.create_task_group() as outer:
            async with anyio.create_task_group() as serving:
                url = await serving.start(venue.run)
                outer.start_soon(post, client, url)
                await executed.wait()  # the order exists; its answer is now held
                stopping = anyio.current_time()
                serving.cancel_scope.cancel()
            assert anyio.current_time() - stopping < 2
    assert len(outcome) == 1 and isinstance(outcome[0], aiohttp.ClientError)
    assert venue.engine.find_order(order_link_id="held-1") is not None


def _signed(body: bytes) -> dict[str, str]:
    stamp = str(int(time.time() * 1000))
    return {
        "X-BAPI-API-KEY": "paper-key",
        "X-BAPI-TIMESTAMP": stamp,
        "X-BAPI-RECV-WINDOW": "5000",
        "X-BAPI-SIGN": sign("paper-secret", stamp, "paper-key", "5000", body),
        "Content-Type": "application/json",
    }


async def test_control_endpoints_over_http(venue: PaperVenue, session: HTTP) -> None:
    base = venue.base_url
    async with aiohttp.ClientSession() as client:
        async with client.post(f"{base}/paper/faults", json={"rate_limit_next": 1, "latency_s": 0}) as response:
            assert response.status == 200
            assert (await response.json())["rate_limit_next"] == 1
        assert venue.faults.rate_limit_next == 1
        async with client.post(f"{base}/paper/faults", json={"no_such_fault": 1}) as response:
            assert response.status == 400
        async with client.post(f"{base}/paper/price", json={"symbol": "BTCUSDT", "price": "42000"}) as response:
            assert response.status == 200
            assert (await response.json())["prices"]["BTCUSDT"] == "42000"
        assert venue.price("BTCUSDT") == Decimal("42000")
        async with client.post(f"{base}/paper/price", json={"symbol": "NOPE", "price": "1"}) as response:
            assert response.status == 400
        venue.faults.rate_limit_next = 0
        await place(session, side="Buy", orderType="Market", qty="0.01")
        async with client.get(f"{base}/paper/state") as response:
            state = await response.json()
            assert state["orders"] == 1 and state["positions"]["BTCUSDT"]["size"] == "0.01"
        venue.faults.error_next = 3
        async with client.post(f"{base}/paper/reset") as response:
            state = await response.json()
        assert state["orders"] == 0 and state["positions"] == {} and state["faults"]["error_next"] == 0
        assert state["wallet"]["walletBalance"] == "100000"
        assert venue.price("BTCUSDT") == Decimal("65000.00")


async def test_enforced_rate_limit_refuses_the_eleventh_write_in_a_second() -> None:
    async with running_venue(enforce_rate_limits=True) as venue:
        assert venue.base_url is not None
        session = make_session(venue.base_url)
        codes = []
        for _ in range(11):  # a few ms each: well inside one second
            error = await rejected(session.cancel_order, category="linear", symbol="BTCUSDT", orderLinkId="none")
            codes.append(error.status_code)
        assert codes == [110001] * 10 + [10006]
        assert int(error.resp_headers["X-Bapi-Limit-Reset-Timestamp"]) > time.time() * 1000
        await call(session.client.close)


async def test_bybit_limits_are_enforced_by_default_and_counted_in_the_state() -> None:
    async with running_venue() as venue:
        assert venue.base_url is not None
        session = make_session(venue.base_url)
        codes = [(await rejected(session.cancel_order, category="linear", symbol="BTCUSDT", orderLinkId="none"))
                 .status_code for _ in range(11)]  # fmt: skip
        await call(session.client.close)
        assert codes[-1] == 10006
        assert venue.state()["rate_limits"] == {"/v5/order/cancel": {"requests": 11, "refused": 1}}


async def test_lifted_limits_refuse_nothing_and_announce_a_million() -> None:
    async with running_venue(enforce_rate_limits=False) as venue:
        assert venue.base_url is not None
        session = make_session(venue.base_url)
        for _ in range(12):
            error = await rejected(session.cancel_order, category="linear", symbol="BTCUSDT", orderLinkId="none")
            assert error.status_code == 110001
        assert error.resp_headers["X-Bapi-Limit"] == "1000000"
        await call(session.client.close)
