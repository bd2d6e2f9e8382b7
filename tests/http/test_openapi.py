"""The OpenAPI document against what the service really does: its routes, its schemas against
real responses, and schemathesis against a running server (real HTTP, seeded database)."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any

import anyio
import jsonschema_rs
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from ordermgr.db.queries import Queries
from ordermgr.db.requests import OperatorRequest
from ordermgr.domain.model import OrderRecord
from ordermgr.http.api import create_api
from ordermgr.http.openapi import build_document
from ordermgr.http.prometheus import ServiceSources
from ordermgr.http.server import create_app, serve
from ordermgr.metrics import SymbolMetrics
from tests.http.fakes import NOW, FakeDesk, FakeGateway, FakeSync, open_order
from tests.http.test_api import (
    ACCEPTED_SIGNAL,
    AUTH,
    KEY,
    ORDERS,
    REJECTED_SIGNAL,
    Client,
    FakeMetrics,
    busy_budget,
    empty_database,
    lineage_rows,
    private_database,
    seed,
)

DOCUMENT = build_document()
METRICS = FakeMetrics({"BTCUSDT": SymbolMetrics(signals_received=1, ack_latency_p50_ms=3.5, ack_latency_p99_ms=9.0)})


class AllUp:
    """The probes' view of a service whose dependencies are all available."""

    async def dependencies(self) -> Mapping[str, bool]:
        return dict.fromkeys(("database", "rabbitmq", "bybit_api", "ws_gateway"), True)

    def is_ready(self, dependencies: Mapping[str, bool]) -> bool:
        return True

    async def describe(self) -> Mapping[str, str]:
        return {"role": "leader", "trading_state": "active"}


def path_example(path: str, method: str) -> str:
    [parameter] = [p for p in DOCUMENT["paths"][path][method]["parameters"] if p.get("in") == "path"]
    return str(parameter["example"])


def leader() -> FakeGateway:
    """A leader that answers at once, as the desk would. Its book is the seeded orders and one
    under the id the document gives as an example, and it has carried out a request under the
    example request id (random ids find only 404s)."""
    seeded = [OrderRecord(**row) for row in [*ORDERS, *lineage_rows()["orders"]]]
    desk = FakeDesk(FakeSync(), [*seeded, open_order(path_example("/api/v1/orders/{id}/cancel", "post"))])
    request_id = uuid.UUID(path_example("/api/v1/operator-requests/{id}", "get"))
    done = OperatorRequest(request_id, "close_all", {}, "alice", "done", NOW, 200, {"results": {}, "timestamp": NOW},
                           "host-a:101", "host-a:101", NOW)  # fmt: skip
    return FakeGateway(desk, requests={request_id: done})


def service_app(pool: AsyncConnectionPool[Any], operators: FakeGateway | None = None) -> web.Application:
    """The parent app with the probes, /metrics and the API mounted as app.py mounts them."""
    sync = FakeSync()
    budget = busy_budget()
    queries, rate_limits = Queries(pool), lambda: budget.figures().as_fields()
    api = create_api(queries=queries, api_key=KEY, operators=operators or leader(), metrics=METRICS, assets=sync,
                     rate_limits=rate_limits)  # fmt: skip
    scrape = ServiceSources(metrics=METRICS, queries=queries, rate_limits=rate_limits, role=lambda: "leader",
                            trading_states=dict)  # fmt: skip
    return create_app(AllUp(), api=api, scrape=scrape)


# --- the document itself --------------------------------------------------------------------


def _operations(document: Mapping[str, Any]) -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, item in document["paths"].items() for method in item}


def test_every_route_is_documented_and_every_documented_route_exists() -> None:
    app = service_app(None)  # type: ignore[arg-type]  # routes only: no request is made
    routes = set()
    for resource in app.router.resources():
        if isinstance(resource, web.PrefixedSubAppResource):
            for sub in resource._app.router.resources():
                routes |= {(route.method, sub.canonical) for route in sub}  # already prefixed
        else:
            routes |= {(route.method, resource.canonical) for route in resource if route.method != "HEAD"}
    assert routes == _operations(DOCUMENT)


def test_every_reference_resolves_and_the_api_needs_the_key() -> None:
    text = json.dumps(DOCUMENT)
    for kind in ("schemas", "parameters", "responses", "headers"):
        for name in DOCUMENT["components"][kind]:
            assert f'"#/components/{kind}/{name}"' in text or kind == "schemas", name
    for ref in {part.split('"')[0] for part in text.split('"$ref": "')[1:]}:
        _, _, kind, name = ref.split("/")
        assert name in DOCUMENT["components"][kind], ref
    for method, path in _operations(DOCUMENT):
        operation = DOCUMENT["paths"][path][method.lower()]
        if path.startswith("/api/"):
            assert "security" not in operation  # the document-wide X-API-Key applies
            assert {"200", "400", "401"} <= set(operation["responses"])
        else:
            assert operation["security"] == []


def _resolved(item: dict[str, Any], kind: str) -> dict[str, Any]:
    return DOCUMENT["components"][kind][item["$ref"].rsplit("/", 1)[1]] if "$ref" in item else item


def _examples(operation: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any], Any]]:
    """(where, schema, example) for every example an operation gives: parameters, bodies, answers."""
    for parameter in (_resolved(p, "parameters") for p in operation.get("parameters", [])):
        if "example" in parameter:
            yield parameter["name"], parameter["schema"], parameter["example"]
    body = operation.get("requestBody", {}).get("content", {}).get("application/json", {})
    for name, example in body.get("examples", {}).items():
        yield f"body {name!r}", body["schema"], example["value"]
    for status, response in operation["responses"].items():
        content = _resolved(response, "responses").get("content", {}).get("application/json", {})
        if "example" in content:
            yield f"answer {status}", content["schema"], content["example"]


