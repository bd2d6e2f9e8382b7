"""The REST query API against the real PostgreSQL, through aiohttp's test server: auth, every
filter, paging, sorting, lookups, lineage, errors. Rows are inserted directly, so these tests
depend on the schema only."""

from __future__ import annotations

import json
import os
import statistics
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import attrs
import psycopg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from ordermgr.bybit.budget import RateBudget
from ordermgr.db.migrate import apply_migrations
from ordermgr.db.queries import OrderFilter, OrderPage, Queries, orders_statements
from ordermgr.domain.model import Priority, SyncReport
from ordermgr.http.api import create_api
from ordermgr.metrics import SymbolMetrics
from tests import support
from tests.http.fakes import FakeDesk, FakeGateway, FakeSync

KEY = "test-api-key"
AUTH = {"X-API-Key": KEY}
BASE = datetime(2025, 1, 27, 10, 0, tzinfo=UTC)
TABLES = ("order_events_outbox", "order_fills", "signal_order_relationships", "orders", "positions", "signals")

# --- rows -----------------------------------------------------------------------------------


def order(n: int, **columns: Any) -> dict[str, Any]:
    """Order number ``n``: created n minutes after BASE; override any column."""
    row: dict[str, Any] = {
        "id": uuid.UUID(int=n),
        "order_id": f"venue-{n}",
        "order_link_id": f"om-link-{n}",
        "signal_id": f"sig-{n}",
        "asset": "BTCUSDT",
        "side": "Buy",
        "order_type": "Limit",
        "quantity": Decimal("0.010"),
        "price": Decimal("50000.5"),
        "status": "pending",
        "created_at": BASE + timedelta(minutes=n),
        "updated_at": BASE + timedelta(minutes=n, seconds=30),
        "trace_id": f"trace-{n}",
    }
    row.update(columns)
    return row


# Six orders with distinct assets, sides, statuses and times; updated/executed orders differ
# from creation order so every sort key gives a different sequence.
ORDERS = [
    order(1, status="filled", order_type="Market", price=None, filled_quantity=Decimal("0.010"),
          filled_value=Decimal("500.005"), average_price=Decimal("50000.5"), fees=Decimal("0.275"),
          executed_at=BASE + timedelta(minutes=40), updated_at=BASE + timedelta(minutes=40)),
    order(2, side="Sell", updated_at=BASE + timedelta(minutes=50)),
    order(3, asset="ETHUSDT", status="partially_filled", filled_quantity=Decimal("0.004"),
          filled_value=Decimal(12), average_price=Decimal(3000), executed_at=BASE + timedelta(minutes=20)),
    order(4, asset="ETHUSDT", side="Sell", status="dry_run", is_dry_run=True, order_id=None),
    order(5, asset="SOLUSDT", status="cancelled", updated_at=BASE + timedelta(minutes=45),
          executed_at=BASE + timedelta(minutes=30), filled_quantity=Decimal(1), filled_value=Decimal(150)),
    order(6, status="rejected", order_id=None, rejection_reason="insufficient balance"),
]  # fmt: skip

POSITIONS = [
    {"asset": "BTCUSDT", "size": Decimal("0.010"), "average_entry_price": Decimal("50000.5"),
     "realized_pnl": Decimal(0), "unrealized_pnl": Decimal("1.25"), "fees": Decimal("0.275"),
     "last_price": Decimal("50125.5"), "last_updated": BASE + timedelta(hours=1)},
    {"asset": "ETHUSDT", "size": Decimal("-0.5"), "average_entry_price": Decimal(3000),
     "last_price": None, "last_updated": BASE + timedelta(hours=1)},
]  # fmt: skip

REJECTED_SIGNAL = "sig-rejected"
ACCEPTED_SIGNAL = "test-signal-001"


