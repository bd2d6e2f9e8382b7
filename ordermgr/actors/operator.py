"""The operator desk (contract §12, §13.4): on the leader, carries out the operator requests that
any instance recorded, each through the actors like every other change, and writes the outcome
(an HTTP status and the answer's body) for the instance that took the request.

Requests run concurrently (a halt never waits behind a slow close-all); what touches one symbol
is still serialized by that symbol's actor, where operator actions jump the mailbox's queue.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, Protocol

import anyio
import attrs

from ordermgr.actors import actions
from ordermgr.actors.book import ACTIVE
from ordermgr.actors.control import TradingControl
from ordermgr.actors.messages import ActorMessage, CancelAll, CancelOrder, ClosePosition
from ordermgr.actors.supervisor import Supervisor
from ordermgr.actors.sync import SyncService
from ordermgr.domain.errors import Fenced, StoreUnavailable, SyncInProgress, UnknownAsset, VenueUnavailable
from ordermgr.domain.model import OperatorRequest
from ordermgr.domain.trading import OPERATOR_REASON, Source, StateChange, TradingState
from ordermgr.domain.views import close_json, order_json, trading_states_json
from ordermgr.ports import Store, Venue, until_stored

log = logging.getLogger(__name__)

Outcome = tuple[int, Any]  # HTTP status, JSON-ready body


class RequestQueue(Protocol):
    """The operator requests' storage, as the leader uses it (``db.requests.RequestStore``)."""

    async def claim(self) -> Sequence[OperatorRequest]: ...

    async def finish(self, request_id: uuid.UUID, http_status: int, result: object) -> None: ...


def error(http_status: int, code: str, message: str, **details: Any) -> Outcome:
    """An outcome in the API's error shape (contract §6)."""
    return http_status, {"error": message, "code": code, "details": details}


