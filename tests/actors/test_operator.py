"""The leader's desk answers every request, whatever happens carrying it out: a request that
fails is answered 500 and never stops the leader (else every next leader would claim it and stop
too); a fenced desk stops, for the next leader to carry the request out."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import pytest

from ordermgr.actors.operator import Outcome, Request, _carry_out
from ordermgr.domain.errors import Fenced

pytestmark = pytest.mark.anyio


@attrs.frozen
class AskedFor:
    id: uuid.UUID
    kind: str
    params: Mapping[str, Any]
    operator: str | None = "tester"


@attrs.define
class Queue:
    finished: dict[uuid.UUID, tuple[int, object]] = attrs.Factory(dict)

    async def claim(self) -> Sequence[Request]:
        return []

    async def finish(self, request_id: uuid.UUID, http_status: int, result: object) -> None:
        self.finished[request_id] = (http_status, result)


@attrs.frozen
class Desk:
    failure: Exception

    async def carry_out(self, request: Request) -> Outcome:
        raise self.failure


async def test_a_request_that_fails_is_answered_500_and_the_desk_goes_on() -> None:
    queue, request = Queue(), AskedFor(uuid.uuid4(), "trading_state", {"state": "nonsense"})
    await _carry_out(queue, Desk(ValueError("'nonsense' is not a valid TradingState")), request)  # type: ignore[arg-type]
    status, body = queue.finished[request.id]
    assert status == 500 and body["code"] == "internal_error"  # type: ignore[index]


async def test_a_fenced_desk_stops_and_leaves_the_request_for_the_next_leader() -> None:
    queue, request = Queue(), AskedFor(uuid.uuid4(), "close_all", {})
    with pytest.raises(Fenced):
        await _carry_out(queue, Desk(Fenced("epoch 3 no longer leads")), request)  # type: ignore[arg-type]
    assert queue.finished == {}