def lineage_rows() -> dict[str, list[dict[str, Any]]]:
    """A refused signal (no orders), an invalid message (raw text), and an accepted signal split
    into two legs, one filled and one partly filled, with their events."""
    leg1, leg2 = uuid.UUID(int=101), uuid.UUID(int=102)
    return {
        "signals": [
            {"signal_id": REJECTED_SIGNAL, "status": "rejected", "body_size": 120, "signal_type": "buy",
             "asset": "BTCUSDT", "amount": Decimal(20000), "confidence": Decimal("0.85"),
             "signal_timestamp": BASE, "raw_payload": {"signal_id": REJECTED_SIGNAL, "amount": "20000"},
             "rejection_code": "exceeds_max_single_order_size", "rejection_message": "20000 USDT > 10000 USDT",
             "rejection_details": {"amount": "20000", "max_single_order_size": "10000"}, "attempts": 1,
             "deliveries": 2, "trace_id": "trace-rejected", "received_at": BASE, "processed_at": BASE},
            {"signal_id": "invalid:0001", "status": "invalid", "body_size": 8, "raw_text": "not json",
             "rejection_code": "invalid_json", "rejection_message": "the body is not JSON",
             "rejection_details": [{"field": "body", "code": "invalid_json"}], "received_at": BASE},
            {"signal_id": ACCEPTED_SIGNAL, "status": "accepted", "body_size": 300, "signal_type": "buy",
             "asset": "BTCUSDT", "amount": Decimal(1000), "confidence": Decimal("0.85"),
             "signal_timestamp": BASE, "strategy_id": "test-strategy", "is_warmup": True,
             "raw_payload": {"signal_id": ACCEPTED_SIGNAL, "amount": "1000"},
             "decision": {"order_type": "Market", "legs": [{"sequence": 1, "qty": "0.010"}]}, "attempts": 1,
             "trace_id": "test-trace-001", "received_at": BASE, "processed_at": BASE + timedelta(seconds=1)},
        ],
        "orders": [
            order(101, id=leg1, signal_id=ACCEPTED_SIGNAL, status="filled", filled_quantity=Decimal("0.010"),
                  filled_value=Decimal(500), average_price=Decimal(50000), fees=Decimal("0.3"),
                  executed_at=BASE + timedelta(seconds=2)),
            order(102, id=leg2, signal_id=ACCEPTED_SIGNAL, status="partially_filled", filled_quantity=Decimal("0.004"),
                  filled_value=Decimal("200.4"), average_price=Decimal(50100), fees=Decimal("0.1")),
        ],
        "signal_order_relationships": [
            {"signal_id": ACCEPTED_SIGNAL, "order_id": leg1, "relationship_type": "one_to_many",
             "execution_sequence": 1, "allocation_amount": Decimal(500), "allocation_quantity": Decimal("0.010")},
            {"signal_id": ACCEPTED_SIGNAL, "order_id": leg2, "relationship_type": "one_to_many",
             "execution_sequence": 2, "allocation_amount": Decimal(500), "allocation_quantity": Decimal("0.010")},
        ],
        "order_fills": [
            fill(leg1, "0.006", "50000", "0.18", seconds=2),
            fill(leg1, "0.004", "50000", "0.12", seconds=3, source="sync"),
            fill(leg2, "0.004", "50100", "0.1", seconds=4),
        ],
        "order_events_outbox": [
            event(REJECTED_SIGNAL, "rejected", None, published=True),
            event(ACCEPTED_SIGNAL, "created", leg1, published=True),
            event(ACCEPTED_SIGNAL, "created", leg2, published=True),
            event(ACCEPTED_SIGNAL, "filled", leg1, published=False),
        ],
    }  # fmt: skip


def fill(
    order_uuid: uuid.UUID, quantity: str, price: str, fee: str, *, seconds: int, source: str = "ws_gateway"
) -> dict[str, Any]:
    return {
        "order_uuid": order_uuid, "signal_id": ACCEPTED_SIGNAL, "asset": "BTCUSDT", "side": "Buy",
        "quantity": Decimal(quantity), "price": Decimal(price), "value": Decimal(quantity) * Decimal(price),
        "fee": Decimal(fee), "source": source, "filled_at": BASE + timedelta(seconds=seconds),
        "venue_time_ms": int((BASE + timedelta(seconds=seconds)).timestamp() * 1000),
    }  # fmt: skip


def event(signal_id: str, event_type: str, order_uuid: uuid.UUID | None, *, published: bool) -> dict[str, Any]:
    return {
        "event_id": uuid.uuid4(),
        "event_type": event_type,
        "signal_id": signal_id,
        "order_uuid": order_uuid,
        "trace_id": f"trace-{signal_id}",
        "body": {"event_type": event_type},
        "created_at": BASE,
        "published_at": BASE + timedelta(seconds=1) if published else None,
    }


async def insert(conninfo: str, table: str, rows: Sequence[Mapping[str, Any]]) -> None:
    async with await psycopg.AsyncConnection.connect(conninfo) as conn:
        for row in rows:
            values = [Jsonb(v) if isinstance(v, dict | list) else v for v in row.values()]
            columns = ", ".join(row)
            await conn.execute(f"INSERT INTO {table} ({columns}) VALUES ({', '.join(['%s'] * len(row))})", values)


async def seed(conninfo: str) -> None:
    await insert(conninfo, "orders", ORDERS)
    await insert(conninfo, "positions", POSITIONS)
    for table, rows in lineage_rows().items():
        await insert(conninfo, table, rows)


