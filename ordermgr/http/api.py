"""The REST query API (contract §6): an aiohttp sub-app that ``app.py`` mounts at ``/api``.

Every request needs ``X-API-Key``. Parameters are checked against the constants the OpenAPI
document states (``ordermgr.http.openapi``); anything else is a 400 that names the parameter and the
rule. Handlers only read, except the operator's writes (trading state, cancels, closes, sync):
those are recorded through the ``OperatorGateway`` and carried out by the leader, whose outcome
is the answer (``ordermgr.http.operator``; the actors own every change).
"""

from __future__ import annotations

import hmac
import json
import logging
import math
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, Protocol

import anyio
import attrs
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from ordermgr.db.queries import (
    ORDER_COLUMNS,
    ORDER_STATUSES,
    POSITION_COLUMNS,
    SORT_FIELDS,
    SORT_ORDERS,
    Lineage,
    OrderFilter,
    OrderPage,
    Queries,
    Row,
)
from ordermgr.domain.errors import NoLeader, StoreUnavailable
from ordermgr.domain.events import dumps
from ordermgr.domain.trading import OPERATOR_REASON
from ordermgr.domain.views import trading_states_json
from ordermgr.http import openapi as spec
from ordermgr.http.operator import OperatorGateway, outcome_response, request_json
from ordermgr.http.server import error_response, http_error_response, now_iso
from ordermgr.metrics import MetricsSource, aggregate, metrics_fields

log = logging.getLogger(__name__)

API_KEY_HEADER = "X-API-Key"
AUTH_CHALLENGE = f'ApiKey realm="ordermgr", header="{API_KEY_HEADER}"'
BODY_READ_TIMEOUT_S = 10.0  # a body sent slower than this holds a handler: answered 408


class AssetDirectory(Protocol):
    """Which symbols exist: a ``{asset}`` the venue does not list is a 404 ``unknown_asset``."""

    async def is_listed(self, asset: str) -> bool | None:
        """True when the venue lists ``asset`` (or the service trades it); None when it cannot tell."""
        ...


class InvalidParameter(Exception):
    """A query, path or body parameter broke its rule; answered 400 ``invalid_parameter``."""

    def __init__(self, parameter: str, value: object, expected: str) -> None:
        super().__init__(f"invalid {parameter}: expected {expected}")
        self.parameter = parameter
        self.value = value
        self.expected = expected


class InvalidBody(Exception):
    """The request body is not the JSON object the operation takes; 400 ``invalid_body``."""


def create_api(
    *, queries: Queries, api_key: str, operators: OperatorGateway, metrics: MetricsSource, assets: AssetDirectory,
    rate_limits: Callable[[], Mapping[str, Any]] | None = None,
) -> web.Application:  # fmt: skip
    """``operators``: where the writes go (any instance; the leader carries them out).
    ``rate_limits``: the venue's rate-limit budget figures, JSON-ready (``null`` without)."""
    if not api_key:
        raise ValueError("an API key is required")
    handlers = _Handlers(queries, operators, metrics, assets, dumps(spec.build_document()), rate_limits)
    app = web.Application(middlewares=[_errors, _require_key(api_key.encode())])
    app.add_routes([
        web.get("/v1/orders", handlers.orders, allow_head=False),
        # Not "cancel-all": GET /v1/orders/cancel-all is then a 405 (the path takes POST), not an unknown order.
        web.get("/v1/orders/{id:(?!cancel-all$)[^/]+}", handlers.order, allow_head=False),
        web.get("/v1/positions", handlers.positions, allow_head=False),
        web.get("/v1/positions/{asset:(?!close-all$)[^/]+}", handlers.position, allow_head=False),
        web.get("/v1/signals/{signal_id}", handlers.signal, allow_head=False),
        web.get("/v1/metrics", handlers.metrics, allow_head=False),
        web.get("/v1/openapi.json", handlers.openapi, allow_head=False),
        web.get("/v1/trading-state", handlers.trading_state, allow_head=False),
        web.put("/v1/trading-state", handlers.change_trading_state),
        web.post("/v1/orders/{id}/cancel", handlers.cancel_order),
        web.post("/v1/orders/cancel-all", handlers.cancel_all),
        web.post("/v1/positions/{asset}/close", handlers.close_position),
        web.post("/v1/positions/close-all", handlers.close_all),
        web.post("/v1/sync", handlers.sync),
        web.get("/v1/operator-requests/{id}", handlers.operator_request, allow_head=False),
    ])  # fmt: skip
    return app


