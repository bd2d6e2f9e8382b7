"""What the API needs for the operator's writes (contract §13.4), and how it answers them.

Any instance takes a write: it is recorded in PostgreSQL and carried out by the leader, and the
instance that took it answers with the leader's outcome, or with 202 when the leader is late.
``ordermgr.db.requests.OperatorGateway`` is the real gateway; this Protocol is what the API
depends on, so the HTTP package stays free of the database's writes.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Protocol

from aiohttp import web

from ordermgr.domain.events import dumps
from ordermgr.domain.model import OperatorRequest
from ordermgr.domain.trading import TradingStates
from ordermgr.http import openapi as spec


class OperatorGateway(Protocol):
    async def submit_and_wait(
        self, kind: str, params: Mapping[str, Any], operator: str | None, *, wait_s: float = ...
    ) -> OperatorRequest:
        """Record the request, wake the leader and wait at most ``wait_s`` for its outcome: the
        request as it then stands. Raises ``NoLeader`` when no instance leads (nothing is
        recorded), ``StoreUnavailable`` when the database cannot be reached."""
        ...

    async def request(self, request_id: uuid.UUID) -> OperatorRequest | None: ...

    async def trading_states(self) -> TradingStates:
        """Every scope's state as stored (any instance can read it; no leader needed)."""
        ...


def request_location(request_id: uuid.UUID) -> str:
    return f"{spec.API_PREFIX}/v1/operator-requests/{request_id}"


def outcome_response(record: OperatorRequest) -> web.Response:
    """The leader's outcome as it gave it (status and body); 202 with where to look while it is late.
    Either way the request's id goes along: it is the way to the audit record."""
    if record.finished:
        if record.http_status is None:
            raise ValueError(f"operator request {record.id} finished without an HTTP status")
        response = _json(record.result, record.http_status)
    else:
        location = request_location(record.id)
        response = _json({"request_id": record.id, "status": record.status, "location": location}, 202)
        response.headers["Location"] = location
    response.headers[spec.REQUEST_ID_HEADER] = str(record.id)
    return response


def request_json(record: OperatorRequest) -> dict[str, Any]:
    return {
        "id": record.id, "kind": record.kind, "params": dict(record.params), "operator": record.operator,
        "status": record.status, "http_status": record.http_status, "result": record.result,
        "taken_by": record.taken_by, "executed_by": record.executed_by, "created_at": record.created_at,
        "finished_at": record.finished_at,
    }  # fmt: skip


def _json(body: object, status: int) -> web.Response:
    return web.Response(body=dumps(body), status=status, content_type="application/json")
