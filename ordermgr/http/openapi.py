"""The OpenAPI 3.1 document of the service's HTTP interface, served at ``GET /api/v1/openapi.json``.

It describes the whole service as an operator reaches it: the probes of the parent app and the
query API mounted under ``/api``, with absolute paths and one server (``/``). The limits and
patterns it states are constants here, and ``ordermgr.http.api`` enforces exactly these constants, so
the document and the handlers cannot drift apart silently (tests/test_openapi.py checks the
running server against this document with schemathesis).
"""

from __future__ import annotations

import copy
from typing import Any

from ordermgr import __version__
from ordermgr.db.queries import ORDER_STATUSES, SIGNAL_STATUSES, SORT_FIELDS, SORT_ORDERS

API_PREFIX = "/api"  # where app.py mounts the sub-app; the paths below include it
PAGE_DEFAULT = 1
# Deep OFFSET pages cost a scan of every skipped row; past a million pages, narrow the filters.
PAGE_MAX = 1_000_000
PAGE_SIZE_DEFAULT = 20
PAGE_SIZE_MAX = 100
# A symbol, as signals accept it (ordermgr.domain.signals); case-insensitive, upper-cased by the API.
SYMBOL_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,49}$"
# Free-text identifiers (signal ids are "any text", 1-100 chars): anything but NUL, which
# PostgreSQL cannot store in text.
TEXT_ID_PATTERN = r"^[^\u0000]*$"
TEXT_ID_MAX = 100
SIDE_PATTERN = r"^([Bb][Uu][Yy]|[Ss][Ee][Ll][Ll])$"  # Buy / Sell, any case
SYNC_SCOPES = ("active", "all")
SYNC_STATUSES = ("completed", "partial", "failed")
DECIMAL_PATTERN = r"^-?[0-9]+(\.[0-9]+)?$"
UUID_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"

# Operator actions and trading state (contract §11.5, §12, §13.4).
TRADING_STATES = ("active", "reducing", "halted")
TRADING_SOURCES = ("operator", "automatic")
REASON_MAX = 100
REASON_PATTERN = r"^[^\u0000-\u001f\u007f]*$"  # a short code: one line, no control characters
MESSAGE_MAX = 500
MESSAGE_PATTERN = r"^[^\u0000]*$"  # free text, several lines allowed; PostgreSQL cannot store NUL
OPERATOR_HEADER = "X-Operator"
OPERATOR_MAX = 100
OPERATOR_PATTERN = r"^[ -~]*$"  # printable ASCII: other bytes in a header have no agreed meaning
OPERATOR_WAIT_S = 10  # how long the instance that took a write waits for the leader's outcome
REQUEST_ID_HEADER = "X-Operator-Request-Id"  # on every answer to a recorded write: where its audit record is
REQUEST_KINDS = ("trading_state", "cancel_order", "cancel_all", "close_position", "close_all", "sync")
REQUEST_STATUSES = ("pending", "running", "done", "failed")
CLOSE_STATUSES = ("closed", "already_flat", "failed")

_DESCRIPTION = """\
Order Manager: signal-driven order placement on Bybit v5 (linear).

Everything under `/api/` needs the `X-API-Key` header (401 otherwise, checked before anything
else). Errors always have the shape `{"error": message, "code": machine_code, "details": {...}}`;
an invalid or unknown query parameter (or one given twice) is a 400 with code
`invalid_parameter` and `details` = `{parameter, value, expected}`.

Decimals (prices, quantities, fees, PnL) are strings; timestamps are ISO 8601 in UTC with `Z`.
`GET /api/v1/orders` pages are stable: the sort key, then the order id in the same direction.
`date_from` and `date_to` both include their bound and filter on `created_at`; a range whose
`date_from` is after its `date_to` matches nothing. `total_pages` is 0 when nothing matches; a
page beyond the last one is an empty list with the true totals.

Writes (`PUT /api/v1/trading-state`, the cancels and closes, `POST /api/v1/sync`) are accepted by
every instance: each is recorded in PostgreSQL with its `X-Operator` header (the audit trail) and
carried out by the leader. The instance that took it waits up to 10 s and answers with the
leader's outcome, status and body as the leader gave them; after that it answers 202 with the
request's id and a `Location`, and `GET /api/v1/operator-requests/{id}` tells the outcome. Every
answer to a recorded write carries the request's id in `X-Operator-Request-Id`. With no leader
the answer is 503 `no_leader` and nothing is recorded.
"""


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _or_null(schema: dict[str, Any]) -> dict[str, Any]:
    """The same schema, also admitting null (OpenAPI 3.1: a type list, no ``nullable``)."""
    widened = copy.deepcopy(schema)
    widened["type"] = [schema["type"], "null"]
    return widened