# --- middlewares --------------------------------------------------------------------------

@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except InvalidParameter as exc:
        details = {"parameter": exc.parameter, "value": _shown(exc.value), "expected": exc.expected}
        return error_response(400, "invalid_parameter", str(exc), details)
    except InvalidBody as exc:
        return error_response(400, "invalid_body", str(exc))
    except NoLeader as exc:
        return error_response(503, "no_leader", str(exc))
    except StoreUnavailable as exc:
        log.warning("api: database unavailable", extra={"error": str(exc), "path": request.path})
        return error_response(503, "database_unavailable", "the database is unavailable; try again shortly")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return http_error_response(exc)
    except Exception:  # a bug: logged with its traceback, and answered in the error shape all the same
        log.exception("api: unexpected error", extra={"path": request.path, "method": request.method})
        return error_response(500, "internal_error", "unexpected error; see the service log")


def _require_key(expected: bytes) -> Middleware:
    @web.middleware
    async def require_key(request: web.Request, handler: Handler) -> web.StreamResponse:
        given = request.headers.get(API_KEY_HEADER, "")
        # Constant time, on bytes: compare_digest refuses non-ASCII str, and headers may hold any byte.
        if not hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected):
            response = error_response(401, "unauthorized", f"missing or wrong {API_KEY_HEADER} header")
            response.headers["WWW-Authenticate"] = AUTH_CHALLENGE  # RFC 9110 §11.6.1: a 401 names its scheme
            return response
        return await handler(request)

    return require_key


def _shown(value: object) -> str:
    """A rejected value as echoed back: text, and short (a client may send megabytes)."""
    shown = value if isinstance(value, str) else json.dumps(value, default=str)
    return shown if len(shown) <= 200 else shown[:200] + "…"


# --- parameters ---------------------------------------------------------------------------

Parser = Callable[[str, str], Any]  # (parameter name, raw text) -> value, or InvalidParameter


def _matching(pattern: str, expected: str, normalise: Callable[[str], Any] = str) -> Parser:
    compiled = re.compile(pattern)

    def parse(name: str, raw: str) -> Any:
        if not compiled.fullmatch(raw):
            raise InvalidParameter(name, raw, expected)
        return normalise(raw)

    return parse


def _choice(options: Sequence[str]) -> Parser:
    def parse(name: str, raw: str) -> str:
        if raw not in options:
            raise InvalidParameter(name, raw, "one of " + ", ".join(options))
        return raw

    return parse


def _integer(low: int, high: int) -> Parser:
    def parse(name: str, raw: str) -> int:
        # Digits only: int() would also take "+5", " 5" and "5_0"; and no more than the bound
        # has, before int() (Python refuses to convert more than 4300 digits).
        if not (raw.isascii() and raw.isdigit() and len(raw) <= len(str(high)) and low <= int(raw) <= high):
            raise InvalidParameter(name, raw, f"an integer from {low} to {high}")
        return int(raw)

    return parse


def _text_id(name: str, raw: str) -> str:
    if not (1 <= len(raw) <= spec.TEXT_ID_MAX) or "\x00" in raw:
        raise InvalidParameter(name, raw, f"1 to {spec.TEXT_ID_MAX} characters, no NUL")
    return raw


def _boolean(name: str, raw: str) -> bool:
    if raw not in ("true", "false"):
        raise InvalidParameter(name, raw, "true or false")
    return raw == "true"


