"""aiohttp's connection handling, made safe for a port an attacker can reach.

Three things aiohttp does on its own before any route or middleware runs, replaced here:

- a request it cannot parse is answered in plain text that echoes the offending line, and logged
  at ERROR with a traceback quoting that line raw, API key and all: it is answered in the API's
  JSON error shape and logged as one warning line that names the parser's complaint only;
- a connection that sends nothing, or never finishes its request head, stays open (for an hour
  with aiohttp's default keep-alive timer, for ever in aiohttp 3.14.0 and before): it is closed
  after ``head_timeout_s``, and so are idle keep-alive connections;
- every response carries ``Server: Python/3.x aiohttp/3.y``: the version is left out.

The hooks are aiohttp's own classes, subclassed (``RequestHandler``, and ``web.Server`` for the
one line that builds it, which reads two of its private attributes); tests/http/test_hardening.py
pins the behaviour on the aiohttp in use.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, Final

from aiohttp import hdrs, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

log = logging.getLogger("ordermgr.http")

SERVER_NAME: Final = "ordermgr"
HEAD_TIMEOUT_S: Final = 10.0
_HEAD_END: Final = b"\r\n\r\n"


def error_body(code: str, message: str) -> bytes:
    return json.dumps({"error": message, "code": code, "details": {}}).encode()


class _Protocol(RequestHandler):
    """One connection. The first request's head must arrive within the head timeout; later
    requests are bounded by the keep-alive timeout, which aiohttp arms after each response."""

    __slots__ = ("_head_timer", "_head_tail", "_head_timeout_s")

    def __init__(self, manager: web.Server, *, head_timeout_s: float, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_tail = b""  # the last bytes seen, so a head end split across reads is found
        self._head_timeout_s = head_timeout_s

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._head_timer = asyncio.get_running_loop().call_later(self._head_timeout_s, self._head_overdue)

    def data_received(self, data: bytes) -> None:
        if self._head_timer is not None:
            seen = self._head_tail + data
            if _HEAD_END in seen:
                self._head_timer.cancel()
                self._head_timer = None
            self._head_tail = seen[-3:]
        super().data_received(data)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().connection_lost(exc)

    def _head_overdue(self) -> None:
        self._head_timer = None
        log.debug("http connection closed: no complete request head", extra={"timeout_s": self._head_timeout_s})
        self.force_close()

    def handle_error(
        self, request: BaseRequest, status: int = 500, exc: BaseException | None = None, message: str | None = None
    ) -> web.StreamResponse:
        """A request refused before routing (its line or a header could not be parsed), or a
        handler that failed outside our middlewares. Nothing of the request is logged or echoed:
        a header line may hold the API key."""
        if status >= 500:
            log.error("http request failed outside the handlers", extra={"status": status, "error": _summary(exc)})
        else:
            log.warning("http request refused before routing", extra={"status": status, "error": _summary(exc)})
        if request.writer.output_size > 0:
            raise ConnectionError("response already started; the connection is closed instead")
        code, text = ("bad_request", "the request could not be read as HTTP (its request line or a header)")
        if status >= 500:
            code, text = ("internal_error", "unexpected error; see the service log")
        response = web.Response(status=status, body=error_body(code, text), content_type="application/json")
        response.headers[hdrs.SERVER] = SERVER_NAME
        response.force_close()
        return response


def _summary(exc: BaseException | None) -> str:
    """The parser's complaint without the bytes it quotes ("Invalid header value char")."""
    if exc is None:
        return ""
    lines = str(exc.message).strip().splitlines() if isinstance(exc, HttpProcessingError) else []
    if not lines:
        return type(exc).__name__
    return f"{type(exc).__name__}: {lines[0].split(':', 1)[0]}"


class _Server(web.Server):
    def __call__(self) -> RequestHandler:
        return _Protocol(self, loop=self._loop, **self._kwargs)


class SafeRunner(web.AppRunner):
    """``web.AppRunner`` whose connections are handled by :class:`_Protocol`."""

    def __init__(self, app: web.Application, *, head_timeout_s: float = HEAD_TIMEOUT_S, **kwargs: Any) -> None:
        super().__init__(app, keepalive_timeout=head_timeout_s, **kwargs)
        self._head_timeout_s = head_timeout_s

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _Server  # the app's own Server, building our protocol per connection
        server._kwargs["head_timeout_s"] = self._head_timeout_s
        return server


async def hide_server_version(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: aiohttp only sets ``Server`` when it is not set already."""
    response.headers[hdrs.SERVER] = SERVER_NAME