STRING = {"type": "string"}
BOOLEAN = {"type": "boolean"}
COUNT = {"type": "integer", "minimum": 0}
DECIMAL = {"type": "string", "pattern": DECIMAL_PATTERN, "description": "a decimal number, as a string"}
TIMESTAMP = {"type": "string", "format": "date-time"}
UUID = {"type": "string", "format": "uuid"}
MILLISECONDS = {"type": ["number", "null"], "minimum": 0, "description": "milliseconds; null before any sample"}


def _object(
    properties: dict[str, Any], description: str | None = None, optional: tuple[str, ...] = ()
) -> dict[str, Any]:
    """A closed object whose every property is always present (null when unknown), but ``optional``."""
    schema: dict[str, Any] = {
        "type": "object",
        "required": [name for name in properties if name not in optional],
        "additionalProperties": False,
        "properties": properties,
    }
    if description:
        schema["description"] = description
    return schema


ORDER = _object({
    "id": UUID,
    "order_id": {**_or_null(STRING), "description": "venue order id; null until the venue acknowledged it"},
    "order_link_id": {"type": "string", "maxLength": 36},
    "signal_id": STRING,
    "asset": STRING,
    "category": STRING,
    "side": {"type": "string", "enum": ["Buy", "Sell"]},
    "order_type": {"type": "string", "enum": ["Market", "Limit"]},
    "time_in_force": STRING,
    "reduce_only": BOOLEAN,
    "status": {"type": "string", "enum": list(ORDER_STATUSES)},
    "quantity": DECIMAL,
    "price": _or_null(DECIMAL),
    "filled_quantity": DECIMAL,
    "average_price": _or_null(DECIMAL),
    "fees": DECIMAL,
    "rejection_reason": _or_null(STRING),
    "created_at": TIMESTAMP,
    "updated_at": TIMESTAMP,
    "executed_at": _or_null(TIMESTAMP),
    "trace_id": _or_null(STRING),
    "is_dry_run": BOOLEAN,
})  # fmt: skip

POSITION = _object({
    "asset": STRING,
    "mode": STRING,
    "size": {**DECIMAL, "description": "signed: negative = short"},
    "average_entry_price": DECIMAL,
    "realized_pnl": DECIMAL,
    "unrealized_pnl": DECIMAL,
    "fees": DECIMAL,
    "last_price": _or_null(DECIMAL),
    "last_updated": TIMESTAMP,
})  # fmt: skip

RELATIONSHIP = _object({
    "type": {"type": "string", "enum": ["one_to_one", "one_to_many"]},
    "execution_sequence": {"type": "integer"},
    "allocation_amount": DECIMAL,
    "allocation_quantity": DECIMAL,
})  # fmt: skip

LINEAGE = _object({
    "signal": _object({
        "signal_id": STRING,
        "status": {"type": "string", "enum": list(SIGNAL_STATUSES)},
        "signal_type": _or_null(STRING),
        "asset": _or_null(STRING),
        "amount": _or_null(DECIMAL),
        "confidence": _or_null(DECIMAL),
        "timestamp": _or_null(TIMESTAMP),
        "strategy_id": _or_null(STRING),
        "is_warmup": _or_null(BOOLEAN),
        "trace_id": _or_null(STRING),
        "raw_payload": {"type": ["object", "null"], "description": "the body as received, when it was a JSON object"},
        "raw_text": {**_or_null(STRING), "description": "the body when it was not a JSON object (first 64 KiB)"},
        "body_size": COUNT,
        "attempts": COUNT,
        "deliveries": COUNT,
        "received_at": TIMESTAMP,
        "processed_at": _or_null(TIMESTAMP),
    }),
    "decision": {"type": ["object", "null"], "description": "order type, price and legs as decided"},
    "rejection": _or_null(_object({
        "code": STRING,
        "message": _or_null(STRING),
        "details": {"type": ["object", "array", "null"], "description": "the failing fields or numbers"},
    }, "why the signal placed no order; null unless rejected or invalid")),
    "orders": {
        "type": "array",
        "items": {
            **ORDER,
            "required": [*ORDER["required"], "relationship"],
            "properties": {
                **ORDER["properties"],
                "relationship": {"oneOf": [{"type": "null"}, _ref("Relationship")]},
            },
        },
    },
    "events": {
        "type": "array",
        "items": _object({
            "event_id": UUID,
            "event_type": STRING,
            "order_id": {**_or_null(UUID), "description": "internal id of the order the event is about"},
            "trace_id": _or_null(STRING),
            "created_at": TIMESTAMP,
            "published_at": {**_or_null(TIMESTAMP), "description": "null while waiting in the outbox"},
        }),
    },
    "fills": {
        "type": "array",
        "description": "every execution of the orders, oldest first, as applied to the position",
        "items": _object({
            "id": {"type": "integer"},
            "order_id": {**UUID, "description": "internal id of the order"},
            "side": {"type": "string", "enum": ["Buy", "Sell"]},
            "quantity": DECIMAL,
            "price": _or_null(DECIMAL),
            "value": {**DECIMAL, "description": "quantity × price, quote currency"},
            "fee": DECIMAL,
            "source": {"type": "string", "description": "what reported it: ws_gateway, sync or placement"},
            "filled_at": TIMESTAMP,
        }),
    },
    "position_change": _or_null(_object(
        {"asset": STRING, "size_delta": DECIMAL, "fees": DECIMAL},
        "what the fills moved: signed size (Buy +, Sell -) and fees; null when the signal has no orders",
    )),
    "position": {"oneOf": [{"type": "null"}, _ref("Position")], "description": "the asset's position now"},
})  # fmt: skip