_RFC3339 = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)[Tt](\d\d):(\d\d):(\d\d)(?:\.(\d+))?(?:([Zz])|([+-])(\d\d):(\d\d))", re.ASCII
)


def _timestamp(name: str, raw: str) -> datetime:
    """RFC 3339 date-time (the document's ``format: date-time``), offset required: a bare local
    time would silently mean the server's zone. Digits past the microsecond are dropped."""
    expected = "an RFC 3339 date-time with Z or an offset, e.g. 2025-01-27T10:00:00Z"
    found = _RFC3339.fullmatch(raw)
    if found is None:
        raise InvalidParameter(name, raw, expected)
    year, month, day, hour, minute, second, fraction, zulu, sign, off_h, off_m = found.groups()
    if off_m is not None and (int(off_h) > 23 or int(off_m) > 59):
        raise InvalidParameter(name, raw, expected)
    try:
        offset = timedelta(0) if zulu else int(sign + "1") * timedelta(hours=int(off_h), minutes=int(off_m))
        micro = int((fraction or "0")[:6].ljust(6, "0"))
        return datetime(int(year), int(month), int(day), int(hour), int(minute), int(second), micro, timezone(offset))
    except ValueError:  # 30 February, hour 24, offset beyond 23:59, ...
        raise InvalidParameter(name, raw, expected) from None


_SYMBOL_RULE = "a symbol: a letter or digit, then letters, digits, '.', '_' or '-', 50 at most"
_symbol = _matching(spec.SYMBOL_PATTERN, _SYMBOL_RULE, str.upper)
_side = _matching(spec.SIDE_PATTERN, "Buy or Sell (any case)", str.capitalize)

ORDER_PARAMETERS: Mapping[str, Parser] = {
    "asset": _symbol,
    "status": _choice(ORDER_STATUSES),
    "signal_id": _text_id,
    "order_id": _text_id,
    "side": _side,
    "is_dry_run": _boolean,
    "date_from": _timestamp,
    "date_to": _timestamp,
    "page": _integer(1, spec.PAGE_MAX),
    "page_size": _integer(1, spec.PAGE_SIZE_MAX),
    "sort_by": _choice(SORT_FIELDS),
    "sort_order": _choice(SORT_ORDERS),
}
_PAGE_FIELDS = ("page", "page_size", "sort_by", "sort_order")


def read_query(request: web.Request, parsers: Mapping[str, Parser]) -> dict[str, Any]:
    """The query parameters, parsed; unknown or repeated ones are refused, not ignored: a typo
    like ``assets=BTCUSDT`` silently returning every order is worse than a 400."""
    values: dict[str, Any] = {}
    for name in dict.fromkeys(request.query):
        given = request.query.getall(name)
        if name not in parsers:
            accepted = ", ".join(parsers) if parsers else "none"
            raise InvalidParameter(name, given[0], f"no such parameter (accepted: {accepted})")
        if len(given) > 1:
            raise InvalidParameter(name, given, "a single value")
        values[name] = parsers[name](name, given[0])
    return values


def read_sync_request(body: object) -> tuple[str, str | None]:
    fields = _fields(body, ("scope", "asset"), '{"scope": "active"}')
    scope = fields.get("scope")
    if scope not in spec.SYNC_SCOPES:
        raise InvalidParameter("scope", scope, "one of " + ", ".join(spec.SYNC_SCOPES))
    return scope, _optional_symbol(fields, "asset")


def read_trading_state_request(body: object) -> dict[str, Any]:
    """The params of a ``trading_state`` request: ``{state, asset, reason, message}``."""
    fields = _fields(body, ("state", "asset", "reason", "message"), '{"state": "halted"}')
    state = fields.get("state")
    if state not in spec.TRADING_STATES:
        raise InvalidParameter("state", state, "one of " + ", ".join(spec.TRADING_STATES))
    reason = _optional_text(fields, "reason", spec.REASON_PATTERN, 1, spec.REASON_MAX, "no control characters")
    message = _optional_text(fields, "message", spec.MESSAGE_PATTERN, 0, spec.MESSAGE_MAX, "no NUL")
    return {"state": state, "asset": _optional_symbol(fields, "asset"), "reason": reason or OPERATOR_REASON,
            "message": message}  # fmt: skip


