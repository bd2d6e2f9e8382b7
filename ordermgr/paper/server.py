"""aiohttp routes: Bybit v5 paths and envelopes, signed private calls, faults, /paper/*.

Handlers call the synchronous engine without awaiting in between, so a request either
happens completely or not at all. aiohttp's handler cancellation stays off: like the
real venue, a request that arrived is executed even if the client has given up.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Final, Protocol
from urllib.parse import parse_qsl

import anyio
from aiohttp import web

from ordermgr.paper import auth, queries, wire
from ordermgr.paper.config import PaperConfig
from ordermgr.paper.engine import Engine
from ordermgr.paper.errors import VenueError, param_error
from ordermgr.paper.faults import Faults
from ordermgr.paper.instruments import Listing
from ordermgr.paper.limits import LIFTED_LIMIT, READ_LIMIT, WRITE_LIMIT, LimitStatus, RateLimits
from ordermgr.paper.records import Order
from ordermgr.paper.rules import Params, check_category, text

Json = dict[str, object]
Action = Callable[[Params], object]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
HOLD_POLL_S: Final = 0.2  # how often a held (lost) response checks for the client leaving
ERROR_MESSAGES: Final = {
    5004: "Server Timeout",
    10000: "Server Timeout",
    10016: "Server error.",
    10006: "Too many visits!",
    10018: "Exceeded the IP Rate Limit.",
    170007: "Timeout waiting for response from backend server.",
}


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def envelope(result: object = None, code: int = 0, message: str = "OK") -> Json:
    return {"retCode": code, "retMsg": message, "result": result or {}, "retExtInfo": {}, "time": now_ms()}


def bybit_response(body: Json, headers: Mapping[str, str] | None = None) -> web.Response:
    extra = {"Ret_code": str(body["retCode"]), "Timenow": str(body["time"]), "Traceid": secrets.token_hex(16)}
    return web.json_response(body, headers=extra | dict(headers or {}))


class PaperControls(Protocol):
    """What the routes need of the venue that serves them (``venue.PaperVenue``). Read per
    request: a reset swaps the engine and the rate limits."""

    config: PaperConfig
    faults: Faults
    limits: RateLimits
    engine: Engine
    request_counts: dict[str, int]

    def set_price(self, symbol: str, price: Decimal | str) -> None: ...

    def reset(self) -> None: ...

    def state(self) -> dict[str, object]: ...


class VenueHttp:
    """The routes of one venue; ``closing`` is set when the server starts shutting down."""

    def __init__(self, venue: PaperControls, closing: anyio.Event) -> None:
        self._venue = venue
        self._closing = closing

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._arrival])
        public = {
            "/v5/market/time": self._server_time,
            "/v5/market/tickers": self._tickers,
            "/v5/market/instruments-info": self._instruments,
            "/v5/market/orderbook": self._orderbook,
        }
        for path, handler in public.items():
            app.router.add_get(path, handler)
        private: dict[tuple[str, str], tuple[int, Action]] = {
            ("POST", "/v5/order/create"): (WRITE_LIMIT, self._create),
            ("POST", "/v5/order/amend"): (WRITE_LIMIT, self._amend),
            ("POST", "/v5/order/cancel"): (WRITE_LIMIT, self._cancel),
            ("POST", "/v5/order/cancel-all"): (WRITE_LIMIT, self._cancel_all),
            ("GET", "/v5/order/realtime"): (READ_LIMIT, lambda p: queries.realtime(self._engine, p)),
            ("GET", "/v5/order/history"): (READ_LIMIT, lambda p: queries.history(self._engine, p)),
            ("GET", "/v5/execution/list"): (READ_LIMIT, lambda p: queries.executions(self._engine, p)),
            ("GET", "/v5/position/list"): (READ_LIMIT, lambda p: queries.positions(self._engine, p)),
            ("GET", "/v5/account/wallet-balance"): (READ_LIMIT, lambda p: queries.wallet_balance(self._engine, p)),
        }
        for (method, path), (limit, action) in private.items():
            app.router.add_route(method, path, self._private_handler(path, limit, action))
        app.router.add_post("/paper/faults", self._set_faults)
        app.router.add_post("/paper/price", self._set_price)
        app.router.add_post("/paper/reset", self._reset)
        app.router.add_get("/paper/state", self._state)
        return app

    @property
    def _engine(self) -> Engine:
        return self._venue.engine  # looked up per request: reset swaps the engine

    @web.middleware
    async def _arrival(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Every Bybit path: counted as it arrives (``/paper/state``), then held for the
        network's latency (the ``network_latency_s`` fault), public market data included."""
        if request.path.startswith("/v5/"):
            counts = self._venue.request_counts
            counts[request.path] = counts.get(request.path, 0) + 1
            await self._delay(self._venue.faults.network_latency_s)
        return await handler(request)

    # -- private pipeline -------------------------------------------------------------

    def _private_handler(
        self, path: str, limit: int, action: Action
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request) -> web.StreamResponse:
            return await self._private(request, path, limit, action)

        return handle

    async def _private(self, request: web.Request, path: str, limit: int, action: Action) -> web.StreamResponse:
        is_post = request.method == "POST"
        # Bybit signs what is on the wire: the raw body, or the raw query as received.
        payload = await request.read() if is_post else request.raw_path.partition("?")[2].encode()
        try:
            auth.verify(request.headers, payload, {self._venue.config.api_key: self._venue.config.api_secret}, now_ms())
        except VenueError as exc:
            return bybit_response(envelope(code=exc.code, message=exc.message))
        await self._delay(self._venue.faults.latency_s)
        enforced = self._venue.config.enforce_rate_limits
        status = self._venue.limits.hit(path, limit if enforced else LIFTED_LIMIT, now_ms())
        refusal = self._injected_or_limited(path, status)
        if refusal is not None:
            return refusal
        try:
            params = _json_params(payload) if is_post else dict(parse_qsl(payload.decode(), keep_blank_values=True))
            result = action(params)
        except VenueError as exc:
            return bybit_response(envelope(code=exc.code, message=exc.message), status.headers())
        if path == "/v5/order/create" and self._venue.faults.take_lost_response():
            return await self._hold(request)
        return bybit_response(envelope(result), status.headers())

    def _injected_or_limited(self, path: str, status: LimitStatus) -> web.Response | None:
        faults, config = self._venue.faults, self._venue.config
        fault = faults.take_request_fault(path)
        if fault == "rate_limit" or (fault is None and config.enforce_rate_limits and status.exceeded):
            # The reset must lie in the future: pybit sleeps (reset - now) and crashes on
            # a negative delay (bybit.md §0.5).
            reset = max(status.reset_ms, now_ms() + config.rate_limit_reset_ms)
            limited = LimitStatus(status.limit, -1, reset)
            self._venue.limits.refused(path)
            return bybit_response(envelope(code=10006, message=ERROR_MESSAGES[10006]), limited.headers())
        if fault == "error":
            code = faults.error_code
            message = ERROR_MESSAGES.get(code, "Injected error.")
            return bybit_response(envelope(code=code, message=message), status.headers())
        if fault == "http_error":
            body = f"<html><body><h1>{faults.http_status}</h1>upstream error</body></html>"
            return web.Response(status=faults.http_status, text=body, content_type="text/html")
        return None

    async def _delay(self, seconds: float) -> None:
        if seconds > 0:
            with anyio.move_on_after(seconds):
                await self._closing.wait()  # shutting down cuts the delay short

    async def _hold(self, request: web.Request) -> web.StreamResponse:
        """Never answer: wait until the client hangs up or the server shuts down."""
        while not self._closing.is_set():
            transport = request.transport
            if transport is None or transport.is_closing():
                break
            with anyio.move_on_after(HOLD_POLL_S):
                await self._closing.wait()
        if request.transport is not None:
            request.transport.close()  # drop the connection without a response
        return web.Response(status=499)

    # -- private actions (synchronous) ------------------------------------------------

    def _create(self, params: Params) -> Json:
        return _ids(self._engine.create_order(params))

    def _amend(self, params: Params) -> Json:
        return _ids(self._engine.amend_order(params))

    def _cancel(self, params: Params) -> Json:
        return _ids(self._engine.cancel_order(params))

    def _cancel_all(self, params: Params) -> Json:
        cancelled = self._engine.cancel_all(params)
        return {"list": [_ids(o) for o in cancelled], "success": "1"}

    # -- public -----------------------------------------------------------------------

    async def _server_time(self, request: web.Request) -> web.Response:
        ns = time.time_ns()
        return bybit_response(envelope({"timeSecond": str(ns // 10**9), "timeNano": str(ns)}))

    async def _tickers(self, request: web.Request) -> web.Response:
        return self._public(request, self._ticker_list)

    async def _instruments(self, request: web.Request) -> web.Response:
        return self._public(request, self._instrument_list)

    async def _orderbook(self, request: web.Request) -> web.Response:
        return self._public(request, self._book)

    def _public(self, request: web.Request, action: Action) -> web.Response:
        try:
            return bybit_response(envelope(action(dict(request.query))))
        except VenueError as exc:
            return bybit_response(envelope(code=exc.code, message=exc.message))

    def _ticker_list(self, params: Params) -> Json:
        check_category(params)
        engine = self._engine
        next_funding = (now_ms() // 28_800_000 + 1) * 28_800_000  # every 8 h
        rows = [wire.ticker(listing, engine.prices[s], next_funding) for s, listing in self._selected(params)]
        return {"category": "linear", "list": rows}

    def _instrument_list(self, params: Params) -> Json:
        check_category(params)
        rows = [wire.instrument(listing) for _, listing in self._selected(params)]
        page, cursor = queries.paginate(rows, params, default=500, maximum=1000, cursor_on_last_page=False)
        return {"category": "linear", "list": list(page), "nextPageCursor": cursor}

    def _book(self, params: Params) -> Json:
        check_category(params)
        symbol = text(params, "symbol", required=True)
        listing = self._engine.listings.get(symbol)
        if listing is None:
            raise param_error("params error: symbol invalid")
        depth = int(text(params, "limit") or 25)
        if not 1 <= depth <= 500:
            raise param_error("params error: limit must be in [1, 500]")
        stamp = now_ms()
        return wire.orderbook(listing, self._engine.prices[symbol], depth, stamp, stamp)

    def _selected(self, params: Params) -> list[tuple[str, Listing]]:
        symbol, base = text(params, "symbol"), text(params, "baseCoin")
        listings = self._engine.listings
        if symbol and symbol not in listings:
            raise param_error("params error: symbol invalid")
        return [
            (s, listing)
            for s, listing in listings.items()
            if (not symbol or s == symbol) and (not base or listing.instrument.base_coin == base)
        ]

    # -- /paper control (no auth) -----------------------------------------------------

    async def _set_faults(self, request: web.Request) -> web.Response:
        try:
            changes = await request.json()
            if not isinstance(changes, dict):
                raise ValueError("expected a JSON object of fault fields")
            self._venue.faults.update(changes)
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(self._venue.faults.as_dict())

    async def _set_price(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            self._venue.set_price(str(body["symbol"]), Decimal(str(body["price"])))
        except (ValueError, KeyError, TypeError, InvalidOperation) as exc:
            return web.json_response({"error": f"bad price request: {exc!r}"}, status=400)
        return web.json_response(self._venue.state())

    async def _reset(self, request: web.Request) -> web.Response:
        self._venue.reset()
        return web.json_response(self._venue.state())

    async def _state(self, request: web.Request) -> web.Response:
        return web.json_response(self._venue.state())


def _ids(order: Order) -> Json:
    return {"orderId": order.order_id, "orderLinkId": order.order_link_id}


def _json_params(body: bytes) -> Params:
    if not body.strip():
        return {}
    try:
        params = json.loads(body)
    except ValueError:
        raise param_error("params error: request body is not valid JSON") from None
    if not isinstance(params, dict):
        raise param_error("params error: request body must be a JSON object")
    return params