_SYMBOL_METRICS_FIELDS = {
    "signals_received": COUNT,
    "signals_accepted": COUNT,
    "signals_rejected": COUNT,
    "orders_placed": COUNT,
    "orders_filled": COUNT,
    "orders_cancelled": COUNT,
    "mailbox_depth": COUNT,
}
SYMBOL_METRICS = _object({
    **_SYMBOL_METRICS_FIELDS,
    "ack_latency_p50_ms": MILLISECONDS,
    "ack_latency_p99_ms": MILLISECONDS,
    "position_size": DECIMAL,
    "unrealized_pnl": DECIMAL,
}, "counters since the process started; latency percentiles over the most recent acknowledgements")  # fmt: skip
SERVICE_METRICS = _object({
    "symbols": COUNT,
    **_SYMBOL_METRICS_FIELDS,
    "ack_latency_p50_ms_max": {**MILLISECONDS, "description": "the worst symbol's p50 (percentiles do not add)"},
    "ack_latency_p99_ms_max": {**MILLISECONDS, "description": "the worst symbol's p99 (percentiles do not add)"},
    "unrealized_pnl": DECIMAL,
})  # fmt: skip

SECONDS = {"type": "number", "minimum": 0, "description": "seconds"}
RATE_LIMITS = _object({
    "endpoints": {"type": "object", "description": "by Bybit path (/v5/order/create, ...)",
                  "additionalProperties": _object({
        "limit": {**COUNT, "description": "requests per second, as the venue's X-Bapi-Limit last said"},
        "remaining": {**COUNT, "description": "room in the window now (0 while a 10006 holds the endpoint)"},
        "in_flight": COUNT,
        "queued": {**COUNT, "description": "requests waiting for room now"},
        "requests": {**COUNT, "description": "requests let through since start"},
        "waited": {**COUNT, "description": "of those, how many had to wait"},
        "wait_s_total": SECONDS,
        "wait_s_max": SECONDS,
        "rate_limited": {**COUNT, "description": "10006 / 403 / 429 answers that still came"},
                  })},
    "lanes": {"type": "object", "description": "cancel, close, open, read: who goes first, in that order",
              "additionalProperties": _object({"requests": COUNT, "waited": COUNT, "wait_s_max": SECONDS,
                                               "queued": COUNT})},
    "in_flight": {**COUNT, "description": "venue requests in flight, all endpoints"},
}, "the account's rate-limit budget (one for the whole service, contract §15)")  # fmt: skip

SYMBOL = {"type": "string", "pattern": SYMBOL_PATTERN}
TRADING_STATE = {"type": "string", "enum": list(TRADING_STATES)}

TRADING_SCOPE = _object({
    "state": TRADING_STATE,
    "reason": {**_or_null(STRING), "description": "a short code (operator, daily_loss_limit, venue_errors, "
               "venue_rejections, position_mismatch, or the operator's own); null while never set"},
    "message": _or_null(STRING),
    "source": {"type": ["string", "null"], "enum": [*TRADING_SOURCES, None]},
    "operator": {**_or_null(STRING), "description": "the X-Operator header of the change, when given"},
    "since": {**_or_null(TIMESTAMP), "description": "null: never set, the default active"},
}, "one scope's trading state")  # fmt: skip

TRADING_STATES_VIEW = _object({
    "global": _ref("TradingScope"),
    "assets": {"type": "object", "additionalProperties": _ref("TradingScope"),
               "description": "the assets that have a state of their own, by symbol; an asset's effective "
                              "state is the stricter of its own and the global one"},
})  # fmt: skip

