"""The operator's writes and the trading state over HTTP (contract §11.5, §12, §13.4), against a
fake gateway with a leader that answers like the desk: what each write records, how the
leader's outcome is answered (at once, late as 202, or not at all with no leader), and what is
refused before anything is recorded. Every answer is checked against the served document too."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from ordermgr.db.queries import Queries
from ordermgr.domain.model import OperatorRequest
from ordermgr.domain.errors import StoreUnavailable
from ordermgr.domain.trading import ScopeState, Source, TradingState, TradingStates
from ordermgr.http.api import create_api
from tests.http.fakes import NOW, FakeDesk, FakeGateway, FakeSync, Outcome, open_order
from tests.http.test_api import AUTH, KEY, FakeMetrics, assert_error, root_app
from tests import support
from tests.http.test_openapi import response_validator
from tests.service import paper_venue, publish, reset_queues, running_service
from tests.test_signal_flow import rows, signal

Client = TestClient[web.Request, web.Application]
REQUEST_ID = "X-Operator-Request-Id"
UNKNOWN_ID = "6f1c2a8e-3b7d-4e0a-9c55-1d2e3f405162"

# (method, documented path, URL, JSON body): one of each write, as an operator would send it.
WRITES = [
    ("PUT", "/api/v1/trading-state", "/api/v1/trading-state", {"state": "halted"}),
    ("POST", "/api/v1/orders/{id}/cancel", "/api/v1/orders/om-open-1/cancel", None),
    ("POST", "/api/v1/orders/cancel-all", "/api/v1/orders/cancel-all", {}),
    ("POST", "/api/v1/positions/{asset}/close", "/api/v1/positions/BTCUSDT/close", None),
    ("POST", "/api/v1/positions/close-all", "/api/v1/positions/close-all", None),
    ("POST", "/api/v1/sync", "/api/v1/sync", {"scope": "active"}),
]
WRITE_IDS = [documented for _, documented, _, _ in WRITES]


def leader() -> FakeGateway:
    """A leader with an open order (om-open-1) and a filled one (om-filled-1)."""
    return FakeGateway(FakeDesk(FakeSync(), [open_order("om-open-1"), open_order("om-filled-1", status="filled")]))


@pytest.fixture
def gateway() -> FakeGateway:
    return leader()


@pytest.fixture
async def client(gateway: FakeGateway) -> AsyncIterator[Client]:
    async with serving(gateway) as test_client:
        yield test_client


def serving(gateway: FakeGateway) -> Client:
    queries = Queries(None)  # type: ignore[arg-type]  # no operator route reads the query tables
    sync = FakeSync()
    api = create_api(queries=queries, api_key=KEY, operators=gateway, metrics=FakeMetrics(), assets=sync)
    return TestClient(TestServer(root_app(api)))


async def send(
    client: Client, method: str, url: str, body: Any = None, *, operator: str | None = None, raw: bytes | None = None,
) -> tuple[int, Any, Mapping[str, str]]:  # fmt: skip
    headers = {**AUTH, **({"X-Operator": operator} if operator is not None else {})}
    data = raw if raw is not None else None if body is None else json.dumps(body).encode()
    async with client.request(method, url, data=data, headers=headers) as response:
        assert response.content_type == "application/json"
        return response.status, await response.json(), response.headers


def documented(path: str, method: str, status: int, body: Any) -> None:
    """``body`` is what the served document says ``status`` of this operation answers."""
    errors = [error.message for error in response_validator(path, method.lower(), str(status)).iter_errors(body)]
    assert errors == [], body


async def recorded(client: Client, headers: Mapping[str, str]) -> dict[str, Any]:
    """The operator request an answer names, as GET /api/v1/operator-requests/{id} shows it."""
    status, body, _ = await send(client, "GET", f"/api/v1/operator-requests/{headers[REQUEST_ID]}")
    assert status == 200, body
    documented("/api/v1/operator-requests/{id}", "get", 200, body)
    return dict(body)


# --- reading the trading state ----------------------------------------------------------------


async def test_the_trading_state_is_read_with_every_scope(client: Client, gateway: FakeGateway) -> None:
    assert (await send(client, "GET", "/api/v1/trading-state"))[:2] == (200, {
        "global": {"state": "active", "reason": None, "message": None, "source": None, "operator": None,
                   "since": None},
        "assets": {},
    })  # fmt: skip
    gateway.desk.states = TradingStates(
        ScopeState(TradingState.REDUCING, "daily_loss_limit", None, Source.AUTOMATIC, None, NOW),
        {"ETHUSDT": ScopeState(TradingState.HALTED, "maintenance", "until 15:00", Source.OPERATOR, "alice", NOW)},
    )
    status, body, _ = await send(client, "GET", "/api/v1/trading-state")
    assert (status, body["global"]["state"], body["global"]["source"]) == (200, "reducing", "automatic")
    assert body["assets"] == {"ETHUSDT": {"state": "halted", "reason": "maintenance", "message": "until 15:00",
                                          "source": "operator", "operator": "alice", "since": "2026-12-04T14:00:00Z"}}
    documented("/api/v1/trading-state", "get", 200, body)


async def test_the_trading_state_needs_no_leader(client: Client, gateway: FakeGateway) -> None:
    gateway.leader = False
    assert (await send(client, "GET", "/api/v1/trading-state"))[0] == 200


# --- writes: what is recorded, what is answered -----------------------------------------------


async def test_a_change_answers_the_new_view_and_records_who_asked(client: Client) -> None:
    change = {"state": "halted", "reason": "maintenance", "message": "venue maintenance\n14:00-15:00 UTC"}
    status, body, headers = await send(client, "PUT", "/api/v1/trading-state", change, operator="alice@desk")
    assert status == 200
    assert body["global"] == {**change, "source": "operator", "operator": "alice@desk", "since": "2026-12-04T14:00:00Z"}
    documented("/api/v1/trading-state", "put", 200, body)
    assert (await send(client, "GET", "/api/v1/trading-state"))[1] == body
    request = await recorded(client, headers)
    assert request == {
        "id": headers[REQUEST_ID], "kind": "trading_state", "params": {**change, "asset": None},
        "operator": "alice@desk", "status": "done", "http_status": 200, "result": body, "taken_by": "host-a:101",
        "executed_by": "host-a:101", "created_at": "2026-12-04T14:00:00Z", "finished_at": "2026-12-04T14:00:00Z",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("method", "url", "body", "kind", "params"),
    [
        ("PUT", "/api/v1/trading-state", {"state": "reducing", "asset": "btcusdt"}, "trading_state",
         {"state": "reducing", "asset": "BTCUSDT", "reason": "operator", "message": None}),
        ("POST", "/api/v1/orders/om-open-1/cancel", None, "cancel_order", {"id": "om-open-1"}),
        ("POST", "/api/v1/orders/cancel-all", None, "cancel_all", {"asset": None}),  # no body: every asset
        ("POST", "/api/v1/orders/cancel-all", {}, "cancel_all", {"asset": None}),
        ("POST", "/api/v1/orders/cancel-all", {"asset": "ethusdt"}, "cancel_all", {"asset": "ETHUSDT"}),
        ("POST", "/api/v1/positions/btcusdt/close", None, "close_position", {"asset": "BTCUSDT"}),
        ("POST", "/api/v1/positions/close-all", None, "close_all", {}),
        ("POST", "/api/v1/sync", {"scope": "all", "asset": "ethusdt"}, "sync", {"scope": "all", "asset": "ETHUSDT"}),
    ],
)  # fmt: skip
async def test_each_write_records_its_kind_and_params(
    client: Client, method: str, url: str, body: Any, kind: str, params: dict[str, Any]
) -> None:
    status, _, headers = await send(client, method, url, body)
    assert status == 200
    request = await recorded(client, headers)
    assert (request["kind"], request["params"], request["operator"]) == (kind, params, None)


@pytest.mark.parametrize(("method", "path", "url", "body"), WRITES, ids=WRITE_IDS)
async def test_each_write_answers_what_its_document_says(
    client: Client, method: str, path: str, url: str, body: Any
) -> None:
    status, answer, headers = await send(client, method, url, body, operator="bob")
    assert status == 200
    documented(path, method, 200, answer)
    assert (await recorded(client, headers))["operator"] == "bob"


class ScriptedDesk(FakeDesk):
    """A leader whose every outcome is ``outcome``: the API must pass it on untouched."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__()
        self.outcome = outcome

    async def carry_out(self, kind: str, params: Mapping[str, Any], operator: str | None) -> Outcome:
        return self.outcome


