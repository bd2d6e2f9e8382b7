"""``GET /metrics``: the exposition parsed back with prometheus-client's own parser and checked
against fakes of ``ScrapeSources``; the outbox backlog against the real PostgreSQL (and without
it); and one scrape of the real service after a signal."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import attrs
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from psycopg_pool import AsyncConnectionPool

from ordermgr.db.queries import Queries
from ordermgr.domain.errors import StoreUnavailable
from ordermgr.http.api import create_api
from ordermgr.http.openapi import build_document
from ordermgr.http.prometheus import CONTENT_TYPE, ScrapeSources, ServiceSources, metrics_route
from ordermgr.http.server import create_app
from ordermgr.metrics import ACK_LATENCY_BUCKETS_S, MetricsRecorder, SymbolMetrics
from tests import support
from tests.http.fakes import FakeGateway, FakeSync
from tests.http.test_api import AUTH, KEY, FakeMetrics, busy_budget, empty_database, event, insert
from tests.http.test_api import private_database
from tests.http.test_openapi import AllUp
from tests.service import paper_venue, publish, reset_queues, running_service

QUICKSTART = (Path(__file__).parents[1] / "data" / "quickstart_signal.json").read_bytes()


@attrs.define
class FakeSources:
    """``ScrapeSources`` with figures a test sets; ``backlog_read`` is set while the backlog is read."""

    symbols: dict[str, SymbolMetrics] = attrs.Factory(dict)
    current_role: str = "leader"
    states: dict[str, str] = attrs.Factory(dict)
    backlog: int | None = 0
    budget: Mapping[str, Any] | None = None
    hang: bool = False  # the backlog never answers (a database that accepted the connection, then froze)
    backlog_read: anyio.Event = attrs.Factory(anyio.Event)

    def symbol_metrics(self) -> Mapping[str, SymbolMetrics]:
        return self.symbols

    def role(self) -> str:
        return self.current_role

    def trading_states(self) -> Mapping[str, str]:
        return self.states

    async def outbox_backlog(self) -> int | None:
        self.backlog_read.set()
        if self.hang:
            await anyio.Event().wait()
        return self.backlog

    def rate_limits(self) -> Mapping[str, Any] | None:
        return self.budget


Client = TestClient[web.Request, web.Application]
Families = dict[str, list[Sample]]


@pytest.fixture
def sources() -> FakeSources:
    return FakeSources()


@pytest.fixture
async def client(sources: FakeSources) -> AsyncIterator[Client]:
    sync = FakeSync()
    queries = Queries(None)  # type: ignore[arg-type]  # no request here reaches a query
    api = create_api(queries=queries, api_key=KEY, operators=FakeGateway(), metrics=FakeMetrics(), assets=sync)
    async with TestClient(TestServer(create_app(AllUp(), api=api, scrape=sources))) as test_client:
        yield test_client


def parse(text: str) -> Families:
    """Samples by family name (counters under their name without ``_total``, as the parser has them)."""
    return {family.name: list(family.samples) for family in text_string_to_metric_families(text)}


async def scrape(client: Client) -> Families:
    async with client.get("/metrics") as response:  # no X-API-Key
        assert response.status == 200
        assert response.headers["Content-Type"] == CONTENT_TYPE
        return parse(await response.text())


def value(families: Families, family: str, sample: str | None = None, **labels: str) -> float:
    """The one sample of ``family`` named ``sample`` (default: the family) with exactly these labels."""
    [found] = [s.value for s in families[family] if s.name == (sample or family) and s.labels == labels]
    return found


def symbol(latencies_ms: tuple[float, ...] = (), **counts: int) -> SymbolMetrics:
    recorder = MetricsRecorder()
    for ms in latencies_ms:
        recorder.ack_latency(ms)
    snapshot = recorder.snapshot(mailbox_depth=3, position_size=Decimal("-0.020"), unrealized_pnl=Decimal("12.5"))
    return attrs.evolve(snapshot, **counts)


# --- the exposition from fakes ---------------------------------------------------------------


async def test_per_asset_counters_and_gauges(client: Client, sources: FakeSources) -> None:
    sources.symbols = {
        "BTCUSDT": symbol(signals_received=5, signals_accepted=4, signals_rejected=1, orders_placed=4,
                          orders_filled=3, orders_cancelled=1),
        "ETHUSDT": symbol(signals_received=2, signals_rejected=2),
    }  # fmt: skip
    families = await scrape(client)
    for family, btc, eth in [
        ("ordermgr_signals_received", 5, 2), ("ordermgr_signals_accepted", 4, 0), ("ordermgr_signals_rejected", 1, 2),
        ("ordermgr_orders_placed", 4, 0), ("ordermgr_orders_filled", 3, 0), ("ordermgr_orders_cancelled", 1, 0),
    ]:  # fmt: skip
        assert value(families, family, f"{family}_total", asset="BTCUSDT") == btc
        assert value(families, family, f"{family}_total", asset="ETHUSDT") == eth
    assert value(families, "ordermgr_mailbox_depth", asset="BTCUSDT") == 3
    assert value(families, "ordermgr_position_size", asset="BTCUSDT") == -0.02  # a Decimal, as a float
    assert value(families, "ordermgr_unrealized_pnl_usdt", asset="ETHUSDT") == 12.5


async def test_the_ack_latency_histogram_has_cumulative_buckets_in_seconds(
    client: Client, sources: FakeSources
) -> None:
    sources.symbols = {"BTCUSDT": symbol((4.0, 10.0, 60.0, 3000.0, 45_000.0))}
    families = await scrape(client)
    name = "ordermgr_signal_ack_latency_seconds"
    buckets = {s.labels["le"]: s.value for s in families[name] if s.name == f"{name}_bucket"}
    assert list(buckets) == [*(str(bound) for bound in ACK_LATENCY_BUCKETS_S), "+Inf"]
    assert (buckets["0.005"], buckets["0.01"], buckets["0.05"], buckets["0.1"], buckets["2.5"]) == (1, 2, 2, 3, 3)
    assert (buckets["5.0"], buckets["30.0"], buckets["+Inf"]) == (4, 4, 5)
    assert value(families, name, f"{name}_count", asset="BTCUSDT") == 5
    assert value(families, name, f"{name}_sum", asset="BTCUSDT") == pytest.approx(48.074)


async def test_role_is_one_for_the_current_role_and_zero_for_the_other(client: Client, sources: FakeSources) -> None:
    families = await scrape(client)
    assert (value(families, "ordermgr_role", role="leader"), value(families, "ordermgr_role", role="standby")) == (1, 0)
    sources.current_role = "standby"
    families = await scrape(client)
    assert (value(families, "ordermgr_role", role="leader"), value(families, "ordermgr_role", role="standby")) == (0, 1)


async def test_trading_state_shows_global_and_each_asset_with_a_state_of_its_own(
    client: Client, sources: FakeSources
) -> None:
    def states(families: Families) -> dict[tuple[str, str], float]:
        return {(s.labels["scope"], s.labels["state"]): s.value for s in families["ordermgr_trading_state"]}

    assert states(await scrape(client)) == {("global", "active"): 1, ("global", "reducing"): 0, ("global", "halted"): 0}
    sources.states = {"global": "reducing", "ETHUSDT": "halted"}
    shown = states(await scrape(client))
    assert {key for key, on in shown.items() if on} == {("global", "reducing"), ("ETHUSDT", "halted")}
    assert len(shown) == 6  # every documented state of both scopes, the others at 0


async def test_the_outbox_backlog_is_a_gauge_and_absent_when_unknown(client: Client, sources: FakeSources) -> None:
    sources.backlog = 7
    assert value(await scrape(client), "ordermgr_outbox_backlog") == 7
    sources.backlog = None  # the database is down: the scrape still answers, without the figure
    families = await scrape(client)
    assert "ordermgr_outbox_backlog" not in families
    assert value(families, "ordermgr_role", role="leader") == 1


async def test_a_backlog_that_never_comes_does_not_hold_the_scrape(sources: FakeSources) -> None:
    sources.hang = True
    app = web.Application()
    app.add_routes([metrics_route(sources, backlog_timeout_s=0.05)])
    async with TestClient(TestServer(app)) as client:
        with anyio.fail_after(5):
            families = await scrape(client)
    assert sources.backlog_read.is_set()
    assert "ordermgr_outbox_backlog" not in families and "ordermgr_role" in families


async def test_the_rate_limit_budget_per_endpoint_and_lane(client: Client, sources: FakeSources) -> None:
    sources.budget = busy_budget().figures().as_fields()
    families = await scrape(client)
    create = {"endpoint": "/v5/order/create"}
    assert value(families, "ordermgr_rate_budget_limit", **create) == 10
    assert value(families, "ordermgr_rate_budget_remaining", **create) == 0  # held by the 10006
    assert value(families, "ordermgr_rate_budget_queued", **create) == 1
    assert value(families, "ordermgr_rate_budget_requests", "ordermgr_rate_budget_requests_total", **create) == 2
    assert value(families, "ordermgr_rate_budget_rate_limited", "ordermgr_rate_budget_rate_limited_total",
                 **create) == 1  # fmt: skip
    assert value(families, "ordermgr_rate_budget_wait_seconds", "ordermgr_rate_budget_wait_seconds_total",
                 **create) == 0  # fmt: skip
    assert value(families, "ordermgr_rate_budget_lane_queued", lane="open") == 1
    assert value(families, "ordermgr_rate_budget_lane_requests", "ordermgr_rate_budget_lane_requests_total",
                 lane="close") == 2  # fmt: skip
    assert value(families, "ordermgr_venue_requests_in_flight") == 0
    assert families["ordermgr_rate_budget_limit"][0].labels == {"endpoint": "/v5/account/wallet-balance"}  # sorted


async def test_without_a_budget_its_families_are_absent(client: Client, sources: FakeSources) -> None:
    families = await scrape(client)
    assert not [name for name in families if name.startswith(("ordermgr_rate_budget", "ordermgr_venue"))]


async def test_the_process_collector_reports_cpu_memory_and_file_descriptors(client: Client) -> None:
    families = await scrape(client)
    assert value(families, "process_resident_memory_bytes") > 0
    assert value(families, "process_open_fds") > 0
    assert "process_cpu_seconds" in families


async def test_metrics_needs_no_key_and_the_api_still_does(client: Client) -> None:
    async with client.get("/metrics") as response:
        assert response.status == 200
    async with client.get("/api/v1/metrics") as response:
        assert response.status == 401
    async with client.get("/api/v1/metrics", headers=AUTH) as response:
        assert response.status == 200


async def test_no_sources_no_route() -> None:
    async with TestClient(TestServer(create_app(AllUp()))) as client, client.get("/metrics") as response:
        assert response.status == 404


def test_the_document_describes_metrics_as_an_open_text_endpoint() -> None:
    operation = build_document()["paths"]["/metrics"]["get"]
    assert operation["security"] == [] and list(operation["responses"]) == ["200"]
    assert list(operation["responses"]["200"]["content"]) == ["text/plain"]


# --- the outbox backlog in PostgreSQL --------------------------------------------------------


@pytest.fixture(scope="module")
def backlog_database() -> Iterator[str]:
    with private_database("prometheus") as conninfo:
        yield conninfo


async def test_the_backlog_counts_the_unpublished_events(backlog_database: str) -> None:
    await empty_database(backlog_database)
    await insert(backlog_database, "order_events_outbox", [
        event("sig-1", "created", None, published=True), event("sig-1", "filled", None, published=False),
        event("sig-2", "created", None, published=False), event("sig-3", "rejected", None, published=False),
    ])  # fmt: skip
    async with AsyncConnectionPool(backlog_database, open=False, min_size=1) as pool:
        assert await Queries(pool).outbox_backlog() == 3


async def test_a_database_without_the_schema_is_unavailable_not_an_error() -> None:
    with private_database("prometheus_bare") as bare:  # scraped before the migrations ran
        async with AsyncConnectionPool(bare, open=False, min_size=1) as pool:
            with pytest.raises(StoreUnavailable):
                await Queries(pool).outbox_backlog()


async def test_an_unreachable_database_answers_none_within_the_bound_and_the_scrape_200() -> None:
    dead = f"host=127.0.0.1 port={support.free_port()} dbname=none user=none connect_timeout=1"
    async with AsyncConnectionPool(dead, open=False, min_size=1) as pool:
        queries = Queries(pool)
        with anyio.fail_after(2), pytest.raises(StoreUnavailable):
            await queries.outbox_backlog(timeout_s=0.2)
        with anyio.fail_after(10):  # the default bound (1 s) twice, with room for a busy machine
            live: ScrapeSources = ServiceSources(metrics=FakeMetrics(), queries=queries, role=lambda: "leader",
                                                 trading_states=dict, rate_limits=lambda: None)  # fmt: skip
            assert await live.outbox_backlog() is None
            async with TestClient(TestServer(create_app(AllUp(), scrape=live))) as client:
                families = await scrape(client)
    assert "ordermgr_outbox_backlog" not in families and value(families, "ordermgr_role", role="leader") == 1


# --- the real service ------------------------------------------------------------------------


async def test_the_running_service_exposes_a_signals_counters(clean_database: str) -> None:
    await reset_queues()
    venue = paper_venue(amqp_url=support.AMQP_URL)  # the venue publishes the fill, so the position moves
    async with running_service(venue=venue) as service, aiohttp.ClientSession() as http:
        await publish(QUICKSTART)
        await service.logs.wait_for("fill applied")
        async with http.get(f"http://127.0.0.1:{service.port}/metrics") as response:
            assert response.status == 200 and response.headers["Content-Type"] == CONTENT_TYPE
            families = parse(await response.text())

    btc = {"asset": "BTCUSDT"}
    assert value(families, "ordermgr_signals_received", "ordermgr_signals_received_total", **btc) == 1
    assert value(families, "ordermgr_signals_accepted", "ordermgr_signals_accepted_total", **btc) == 1
    assert value(families, "ordermgr_orders_placed", "ordermgr_orders_placed_total", **btc) == 1
    assert value(families, "ordermgr_position_size", **btc) == 0.02
    ack = "ordermgr_signal_ack_latency_seconds"
    assert value(families, ack, f"{ack}_count", **btc) == 1
    assert value(families, ack, f"{ack}_bucket", le="+Inf", **btc) == 1
    assert value(families, "ordermgr_role", role="leader") == 1
    assert value(families, "ordermgr_trading_state", scope="global", state="active") == 1
    assert value(families, "ordermgr_outbox_backlog") >= 0  # read from the real outbox
    create = {"endpoint": "/v5/order/create"}
    assert value(families, "ordermgr_rate_budget_requests", "ordermgr_rate_budget_requests_total", **create) == 1
    assert value(families, "process_resident_memory_bytes") > 0
