"""``GET /metrics``: the service's figures in the Prometheus text format 0.0.4 (contract §13.5).

Nothing is counted for Prometheus on the hot path. Each scrape reads the figures the service
keeps anyway (the symbol actors' metrics snapshots, the rate-limit budget, the outbox, role and
trading state) through ``ScrapeSources`` and renders them with prometheus-client, whose exposition
code gets the escaping and the histogram conventions right.

The live figures are read on the event loop, because the objects behind them are not
thread-safe, into one immutable ``ScrapeFigures``. Rendering runs in a worker thread, one scrape
at a time: the process collector reads ``/proc``, which is file I/O the event loop never does.
Each scrape gets its own ``CollectorRegistry`` holding that scrape's figures, so concurrent
scrapes share nothing and no global registry is touched.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Protocol

import anyio
import anyio.to_thread
import attrs
from aiohttp import web
from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from ordermgr.db.queries import Queries
from ordermgr.domain.errors import StoreUnavailable
from ordermgr.metrics import MetricsSource, SymbolMetrics

PATH = "/metrics"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# A scrape never waits longer than this for the database: Prometheus's default scrape timeout is
# 10 s, and a late answer would lose every other family along with the backlog. The query bounds
# itself (1 s for a connection, 1 s for the statement); this backstop is for a network that
# froze mid-query, where no server-side timeout can answer.
BACKLOG_TIMEOUT_S = 3.0
ROLES = ("leader", "standby")
TRADING_STATES = ("active", "reducing", "halted")
GLOBAL_SCOPE = "global"


class ScrapeSources(Protocol):
    """Where a scrape reads the service's figures. Every method but ``outbox_backlog`` answers
    from memory at once; none of them may raise for an unavailable dependency."""

    def symbol_metrics(self) -> Mapping[str, SymbolMetrics]:
        """The snapshot of every active symbol."""
        ...

    def role(self) -> str:
        """``leader`` or ``standby`` (contract §13)."""
        ...

    def trading_states(self) -> Mapping[str, str]:
        """Scope (``global`` or an asset) → ``active`` | ``reducing`` | ``halted`` (contract §11).
        A missing ``global`` is ``active``; assets appear once they have a state of their own."""
        ...

    async def outbox_backlog(self) -> int | None:
        """Order events not yet published; None while the database cannot tell."""
        ...

    def rate_limits(self) -> Mapping[str, Any] | None:
        """The rate-limit budget's JSON-ready figures (``BudgetFigures.as_fields()``); None without."""
        ...


@attrs.frozen
class ServiceSources:
    """The running service's sources, as ``app.py`` assembles them. ``role`` and
    ``trading_states`` are plain callables so that leadership and trading controls plug in theirs."""

    metrics: MetricsSource
    queries: Queries
    role: Callable[[], str]
    trading_states: Callable[[], Mapping[str, str]]
    rate_limits: Callable[[], Mapping[str, Any] | None]

    def symbol_metrics(self) -> Mapping[str, SymbolMetrics]:
        return self.metrics.symbol_metrics()

    async def outbox_backlog(self) -> int | None:
        try:
            return await self.queries.outbox_backlog()
        except StoreUnavailable:
            return None


@attrs.frozen
class ScrapeFigures:
    """Everything one scrape shows, read at once and never changed after."""

    symbols: Mapping[str, SymbolMetrics]
    role: str
    trading_states: Mapping[str, str]
    outbox_backlog: int | None
    rate_limits: Mapping[str, Any] | None


async def read_figures(sources: ScrapeSources, backlog_timeout_s: float = BACKLOG_TIMEOUT_S) -> ScrapeFigures:
    """The database first (the only wait), then the in-memory figures, so that those are as
    fresh as the moment the scrape is answered."""
    backlog = None
    with anyio.move_on_after(backlog_timeout_s):
        backlog = await sources.outbox_backlog()
    return ScrapeFigures(
        symbols=dict(sources.symbol_metrics()),
        role=sources.role(),
        trading_states=dict(sources.trading_states()),
        outbox_backlog=backlog,
        rate_limits=sources.rate_limits(),
    )


