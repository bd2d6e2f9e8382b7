"""The pybit boundary without the paper venue: signing on the venue clock, the retCode/HTTP
classification table, and network failures the paper venue cannot produce."""

from __future__ import annotations

import socket
from collections.abc import Callable
from decimal import Decimal

import anyio
import pytest
import requests
from anyio.abc import SocketStream
from pybit._http_manager import generate_signature
from pybit.exceptions import FailedRequestError
from pybit.unified_trading import HTTP
from requests.structures import CaseInsensitiveDict

from ordermgr.bybit.exchange import BybitExchange
from ordermgr.bybit.transport import (
    ClockedHTTP,
    Kind,
    failure_from_http,
    failure_from_network,
    failure_from_ret_code,
)
from ordermgr.domain.errors import VenueUnavailable
from ordermgr.domain.model import OrderRequest, OrderType, RetryPolicy, Side, Unavailable, Unknown

pytestmark = pytest.mark.anyio


def _fixed_clock(ms: int) -> Callable[[], int]:
    return lambda: ms


def test_signs_with_the_venue_clock_in_pybits_header_format() -> None:
    client = ClockedHTTP(api_key="k", api_secret="s", max_retries=1, retry_codes={-999999})
    client.venue_now_ms = _fixed_clock(1_700_000_000_123)
    ours = client._prepare_headers("category=linear&symbol=BTCUSDT", 5000)
    theirs = HTTP(api_key="k", api_secret="s")._prepare_headers("category=linear", 5000)
    assert ours.keys() == theirs.keys()  # pybit's header set has not changed under us
    assert ours["X-BAPI-TIMESTAMP"] == "1700000000123"
    expected = generate_signature(False, "s", "1700000000123k5000category=linear&symbol=BTCUSDT")
    assert ours["X-BAPI-SIGN"] == expected
    client.client.close()


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        (10001, Kind.REJECTED), (110007, Kind.REJECTED), (110017, Kind.REJECTED),
        (110003, Kind.REJECTED), (110094, Kind.REJECTED), (110072, Kind.REJECTED),
        (110001, Kind.REJECTED),
        (10003, Kind.AUTH), (10004, Kind.AUTH), (10005, Kind.AUTH), (10007, Kind.AUTH),
        (10006, Kind.RATE_LIMITED), (10018, Kind.RATE_LIMITED), (429, Kind.RATE_LIMITED),
        (10002, Kind.CLOCK), (-1, Kind.CLOCK),
        (10000, Kind.UNKNOWN), (10016, Kind.UNKNOWN), (170007, Kind.UNKNOWN),
        # 5xxx are the venue's own server trouble ("5004 Server Timeout"): the order may exist.
        (5004, Kind.UNKNOWN), (5000, Kind.UNKNOWN), (5999, Kind.UNKNOWN),
        (4999, Kind.REJECTED), (6000, Kind.REJECTED),
    ],
)
def test_ret_code_classes(code: int, kind: Kind) -> None:
    assert failure_from_ret_code(code, "msg", None).kind is kind


def test_rate_limit_keeps_the_reset_header() -> None:
    headers = CaseInsensitiveDict({"X-Bapi-Limit-Reset-Timestamp": "1700000000999"})
    assert failure_from_ret_code(10006, "Too many visits!", headers).reset_ms == 1700000000999


@pytest.mark.parametrize(
    ("status", "headers", "kind"),
    [
        (401, {}, Kind.AUTH), (403, {}, Kind.RATE_LIMITED), (429, {}, Kind.RATE_LIMITED),
        (500, {}, Kind.UNKNOWN), (502, {}, Kind.UNKNOWN), (504, {}, Kind.UNKNOWN),
        (404, {}, Kind.REJECTED), (409, None, Kind.UNKNOWN),  # pybit's "could not decode JSON"
    ],
)
def test_http_classes(status: int, headers: dict[str, str] | None, kind: Kind) -> None:
    exc = FailedRequestError(request="x", message="m", status_code=status, time="t",
                             resp_headers=headers)
    assert failure_from_http(exc).kind is kind


def test_network_classes() -> None:
    assert failure_from_network(requests.ConnectTimeout("x")).kind is Kind.UNAVAILABLE
    assert failure_from_network(requests.ReadTimeout("x")).kind is Kind.UNKNOWN
    assert failure_from_network(requests.ConnectionError("reset")).kind is Kind.UNKNOWN


async def _no_sleep(_: float) -> None:
    await anyio.lowlevel.checkpoint()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


ORDER = OrderRequest(symbol="BTCUSDT", side=Side.BUY, order_type=OrderType.LIMIT,
                     qty=Decimal("0.001"), price=Decimal("50000"), order_link_id="t-refused-1")


async def test_connection_refused_is_unavailable_after_the_retry_budget() -> None:
    ex = BybitExchange(api_key="k", api_secret="s", base_url=f"http://127.0.0.1:{_free_port()}",
                       timeout_s=2, retry=RetryPolicy(max_attempts=3), sleep=_no_sleep)
    with anyio.fail_after(10):
        outcome = await ex.place_order(ORDER)
        assert isinstance(outcome, Unavailable), outcome
        with pytest.raises(VenueUnavailable):
            await ex.open_orders()
    stats = ex.statistics()
    assert stats.unknown_outcomes == 0 and stats.retries >= 2
    await ex.aclose()


async def test_connection_dropped_after_sending_is_unknown_and_not_retried() -> None:
    paths: list[str] = []

    async def drop(stream: SocketStream) -> None:
        async with stream:
            head = await stream.receive()
            paths.append(head.split(b" ", 2)[1].decode())
        # closed without an answer: the request may have been executed

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, drop)
        ex = BybitExchange(api_key="k", api_secret="s", base_url=f"http://127.0.0.1:{port}",
                           timeout_s=2, retry=RetryPolicy(max_attempts=2), sleep=_no_sleep)
        with anyio.fail_after(10):
            outcome = await ex.place_order(ORDER)
        await ex.aclose()
        tg.cancel_scope.cancel()
    assert isinstance(outcome, Unknown), outcome
    creates = [p for p in paths if p.startswith("/v5/order/create")]
    assert len(creates) == 1  # never blindly retried
    assert ex.statistics().unknown_outcomes == 1
    assert any(p.startswith("/v5/order/realtime") for p in paths)  # resolution was attempted