TRADING_STATE_CHANGE = {
    "type": "object",
    "required": ["state"],
    "additionalProperties": False,
    "properties": {
        "state": TRADING_STATE,
        "asset": {**SYMBOL, "description": "change this asset's own state (absent: the global state); returning "
                                           "an asset to active removes its own state"},
        "reason": {"type": "string", "minLength": 1, "maxLength": REASON_MAX, "pattern": REASON_PATTERN,
                   "default": "operator", "description": "a short code, for alerts and dashboards"},
        "message": {"type": "string", "maxLength": MESSAGE_MAX, "pattern": MESSAGE_PATTERN,
                    "description": "free text for the people who read the state"},
    },
}  # fmt: skip

CANCEL_ALL_REQUEST = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"asset": {**SYMBOL, "description": "only this symbol's orders (absent: every symbol's)"}},
}

CANCEL_ALL_RESULT = _object({
    "cancelled": COUNT,
    "failed": {"type": "array", "description": "orders not cancelled: the venue refused, or they filled meanwhile",
               "items": _object({"order_link_id": STRING, "error": STRING, "asset": STRING})},
    "timestamp": TIMESTAMP,
})  # fmt: skip

CLOSED_POSITION = _object({
    "asset": STRING,
    "size": {**DECIMAL, "description": "signed: negative = short"},
    "average_entry_price": DECIMAL,
    "realized_pnl": DECIMAL,
    "fees": DECIMAL,
    "last_price": _or_null(DECIMAL),
    "unrealized_pnl": DECIMAL,
}, "the service's position after the close")  # fmt: skip

CLOSE_RESULT = _object({
    "status": {"type": "string", "enum": list(CLOSE_STATUSES)},
    "orders": {"type": "array", "items": _ref("Order"), "description": "the reduce-only Market orders it placed"},
    "position": _ref("ClosedPosition"),
    "venue_size": {**_or_null(DECIMAL), "description": "the venue's position as read before the close (signed)"},
    "error": {"type": "string", "description": "why the close failed (status failed only)"},
}, optional=("error",))  # fmt: skip

CLOSE_ALL_RESULT = _object({
    "results": {"type": "object", "additionalProperties": _ref("CloseResult"),
                "description": "every asset with a position, here or on the venue, by symbol"},
    "timestamp": TIMESTAMP,
})  # fmt: skip

ACCEPTED = _object({
    "request_id": UUID,
    "status": {"type": "string", "enum": ["pending", "running"]},
    "location": {"type": "string", "description": "where the outcome will be (also the Location header)",
                 "example": "/api/v1/operator-requests/6f1c2a8e-3b7d-4e0a-9c55-1d2e3f405162"},
}, "the leader has not finished within 10 s; the request stands (a request no leader begins within 60 s "
   "expires)")  # fmt: skip

OPERATOR_REQUEST = _object({
    "id": UUID,
    "kind": {"type": "string", "enum": list(REQUEST_KINDS)},
    "params": {"type": "object", "description": "what was asked, as recorded"},
    "operator": {**_or_null(STRING), "description": "the X-Operator header"},
    "status": {"type": "string", "enum": list(REQUEST_STATUSES),
               "description": "done: answered below 500; failed: answered 500 or above (expired, venue down, ...)"},
    "http_status": {"type": ["integer", "null"], "description": "the outcome's status; null until finished"},
    "result": {"description": "the outcome's body, as the write itself would have answered; null until finished"},
    "taken_by": {"type": "string", "description": "the instance that took the request"},
    "executed_by": {**_or_null(STRING), "description": "the leader that carried it out"},
    "created_at": TIMESTAMP,
    "finished_at": _or_null(TIMESTAMP),
}, "an operator request (also the audit trail)")  # fmt: skip

ERROR = _object({
    "error": {"type": "string", "description": "what went wrong, for people"},
    "code": {"type": "string", "description": "what went wrong, for programs"},
    "details": {"type": "object"},
})  # fmt: skip