OUTCOMES = [
    (409, {"error": "order om-filled-1 is already filled", "code": "order_not_open",
           "details": {"status": "filled", "order_link_id": "om-filled-1"}}),
    (404, {"error": "ZZZUSDT is not a symbol the venue lists", "code": "unknown_asset",
           "details": {"asset": "ZZZUSDT"}}),
    (503, {"error": "the request was not carried out in time (no leader took it)", "code": "expired",
           "details": {"ttl_s": 60.0}}),
    (200, {"results": {}, "timestamp": "2026-12-04T14:00:00Z"}),
]  # fmt: skip


@pytest.mark.parametrize(("http_status", "outcome"), OUTCOMES)
async def test_the_leaders_outcome_is_the_answer_as_it_gave_it(http_status: int, outcome: Any) -> None:
    async with serving(FakeGateway(ScriptedDesk((http_status, outcome)))) as client:
        status, body, headers = await send(client, "POST", "/api/v1/positions/close-all")
        assert (status, body) == (http_status, outcome)
        request = await recorded(client, headers)
    assert (request["status"], request["http_status"]) == ("done" if http_status < 500 else "failed", http_status)


async def test_the_desks_refusals_keep_their_documented_shape(client: Client) -> None:
    status, body, _ = await send(client, "POST", "/api/v1/orders/om-filled-1/cancel")
    assert_error(status, body, 409, "order_not_open")
    documented("/api/v1/orders/{id}/cancel", "post", 409, body)
    status, body, _ = await send(client, "POST", "/api/v1/orders/nope/cancel")
    assert_error(status, body, 404, "not_found")
    documented("/api/v1/orders/{id}/cancel", "post", 404, body)
    status, body, _ = await send(client, "POST", "/api/v1/positions/ZZZUSDT/close")
    assert_error(status, body, 404, "unknown_asset")
    documented("/api/v1/positions/{asset}/close", "post", 404, body)


