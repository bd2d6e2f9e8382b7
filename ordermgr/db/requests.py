"""Operator requests (contract §13.4): any instance records one and NOTIFYs the leader, which
claims it, carries it out and writes the outcome; the instance that took it reads the outcome
back. The table is the audit trail too."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any, Final

import anyio

from ordermgr.db.controls import ControlStore
from ordermgr.db.lease import LeaseStore
from ordermgr.db.listen import Listener, notified_or_timeout
from ordermgr.db.store import FENCE_CTE, PgStore, jsonb
from ordermgr.domain.errors import NoLeader, StoreUnavailable
from ordermgr.domain.model import OperatorRequest
from ordermgr.domain.trading import TradingStates

REQUESTS_CHANNEL: Final = "ordermgr_operator_requests"  # a request came: wakes the leader
OUTCOMES_CHANNEL: Final = "ordermgr_operator_outcomes"  # a request finished: wakes whoever waits on it
# A request the leader has not finished this long after it came is not carried out any more
# (a leader that died with it, then none for a while): the world it was asked in has moved on.
REQUEST_TTL_S: Final = 60.0


_COLUMNS = ("id, kind, params, operator, status, created_at, http_status, result, taken_by, executed_by, "
            "finished_at")  # fmt: skip

_SUBMIT = """
WITH recorded AS (
    INSERT INTO operator_requests (id, kind, params, operator, status, taken_by)
    VALUES (%(id)s, %(kind)s, %(params)s, %(operator)s, 'pending', %(taken_by)s)
    RETURNING id
)
SELECT pg_notify(%(channel)s, id::text) FROM recorded
"""

# Pending requests, and running ones a previous leader left (carried out again: every kind is
# safe to repeat, and a close resumes its own intents). Too old ones are failed instead.
_CLAIM = f"""
WITH {FENCE_CTE}, expired AS (
    UPDATE operator_requests SET status = 'failed', http_status = 503, finished_at = clock_timestamp(),
           result = %(expired)s
    WHERE status IN ('pending', 'running') AND epoch IS DISTINCT FROM %(fence_epoch)s
      AND created_at < clock_timestamp() - %(ttl_s)s * interval '1 second' AND (SELECT ok FROM fence)
), claimed AS (
    UPDATE operator_requests SET status = 'running', executed_by = %(fence_holder)s, epoch = %(fence_epoch)s,
           started_at = clock_timestamp()
    WHERE id IN (SELECT id FROM operator_requests
                 WHERE status IN ('pending', 'running') AND epoch IS DISTINCT FROM %(fence_epoch)s
                   AND created_at >= clock_timestamp() - %(ttl_s)s * interval '1 second'
                 ORDER BY created_at FOR UPDATE SKIP LOCKED)
      AND (SELECT ok FROM fence)
    RETURNING {_COLUMNS}
)
SELECT * FROM claimed ORDER BY created_at
"""

_FINISH = f"""
WITH {FENCE_CTE}, finished AS (
    UPDATE operator_requests SET status = %(status)s, http_status = %(http_status)s, result = %(result)s,
           finished_at = clock_timestamp()
    WHERE id = %(id)s AND (SELECT ok FROM fence)
    RETURNING id
)
SELECT pg_notify(%(channel)s, id::text) FROM finished
"""


class RequestStore:
    def __init__(self, store: PgStore, instance: str) -> None:
        self._store = store
        self._instance = instance

    async def submit(self, kind: str, params: Mapping[str, Any], operator: str | None) -> uuid.UUID:
        """Record a request and wake the leader; its id."""
        request_id = uuid.uuid4()
        async with self._store.connection() as conn:
            await conn.execute(_SUBMIT, {"id": request_id, "kind": kind, "params": jsonb(params), "operator": operator,
                                         "taken_by": self._instance, "channel": REQUESTS_CHANNEL})  # fmt: skip
        return request_id

    async def get(self, request_id: uuid.UUID) -> OperatorRequest | None:
        async with self._store.connection() as conn:
            cursor = await conn.execute(f"SELECT {_COLUMNS} FROM operator_requests WHERE id = %s", (request_id,))
            row = await cursor.fetchone()
        return OperatorRequest(**row) if row else None

    async def claim(self) -> list[OperatorRequest]:
        """The requests for this leader to carry out now (under its fence), marked running."""
        expired = {"error": "the request was not carried out in time (no leader took it)", "code": "expired",
                   "details": {"ttl_s": REQUEST_TTL_S}}  # fmt: skip
        async with self._store.connection() as conn:
            cursor = await conn.execute(_CLAIM, {"ttl_s": REQUEST_TTL_S, "expired": jsonb(expired),
                                                 **self._store.fence_params()})  # fmt: skip
            return [OperatorRequest(**row) for row in await cursor.fetchall()]

    async def finish(self, request_id: uuid.UUID, http_status: int, result: object) -> None:
        status = "done" if http_status < 500 else "failed"
        async with self._store.connection() as conn:
            await conn.execute(_FINISH, {"id": request_id, "status": status, "http_status": http_status,
                                         "result": jsonb(result), "channel": OUTCOMES_CHANNEL,
                                         **self._store.fence_params()})  # fmt: skip


class OperatorGateway:
    """What the API of any instance needs for the writes of contract §13.4: record a request,
    wake the leader and wait (bounded) for its outcome; read a request back; read the state."""

    def __init__(self, requests: RequestStore, lease: LeaseStore, listener: Listener, controls: ControlStore) -> None:
        self._requests = requests
        self._lease = lease
        self._listener = listener
        self._controls = controls

    async def submit_and_wait(
        self, kind: str, params: Mapping[str, Any], operator: str | None, *, wait_s: float = 10.0
    ) -> OperatorRequest:
        """The request as it stands when it finished or ``wait_s`` passed. Raises NoLeader when no
        instance leads (nothing is recorded then), StoreUnavailable when the database is down."""
        if await self._lease.current() is None:
            raise NoLeader("no instance leads right now; try again in a few seconds")
        request_id = await self._requests.submit(kind, params, operator)
        deadline = anyio.current_time() + wait_s
        while True:
            woken = self._listener.next(OUTCOMES_CHANNEL)
            request = await self._requests.get(request_id)
            left = deadline - anyio.current_time()
            if request is None:  # recorded a moment ago: only a database that lost it says so
                raise StoreUnavailable(f"operator request {request_id} is not in the database")
            if request.finished or left <= 0:
                return request
            await notified_or_timeout(woken, min(0.25, max(left, 0.0)))

    async def request(self, request_id: uuid.UUID) -> OperatorRequest | None:
        return await self._requests.get(request_id)

    async def trading_states(self) -> TradingStates:
        return await self._controls.trading_states()
