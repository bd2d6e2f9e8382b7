"""Fakes behind the API: the sync runner and asset directory, and the operator gateway with a
leader that answers like the operator desk (``ordermgr.actors.operator``) over a small book."""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import attrs

from ordermgr.db.requests import OperatorRequest
from ordermgr.domain.errors import NoLeader, SyncInProgress, UnknownAsset
from ordermgr.domain.events import dumps
from ordermgr.domain.model import OrderRecord, SyncReport
from ordermgr.domain.positions import Position
from ordermgr.domain.trading import OPERATOR_REASON, Source, StateChange, TradingState, TradingStates
from ordermgr.domain.views import close_json, order_json, trading_states_json

NOW = datetime(2026, 12, 4, 14, 0, tzinfo=UTC)
FINAL_STATUSES = frozenset({"filled", "cancelled", "rejected", "dry_run"})
Outcome = tuple[int, Any]  # HTTP status, JSON-ready body: what the desk writes as a request's outcome


@attrs.define
class FakeSync:
    """The sync runner and the asset directory: the venue lists ``listed``."""

    report: SyncReport = attrs.field(factory=lambda: SyncReport("completed", 5, 2, ()))
    busy: bool = False
    calls: list[tuple[str, str | None]] = attrs.Factory(list)
    listed: frozenset[str] = frozenset({"BTCUSDT", "ETHUSDT", "SOLUSDT"})

    async def sync(self, scope: str, asset: str | None) -> SyncReport:
        if self.busy:
            raise SyncInProgress()
        if asset is not None and asset not in self.listed:
            raise UnknownAsset(asset)
        self.calls.append((scope, asset))
        return self.report

    async def is_listed(self, asset: str) -> bool | None:
        return asset in self.listed


def error(http_status: int, code: str, message: str, **details: Any) -> Outcome:
    return http_status, {"error": message, "code": code, "details": details}


def open_order(link: str, asset: str = "BTCUSDT", status: str = "pending") -> OrderRecord:
    return OrderRecord(
        id=uuid.uuid5(uuid.NAMESPACE_URL, link), order_id=f"venue-{link}", order_link_id=link, signal_id=f"sig-{link}",
        asset=asset, side="Buy", order_type="Limit", status=status, quantity=Decimal("0.010"),
        price=Decimal("50000.5"), created_at=NOW, updated_at=NOW,
    )  # fmt: skip


@attrs.define
class FakeDesk:
    """Carries out requests as the leader's desk does: the same outcomes (status and body) for
    the same situations, over the trading ``states`` and a fixed book of ``orders`` (a cancel
    answers as the first one would: the book does not change); sync goes to ``sync``."""

    sync: FakeSync = attrs.Factory(FakeSync)
    orders: list[OrderRecord] = attrs.Factory(list)
    states: TradingStates = TradingStates()

    async def carry_out(self, kind: str, params: Mapping[str, Any], operator: str | None) -> Outcome:
        try:
            return await self._handlers()[kind](params, operator)
        except UnknownAsset as exc:
            return error(404, "unknown_asset", str(exc), asset=exc.asset)
        except SyncInProgress:
            return error(409, "sync_in_progress", "a sync is already running; try again when it ends")

    def _handlers(self) -> dict[str, Callable[[Mapping[str, Any], str | None], Awaitable[Outcome]]]:
        return {"trading_state": self._trading_state, "cancel_order": self._cancel_order,
                "cancel_all": self._cancel_all, "close_position": self._close_position, "close_all": self._close_all,
                "sync": self._sync}  # fmt: skip

    async def _trading_state(self, params: Mapping[str, Any], operator: str | None) -> Outcome:
        if params.get("asset") is not None and not await self.sync.is_listed(params["asset"]):
            raise UnknownAsset(params["asset"])
        reason = params.get("reason") or OPERATOR_REASON
        change = StateChange(TradingState(params["state"]), params.get("asset"), reason, Source.OPERATOR,
                             params.get("message"), operator)  # fmt: skip
        self.states = self.states.changed(change, NOW)
        return 200, trading_states_json(self.states)

    async def _cancel_order(self, params: Mapping[str, Any], operator: str | None) -> Outcome:
        key = params["id"]
        found = [o for o in self.orders if key in (str(o.id), o.order_id, o.order_link_id)]
        if not found:
            return error(404, "not_found", f"no order with id, order_id or order_link_id {key!r}")
        order = found[0]
        if order.status in FINAL_STATUSES:
            return error(409, "order_not_open", f"order {order.order_link_id} is already {order.status}",
                         status=order.status, order_link_id=order.order_link_id)  # fmt: skip
        return 200, order_json(attrs.evolve(order, status="cancelled"))

    async def _cancel_all(self, params: Mapping[str, Any], operator: str | None) -> Outcome:
        asset = params.get("asset")
        if asset is not None and not await self.sync.is_listed(asset):
            raise UnknownAsset(asset)
        chosen = [o for o in self.orders if o.status not in FINAL_STATUSES and asset in (None, o.asset)]
        return 200, {"cancelled": len(chosen), "failed": [], "timestamp": NOW}

    async def _close_position(self, params: Mapping[str, Any], operator: str | None) -> Outcome:
        asset = params["asset"]
        if not await self.sync.is_listed(asset):
            raise UnknownAsset(asset)
        return 200, close_json("already_flat", (), Position(asset), Decimal(0), None)

    async def _close_all(self, params: Mapping[str, Any], operator: str | None) -> Outcome:
        return 200, {"results": {}, "timestamp": NOW}

    async def _sync(self, params: Mapping[str, Any], operator: str | None) -> Outcome:
        report = await self.sync.sync(params["scope"], params.get("asset"))
        return 200, {**attrs.asdict(report), "errors": list(report.errors), "timestamp": NOW}


def stored(value: object) -> Any:
    """``value`` as it comes back from a jsonb column: decimals and times as strings."""
    return json.loads(dumps(value))


@attrs.define
class FakeGateway:
    """The operator gateway and the leader behind it. ``leader``: whether an instance leads;
    ``late``: the status (pending, running) the leader leaves a request in when the wait runs
    out, None when it finishes in time. Requests are kept as the database keeps them."""

    desk: FakeDesk = attrs.Factory(FakeDesk)
    leader: bool = True
    late: str | None = None
    instance: str = "host-a:101"
    requests: dict[uuid.UUID, OperatorRequest] = attrs.Factory(dict)

    async def submit_and_wait(
        self, kind: str, params: Mapping[str, Any], operator: str | None, *, wait_s: float = 10.0
    ) -> OperatorRequest:
        if not self.leader:
            raise NoLeader("no instance leads right now; try again in a few seconds")
        request = OperatorRequest(uuid.uuid4(), kind, stored(params), operator, "pending", NOW, taken_by=self.instance)
        if self.late is None:
            status, body = await self.desk.carry_out(kind, params, operator)
            request = attrs.evolve(request, status="done" if status < 500 else "failed", http_status=status,
                                   result=stored(body), executed_by=self.instance, finished_at=NOW)  # fmt: skip
        elif self.late == "running":
            request = attrs.evolve(request, status="running", executed_by=self.instance)
        self.requests[request.id] = request
        return request

    async def request(self, request_id: uuid.UUID) -> OperatorRequest | None:
        return self.requests.get(request_id)

    async def trading_states(self) -> TradingStates:
        return self.desk.states