async def empty_database(conninfo: str) -> str:
    await apply_migrations(conninfo)
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        await conn.execute(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE")
    return conninfo


# --- fakes and fixtures ---------------------------------------------------------------------


@attrs.define
class FakeMetrics:
    snapshot: dict[str, SymbolMetrics] = attrs.Factory(dict)

    def symbol_metrics(self) -> Mapping[str, SymbolMetrics]:
        return self.snapshot


def root_app(api: web.Application) -> web.Application:
    """Mounted the way app.py mounts it."""
    root = web.Application()
    root.add_subapp("/api", api)
    return root


@contextmanager
def private_database(purpose: str) -> Iterator[str]:
    """A database of this process's own on the test server. Several sessions may run the suite
    at once against the same server, and ``ordermgr_test`` is recreated and written by each."""
    name = f"ordermgr_test_{purpose}_{os.getpid()}"
    support.recreate_database(name)
    try:
        yield support.admin_conninfo(name)
    finally:
        with psycopg.connect(support.admin_conninfo(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def api_database() -> Iterator[str]:
    with private_database("api") as conninfo:
        yield conninfo


@pytest.fixture
async def database(api_database: str) -> str:
    return await empty_database(api_database)


@pytest.fixture
async def pool(database: str) -> AsyncIterator[AsyncConnectionPool[Any]]:
    # No dict_row here (app.py's pool has one): Queries must not depend on the pool's row factory.
    async with AsyncConnectionPool(database, open=False, min_size=1, max_size=4) as opened:
        yield opened


@pytest.fixture
def fake_sync() -> FakeSync:
    return FakeSync()


@pytest.fixture
def fake_metrics() -> FakeMetrics:
    return FakeMetrics()


@pytest.fixture
def fake_gateway(fake_sync: FakeSync) -> FakeGateway:
    """A leader whose desk syncs with ``fake_sync``."""
    return FakeGateway(FakeDesk(fake_sync))


@pytest.fixture
async def client(
    pool: AsyncConnectionPool[Any], fake_sync: FakeSync, fake_metrics: FakeMetrics, fake_gateway: FakeGateway
) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    api = create_api(queries=Queries(pool), api_key=KEY, operators=fake_gateway, metrics=fake_metrics,
                     assets=fake_sync)  # fmt: skip
    async with TestClient(TestServer(root_app(api))) as test_client:
        yield test_client


@pytest.fixture
async def seeded(client: TestClient[web.Request, web.Application], database: str) -> TestClient[Any, Any]:
    await seed(database)
    return client


Client = TestClient[web.Request, web.Application]


async def get(client: Client, path: str, **params: str | int) -> tuple[int, Any]:
    async with client.get(path, params=params, headers=AUTH) as response:
        assert response.content_type == "application/json"
        return response.status, await response.json()


async def list_ids(client: Client, **params: str | int) -> list[str]:
    status, body = await get(client, "/api/v1/orders", **params)
    assert status == 200, body
    return [row["order_link_id"] for row in body["orders"]]


def links(numbers: Sequence[int]) -> list[str]:
    return [f"om-link-{n}" for n in numbers]


def assert_error(status: int, body: Any, expected_status: int, code: str) -> None:
    assert status == expected_status, body
    assert set(body) == {"error", "code", "details"}
    assert body["code"] == code


# --- auth -----------------------------------------------------------------------------------

ROUTES = [
    ("GET", "/api/v1/orders", None),
    ("GET", "/api/v1/orders/om-link-1", None),
    ("GET", "/api/v1/positions", None),
    ("GET", "/api/v1/positions/BTCUSDT", None),
    ("POST", "/api/v1/sync", {"scope": "active"}),
    ("GET", f"/api/v1/signals/{ACCEPTED_SIGNAL}", None),
    ("GET", "/api/v1/metrics", None),
    ("GET", "/api/v1/openapi.json", None),
    ("GET", "/api/v1/no-such-route", None),
]


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
@pytest.mark.parametrize("headers", [{}, {"X-API-Key": "wrong"}, {"X-API-Key": KEY[:-1] + "X"}, {"X-API-Key": ""}])
async def test_every_route_refuses_a_missing_or_wrong_key(
    seeded: Client, method: str, path: str, body: Any, headers: dict[str, str]
) -> None:
    async with seeded.request(method, path, json=body, headers=headers) as response:
        assert_error(response.status, await response.json(), 401, "unauthorized")


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
async def test_every_route_answers_the_right_key(seeded: Client, method: str, path: str, body: Any) -> None:
    async with seeded.request(method, path, json=body, headers=AUTH) as response:
        assert response.status == (404 if "no-such-route" in path else 200)
        assert response.content_type == "application/json"


async def test_an_unknown_route_and_a_wrong_method_answer_in_the_error_shape(client: Client) -> None:
    status, body = await get(client, "/api/v1/nothing")
    assert_error(status, body, 404, "not_found")
    async with client.delete("/api/v1/orders", headers=AUTH) as response:
        assert_error(response.status, await response.json(), 405, "method_not_allowed")
        assert response.headers["Allow"] == "GET"


# --- listing, filters, paging -----------------------------------------------------------------


async def test_quickstart_list_is_empty_initially(client: Client) -> None:
    assert await get(client, "/api/v1/orders") == (
        200, {"orders": [], "pagination": {"page": 1, "page_size": 20, "total_items": 0, "total_pages": 0}}
    )  # fmt: skip
    assert await get(client, "/api/v1/positions") == (200, {"positions": []})


async def test_orders_are_listed_newest_first_with_every_field(seeded: Client) -> None:
    status, body = await get(seeded, "/api/v1/orders", asset="BTCUSDT")
    assert status == 200
    assert [row["order_link_id"] for row in body["orders"]] == links([102, 101, 6, 2, 1])
    assert body["pagination"] == {"page": 1, "page_size": 20, "total_items": 5, "total_pages": 1}
    filled = body["orders"][-1]
    assert filled == {
        "id": "00000000-0000-0000-0000-000000000001", "order_id": "venue-1", "order_link_id": "om-link-1",
        "signal_id": "sig-1", "asset": "BTCUSDT", "category": "linear", "side": "Buy", "order_type": "Market",
        "time_in_force": "GTC", "reduce_only": False, "status": "filled", "quantity": "0.010", "price": None,
        "filled_quantity": "0.010", "average_price": "50000.5", "fees": "0.275", "rejection_reason": None,
        "created_at": "2025-01-27T10:01:00Z", "updated_at": "2025-01-27T10:40:00Z",
        "executed_at": "2025-01-27T10:40:00Z", "trace_id": "trace-1", "is_dry_run": False,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"asset": "ethusdt"}, [4, 3]),
        ({"asset": "EthUsdt", "side": "SELL"}, [4]),
        ({"status": "filled"}, [101, 1]),
        ({"status": "dry_run"}, [4]),
        ({"signal_id": ACCEPTED_SIGNAL}, [102, 101]),
        ({"signal_id": "sig-2"}, [2]),
        ({"order_id": "venue-5"}, [5]),
        ({"side": "sell"}, [4, 2]),
        ({"side": "Buy", "asset": "SOLUSDT"}, [5]),
        ({"is_dry_run": "true"}, [4]),
        ({"is_dry_run": "false", "asset": "ETHUSDT"}, [3]),
        ({"date_from": "2025-01-27T10:03:00Z", "date_to": "2025-01-27T10:05:00Z"}, [5, 4, 3]),  # both inclusive
        ({"date_from": "2025-01-27T11:05:00+01:00"}, [102, 101, 6, 5]),  # an offset, same instant as 10:05Z
        ({"date_to": "2025-01-27T10:02:00.000001Z"}, [2, 1]),
        ({"date_from": "2025-01-27T10:05:00Z", "date_to": "2025-01-27T10:03:00Z"}, []),  # inverted: nothing
        ({"asset": "XRPUSDT"}, []),
    ],
)
async def test_each_filter(seeded: Client, params: dict[str, str], expected: list[int]) -> None:
    assert await list_ids(seeded, **params) == links(expected)