def test_every_example_keeps_to_its_own_schema() -> None:
    checked = 0
    for method, path in _operations(DOCUMENT):
        for where, schema, example in _examples(DOCUMENT["paths"][path][method.lower()]):
            validator = jsonschema_rs.validator_for({**schema, "components": DOCUMENT["components"]},
                                                    validate_formats=True)  # fmt: skip
            assert [error.message for error in validator.iter_errors(example)] == [], (method, path, where)
            checked += 1
    assert checked >= 30  # the operator writes alone give a dozen


def response_validator(path: str, method: str = "get", status: str = "200") -> Any:
    """A validator for one documented response body, with the document's components."""
    response = DOCUMENT["paths"][path][method]["responses"][status]
    if "$ref" in response:
        response = DOCUMENT["components"]["responses"][response["$ref"].rsplit("/", 1)[1]]
    schema = {**response["content"]["application/json"]["schema"], "components": DOCUMENT["components"]}
    return jsonschema_rs.validator_for(schema, validate_formats=True)


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    with private_database("openapi") as conninfo:
        yield conninfo


@pytest.fixture
async def client(database: str) -> AsyncIterator[Client]:
    await empty_database(database)
    await seed(database)
    async with (
        AsyncConnectionPool(database, open=False, kwargs={"row_factory": dict_row}) as pool,
        TestClient(TestServer(service_app(pool))) as test_client,
    ):
        yield test_client


# Seeded responses that random requests would rarely reach: full lineages, every order shape.
SAMPLES = [
    ("/api/v1/orders", "/api/v1/orders?page_size=100", "200"),
    ("/api/v1/orders", "/api/v1/orders?sort_by=executed_at&sort_order=asc", "200"),
    ("/api/v1/orders", "/api/v1/orders?page=99", "200"),
    ("/api/v1/orders", "/api/v1/orders?page=0", "400"),
    ("/api/v1/orders/{id}", "/api/v1/orders/om-link-1", "200"),
    ("/api/v1/orders/{id}", "/api/v1/orders/om-link-4", "200"),
    ("/api/v1/orders/{id}", "/api/v1/orders/nope", "404"),
    ("/api/v1/positions", "/api/v1/positions", "200"),
    ("/api/v1/positions/{asset}", "/api/v1/positions/ETHUSDT", "200"),
    ("/api/v1/signals/{signal_id}", f"/api/v1/signals/{ACCEPTED_SIGNAL}", "200"),
    ("/api/v1/signals/{signal_id}", f"/api/v1/signals/{REJECTED_SIGNAL}", "200"),
    ("/api/v1/signals/{signal_id}", "/api/v1/signals/invalid:0001", "200"),
    ("/api/v1/signals/{signal_id}", "/api/v1/signals/none", "404"),
    ("/api/v1/metrics", "/api/v1/metrics", "200"),
    ("/api/v1/openapi.json", "/api/v1/openapi.json", "200"),
    ("/health", "/health", "200"),
    ("/ready", "/ready", "200"),
]


@pytest.mark.parametrize(("documented", "url", "status"), SAMPLES)
async def test_seeded_responses_match_their_documented_schema(
    client: Client, documented: str, url: str, status: str
) -> None:
    async with client.get(url, headers=AUTH) as response:
        assert str(response.status) == status
        body = await response.json()
    errors = [error.message for error in response_validator(documented, "get", status).iter_errors(body)]
    assert errors == [], body


async def test_sync_response_matches_its_documented_schema(client: Client) -> None:
    async with client.post("/api/v1/sync", json={"scope": "all", "asset": "BTCUSDT"}, headers=AUTH) as response:
        body = await response.json()
    response_validator("/api/v1/sync", "post").validate(body)


async def test_the_served_document_is_the_document(client: Client) -> None:
    async with client.get("/api/v1/openapi.json", headers=AUTH) as response:
        assert await response.json() == DOCUMENT


# --- schemathesis against a running server ----------------------------------------------------

# Per operation and phase: a short run in every `make test` (~400 cases, seconds on an idle machine;
# the coverage phase's boundary cases do not depend on it). A long run found nothing in 21 520 cases.
SCHEMATHESIS_EXAMPLES = 5


@pytest.mark.slow
async def test_the_running_api_keeps_to_its_document(database: str, tmp_path: Path) -> None:
    """schemathesis (its CLI: the pytest plugin of 4.32 does not run on pytest 9.2) generates
    valid and invalid requests for every documented operation from the served document and
    fails on any response the document does not allow: an undocumented status, a body that
    breaks its schema, a 5xx, a key not enforced, valid input refused, invalid input accepted,
    a wrong method without 405 and Allow. The seed is fixed so a failure reproduces."""
    await empty_database(database)
    await seed(database)
    async with (
        AsyncConnectionPool(database, open=False, kwargs={"row_factory": dict_row}) as pool,
        anyio.create_task_group() as tg,
    ):
        port = await tg.start(serve, service_app(pool), "127.0.0.1", 0)
        base = f"http://127.0.0.1:{port}"
        result = await anyio.run_process(
            [sys.executable, "-m", "schemathesis.cli", "run", f"{base}/api/v1/openapi.json", "--url", base,
             "--header", f"X-API-Key: {KEY}", "--checks", "all", "--max-examples", str(SCHEMATHESIS_EXAMPLES),
             "--seed", "1", "--generation-database", "none", "--request-timeout", "10", "--no-color"],
            check=False, cwd=tmp_path, stderr=subprocess.STDOUT,
        )  # fmt: skip
        tg.cancel_scope.cancel()
    report = result.stdout.decode(errors="replace")
    assert result.returncode == 0, report
    assert "No issues found" in report