def read_cancel_all_request(body: object) -> dict[str, Any]:
    """The params of a ``cancel_all`` request: ``{asset}``, None for every asset."""
    return {"asset": _optional_symbol(_fields(body, ("asset",), '{"asset": "BTCUSDT"}'), "asset")}


def _fields(body: object, accepted: tuple[str, ...], example: str) -> dict[str, Any]:
    """The body's fields; an unknown one is refused by name (a typo must not be ignored)."""
    if not isinstance(body, dict):
        raise InvalidBody(f"the body must be a JSON object like {example}")
    for name in body:
        if name not in accepted:
            raise InvalidParameter(name, body[name], f"no such field (accepted: {', '.join(accepted)})")
    return body


def _optional_symbol(fields: Mapping[str, Any], name: str) -> str | None:
    if name not in fields:
        return None
    value = fields[name]
    if not isinstance(value, str):
        raise InvalidParameter(name, value, _SYMBOL_RULE)
    return str(_symbol(name, value))


def _optional_text(fields: Mapping[str, Any], name: str, pattern: str, low: int, high: int, rule: str) -> str | None:
    if name not in fields:
        return None
    value = fields[name]
    fits = isinstance(value, str) and low <= len(value) <= high and re.fullmatch(pattern, value)
    # Text that cannot be encoded (a lone surrogate from a \ud800 escape) cannot be stored either.
    if not (fits and _encodable(value)):
        raise InvalidParameter(name, value, f"text of {low} to {high} characters, {rule}")
    return str(value)


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def read_operator(request: web.Request) -> str | None:
    """The ``X-Operator`` header: who asks, recorded with the request (None when not given)."""
    name = spec.OPERATOR_HEADER
    given = request.headers.getall(name, [])
    if not given:
        return None
    if len(given) > 1:
        raise InvalidParameter(name, given, "a single value")
    value = given[0]
    if not (1 <= len(value) <= spec.OPERATOR_MAX and re.fullmatch(spec.OPERATOR_PATTERN, value)):
        raise InvalidParameter(name, value, f"1 to {spec.OPERATOR_MAX} printable ASCII characters")
    return value


def _request_id(name: str, raw: str) -> uuid.UUID:
    if not re.fullmatch(spec.UUID_PATTERN, raw):
        raise InvalidParameter(name, raw, "a UUID like 6f1c2a8e-3b7d-4e0a-9c55-1d2e3f405162")
    return uuid.UUID(raw)


async def _json_body(request: web.Request, *, optional: bool = False) -> object:
    """The body as JSON; an empty one is ``{}`` when the body is ``optional``."""
    # The body is read as JSON whatever its Content-Type: `curl -d` without -H sends a form type.
    with anyio.move_on_after(BODY_READ_TIMEOUT_S):
        raw = await request.read()
        if optional and not raw.strip():
            return {}
        try:
            return json.loads(raw, parse_float=Decimal)
        except ValueError:  # JSONDecodeError and UnicodeDecodeError
            raise InvalidBody("the body is not valid JSON") from None
        except RecursionError:  # [[[[...: deeper than the parser can descend
            raise InvalidBody("the body is nested too deeply to be read") from None
    raise web.HTTPRequestTimeout(reason=f"the body did not arrive within {BODY_READ_TIMEOUT_S:g} s")


# --- representations ----------------------------------------------------------------------


def _json(body: object, status: int = 200) -> web.Response:
    # events.dumps: Decimals as strings, datetimes as ISO 8601 UTC with Z, UUIDs as text.
    return web.Response(body=dumps(body), status=status, content_type="application/json")


def _pick(row: Row, columns: Sequence[str]) -> dict[str, Any]:
    return {column: row[column] for column in columns}


