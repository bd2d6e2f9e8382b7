"""The HTTP port as an attacker and a careless client reach it (issue 12, found by hand): raw
bytes on a real socket against the served app, so aiohttp's own parser, timers and error pages
are what is tested. No database: every request here is refused before a query would run."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Iterator

import anyio
import pytest
from anyio.abc import SocketStream

from ordermgr.db.queries import Queries
from ordermgr.http.api import create_api
from ordermgr.http.openapi import build_document
from ordermgr.http.server import create_app, serve
from tests.http.fakes import FakeGateway, FakeSync
from tests.http.test_api import KEY, FakeMetrics
from tests.http.test_openapi import AllUp

pytestmark = pytest.mark.anyio

HEAD_TIMEOUT_S = 0.5


@pytest.fixture
async def port() -> AsyncIterator[int]:
    sync = FakeSync()
    queries = Queries(None)  # type: ignore[arg-type]  # no request here reaches a query
    api = create_api(queries=queries, api_key=KEY, operators=FakeGateway(), metrics=FakeMetrics(), assets=sync)
    async with anyio.create_task_group() as tg:
        yield await tg.start(lambda task_status: serve(create_app(AllUp(), api=api), "127.0.0.1", 0,
                                                       head_timeout_s=HEAD_TIMEOUT_S, task_status=task_status))
        tg.cancel_scope.cancel()


class Lines(logging.Handler):
    """Every record as the log would print it, traceback included."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s %(error)s", defaults={"error": ""}))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def log_lines() -> Iterator[Lines]:
    lines, root = Lines(), logging.getLogger()
    previous = root.level
    root.addHandler(lines)
    root.setLevel(logging.DEBUG)
    yield lines
    root.removeHandler(lines)
    root.setLevel(previous)


async def exchange(port: int, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``raw``; read the answer until the server closes. (status, headers, body)."""
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        await stream.send(raw)
        answer = await read_to_close(stream)
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in header_lines)
    return int(status_line.split()[1]), {k.lower(): v for k, v in headers.items()}, body


async def read_to_close(stream: SocketStream) -> bytes:
    received = b""
    with anyio.fail_after(5):
        try:
            async for chunk in stream:
                received += chunk
        except anyio.BrokenResourceError:  # reset by the server: closed all the same
            pass
    return received


BAD_HEADS = [
    pytest.param(b"GET /api/v1/orders HTTP/1.1\r\nHost: x\r\nX-API-Key: %s\x01\r\n\r\n", id="control char in value"),
    pytest.param(b"GET /api/v1/orders HTTP/1.1\r\nHost: x\r\nX-API-Key %s\r\n\r\n", id="no colon"),
    pytest.param(b"GET /api/v1/orders HTTP/1.1\r\nHost: x\r\nX-API-Key: %s" + b"k" * 9000 + b"\r\n\r\n",
                 id="header too long"),
    pytest.param(b"GET /api/v1/orders?key=%s\x01 HTTP/1.1\r\nHost: x\r\n\r\n", id="control char in target"),
]  # fmt: skip


@pytest.mark.parametrize("template", BAD_HEADS)
async def test_a_request_the_parser_refuses_never_puts_the_api_key_in_the_log(
    port: int, log_lines: Lines, template: bytes
) -> None:
    status, headers, body = await exchange(port, template % KEY.encode())
    assert status == 400
    assert headers["content-type"].startswith("application/json")
    assert json.loads(body) == {"error": "the request could not be read as HTTP (its request line or a header)",
                                "code": "bad_request", "details": {}}  # fmt: skip
    assert KEY.encode() not in body  # not echoed either
    assert headers["server"] == "ordermgr"
    assert log_lines.lines and not [line for line in log_lines.lines if KEY in line]
    assert [line for line in log_lines.lines if "refused before routing" in line][0].startswith("WARNING")


async def test_routing_refusals_outside_the_api_are_in_the_error_shape(port: int) -> None:
    status, headers, body = await exchange(port, b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert (status, json.loads(body)["code"]) == (404, "not_found")
    status, headers, body = await exchange(port, b"POST /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                                                 b"Content-Length: 0\r\n\r\n")  # fmt: skip
    assert (status, json.loads(body)["code"], headers["allow"]) == (405, "method_not_allowed", "GET,HEAD")


async def test_a_401_names_its_scheme_and_no_response_shows_the_server_version(port: int) -> None:
    status, headers, body = await exchange(port, b"GET /api/v1/orders HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert (status, json.loads(body)["code"]) == (401, "unauthorized")
    assert headers["www-authenticate"] == 'ApiKey realm="ordermgr", header="X-API-Key"'
    assert headers["server"] == "ordermgr"
    status, headers, _ = await exchange(port, b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert (status, headers["server"]) == (200, "ordermgr")


def authorised(method: str, target: str, body: bytes = b"") -> bytes:
    return (f"{method} {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-API-Key: {KEY}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body  # fmt: skip


async def test_a_page_number_of_4301_digits_is_a_400_not_a_500(port: int) -> None:
    status, _, body = await exchange(port, authorised("GET", "/api/v1/orders?page=" + "9" * 4301))
    answer = json.loads(body)
    assert (status, answer["code"], answer["details"]["parameter"]) == (400, "invalid_parameter", "page")


async def test_a_sync_body_of_1000_nested_arrays_is_a_400_not_a_500(port: int) -> None:
    status, _, body = await exchange(port, authorised("POST", "/api/v1/sync", b"[" * 1000 + b"]" * 1000))
    assert (status, json.loads(body)["code"]) == (400, "invalid_body")


async def test_a_body_over_the_size_limit_is_a_documented_413(port: int) -> None:
    status, _, body = await exchange(port, authorised("POST", "/api/v1/sync", b" " * (1024**2 + 1)))
    assert (status, json.loads(body)["code"]) == (413, "payload_too_large")
    assert "413" in build_document()["paths"]["/api/v1/sync"]["post"]["responses"]


async def test_idle_connections_and_half_sent_heads_are_closed(port: int) -> None:
    """200 sockets that never send and one that stops half way through its head: all closed by
    the server within the head timeout (each read below ends when the server hangs up)."""
    streams = [await anyio.connect_tcp("127.0.0.1", port) for _ in range(200)]
    half = await anyio.connect_tcp("127.0.0.1", port)
    await half.send(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    kept_alive = await anyio.connect_tcp("127.0.0.1", port)
    await kept_alive.send(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    with anyio.fail_after(HEAD_TIMEOUT_S * 8):
        answers: list[bytes] = []
        async with anyio.create_task_group() as tg:
            for stream in [*streams, half, kept_alive]:
                tg.start_soon(_collect, stream, answers)
    assert answers.count(b"") == 201  # closed without a word
    assert [a for a in answers if a][0].startswith(b"HTTP/1.1 200")  # answered, then closed when idle


async def _collect(stream: SocketStream, answers: list[bytes]) -> None:
    async with stream:
        answers.append(await read_to_close(stream))