@pytest.mark.parametrize("late", ["pending", "running"])
@pytest.mark.parametrize(("method", "path", "url", "body"), WRITES, ids=WRITE_IDS)
async def test_a_late_outcome_is_a_202_that_says_where_to_find_it(
    gateway: FakeGateway, late: str, method: str, path: str, url: str, body: Any
) -> None:
    gateway.late = late
    async with serving(gateway) as client:
        status, answer, headers = await send(client, method, url, body, operator="carol")
        location = f"/api/v1/operator-requests/{headers[REQUEST_ID]}"
        assert (status, answer) == (202, {"request_id": headers[REQUEST_ID], "status": late, "location": location})
        assert headers["Location"] == location
        documented(path, method, 202, answer)
        request = await recorded(client, headers)
    assert (request["status"], request["operator"]) == (late, "carol")
    assert (request["http_status"], request["result"], request["finished_at"]) == (None, None, None)


@pytest.mark.parametrize(("method", "path", "url", "body"), WRITES, ids=WRITE_IDS)
async def test_with_no_leader_every_write_is_a_503_and_nothing_is_recorded(
    client: Client, gateway: FakeGateway, method: str, path: str, url: str, body: Any
) -> None:
    gateway.leader = False
    status, answer, headers = await send(client, method, url, body)
    assert_error(status, answer, 503, "no_leader")
    documented(path, method, 503, answer)
    assert REQUEST_ID not in headers
    assert gateway.requests == {}


class DatabaseDown(FakeGateway):
    async def submit_and_wait(
        self, kind: str, params: Mapping[str, Any], operator: str | None, *, wait_s: float = 10.0
    ) -> OperatorRequest:
        raise StoreUnavailable("connection refused")

    async def request(self, request_id: uuid.UUID) -> OperatorRequest | None:
        raise StoreUnavailable("connection refused")

    async def trading_states(self) -> TradingStates:
        raise StoreUnavailable("connection refused")


async def test_with_the_database_down_reads_and_writes_are_503() -> None:
    async with serving(DatabaseDown()) as client:
        for method, url, body in [("GET", "/api/v1/trading-state", None), ("PUT", "/api/v1/trading-state",
                                  {"state": "halted"}), ("GET", f"/api/v1/operator-requests/{UNKNOWN_ID}", None)]:
            status, answer, _ = await send(client, method, url, body)
            assert_error(status, answer, 503, "database_unavailable")


# --- refused before anything is recorded --------------------------------------------------------

