"""The leader's desk answers every request, whatever happens carrying it out: a request that
fails is answered 500 and never stops the leader (else every next leader would claim it and stop
too); a fenced desk stops, for the next leader to carry the request out."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import attrs
import pytest

from ordermgr.actors.operator import Outcome, _carry_out
from ordermgr.domain.errors import Fenced
from ordermgr.domain.model import OperatorRequest

pytestmark = pytest.mark.anyio


def asked_for(kind: str, params: Mapping[str, Any]) -> OperatorRequest:
    return OperatorRequest(uuid.uuid4(), kind, params, "tester", "running", datetime.now(UTC))


@attrs.define
class Queue:
    finished: dict[uuid.UUID, tuple[int, object]] = attrs.Factory(dict)

    async def claim(self) -> Sequence[OperatorRequest]:
        return []

    async def finish(self, request_id: uuid.UUID, http_status: int, result: object) -> None:
        self.finished[request_id] = (http_status, result)


@attrs.frozen
class Desk:
    failure: Exception

    async def carry_out(self, request: OperatorRequest) -> Outcome:
        raise self.failure


async def test_a_request_that_fails_is_answered_500_and_the_desk_goes_on() -> None:
    queue, request = Queue(), asked_for("trading_state", {"state": "nonsense"})
    await _carry_out(queue, Desk(ValueError("'nonsense' is not a valid TradingState")), request)
    status, body = queue.finished[request.id]
    assert status == 500 and body["code"] == "internal_error"  # type: ignore[index]


async def test_a_fenced_desk_stops_and_leaves_the_request_for_the_next_leader() -> None:
    queue, request = Queue(), asked_for("close_all", {})
    with pytest.raises(Fenced):
        await _carry_out(queue, Desk(Fenced("epoch 3 no longer leads")), request)
    assert queue.finished == {}