async def test_paging_edges(seeded: Client) -> None:
    everything = await list_ids(seeded, page_size=100)
    assert len(everything) == 8
    one_by_one = [await list_ids(seeded, page=page, page_size=1) for page in range(1, 9)]
    assert [ids[0] for ids in one_by_one] == everything  # no overlap, no gap
    status, body = await get(seeded, "/api/v1/orders", page=3, page_size=3)
    assert [row["order_link_id"] for row in body["orders"]] == everything[6:]
    assert body["pagination"] == {"page": 3, "page_size": 3, "total_items": 8, "total_pages": 3}
    status, body = await get(seeded, "/api/v1/orders", page=4, page_size=3)
    assert (status, body["orders"]) == (200, [])
    assert body["pagination"] == {"page": 4, "page_size": 3, "total_items": 8, "total_pages": 3}


def _expected_order(rows: Sequence[Mapping[str, Any]], key: str, descending: bool) -> list[str]:
    """Sort key then id, both in the requested direction; a null executed_at goes last."""
    present = [row for row in rows if row.get(key) is not None]
    missing = [row for row in rows if row.get(key) is None]
    ordered = sorted(present, key=lambda row: (row[key], row["id"]), reverse=descending)
    ordered += sorted(missing, key=lambda row: row["id"], reverse=descending)
    return [row["order_link_id"] for row in ordered]


@pytest.mark.parametrize("sort_by", ["created_at", "updated_at", "executed_at"])
@pytest.mark.parametrize("sort_order", ["asc", "desc"])
async def test_sorting(seeded: Client, sort_by: str, sort_order: str) -> None:
    rows = ORDERS + lineage_rows()["orders"]
    expected = _expected_order(rows, sort_by, sort_order == "desc")
    assert await list_ids(seeded, sort_by=sort_by, sort_order=sort_order) == expected


async def test_equal_sort_keys_are_ordered_by_id(client: Client, database: str) -> None:
    same = BASE + timedelta(hours=2)
    await insert(database, "orders", [order(n, created_at=same) for n in (7, 9, 8)])
    assert await list_ids(client) == links([9, 8, 7])
    assert await list_ids(client, sort_order="asc") == links([7, 8, 9])
    assert await list_ids(client, page=2, page_size=1) == links([8])


# --- 400s -----------------------------------------------------------------------------------

INVALID_QUERIES = [
    ("/api/v1/orders", "asset", "BTC/USDT"),
    ("/api/v1/orders", "asset", ""),
    ("/api/v1/orders", "status", "open"),
    ("/api/v1/orders", "status", "FILLED"),
    ("/api/v1/orders", "signal_id", "x" * 101),
    ("/api/v1/orders", "signal_id", ""),
    ("/api/v1/orders", "order_id", "a\x00b"),
    ("/api/v1/orders", "side", "long"),
    ("/api/v1/orders", "is_dry_run", "yes"),
    ("/api/v1/orders", "is_dry_run", "True"),
    ("/api/v1/orders", "date_from", "yesterday"),
    ("/api/v1/orders", "date_from", "2025-01-27"),
    ("/api/v1/orders", "date_to", "2025-01-27T10:00:00"),  # no offset
    ("/api/v1/orders", "date_to", "2025-02-30T10:00:00Z"),
    ("/api/v1/orders", "date_to", "2025-01-27T10:00:00+05:75"),
    ("/api/v1/orders", "page", "0"),
    ("/api/v1/orders", "page", "-1"),
    ("/api/v1/orders", "page", "1.5"),
    ("/api/v1/orders", "page", "+1"),
    ("/api/v1/orders", "page", "1000001"),
    ("/api/v1/orders", "page_size", "0"),
    ("/api/v1/orders", "page_size", "101"),
    ("/api/v1/orders", "page_size", "ten"),
    ("/api/v1/orders", "sort_by", "price"),
    ("/api/v1/orders", "sort_order", "DESC"),
    ("/api/v1/orders", "assets", "BTCUSDT"),  # unknown
    ("/api/v1/positions", "asset", "BTC USDT"),
    ("/api/v1/positions", "status", "open"),  # unknown here
    ("/api/v1/orders/om-link-1", "verbose", "1"),
    ("/api/v1/positions/BTCUSDT", "mode", "one_way"),
    (f"/api/v1/signals/{ACCEPTED_SIGNAL}", "x", "1"),
    ("/api/v1/metrics", "symbol", "BTCUSDT"),
    ("/api/v1/openapi.json", "format", "yaml"),
]