INVALID_WRITES = [
    ("PUT", "/api/v1/trading-state", b"", None, "invalid_body", None),
    ("PUT", "/api/v1/trading-state", b'"halted"', None, "invalid_body", None),
    ("PUT", "/api/v1/trading-state", b"{}", None, "invalid_parameter", "state"),
    ("PUT", "/api/v1/trading-state", b'{"state": "paused"}', None, "invalid_parameter", "state"),
    ("PUT", "/api/v1/trading-state", b'{"state": "HALTED"}', None, "invalid_parameter", "state"),
    ("PUT", "/api/v1/trading-state", b'{"state": "halted", "scope": "global"}', None, "invalid_parameter", "scope"),
    ("PUT", "/api/v1/trading-state", b'{"state": "halted", "asset": "BTC USDT"}', None, "invalid_parameter", "asset"),
    ("PUT", "/api/v1/trading-state", b'{"state": "halted", "asset": null}', None, "invalid_parameter", "asset"),
    ("PUT", "/api/v1/trading-state", b'{"state": "halted", "reason": ""}', None, "invalid_parameter", "reason"),
    ("PUT", "/api/v1/trading-state", b'{"state": "halted", "reason": 7}', None, "invalid_parameter", "reason"),
    ("PUT", "/api/v1/trading-state", b'{"state": "halted", "reason": "a\\nb"}', None, "invalid_parameter", "reason"),
    ("PUT", "/api/v1/trading-state", b'{"state": "halted", "reason": "%s"}' % (b"r" * 101), None,
     "invalid_parameter", "reason"),
    ("PUT", "/api/v1/trading-state", b'{"state": "halted", "message": "%s"}' % (b"m" * 501), None,
     "invalid_parameter", "message"),
    ("PUT", "/api/v1/trading-state", b'{"state": "halted", "message": "a\\u0000b"}', None,
     "invalid_parameter", "message"),
    ("PUT", "/api/v1/trading-state", b'{"state": "halted", "message": "\\ud800"}', None,
     "invalid_parameter", "message"),
    ("POST", "/api/v1/orders/cancel-all", b"[]", None, "invalid_body", None),
    ("POST", "/api/v1/orders/cancel-all", b'{"assets": ["BTCUSDT"]}', None, "invalid_parameter", "assets"),
    ("POST", "/api/v1/orders/cancel-all", b'{"asset": 5}', None, "invalid_parameter", "asset"),
    ("POST", "/api/v1/orders/%s/cancel" % ("x" * 101), None, None, "invalid_parameter", "id"),
    ("POST", "/api/v1/positions/BTC%20USDT/close", None, None, "invalid_parameter", "asset"),
    ("POST", "/api/v1/positions/close-all?asset=BTCUSDT", None, None, "invalid_parameter", "asset"),
    ("POST", "/api/v1/sync", b'{"scope": "active", "dry_run": true}', None, "invalid_parameter", "dry_run"),
    ("POST", "/api/v1/positions/close-all", None, "x" * 101, "invalid_parameter", "X-Operator"),
    ("POST", "/api/v1/positions/close-all", None, "", "invalid_parameter", "X-Operator"),
    ("POST", "/api/v1/positions/close-all", None, "zoë", "invalid_parameter", "X-Operator"),
]  # fmt: skip


@pytest.mark.parametrize(("method", "url", "raw", "operator", "code", "parameter"), INVALID_WRITES)
async def test_an_invalid_write_is_a_400_naming_the_field_and_nothing_is_recorded(
    client: Client, gateway: FakeGateway, method: str, url: str, raw: bytes | None, operator: str | None, code: str,
    parameter: str | None,
) -> None:  # fmt: skip
    status, body, _ = await send(client, method, url, raw=raw, operator=operator)
    assert_error(status, body, 400, code)
    assert body["details"].get("parameter") == parameter
    if parameter:
        assert parameter in body["error"] and body["details"]["expected"]
    assert gateway.requests == {}


async def test_a_repeated_operator_header_is_a_400(client: Client, gateway: FakeGateway) -> None:
    headers = [("X-API-Key", KEY), ("X-Operator", "alice"), ("X-Operator", "bob")]
    async with client.post("/api/v1/positions/close-all", headers=headers) as response:
        body = await response.json()
    assert_error(response.status, body, 400, "invalid_parameter")
    assert body["details"]["parameter"] == "X-Operator"
    assert gateway.requests == {}


@pytest.mark.parametrize(("method", "url", "body"), [(m, u, b) for m, _, u, b in WRITES] + [
    ("GET", "/api/v1/trading-state", None), ("GET", f"/api/v1/operator-requests/{UNKNOWN_ID}", None)])
async def test_every_operator_route_needs_the_key(client: Client, gateway: FakeGateway, method: str, url: str,
                                                  body: Any) -> None:  # fmt: skip
    async with client.request(method, url, json=body, headers={"X-API-Key": "wrong"}) as response:
        assert_error(response.status, await response.json(), 401, "unauthorized")
    assert gateway.requests == {}