@attrs.define
class OperatorDesk:
    supervisor: Supervisor
    control: TradingControl
    sync: SyncService
    store: Store
    venue: Venue
    now: Callable[[], datetime]

    async def carry_out(self, request: OperatorRequest) -> Outcome:
        handler = self._handlers().get(request.kind)
        if handler is None:
            return error(400, "unknown_request", f"no such operator request: {request.kind}")
        log.info("operator request", extra={"request_id": str(request.id), "kind": request.kind,
                                            "params": dict(request.params), "operator": request.operator})  # fmt: skip
        try:
            return await handler(request)
        except UnknownAsset as exc:
            return error(404, "unknown_asset", str(exc), asset=exc.asset)
        except SyncInProgress:
            return error(409, "sync_in_progress", "a sync is already running; try again when it ends")

    def _handlers(self) -> dict[str, Callable[[OperatorRequest], Awaitable[Outcome]]]:
        return {"trading_state": self._trading_state, "cancel_order": self._cancel_order,
                "cancel_all": self._cancel_all, "close_position": self._close_position, "close_all": self._close_all,
                "sync": self._sync}  # fmt: skip

    async def _trading_state(self, request: OperatorRequest) -> Outcome:
        params = request.params
        if params.get("asset") is not None:
            await self._require_listed(params["asset"])  # a state nobody could ever lift by trading it
        change = StateChange(TradingState(params["state"]), params.get("asset"), params.get("reason") or OPERATOR_REASON,
                             Source.OPERATOR, params.get("message"), request.operator)  # fmt: skip
        return 200, trading_states_json(await self.control.change(change, request.id))

    async def _cancel_order(self, request: OperatorRequest) -> Outcome:
        key = str(request.params["id"])
        order = await until_stored(self.store.order_by_key, key)
        if order is None:
            return error(404, "not_found", f"no order with id, order_id or order_link_id {key!r}")
        reply = await self._ask(order.asset, lambda send: CancelOrder(order.order_link_id, send))
        result: actions.CancelResult = reply
        if not result.was_open:
            found = result.order or order
            return error(409, "order_not_open", f"order {found.order_link_id} is already {found.status}",
                         status=found.status, order_link_id=found.order_link_id)  # fmt: skip
        assert result.order is not None
        if result.errors and result.order.status in ACTIVE:
            return error(503, "cancel_failed", f"the venue did not cancel {result.order.order_link_id}; it is still "
                         f"{result.order.status}", errors=list(result.errors), order=order_json(result.order))  # fmt: skip
        return 200, order_json(result.order)

    async def _cancel_all(self, request: OperatorRequest) -> Outcome:
        asset = request.params.get("asset")
        if asset is not None:
            await self._require_listed(asset)
            symbols = [asset]
        else:
            symbols = sorted({order.asset for order in await until_stored(self.store.active_orders)})
        cancelled, failed = 0, []
        for symbol, reply in (await self._ask_each(symbols, lambda send, _: CancelAll(send))).items():
            result: actions.CancelAllResult = reply
            cancelled += result.cancelled
            failed += [{"order_link_id": link, "error": why, "asset": symbol} for link, why in result.failed]
        return 200, {"cancelled": cancelled, "failed": failed, "timestamp": self.now()}

    async def _close_position(self, request: OperatorRequest) -> Outcome:
        asset = str(request.params["asset"])
        await self._require_listed(asset)
        result = await self._ask(asset, lambda send: ClosePosition(request.id, request.operator, send))
        return 200, _close(result)

    async def _close_all(self, request: OperatorRequest) -> Outcome:
        """Every asset with a position, on the venue or here (an unknown venue answer fails the
        whole request rather than skip what it would have shown)."""
        try:
            held = {p.symbol for p in await self.venue.positions()}
        except VenueUnavailable as exc:
            return error(503, "venue_unavailable", f"the venue's positions are unknown: {exc}")
        held |= set(await until_stored(self.store.position_assets))
        replies = await self._ask_each(
            sorted(held), lambda send, symbol: ClosePosition(uuid.uuid5(request.id, symbol), request.operator, send)
        )
        return 200, {"results": {symbol: _close(result) for symbol, result in replies.items()},
                     "timestamp": self.now()}  # fmt: skip

    async def _sync(self, request: OperatorRequest) -> Outcome:
        report = await self.sync.sync(str(request.params.get("scope", "active")), request.params.get("asset"))
        return 200, {**attrs.asdict(report), "errors": list(report.errors), "timestamp": self.now()}

    async def _require_listed(self, asset: str) -> None:
        if await self.sync.is_listed(asset) is False:
            raise UnknownAsset(asset)

    async def _ask(self, symbol: str, make: Callable[[Any], ActorMessage]) -> Any:
        return (await self._ask_each([symbol], lambda send, _: make(send)))[symbol]

    async def _ask_each(self, symbols: Sequence[str], make: Callable[[Any, str], ActorMessage]) -> dict[str, Any]:
        """Ask every symbol's actor at once, ahead of its queue; gather the replies."""
        replies: dict[str, Any] = {}

        async def ask(symbol: str) -> None:
            send, receive = anyio.create_memory_object_stream[Any](1)
            await self.supervisor.route_urgent(symbol, make(send, symbol))
            with receive:
                replies[symbol] = await receive.receive()

        async with anyio.create_task_group() as tg:
            for symbol in symbols:
                tg.start_soon(ask, symbol)
        return {symbol: replies[symbol] for symbol in symbols}


async def run_desk(queue: RequestQueue, desk: OperatorDesk, woken: Callable[[], anyio.Event], *,
                   poll_s: float = 1.0) -> None:  # fmt: skip
    """Carry out requests as they come (woken by NOTIFY, polling meanwhile), until cancelled."""
    async with anyio.create_task_group() as tg:
        while True:
            wake = woken()
            for request in await until_stored(queue.claim):
                tg.start_soon(_carry_out, queue, desk, request)
            with anyio.move_on_after(poll_s):
                await wake.wait()


async def _carry_out(queue: RequestQueue, desk: OperatorDesk, request: OperatorRequest) -> None:
    try:
        status, body = await desk.carry_out(request)
    except Fenced:
        raise  # this instance no longer leads: trading stops, the next leader carries it out
    except StoreUnavailable as exc:  # until_stored waits these out; only a read path may end here
        status, body = error(503, "database_unavailable", str(exc))
    except Exception:
        # A bug, or a request no API would send (a hand-made row): answered, never fatal, or it
        # would stop this leader and then every next one that claims it again.
        log.exception("operator request failed", extra={"request_id": str(request.id), "kind": request.kind})
        status, body = error(500, "internal_error", "the request failed; see the leader's log")
    log.info("operator request done", extra={"request_id": str(request.id), "kind": request.kind,
                                             "http_status": status, "operator": request.operator})  # fmt: skip
    await until_stored(queue.finish, request.id, status, body)


def _close(result: actions.CloseResult) -> dict[str, Any]:
    return close_json(result.status, result.orders, result.position, result.venue_size, result.error)