@pytest.mark.parametrize(("path", "parameter", "value"), INVALID_QUERIES)
async def test_an_invalid_or_unknown_parameter_is_a_400_naming_it(
    seeded: Client, path: str, parameter: str, value: str
) -> None:
    status, body = await get(seeded, path, **{parameter: value})
    assert_error(status, body, 400, "invalid_parameter")
    assert body["details"]["parameter"] == parameter
    assert body["details"]["value"] == value
    assert body["details"]["expected"]
    assert parameter in body["error"]


async def test_a_repeated_parameter_is_a_400(client: Client) -> None:
    async with client.get("/api/v1/orders?asset=BTCUSDT&asset=ETHUSDT", headers=AUTH) as response:
        body = await response.json()
    assert_error(response.status, body, 400, "invalid_parameter")
    assert body["details"]["parameter"] == "asset"


@pytest.mark.parametrize(
    ("path", "parameter"),
    [("/api/v1/orders/" + "x" * 101, "id"), ("/api/v1/positions/BTC%20USDT", "asset"),
     ("/api/v1/signals/" + "s" * 101, "signal_id"), ("/api/v1/orders/a%00b", "id")],
)  # fmt: skip
async def test_an_invalid_path_parameter_is_a_400(client: Client, path: str, parameter: str) -> None:
    status, body = await get(client, path)
    assert_error(status, body, 400, "invalid_parameter")
    assert body["details"]["parameter"] == parameter


# --- single orders, positions -----------------------------------------------------------------


@pytest.mark.parametrize("key", ["00000000-0000-0000-0000-000000000005", "venue-5", "om-link-5"])
async def test_an_order_is_found_by_each_of_its_ids(seeded: Client, key: str) -> None:
    status, body = await get(seeded, f"/api/v1/orders/{key}")
    assert (status, body["order_link_id"], body["asset"]) == (200, "om-link-5", "SOLUSDT")


async def test_the_internal_id_wins_over_a_venue_id_of_the_same_text(client: Client, database: str) -> None:
    internal = uuid.UUID(int=1)
    await insert(database, "orders", [order(1), order(2, order_id=str(internal))])
    status, body = await get(client, f"/api/v1/orders/{internal}")
    assert (status, body["order_link_id"]) == (200, "om-link-1")


@pytest.mark.parametrize("key", ["nope", "00000000-0000-0000-0000-000000000999", "venue-999"])
async def test_an_unknown_order_is_a_404(seeded: Client, key: str) -> None:
    status, body = await get(seeded, f"/api/v1/orders/{key}")
    assert_error(status, body, 404, "not_found")


async def test_positions(seeded: Client) -> None:
    status, body = await get(seeded, "/api/v1/positions")
    assert status == 200
    assert [p["asset"] for p in body["positions"]] == ["BTCUSDT", "ETHUSDT"]
    assert body["positions"][1] == {
        "asset": "ETHUSDT", "mode": "one_way", "size": "-0.5", "average_entry_price": "3000", "realized_pnl": "0",
        "unrealized_pnl": "0", "fees": "0", "last_price": None, "last_updated": "2025-01-27T11:00:00Z",
    }  # fmt: skip
    status, body = await get(seeded, "/api/v1/positions", asset="btcusdt")
    assert [p["asset"] for p in body["positions"]] == ["BTCUSDT"]
    status, body = await get(seeded, "/api/v1/positions/btcUSDT")
    assert (status, body["size"], body["unrealized_pnl"]) == (200, "0.010", "1.25")
    status, body = await get(seeded, "/api/v1/positions/SOLUSDT")
    assert_error(status, body, 404, "not_found")


async def test_a_position_in_a_symbol_the_venue_does_not_list_is_404_unknown_asset(
    seeded: Client, fake_sync: FakeSync
) -> None:
    status, body = await get(seeded, "/api/v1/positions/ZZFUZZ00001")
    assert_error(status, body, 404, "unknown_asset")
    assert body["details"] == {"asset": "ZZFUZZ00001"}
    fake_sync.listed = frozenset()  # delisted: a position once held is still shown
    status, body = await get(seeded, "/api/v1/positions/BTCUSDT")
    assert (status, body["size"]) == (200, "0.010")


async def test_a_sync_of_a_symbol_the_venue_does_not_list_is_404_unknown_asset(
    client: Client, fake_sync: FakeSync
) -> None:
    async with client.post("/api/v1/sync", json={"scope": "active", "asset": "ZZFUZZ00001"}, headers=AUTH) as response:
        assert_error(response.status, await response.json(), 404, "unknown_asset")
    assert fake_sync.calls == []


# --- sync -----------------------------------------------------------------------------------


async def test_sync_answers_in_the_quickstart_shape(client: Client, fake_sync: FakeSync) -> None:
    async with client.post("/api/v1/sync", json={"scope": "active"}, headers=AUTH) as response:
        body = await response.json()
    assert response.status == 200
    assert set(body) == {"status", "synced_orders", "updated_orders", "errors", "timestamp"}
    assert (body["status"], body["synced_orders"], body["updated_orders"], body["errors"]) == ("completed", 5, 2, [])
    assert datetime.fromisoformat(body["timestamp"]).tzinfo is not None
    async with client.post("/api/v1/sync", json={"scope": "all", "asset": "ethusdt"}, headers=AUTH) as response:
        assert response.status == 200
    assert fake_sync.calls == [("active", None), ("all", "ETHUSDT")]