SCHEMAS: dict[str, Any] = {
    "Order": ORDER,
    "Pagination": _object({
        "page": {"type": "integer", "minimum": 1},
        "page_size": {"type": "integer", "minimum": 1, "maximum": PAGE_SIZE_MAX},
        "total_items": COUNT,
        "total_pages": COUNT,
    }),
    "OrderList": _object({"orders": {"type": "array", "items": _ref("Order")}, "pagination": _ref("Pagination")}),
    "Position": POSITION,
    "PositionList": _object({"positions": {"type": "array", "items": _ref("Position")}}),
    "SyncRequest": {
        "type": "object",
        "required": ["scope"],
        "additionalProperties": False,
        "properties": {
            "scope": {"type": "string", "enum": list(SYNC_SCOPES),
                      "description": "active: orders not yet final; all: also adopt our venue orders unknown here"},
            "asset": {"type": "string", "pattern": SYMBOL_PATTERN,
                      "description": "only this symbol; 404 unknown_asset when the venue does not list it"},
        },
    },
    "SyncReport": _object({
        "status": {"type": "string", "enum": list(SYNC_STATUSES)},
        "synced_orders": COUNT,
        "updated_orders": COUNT,
        "errors": {"type": "array", "items": STRING},
        "timestamp": TIMESTAMP,
    }),
    "Relationship": RELATIONSHIP,
    "SignalLineage": LINEAGE,
    "SymbolMetrics": SYMBOL_METRICS,
    "ServiceMetrics": SERVICE_METRICS,
    "Metrics": _object({
        "symbols": {"type": "object", "additionalProperties": _ref("SymbolMetrics"),
                    "description": "active symbols by name"},
        "total": _ref("ServiceMetrics"),
        "rate_limits": {"oneOf": [{"type": "null"}, _ref("RateLimits")], "description": "null without a venue"},
        "timestamp": TIMESTAMP,
    }),
    "RateLimits": RATE_LIMITS,
    "TradingScope": TRADING_SCOPE,
    "TradingStates": TRADING_STATES_VIEW,
    "TradingStateChange": TRADING_STATE_CHANGE,
    "CancelAllRequest": CANCEL_ALL_REQUEST,
    "CancelAllResult": CANCEL_ALL_RESULT,
    "ClosedPosition": CLOSED_POSITION,
    "CloseResult": CLOSE_RESULT,
    "CloseAllResult": CLOSE_ALL_RESULT,
    "Accepted": ACCEPTED,
    "OperatorRequest": OPERATOR_REQUEST,
    "Error": ERROR,
    "Health": _object({"status": {"type": "string", "const": "healthy"}, "timestamp": TIMESTAMP}),
    "Readiness": _object({
        "status": {"type": "string", "enum": ["ready", "not_ready"]},
        "timestamp": TIMESTAMP,
        "dependencies": _object({
            name: {"type": "string", "enum": ["available", "unavailable"]}
            for name in ("database", "rabbitmq", "bybit_api", "ws_gateway")
        }),
        "role": {"type": "string", "enum": ["leader", "standby"],
                 "description": "only the leader trades; a standby takes over when it goes (contract §13)"},
        "trading_state": {"type": "string", "enum": ["active", "reducing", "halted", "unknown"],
                          "description": "the global trading state; unknown while the database cannot say"},
    }),
}  # fmt: skip


def _query(name: str, schema: dict[str, Any], description: str, example: object = None) -> dict[str, Any]:
    parameter = {"name": name, "in": "query", "required": False, "schema": schema, "description": description}
    return parameter if example is None else {**parameter, "example": example}


def _path(name: str, schema: dict[str, Any], description: str, example: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema, "description": description,
            "example": example}  # fmt: skip


TEXT_ID = {"type": "string", "minLength": 1, "maxLength": TEXT_ID_MAX, "pattern": TEXT_ID_PATTERN}

PARAMETERS: dict[str, Any] = {
    "asset": _query("asset", SYMBOL, "symbol, case-insensitive", "BTCUSDT"),
    "status": _query("status", {"type": "string", "enum": list(ORDER_STATUSES)}, "order status"),
    "signal_id": _query("signal_id", TEXT_ID, "orders of this signal", "test-signal-001"),
    "order_id": _query("order_id", TEXT_ID, "venue order id"),
    "side": _query("side", {"type": "string", "pattern": SIDE_PATTERN}, "Buy or Sell, case-insensitive"),
    "is_dry_run": _query("is_dry_run", BOOLEAN, "true: only dry-run orders; false: only real ones"),
    "date_from": _query("date_from", TIMESTAMP, "created at or after (RFC 3339, with Z or an offset)",
                        "2025-01-27T10:00:00Z"),
    "date_to": _query("date_to", TIMESTAMP, "created at or before (RFC 3339, with Z or an offset)"),
    "page": _query("page", {"type": "integer", "minimum": 1, "maximum": PAGE_MAX, "default": PAGE_DEFAULT},
                   "1-based page number"),
    "page_size": _query("page_size", {"type": "integer", "minimum": 1, "maximum": PAGE_SIZE_MAX,
                                      "default": PAGE_SIZE_DEFAULT}, "orders per page"),
    "sort_by": _query("sort_by", {"type": "string", "enum": list(SORT_FIELDS), "default": SORT_FIELDS[0]},
                      "sort key; orders never executed come last when sorting by executed_at"),
    "sort_order": _query("sort_order", {"type": "string", "enum": list(SORT_ORDERS), "default": "desc"},
                         "direction"),
}  # fmt: skip
ORDER_FILTERS = tuple(PARAMETERS)  # the query parameters of GET /api/v1/orders, in order