def _signed(side: str, quantity: Decimal) -> Decimal:
    return quantity if side == "Buy" else -quantity


def lineage_json(lineage: Lineage) -> dict[str, Any]:
    signal = lineage.signal
    return {
        # signal_timestamp is the signal's own "timestamp" field: shown under that name.
        "signal": {_SIGNAL_NAMES.get(name, name): signal[name] for name in _SIGNAL_FIELDS},
        "decision": signal["decision"],
        "rejection": None if signal["rejection_code"] is None else {
            "code": signal["rejection_code"],
            "message": signal["rejection_message"],
            "details": signal["rejection_details"],
        },
        "orders": [{**_pick(row, ORDER_COLUMNS), "relationship": _relationship(row)} for row in lineage.orders],
        "events": [{**_pick(row, _EVENT_FIELDS), "order_id": row["order_uuid"]} for row in lineage.events],
        "fills": [{**_pick(row, _FILL_FIELDS), "order_id": row["order_uuid"]} for row in lineage.fills],
        "position_change": _position_change(lineage),
        "position": None if lineage.position is None else _pick(lineage.position, POSITION_COLUMNS),
    }  # fmt: skip


_SIGNAL_FIELDS = (
    "signal_id", "status", "signal_type", "asset", "amount", "confidence", "signal_timestamp", "strategy_id",
    "is_warmup", "trace_id", "raw_payload", "raw_text", "body_size", "attempts", "deliveries", "received_at",
    "processed_at",
)  # fmt: skip
_SIGNAL_NAMES = {"signal_timestamp": "timestamp"}
_EVENT_FIELDS = ("event_id", "event_type", "trace_id", "created_at", "published_at")
_FILL_FIELDS = ("id", "side", "quantity", "price", "value", "fee", "source", "filled_at")


def _relationship(row: Row) -> dict[str, Any] | None:
    if row["relationship_type"] is None:
        return None
    return {
        "type": row["relationship_type"],
        "execution_sequence": row["execution_sequence"],
        "allocation_amount": row["allocation_amount"],
        "allocation_quantity": row["allocation_quantity"],
    }


def _position_change(lineage: Lineage) -> dict[str, Any] | None:
    """What this signal's executions did to the position (dry-run orders never execute)."""
    if not lineage.orders:
        return None
    return {
        "asset": lineage.orders[0]["asset"],
        "size_delta": sum((_signed(f["side"], f["quantity"]) for f in lineage.fills), Decimal(0)),
        "fees": sum((f["fee"] for f in lineage.fills), Decimal(0)),
    }


# --- handlers -----------------------------------------------------------------------------