async def test_a_partial_sync_lists_its_errors(client: Client, fake_sync: FakeSync) -> None:
    fake_sync.report = SyncReport("partial", 3, 1, ("BTCUSDT: venue timeout",))
    async with client.post("/api/v1/sync", data=b'{"scope": "active"}', headers=AUTH) as response:
        body = await response.json()
    assert (body["status"], body["errors"]) == ("partial", ["BTCUSDT: venue timeout"])


@pytest.mark.parametrize(
    ("body", "code", "parameter"),
    [
        (b"", "invalid_body", None),
        (b"{scope: active}", "invalid_body", None),
        (b"\xff\xfe", "invalid_body", None),
        (b'["active"]', "invalid_body", None),
        (b"{}", "invalid_parameter", "scope"),
        (b'{"scope": "everything"}', "invalid_parameter", "scope"),
        (b'{"scope": null}', "invalid_parameter", "scope"),
        (b'{"scope": "active", "asset": 5}', "invalid_parameter", "asset"),
        (b'{"scope": "active", "asset": "BTC USDT"}', "invalid_parameter", "asset"),
        (b'{"scope": "active", "dry_run": true}', "invalid_parameter", "dry_run"),
    ],
)
async def test_a_bad_sync_request_is_a_400(
    client: Client, fake_sync: FakeSync, body: bytes, code: str, parameter: str | None
) -> None:
    async with client.post("/api/v1/sync", data=body, headers=AUTH) as response:
        answer = await response.json()
    assert_error(response.status, answer, 400, code)
    assert answer["details"].get("parameter") == parameter
    assert fake_sync.calls == []


async def test_a_sync_while_one_runs_is_a_409(client: Client, fake_sync: FakeSync) -> None:
    fake_sync.busy = True
    async with client.post("/api/v1/sync", json={"scope": "active"}, headers=AUTH) as response:
        assert_error(response.status, await response.json(), 409, "sync_in_progress")


# --- lineage --------------------------------------------------------------------------------


async def test_lineage_of_a_rejected_signal(seeded: Client) -> None:
    status, body = await get(seeded, f"/api/v1/signals/{REJECTED_SIGNAL}")
    assert status == 200
    assert body["signal"]["status"] == "rejected"
    assert body["signal"]["raw_payload"] == {"signal_id": REJECTED_SIGNAL, "amount": "20000"}
    assert (body["signal"]["attempts"], body["signal"]["deliveries"]) == (1, 2)
    assert body["rejection"] == {
        "code": "exceeds_max_single_order_size",
        "message": "20000 USDT > 10000 USDT",
        "details": {"amount": "20000", "max_single_order_size": "10000"},
    }
    assert (body["decision"], body["orders"], body["fills"], body["position_change"]) == (None, [], [], None)
    assert [(e["event_type"], e["order_id"]) for e in body["events"]] == [("rejected", None)]
    assert body["position"]["asset"] == "BTCUSDT"  # the asset's position now, whoever moved it


async def test_lineage_of_an_invalid_message_keeps_its_raw_text(seeded: Client) -> None:
    status, body = await get(seeded, "/api/v1/signals/invalid:0001")
    assert status == 200
    assert (body["signal"]["raw_text"], body["signal"]["raw_payload"], body["signal"]["asset"]) == (
        "not json", None, None
    )  # fmt: skip
    assert body["rejection"]["details"] == [{"field": "body", "code": "invalid_json"}]
    assert body["position"] is None


async def test_lineage_of_an_accepted_signal_split_in_two(seeded: Client) -> None:
    status, body = await get(seeded, f"/api/v1/signals/{ACCEPTED_SIGNAL}")
    assert status == 200
    signal = body["signal"]
    assert (signal["status"], signal["amount"], signal["confidence"], signal["timestamp"]) == (
        "accepted", "1000", "0.85", "2025-01-27T10:00:00Z"
    )  # fmt: skip
    assert body["decision"]["order_type"] == "Market"
    assert body["rejection"] is None
    assert [o["order_link_id"] for o in body["orders"]] == links([101, 102])
    assert body["orders"][1]["relationship"] == {
        "type": "one_to_many", "execution_sequence": 2, "allocation_amount": "500", "allocation_quantity": "0.010"
    }  # fmt: skip
    leg1, leg2 = (order["id"] for order in body["orders"])
    assert [(f["order_id"], f["quantity"], f["price"], f["value"], f["fee"], f["source"]) for f in body["fills"]] == [
        (leg1, "0.006", "50000", "300.000", "0.18", "ws_gateway"),
        (leg1, "0.004", "50000", "200.000", "0.12", "sync"),
        (leg2, "0.004", "50100", "200.400", "0.1", "ws_gateway"),
    ]  # fmt: skip
    assert body["fills"][0]["filled_at"] == "2025-01-27T10:00:02Z"
    assert body["position_change"] == {"asset": "BTCUSDT", "size_delta": "0.014", "fees": "0.40"}
    assert [(e["event_type"], e["published_at"] is None) for e in body["events"]] == [
        ("created", False), ("created", False), ("filled", True)
    ]  # fmt: skip
    assert body["position"]["size"] == "0.010"