OPERATOR = {
    "name": OPERATOR_HEADER, "in": "header", "required": False, "example": "alice",
    "schema": {"type": "string", "minLength": 1, "maxLength": OPERATOR_MAX, "pattern": OPERATOR_PATTERN},
    "description": "who asks (1 to 100 printable ASCII characters); recorded with the request and the change",
}  # fmt: skip


def _param(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/parameters/{name}"}


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json(description, _ref("Error"))


RESPONSES = {
    "BadRequest": _error("invalid or unknown parameter, or invalid body (code invalid_parameter / invalid_body)"),
    "Unauthorized": _error("X-API-Key missing or wrong (code unauthorized)"),
    "NotFound": _error("no such resource (code not_found), or a symbol the venue does not list (code unknown_asset)"),
    "Conflict": _error("a sync is already running (code sync_in_progress)"),
    "NotOpen": _error("the order is already final: filled, cancelled or rejected (code order_not_open)"),
    "RequestTimeout": _error("the body did not arrive in time (code request_timeout)"),
    "PayloadTooLarge": _error("the body is over 1 MiB (code payload_too_large)"),
    "Unavailable": _error("PostgreSQL unreachable or too slow (code database_unavailable)"),
    "InternalError": _error("a bug: logged with its traceback (code internal_error)"),
    "NotCarriedOut": {
        **_error("not carried out: no instance leads (code no_leader; nothing was recorded), PostgreSQL unreachable "
                 "(database_unavailable), no leader took the request within 60 s (expired), for close-all "
                 "the venue's positions could not be read (venue_unavailable), for a cancel the venue did not "
                 "cancel the order (cancel_failed, with the errors and the order in details)"),
        "content": {"application/json": {"schema": _ref("Error"), "example": {
            "error": "no instance leads right now; try again in a few seconds", "code": "no_leader", "details": {}}}},
    },
    "Accepted": {
        **_json("the leader has not finished within 10 s; the request stands, its outcome will be at Location",
                _ref("Accepted")),
        "headers": {"Location": {"description": "the request's URL: GET it for the outcome", "required": True,
                                 "schema": {"type": "string"}},
                    REQUEST_ID_HEADER: {"$ref": "#/components/headers/RequestId"}},
        "links": {"outcome": {"operationId": "getOperatorRequest",
                              "parameters": {"id": "$response.body#/request_id"}}},
    },
}
HEADERS = {
    "RequestId": {"description": "the operator request's id: GET /api/v1/operator-requests/{id} shows it",
                  "required": True, "schema": {**UUID, "pattern": UUID_PATTERN}},
}


def _errors(*names: str) -> dict[str, Any]:
    codes = {"Accepted": "202", "BadRequest": "400", "Unauthorized": "401", "NotFound": "404", "RequestTimeout": "408",
             "Conflict": "409", "NotOpen": "409", "PayloadTooLarge": "413", "InternalError": "500",
             "Unavailable": "503", "NotCarriedOut": "503"}  # fmt: skip
    return {codes[name]: {"$ref": f"#/components/responses/{name}"} for name in sorted(names, key=codes.__getitem__)}


def _get(operation_id: str, summary: str, ok: dict[str, Any], errors: tuple[str, ...],
         parameters: list[dict[str, Any]] | None = None, tag: str = "api") -> dict[str, Any]:  # fmt: skip
    operation: dict[str, Any] = {
        "operationId": operation_id,
        "summary": summary,
        "tags": [tag],
        "responses": {"200": ok, **_errors(*errors)},
    }
    if parameters:
        operation["parameters"] = parameters
    return {"get": operation}


_PROBE = {"security": [], "tags": ["probes"]}
_API_ERRORS = ("BadRequest", "Unauthorized", "InternalError")  # every /api operation


def _probes() -> dict[str, Any]:
    health = _json("the process and its event loop are alive", _ref("Health"))
    paths = {
        "/health": {"get": {"operationId": "health", "summary": "liveness", **_PROBE, "responses": {"200": health}}},
        "/live": {"get": {"operationId": "live", "summary": "liveness (alias)", **_PROBE, "responses": {"200": health}}},
        "/ready": {"get": {
            "operationId": "ready", "summary": "readiness with each dependency", **_PROBE,
            "responses": {
                "200": _json("ready to take signals", _ref("Readiness")),
                "503": _json("database or broker down, reconciliation pending, or stopping", _ref("Readiness")),
            },
        }},
        "/metrics": {"get": {
            "operationId": "metrics", "summary": "Prometheus metrics (text format 0.0.4)", **_PROBE,
            "description": "Per-asset counters, gauges and the ack-latency histogram, role, trading state, outbox "
                           "backlog (absent while the database cannot be read), the rate-limit budget and the "
                           "process's CPU, memory and file descriptors. Always 200, whatever the dependencies.",
            "responses": {"200": {
                "description": "the exposition (`text/plain; version=0.0.4; charset=utf-8`)",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            }},
        }},
    }  # fmt: skip
    return paths


def _api_paths() -> dict[str, Any]:
    v1 = f"{API_PREFIX}/v1"
    return {
        f"{v1}/orders": _get(
            "listOrders", "orders, filtered and paged", _json("one page of orders", _ref("OrderList")),
            (*_API_ERRORS, "Unavailable"), [_param(name) for name in ORDER_FILTERS],
        ),
        f"{v1}/orders/{{id}}": _get(
            "getOrder", "one order by internal id, venue order_id or order_link_id",
            _json("the order", _ref("Order")), (*_API_ERRORS, "NotFound", "Unavailable"),
            [_path("id", TEXT_ID, "internal uuid, venue order_id, or order_link_id",
                   "fd4300ae-7847-404e-b947-b46980a4d140")],
        ),
        f"{v1}/positions": _get(
            "listPositions", "positions", _json("every position (filtered by asset)", _ref("PositionList")),
            (*_API_ERRORS, "Unavailable"), [_param("asset")],
        ),
        f"{v1}/positions/{{asset}}": _get(
            "getPosition", "the position in one asset", _json("the position", _ref("Position")),
            (*_API_ERRORS, "NotFound", "Unavailable"),
            [_path("asset", SYMBOL, "symbol, case-insensitive; 404 not_found when never held, unknown_asset when "
                   "the venue does not list it", "BTCUSDT")],
        ),
        f"{v1}/signals/{{signal_id}}": _get(
            "getSignalLineage", "a signal's lineage: raw signal, decision, orders, events, fills, position",
            _json("the lineage", _ref("SignalLineage")), (*_API_ERRORS, "NotFound", "Unavailable"),
            [_path("signal_id", TEXT_ID, "the signal id as model-service sent it", "test-signal-001")],
        ),
        f"{v1}/metrics": _get(
            "getMetrics", "per-symbol and service-wide metrics", _json("the metrics", _ref("Metrics")), _API_ERRORS
        ),
        f"{v1}/openapi.json": _get(
            "getOpenApi", "this document", _json("the OpenAPI 3.1 document", {"type": "object"}), _API_ERRORS
        ),
    }  # fmt: skip


def _write(
    operation_id: str, summary: str, ok: dict[str, Any], errors: tuple[str, ...], *,
    parameters: tuple[dict[str, Any], ...] = (), body: dict[str, Any] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """An operator write (contract §13.4): the leader's outcome, or 202 when it is late."""
    recorded = {
        "headers": {REQUEST_ID_HEADER: {"$ref": "#/components/headers/RequestId"}},
        "links": {"request": {"operationId": "getOperatorRequest",
                              "parameters": {"id": f"$response.header.{REQUEST_ID_HEADER}"}}},
    }
    operation: dict[str, Any] = {
        "operationId": operation_id,
        "summary": summary,
        "tags": ["operator"],
        "parameters": [*parameters, _param("operator")],
        "responses": {"200": {**ok, **recorded}, **_errors("Accepted", *_API_ERRORS, "NotCarriedOut", *errors)},
    }
    if body is not None:
        operation["requestBody"] = body
    return operation


def _body(schema: str, required: bool, examples: dict[str, Any]) -> dict[str, Any]:
    content = {"schema": _ref(schema), "examples": {name: {"value": value} for name, value in examples.items()}}
    return {"required": required, "content": {"application/json": content}}


_HALT = {"state": "halted", "reason": "maintenance", "message": "venue maintenance 14:00-15:00 UTC"}
_HALTED_VIEW = {
    "global": {"state": "halted", "reason": "maintenance", "message": "venue maintenance 14:00-15:00 UTC",
               "source": "operator", "operator": "alice", "since": "2026-12-04T13:55:00Z"},
    "assets": {"ETHUSDT": {"state": "reducing", "reason": "venue_rejections", "message": None, "source": "automatic",
                           "operator": None, "since": "2026-12-04T11:02:13Z"}},
}  # fmt: skip


def _operator_paths() -> dict[str, Any]:
    v1 = f"{API_PREFIX}/v1"
    asset = _path("asset", SYMBOL, "symbol, case-insensitive", "BTCUSDT")
    order_id = _path("id", TEXT_ID, "internal uuid, venue order_id, or order_link_id", "om-bbca3ee2f79c5b36f54e-1-1")
    request_id = _path("id", {**UUID, "pattern": UUID_PATTERN}, "the request_id of a 202",
                       "6f1c2a8e-3b7d-4e0a-9c55-1d2e3f405162")
    states = {**_json("every scope's trading state", _ref("TradingStates")), "content": {"application/json": {
        "schema": _ref("TradingStates"), "example": _HALTED_VIEW}}}
    return {
        f"{v1}/trading-state": {
            **_get("getTradingState", "the global trading state and each asset's own (from the database, any "
                   "instance)", states, (*_API_ERRORS, "Unavailable"), tag="operator"),
            "put": _write(
                "setTradingState", "change the global state or one asset's (active, reducing, halted)",
                {**states, "description": "the trading state after the change"},
                ("NotFound", "RequestTimeout", "PayloadTooLarge"),
                body=_body("TradingStateChange", True, {
                    "halt everything": _HALT, "only reduce one asset": {"state": "reducing", "asset": "BTCUSDT"},
                    "resume": {"state": "active"},
                }),
            ),
        },
        f"{v1}/orders/{{id}}/cancel": {"post": _write(
            "cancelOrder", "cancel one of our orders (any trading state)",
            _json("the order after the cancel", _ref("Order")), ("NotFound", "NotOpen"), parameters=(order_id,),
        )},
        f"{v1}/orders/cancel-all": {"post": _write(
            "cancelAllOrders", "cancel every open order of ours, or one asset's (never the venue's cancel-all)",
            _json("what was cancelled, and what the venue refused", _ref("CancelAllResult")),
            ("NotFound", "RequestTimeout", "PayloadTooLarge"),
            body=_body("CancelAllRequest", False, {"every asset": {}, "one asset": {"asset": "BTCUSDT"}}),
        )},
        f"{v1}/positions/{{asset}}/close": {"post": _write(
            "closePosition", "cancel our open orders on the asset, then close its position with reduce-only Market "
            "orders", _json("the close's outcome", _ref("CloseResult")), ("NotFound",), parameters=(asset,),
        )},
        f"{v1}/positions/close-all": {"post": _write(
            "closeAllPositions", "close every position, here or on the venue",
            _json("each asset's close", _ref("CloseAllResult")), (),
        )},
        f"{v1}/sync": {"post": _write(
            "sync", "synchronise orders with the venue now", _json("what the sync did", _ref("SyncReport")),
            ("NotFound", "RequestTimeout", "Conflict", "PayloadTooLarge"),
            body=_body("SyncRequest", True, {"open orders": {"scope": "active"},
                                             "adopt one asset's": {"scope": "all", "asset": "BTCUSDT"}}),
        )},
        f"{v1}/operator-requests/{{id}}": _get(
            "getOperatorRequest", "an operator request and, once finished, its outcome",
            _json("the request", _ref("OperatorRequest")), (*_API_ERRORS, "NotFound", "Unavailable"), [request_id],
            tag="operator",
        ),
    }  # fmt: skip


def build_document() -> dict[str, Any]:
    """A fresh copy each call: callers may not mutate the served document by accident."""
    return copy.deepcopy({
        "openapi": "3.1.0",
        "info": {"title": "ordermgr", "version": __version__, "description": _DESCRIPTION},
        "servers": [{"url": "/", "description": "the service's HTTP port (ORDER_MANAGER_PORT)"}],
        "security": [{"ApiKey": []}],
        "tags": [{"name": "api", "description": "query API (X-API-Key)"},
                 {"name": "operator", "description": "operator actions and trading state (X-API-Key): recorded, "
                                                     "carried out by the leader"},
                 {"name": "probes", "description": "health probes and Prometheus metrics (no key)"}],
        "paths": {**_probes(), **_api_paths(), **_operator_paths()},
        "components": {
            "securitySchemes": {"ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}},
            "schemas": SCHEMAS,
            "parameters": {**PARAMETERS, "operator": OPERATOR},
            "responses": RESPONSES,
            "headers": HEADERS,
        },
    })  # fmt: skip