def render(figures: ScrapeFigures) -> bytes:
    """The exposition of one scrape (blocking: it reads ``/proc``; run it in a worker thread)."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)  # process_cpu_seconds_total, process_resident_memory_bytes, fds...
    registry.register(ServiceCollector(figures))
    return generate_latest(registry)


def metrics_route(sources: ScrapeSources, *, backlog_timeout_s: float = BACKLOG_TIMEOUT_S) -> web.RouteDef:
    """``GET /metrics`` reading ``sources``. Open like the probes: it shows counts, never a secret."""
    # One render at a time: the endpoint is unauthenticated, and a burst of scrapes should queue
    # here rather than take worker threads and CPU from the venue calls.
    limiter = anyio.CapacityLimiter(1)

    async def metrics(request: web.Request) -> web.Response:
        figures = await read_figures(sources, backlog_timeout_s)
        body = await anyio.to_thread.run_sync(render, figures, limiter=limiter)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    return web.get(PATH, metrics)


# --- the families ---------------------------------------------------------------------------

# (SymbolMetrics field, family name, help). Counters are named without ``_total``: the library adds it.
SYMBOL_COUNTERS = (
    ("signals_received", "ordermgr_signals_received", "Trading signals received, per asset, since start."),
    ("signals_accepted", "ordermgr_signals_accepted", "Trading signals accepted, per asset, since start."),
    ("signals_rejected", "ordermgr_signals_rejected", "Trading signals rejected, per asset, since start."),
    ("orders_placed", "ordermgr_orders_placed", "Orders the venue accepted, per asset, since start."),
    ("orders_filled", "ordermgr_orders_filled", "Orders completely filled, per asset, since start."),
    ("orders_cancelled", "ordermgr_orders_cancelled", "Orders cancelled, per asset, since start."),
)
SYMBOL_GAUGES = (
    ("mailbox_depth", "ordermgr_mailbox_depth", "Messages waiting in the asset's mailbox."),
    ("position_size", "ordermgr_position_size", "Signed position size in the asset's base units (long +, short -)."),
    ("unrealized_pnl", "ordermgr_unrealized_pnl_usdt", "Unrealized PnL of the asset's position, in USDT."),
)
ACK_LATENCY = "ordermgr_signal_ack_latency_seconds"

# (field of an endpoint's figures, family name, help), label ``endpoint`` (a Bybit path).
ENDPOINT_GAUGES = (
    ("limit", "ordermgr_rate_budget_limit", "Requests the venue allows per one-second window (its X-Bapi-Limit)."),
    ("remaining", "ordermgr_rate_budget_remaining", "Room left in the window now (0 while a 10006 holds it)."),
    ("in_flight", "ordermgr_rate_budget_in_flight", "Requests sent and not yet answered."),
    ("queued", "ordermgr_rate_budget_queued", "Requests waiting for room now."),
)
ENDPOINT_COUNTERS = (
    ("requests", "ordermgr_rate_budget_requests", "Requests let through since start."),
    ("waited", "ordermgr_rate_budget_waited", "Requests that had to wait for room, since start."),
    ("wait_s_total", "ordermgr_rate_budget_wait_seconds", "Time requests spent waiting for room, since start."),
    ("rate_limited", "ordermgr_rate_budget_rate_limited", "Rate-limit answers (10006, 403, 429) that still came."),
)
# Label ``lane``: cancel, close, open, read (who goes first when requests wait).
LANE_COUNTERS = (
    ("requests", "ordermgr_rate_budget_lane_requests", "Requests let through in the lane since start."),
    ("waited", "ordermgr_rate_budget_lane_waited", "Requests of the lane that had to wait, since start."),
)
LANE_GAUGES = (("queued", "ordermgr_rate_budget_lane_queued", "Requests of the lane waiting now."),)

FamilyType = type[CounterMetricFamily] | type[GaugeMetricFamily]


class ServiceCollector:
    """A prometheus-client collector over one scrape's figures."""

    def __init__(self, figures: ScrapeFigures) -> None:
        self._figures = figures

    def collect(self) -> Iterator[Metric]:
        figures = self._figures
        yield from symbol_families(figures.symbols)
        yield role_family(figures.role)
        yield trading_state_family(figures.trading_states)
        if figures.outbox_backlog is not None:  # absent, not 0, while the database cannot tell
            yield GaugeMetricFamily(
                "ordermgr_outbox_backlog", "Order events in the outbox not yet published.", value=figures.outbox_backlog
            )
        if figures.rate_limits is not None:
            yield from budget_families(figures.rate_limits)