async def test_lineage_finds_orders_linked_only_through_relationships(client: Client, database: str) -> None:
    await insert(database, "signals", [{"signal_id": "s-x", "status": "accepted", "body_size": 1}])
    await insert(database, "orders", [order(1, signal_id="other", side="Sell", filled_quantity=Decimal(2),
                                            filled_value=Decimal(2))])  # fmt: skip
    await insert(database, "signal_order_relationships", [
        {"signal_id": "s-x", "order_id": uuid.UUID(int=1), "relationship_type": "one_to_one",
         "allocation_amount": Decimal(2), "allocation_quantity": Decimal(2)},
    ])  # fmt: skip
    await insert(database, "order_fills", [{**fill(uuid.UUID(int=1), "2", "1", "0", seconds=1), "side": "Sell"}])
    _, body = await get(client, "/api/v1/signals/s-x")
    assert [o["order_link_id"] for o in body["orders"]] == ["om-link-1"]
    assert body["position_change"]["size_delta"] == "-2"


async def test_stored_json_numbers_keep_every_digit(client: Client, database: str) -> None:
    async with await psycopg.AsyncConnection.connect(database) as conn:
        await conn.execute(
            "INSERT INTO signals (signal_id, status, body_size, raw_payload) VALUES ('s-n', 'received', 1, %s::jsonb)",
            ('{"amount": 1000.123456789012345678901, "count": 3}',),
        )
    _, body = await get(client, "/api/v1/signals/s-n")
    assert body["signal"]["raw_payload"] == {"amount": "1000.123456789012345678901", "count": 3}


@pytest.mark.parametrize("signal_id", ["unknown", "a/b", "x y"])
async def test_an_unknown_signal_is_a_404(seeded: Client, signal_id: str) -> None:
    status, body = await get(seeded, "/api/v1/signals/" + signal_id.replace("/", "%2F"))
    assert_error(status, body, 404, "not_found")


async def test_a_signal_id_with_a_slash_is_found(client: Client, database: str) -> None:
    await insert(database, "signals", [{"signal_id": "desk/42", "status": "received", "body_size": 1}])
    status, body = await get(client, "/api/v1/signals/desk%2F42")
    assert (status, body["signal"]["signal_id"]) == (200, "desk/42")


# --- metrics, document, database down ----------------------------------------------------------


async def test_metrics_per_symbol_and_total(client: Client, fake_metrics: FakeMetrics) -> None:
    fake_metrics.snapshot = {
        "ETHUSDT": SymbolMetrics(signals_received=2, orders_placed=1, ack_latency_p50_ms=12.5,
                                 ack_latency_p99_ms=40.0, position_size=Decimal("-0.5"), unrealized_pnl=Decimal(3)),
        "BTCUSDT": SymbolMetrics(signals_received=3, signals_rejected=1, mailbox_depth=2,
                                 unrealized_pnl=Decimal("-1.25")),
    }  # fmt: skip
    status, body = await get(client, "/api/v1/metrics")
    assert status == 200
    assert list(body["symbols"]) == ["BTCUSDT", "ETHUSDT"]
    assert body["symbols"]["ETHUSDT"]["ack_latency_p99_ms"] == 40.0
    assert body["symbols"]["ETHUSDT"]["position_size"] == "-0.5"
    assert body["symbols"]["BTCUSDT"]["ack_latency_p50_ms"] is None
    total = body["total"]
    assert (total["symbols"], total["signals_received"], total["mailbox_depth"]) == (2, 5, 2)
    assert (total["ack_latency_p99_ms_max"], total["unrealized_pnl"]) == (40.0, "1.75")


def busy_budget() -> RateBudget:
    """A budget that has let a create through, met a 10006 and holds one request back."""
    budget = RateBudget()
    first, second = (budget.enqueue("place_order", Priority.CLOSE, "BTCUSDT").permit for _ in range(2))
    assert first is not None and second is not None
    first.done(remaining=9)
    second.done(rate_limited=True, blocked_s=60)
    budget.enqueue("place_order", Priority.OPEN, "ETHUSDT")
    return budget


async def test_metrics_carry_the_rate_limit_budget(pool: AsyncConnectionPool[Any], fake_sync: FakeSync) -> None:
    budget = busy_budget()
    api = create_api(queries=Queries(pool), api_key=KEY, operators=FakeGateway(), metrics=FakeMetrics(),
                     assets=fake_sync, rate_limits=lambda: budget.figures().as_fields())  # fmt: skip
    async with TestClient(TestServer(root_app(api))) as client:
        status, body = await get(client, "/api/v1/metrics")
    assert status == 200
    create = body["rate_limits"]["endpoints"]["/v5/order/create"]
    assert (create["limit"], create["remaining"], create["requests"], create["rate_limited"]) == (10, 0, 2, 1)
    assert create["queued"] == 1 and body["rate_limits"]["lanes"]["open"]["queued"] == 1
    assert body["rate_limits"]["endpoints"]["/v5/order/realtime"]["limit"] == 50


async def test_metrics_without_a_venue_have_no_rate_limits(client: Client) -> None:
    assert (await get(client, "/api/v1/metrics"))[1]["rate_limits"] is None


async def test_the_openapi_document_is_served(client: Client) -> None:
    status, body = await get(client, "/api/v1/openapi.json")
    assert (status, body["openapi"]) == (200, "3.1.0")
    assert "/api/v1/orders" in body["paths"]


