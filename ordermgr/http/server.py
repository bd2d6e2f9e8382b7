"""The aiohttp server: probes and ``/metrics`` (open), and the REST API under ``/api/`` (X-API-Key).

Handlers never change trading state themselves: a write is recorded as an operator request and
carried out by the leader (``ordermgr.http.operator``), so a client that goes away mid-request
leaves nothing half done.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

import anyio
from aiohttp import web
from aiohttp.typedefs import Handler
from anyio.abc import TaskStatus

from ordermgr.http.prometheus import ScrapeSources, metrics_route
from ordermgr.http.protocol import HEAD_TIMEOUT_S, SafeRunner, hide_server_version

log = logging.getLogger(__name__)

DEPENDENCIES = ("database", "rabbitmq", "bybit_api", "ws_gateway")


class ServiceStatus(Protocol):
    """What the probes need to know about the running service."""

    async def dependencies(self) -> Mapping[str, bool]:
        """Availability of each name in DEPENDENCIES, checked now (bounded in time)."""
        ...

    def is_ready(self, dependencies: Mapping[str, bool]) -> bool:
        """Ready to take signals: database and broker up, startup reconciliation done, not stopping."""
        ...

    async def describe(self) -> Mapping[str, Any]:
        """What else ``/ready`` shows: the instance's role and the global trading state."""
        ...


STATUS = web.AppKey("status", ServiceStatus)


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def error_response(status: int, code: str, message: str, details: Mapping[str, Any] | None = None) -> web.Response:
    """The one error shape of the API: ``{"error", "code", "details"}``."""
    return web.json_response({"error": message, "code": code, "details": dict(details or {})}, status=status)


# aiohttp's own refusals (no route, wrong method, body too large), in the API's error shape.
HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 408: "request_timeout", 413: "payload_too_large"}


def http_error_response(exc: web.HTTPException) -> web.Response:
    response = error_response(exc.status, HTTP_CODES.get(exc.status, "http_error"), exc.reason)
    if "Allow" in exc.headers:  # RFC 9110: a 405 lists the methods the resource has
        response.headers["Allow"] = exc.headers["Allow"]
    return response


@web.middleware
async def http_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Routing refusals outside ``/api`` (``GET /nope``, ``POST /health``) in the error shape too."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return http_error_response(exc)


async def health(request: web.Request) -> web.Response:
    # Answered from the event loop alone: if this responds, the loop is alive.
    return web.json_response({"status": "healthy", "timestamp": now_iso()})


async def ready(request: web.Request) -> web.Response:
    status = request.app[STATUS]
    dependencies = await status.dependencies()
    is_ready = status.is_ready(dependencies)
    body = {
        "status": "ready" if is_ready else "not_ready",
        "timestamp": now_iso(),
        "dependencies": {name: "available" if dependencies.get(name) else "unavailable" for name in DEPENDENCIES},
        **await status.describe(),
    }
    return web.json_response(body, status=200 if is_ready else 503)


def create_app(
    status: ServiceStatus, *, api: web.Application | None = None, scrape: ScrapeSources | None = None
) -> web.Application:
    """The probes, ``GET /metrics`` (``ordermgr.http.prometheus``) when ``scrape`` is given, and the
    REST API (``ordermgr.http.api``) mounted under ``/api``."""
    app = web.Application(middlewares=[http_errors])
    app.on_response_prepare.append(hide_server_version)
    app[STATUS] = status
    app.add_routes([web.get("/health", health), web.get("/live", health), web.get("/ready", ready)])
    if scrape is not None:
        app.add_routes([metrics_route(scrape)])
    if api is not None:
        app.add_subapp("/api", api)
    return app


async def serve(
    app: web.Application, host: str, port: int, *, head_timeout_s: float = HEAD_TIMEOUT_S,
    task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:  # fmt: skip
    """Serve ``app`` until cancelled; ``task_status.started`` gets the bound port (0 → a free one).
    A connection that has not sent a complete request head within ``head_timeout_s``, or stays
    idle that long between requests, is closed (``ordermgr.http.protocol``)."""
    runner = SafeRunner(app, head_timeout_s=head_timeout_s, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_port: int = runner.addresses[0][1]
        log.info("http listening", extra={"host": host, "port": bound_port})
        task_status.started(bound_port)
        await anyio.sleep_forever()
    finally:
        with anyio.move_on_after(5, shield=True):
            await runner.cleanup()