def symbol_families(symbols: Mapping[str, SymbolMetrics]) -> Iterator[Metric]:
    by_asset = {asset: symbols[asset] for asset in sorted(symbols)}
    for table, kind in ((SYMBOL_COUNTERS, CounterMetricFamily), (SYMBOL_GAUGES, GaugeMetricFamily)):
        for field, name, help_text in table:
            # Decimals (position, PnL) become floats here and nowhere else.
            yield labelled(kind, name, help_text, "asset", {a: float(getattr(m, field)) for a, m in by_asset.items()})
    help_text = "From a signal's arrival to its acknowledgement (decided, its orders answered and stored), since start."
    latency = HistogramMetricFamily(ACK_LATENCY, help_text, labels=["asset"])
    for asset, metrics in by_asset.items():
        histogram = metrics.ack_latency_histogram
        buckets = [(str(bound), float(n)) for bound, n in zip(histogram.bounds, histogram.cumulative, strict=True)]
        latency.add_metric([asset], [*buckets, ("+Inf", float(histogram.count))], histogram.sum_s)
    yield latency


def role_family(current: str) -> Metric:
    samples = [((role,), role == current) for role in _known(ROLES, current)]
    return one_hot("ordermgr_role", "1 for the role this instance has now, 0 for the other.", ["role"], samples)


def trading_state_family(states: Mapping[str, str]) -> Metric:
    scopes = {GLOBAL_SCOPE: states.get(GLOBAL_SCOPE, "active")}  # global first, then the assets by name
    scopes.update((scope, states[scope]) for scope in sorted(states) if scope != GLOBAL_SCOPE)
    samples = [
        ((scope, state), state == current)
        for scope, current in scopes.items()
        for state in _known(TRADING_STATES, current)
    ]
    help_text = "1 for the state of each scope now (global, or an asset with a state of its own), 0 for the others."
    return one_hot("ordermgr_trading_state", help_text, ["scope", "state"], samples)


def budget_families(rate_limits: Mapping[str, Any]) -> Iterator[Metric]:
    endpoints, lanes = rate_limits.get("endpoints", {}), rate_limits.get("lanes", {})
    for rows, label, tables in ((endpoints, "endpoint", (ENDPOINT_GAUGES, ENDPOINT_COUNTERS)),
                                (lanes, "lane", (LANE_GAUGES, LANE_COUNTERS))):  # fmt: skip
        for table, kind in zip(tables, (GaugeMetricFamily, CounterMetricFamily), strict=True):
            for field, name, help_text in table:
                yield labelled(kind, name, help_text, label, {key: float(rows[key][field]) for key in sorted(rows)})
    if "in_flight" in rate_limits:
        yield GaugeMetricFamily("ordermgr_venue_requests_in_flight", "Venue requests in flight, every endpoint.",
                                value=float(rate_limits["in_flight"]))  # fmt: skip


def labelled(kind: FamilyType, name: str, help_text: str, label: str, values: Mapping[str, float]) -> Metric:
    family = kind(name, help_text, labels=[label])
    for key, value in values.items():
        family.add_metric([key], value)
    return family


def one_hot(name: str, help_text: str, labels: Sequence[str], samples: Iterable[tuple[Sequence[str], bool]]) -> Metric:
    """A gauge that is 1 for the current value and 0 for the others, so a query can both select
    the current one and see a change as a step."""
    family = GaugeMetricFamily(name, help_text, labels=labels)
    for label_values, current in samples:
        family.add_metric(list(label_values), 1.0 if current else 0.0)
    return family


def _known(options: Iterable[str], current: str) -> tuple[str, ...]:
    """The documented values, and the current one too should it be another (shown, not hidden)."""
    known = tuple(options)
    return known if current in known else (*known, current)