@pytest.mark.parametrize("url", ["/api/v1/orders/cancel-all", "/api/v1/positions/close-all"])
async def test_the_fixed_write_paths_refuse_a_get_with_405(client: Client, url: str) -> None:
    status, body, headers = await send(client, "GET", url)
    assert_error(status, body, 405, "method_not_allowed")
    assert headers["Allow"] == "POST"


# --- operator requests ----------------------------------------------------------------------


async def test_an_unknown_request_is_a_404_and_a_malformed_id_a_400(client: Client) -> None:
    status, body, _ = await send(client, "GET", f"/api/v1/operator-requests/{UNKNOWN_ID}")
    assert_error(status, body, 404, "not_found")
    documented("/api/v1/operator-requests/{id}", "get", 404, body)
    for malformed in ("42", UNKNOWN_ID.replace("-", ""), UNKNOWN_ID + "0", "urn:uuid:" + UNKNOWN_ID):
        status, body, _ = await send(client, "GET", f"/api/v1/operator-requests/{malformed}")
        assert_error(status, body, 400, "invalid_parameter")
        assert body["details"]["parameter"] == "id"


async def test_a_request_found_by_an_upper_case_id(client: Client) -> None:
    _, _, headers = await send(client, "POST", "/api/v1/positions/close-all")
    status, body, _ = await send(client, "GET", f"/api/v1/operator-requests/{headers[REQUEST_ID].upper()}")
    assert (status, body["id"], body["kind"]) == (200, headers[REQUEST_ID], "close_all")


# --- against the running service -----------------------------------------------------------------


async def test_an_operator_halts_closes_and_resumes_a_running_service(clean_database: str) -> None:
    """The real service (leader, paper venue, PostgreSQL, RabbitMQ): a filled buy; a halt refuses
    the next signal; the position is closed while halted (a halt never keeps the operator from
    getting flat); trading resumes."""
    await reset_queues()
    venue = paper_venue(amqp_url=support.AMQP_URL)  # the venue publishes the fill, so the position moves
    async with running_service(venue=venue) as service, aiohttp.ClientSession() as http:
        base = f"http://127.0.0.1:{service.port}"
        headers = {**AUTH, "X-Operator": "it-operator"}
        await publish(signal("op-buy-1"))
        await service.logs.wait_for("fill applied")

        async with http.put(f"{base}/api/v1/trading-state", json={"state": "halted", "reason": "drill"},
                            headers=headers) as response:  # fmt: skip
            halted = (response.status, await response.json())
        async with http.get(f"{base}/api/v1/trading-state", headers=AUTH) as response:
            read_back = await response.json()
        async with http.get(f"{base}/ready") as response:
            ready = (response.status, await response.json())
        await publish(signal("op-halted-1"))
        await service.logs.wait_for("signal acknowledged", signal_id="op-halted-1")

        async with http.post(f"{base}/api/v1/positions/BTCUSDT/close", headers=headers) as response:
            closed = (response.status, await response.json())
        async with http.put(f"{base}/api/v1/trading-state", json={"state": "active"}, headers=headers) as response:
            resumed = (response.status, await response.json())
        async with http.get(f"{base}/api/v1/operator-requests/{response.headers[REQUEST_ID]}", headers=AUTH) as answer:
            audit = await answer.json()

    status, view = halted
    assert (status, view["global"]["state"], view["global"]["reason"]) == (200, "halted", "drill")
    assert (view["global"]["source"], view["global"]["operator"]) == ("operator", "it-operator")
    assert read_back == view
    assert ready[0] == 200 and (ready[1]["trading_state"], ready[1]["role"]) == ("halted", "leader")
    [refused] = rows(clean_database, "SELECT status, rejection_code FROM signals WHERE signal_id = 'op-halted-1'")
    assert refused == {"status": "rejected", "rejection_code": "trading_halted"}
    status, close = closed
    assert (status, close["status"], close["venue_size"]) == (200, "closed", "0.002")
    assert [(o["side"], o["reduce_only"], o["quantity"]) for o in close["orders"]] == [("Sell", True, "0.002")]
    documented("/api/v1/positions/{asset}/close", "post", 200, close)
    assert venue.engine.positions["BTCUSDT"].size == 0
    assert (resumed[0], resumed[1]["global"]["state"]) == (200, "active")
    assert (audit["kind"], audit["operator"], audit["status"], audit["taken_by"]) == (
        "trading_state", "it-operator", "done", audit["executed_by"])  # fmt: skip