@attrs.frozen
class _Handlers:
    queries: Queries
    operators: OperatorGateway
    metrics_source: MetricsSource
    assets: AssetDirectory
    document: bytes  # serialised once: the document never changes while the process runs
    rate_limits: Callable[[], Mapping[str, Any]] | None = None

    async def orders(self, request: web.Request) -> web.Response:
        query = read_query(request, ORDER_PARAMETERS)
        page = OrderPage(**{name: query.pop(name) for name in _PAGE_FIELDS if name in query})
        found = await self.queries.orders(OrderFilter(**query), page)
        pagination = {
            "page": page.page,
            "page_size": page.page_size,
            "total_items": found.total,
            "total_pages": math.ceil(found.total / page.page_size),
        }
        return _json({"orders": [_pick(row, ORDER_COLUMNS) for row in found.rows], "pagination": pagination})

    async def order(self, request: web.Request) -> web.Response:
        read_query(request, {})
        key = _text_id("id", request.match_info["id"])
        row = await self.queries.order(key)
        if row is None:
            return _not_found(f"no order with id, order_id or order_link_id {key!r}")
        return _json(_pick(row, ORDER_COLUMNS))

    async def positions(self, request: web.Request) -> web.Response:
        asset = read_query(request, {"asset": _symbol}).get("asset")
        rows = await self.queries.positions(asset)
        return _json({"positions": [_pick(row, POSITION_COLUMNS) for row in rows]})

    async def position(self, request: web.Request) -> web.Response:
        read_query(request, {})
        asset = _symbol("asset", request.match_info["asset"])
        row = await self.queries.position(asset)
        if row is None:  # a position once held is shown even if the venue no longer lists the symbol
            if await self.assets.is_listed(asset) is False:
                return _unknown_asset(asset)
            return _not_found(f"no position in {asset} has ever been held")
        return _json(_pick(row, POSITION_COLUMNS))

    async def signal(self, request: web.Request) -> web.Response:
        read_query(request, {})
        signal_id = _text_id("signal_id", request.match_info["signal_id"])
        lineage = await self.queries.signal_lineage(signal_id)
        if lineage is None:
            return _not_found(f"no signal {signal_id!r} was ever received")
        return _json(lineage_json(lineage))

    async def metrics(self, request: web.Request) -> web.Response:
        read_query(request, {})
        snapshot = dict(self.metrics_source.symbol_metrics())
        return _json({
            "symbols": {symbol: metrics_fields(snapshot[symbol]) for symbol in sorted(snapshot)},
            "total": metrics_fields(aggregate(snapshot)),
            "rate_limits": self.rate_limits() if self.rate_limits else None,
            "timestamp": now_iso(),
        })  # fmt: skip

    async def openapi(self, request: web.Request) -> web.Response:
        read_query(request, {})
        return web.Response(body=self.document, content_type="application/json")

    # --- operator actions and trading state (contract §11.5, §12, §13.4) ----------------------

    async def trading_state(self, request: web.Request) -> web.Response:
        read_query(request, {})
        return _json(trading_states_json(await self.operators.trading_states()))

    async def change_trading_state(self, request: web.Request) -> web.Response:
        operator = _operator_of(request)
        return await self._carry_out("trading_state", read_trading_state_request(await _json_body(request)), operator)

    async def cancel_order(self, request: web.Request) -> web.Response:
        operator = _operator_of(request)
        return await self._carry_out("cancel_order", {"id": _text_id("id", request.match_info["id"])}, operator)

    async def cancel_all(self, request: web.Request) -> web.Response:
        operator = _operator_of(request)
        params = read_cancel_all_request(await _json_body(request, optional=True))
        return await self._carry_out("cancel_all", params, operator)

    async def close_position(self, request: web.Request) -> web.Response:
        operator = _operator_of(request)
        return await self._carry_out("close_position", {"asset": _symbol("asset", request.match_info["asset"])},
                                     operator)  # fmt: skip

    async def close_all(self, request: web.Request) -> web.Response:
        return await self._carry_out("close_all", {}, _operator_of(request))

    async def sync(self, request: web.Request) -> web.Response:
        operator = _operator_of(request)
        scope, asset = read_sync_request(await _json_body(request))
        return await self._carry_out("sync", {"scope": scope, "asset": asset}, operator)

    async def operator_request(self, request: web.Request) -> web.Response:
        read_query(request, {})
        request_id = _request_id("id", request.match_info["id"])
        record = await self.operators.request(request_id)
        if record is None:
            return _not_found(f"no operator request {request_id}")
        return _json(request_json(record))

    async def _carry_out(self, kind: str, params: Mapping[str, Any], operator: str | None) -> web.Response:
        """Record the request; answer with the leader's outcome, or 202 when it is not there in time."""
        record = await self.operators.submit_and_wait(kind, params, operator, wait_s=spec.OPERATOR_WAIT_S)
        return outcome_response(record)


def _operator_of(request: web.Request) -> str | None:
    """Who asks for a write (``X-Operator``, when given); a write takes no query parameter either."""
    read_query(request, {})
    return read_operator(request)


def _not_found(message: str) -> web.Response:
    return error_response(404, "not_found", message)


def _unknown_asset(asset: str) -> web.Response:
    return error_response(404, "unknown_asset", f"{asset} is not a symbol the venue lists", {"asset": asset})