async def test_database_down_is_a_503(fake_sync: FakeSync, fake_metrics: FakeMetrics) -> None:
    # Port 9 (discard) has no PostgreSQL: the pool never gets a connection and times out.
    unreachable = "host=127.0.0.1 port=9 dbname=none user=none connect_timeout=1"
    async with AsyncConnectionPool(unreachable, open=False, min_size=0, max_size=1, timeout=0.2) as down:
        api = create_api(queries=Queries(down), api_key=KEY, operators=FakeGateway(), metrics=fake_metrics,
                         assets=fake_sync)  # fmt: skip
        async with TestClient(TestServer(root_app(api))) as client:
            for path in ("/api/v1/orders", "/api/v1/orders/x", "/api/v1/positions", "/api/v1/positions/BTCUSDT",
                         "/api/v1/signals/x"):  # fmt: skip
                status, body = await get(client, path)
                assert_error(status, body, 503, "database_unavailable")
            status, body = await get(client, "/api/v1/metrics")  # needs no database
            assert status == 200


class BrokenQueries:
    async def positions(self, asset: str | None = None) -> list[Any]:
        raise RuntimeError("a bug")


async def test_a_bug_is_a_500_in_the_error_shape(fake_sync: FakeSync, fake_metrics: FakeMetrics) -> None:
    api = create_api(queries=BrokenQueries(), api_key=KEY, operators=FakeGateway(),  # type: ignore[arg-type]
                     metrics=fake_metrics, assets=fake_sync)
    async with TestClient(TestServer(root_app(api))) as client:
        status, body = await get(client, "/api/v1/positions")
    assert_error(status, body, 500, "internal_error")


def test_create_api_refuses_an_empty_key(fake_sync: FakeSync, fake_metrics: FakeMetrics) -> None:
    with pytest.raises(ValueError, match="API key"):
        create_api(queries=None, api_key="", operators=FakeGateway(), metrics=fake_metrics,  # type: ignore[arg-type]
                   assets=fake_sync)


# --- speed on a large table (slow: run with -s to see the figures) ---------------------------------

# 100 000 orders over 10 symbols, one statement; every column the filters and sorts use varies.
HUNDRED_THOUSAND_ORDERS = """
INSERT INTO orders (id, order_id, order_link_id, signal_id, asset, side, order_type, quantity, price, status,
                    created_at, updated_at, executed_at, is_dry_run)
SELECT md5('order' || i)::uuid, 'venue-' || i, 'om-' || i, 'sig-' || i / 2, 'S' || i % 10 || 'USDT',
       CASE WHEN i % 2 = 0 THEN 'Buy' ELSE 'Sell' END, 'Limit', 0.01, 50000,
       (ARRAY['pending', 'filled', 'cancelled', 'rejected', 'dry_run', 'partially_filled', 'submitting'])[1 + i % 7],
       timestamptz '2025-01-01' + i * interval '1 minute',
       timestamptz '2025-01-01' + i * interval '1 minute' + (i % 97) * interval '1 hour',
       CASE WHEN i % 3 = 0 THEN timestamptz '2025-01-01' + i * interval '1 minute' + interval '5 seconds' END,
       i % 7 = 4
FROM generate_series(1, 100000) AS i
"""


@pytest.fixture(scope="module")
def perf_database() -> Iterator[str]:
    with private_database("perf") as conninfo:
        yield conninfo


async def _server_ms(conn: psycopg.AsyncConnection[Any], statement: Any, params: Any) -> tuple[float, str]:
    """Planning + execution time PostgreSQL reports for one statement, and its plan."""
    cursor = await conn.execute(sql.SQL("EXPLAIN (ANALYZE, FORMAT JSON) ") + statement, params)
    row = await cursor.fetchone()
    assert row is not None
    plan = row[0][0]
    return plan["Planning Time"] + plan["Execution Time"], json.dumps(plan["Plan"])


@pytest.mark.slow
async def test_listing_one_asset_stays_fast_with_100_000_orders(
    perf_database: str, fake_sync: FakeSync, fake_metrics: FakeMetrics
) -> None:
    await apply_migrations(perf_database)
    async with await psycopg.AsyncConnection.connect(perf_database, autocommit=True) as conn:
        await conn.execute(HUNDRED_THOUSAND_ORDERS)
        await conn.execute("ANALYZE orders")  # what autovacuum does after a bulk load; no VACUUM (worst case)
        statements = orders_statements(OrderFilter(asset="S3USDT"), OrderPage())
        server_ms = []
        for _ in range(10):
            (list_ms, list_plan), (count_ms, count_plan) = [await _server_ms(conn, *s) for s in statements]
            server_ms.append(list_ms + count_ms)
    assert "Seq Scan" not in list_plan + count_plan  # both walk an index
    async with AsyncConnectionPool(perf_database, open=False, kwargs={"row_factory": dict_row}) as pool:
        await pool.wait()  # connections established: measure requests, not connecting
        api = create_api(queries=Queries(pool), api_key=KEY, operators=FakeGateway(), metrics=fake_metrics,
                         assets=fake_sync)  # fmt: skip
        async with TestClient(TestServer(root_app(api))) as client:
            http_ms = []
            for _ in range(10):
                started = time.perf_counter()
                status, body = await get(client, "/api/v1/orders", asset="s3usdt")
                http_ms.append((time.perf_counter() - started) * 1000)
                assert (status, body["pagination"]["total_items"], len(body["orders"])) == (200, 10_000, 20)
    print(f"\nGET /api/v1/orders?asset=S3USDT over 100 000 orders (10 000 match): PostgreSQL page + count "
          f"median {statistics.median(server_ms):.2f} ms (max {max(server_ms):.2f}); HTTP round trip median "
          f"{statistics.median(http_ms):.2f} ms (max {max(http_ms):.2f})")
    assert statistics.median(server_ms) < 50
