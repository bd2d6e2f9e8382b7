"""Per-symbol service metrics: a mutable recorder each symbol actor owns, immutable snapshots
for the API and the periodic ``symbol_metrics`` log line (contract §10), and a service-wide
aggregate. Counters are cumulative since the process started; ack latencies (signal received
→ venue acknowledgement) are kept for the most recent ``latency_window`` orders only, so memory
stays bounded however long the service runs, and percentiles are computed on demand. The same
latencies are also counted into fixed buckets since start (a histogram for ``GET /metrics``:
Prometheus derives rates and quantiles from cumulative buckets, not from a recent window)."""

from __future__ import annotations

import bisect
import itertools
import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any, Protocol

import attrs

from ordermgr.domain.events import text

DEFAULT_LATENCY_WINDOW = 1024
# Upper bounds (seconds) of the ack-latency buckets: from a fast venue answer (~5 ms) to a signal
# that waited long for the rate-limit budget (~30 s); anything slower lands in +Inf only.
ACK_LATENCY_BUCKETS_S: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@attrs.frozen
class LatencyHistogram:
    """Cumulative since start, as Prometheus reads a histogram: ``cumulative[i]`` samples took
    at most ``bounds[i]`` seconds; ``count`` (the +Inf bucket) and ``sum_s`` cover every sample."""

    bounds: tuple[float, ...] = ACK_LATENCY_BUCKETS_S
    cumulative: tuple[int, ...] = (0,) * len(ACK_LATENCY_BUCKETS_S)
    count: int = 0
    sum_s: float = 0.0


@attrs.frozen
class SymbolMetrics:
    signals_received: int = 0
    signals_accepted: int = 0
    signals_rejected: int = 0
    orders_placed: int = 0
    orders_filled: int = 0
    orders_cancelled: int = 0
    mailbox_depth: int = 0
    ack_latency_p50_ms: float | None = None  # None until an order has been acknowledged
    ack_latency_p99_ms: float | None = None
    position_size: Decimal = Decimal(0)  # signed, base units
    unrealized_pnl: Decimal = Decimal(0)  # quote currency
    # For the Prometheus exposition only: metrics_fields leaves it out of the JSON API and the logs.
    ack_latency_histogram: LatencyHistogram = LatencyHistogram()


@attrs.frozen
class ServiceMetrics:
    """All symbols together. Percentiles do not add up, so the service-wide latency figures are
    the worst symbol's (an upper bound on the true service-wide percentile)."""

    symbols: int = 0
    signals_received: int = 0
    signals_accepted: int = 0
    signals_rejected: int = 0
    orders_placed: int = 0
    orders_filled: int = 0
    orders_cancelled: int = 0
    mailbox_depth: int = 0
    ack_latency_p50_ms_max: float | None = None
    ack_latency_p99_ms_max: float | None = None
    unrealized_pnl: Decimal = Decimal(0)  # linear contracts: all in the quote currency (USDT)


class MetricsSource(Protocol):
    """What ``GET /api/v1/metrics`` reads: the current snapshot of every active symbol."""

    def symbol_metrics(self) -> Mapping[str, SymbolMetrics]: ...


class MetricsRecorder:
    """One per symbol, written only by that symbol's actor (so no locking)."""

    def __init__(self, *, latency_window: int = DEFAULT_LATENCY_WINDOW) -> None:
        if latency_window < 1:
            raise ValueError("latency_window must be at least 1")
        self._counts = dict.fromkeys(_COUNTERS, 0)
        self._latencies_ms: deque[float] = deque(maxlen=latency_window)
        # One count per bucket, not cumulative, so a sample costs one increment; the last is +Inf.
        self._in_bucket = [0] * (len(ACK_LATENCY_BUCKETS_S) + 1)
        self._latency_sum_s = 0.0

    def signal_received(self) -> None:
        self._counts["signals_received"] += 1

    def signal_accepted(self) -> None:
        self._counts["signals_accepted"] += 1

    def signal_rejected(self) -> None:
        self._counts["signals_rejected"] += 1

    def order_placed(self) -> None:
        self._counts["orders_placed"] += 1

    def order_filled(self) -> None:
        self._counts["orders_filled"] += 1

    def order_cancelled(self) -> None:
        self._counts["orders_cancelled"] += 1

    def ack_latency(self, ms: float) -> None:
        """Record one signal-to-acknowledgement latency. A NaN is dropped; a negative value
        (wall clocks that stepped back) counts as 0 rather than skewing the low percentiles."""
        if math.isnan(ms):
            return
        ms = max(0.0, ms)
        self._latencies_ms.append(ms)
        seconds = ms / 1000
        # bisect_left: a sample equal to a bound belongs to that bucket (Prometheus's ``le``).
        self._in_bucket[bisect.bisect_left(ACK_LATENCY_BUCKETS_S, seconds)] += 1
        self._latency_sum_s += seconds

    def snapshot(self, mailbox_depth: int, position_size: Decimal, unrealized_pnl: Decimal) -> SymbolMetrics:
        latencies = sorted(self._latencies_ms)
        return SymbolMetrics(
            **self._counts,
            mailbox_depth=mailbox_depth,
            ack_latency_p50_ms=percentile(latencies, 50),
            ack_latency_p99_ms=percentile(latencies, 99),
            position_size=position_size,
            unrealized_pnl=unrealized_pnl,
            ack_latency_histogram=self._histogram(),
        )

    def _histogram(self) -> LatencyHistogram:
        cumulative = tuple(itertools.accumulate(self._in_bucket[:-1]))
        return LatencyHistogram(ACK_LATENCY_BUCKETS_S, cumulative, sum(self._in_bucket), self._latency_sum_s)


_COUNTERS = (
    "signals_received", "signals_accepted", "signals_rejected", "orders_placed", "orders_filled", "orders_cancelled",
)  # fmt: skip


def percentile(ordered: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile of an ascending sequence: always one of the samples, so p99 of
    few samples is the largest rather than an interpolated value nobody observed."""
    if not ordered:
        return None
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def aggregate(metrics: Mapping[str, SymbolMetrics]) -> ServiceMetrics:
    values = list(metrics.values())
    counts = {name: sum(getattr(m, name) for m in values) for name in (*_COUNTERS, "mailbox_depth")}
    return ServiceMetrics(
        symbols=len(values),
        **counts,
        ack_latency_p50_ms_max=_max(m.ack_latency_p50_ms for m in values),
        ack_latency_p99_ms_max=_max(m.ack_latency_p99_ms for m in values),
        unrealized_pnl=sum((m.unrealized_pnl for m in values), Decimal(0)),
    )


def _max(values: Iterable[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return max(present) if present else None


_JSON_FIELDS = attrs.filters.exclude(attrs.fields(SymbolMetrics).ack_latency_histogram)


def metrics_fields(metrics: SymbolMetrics | ServiceMetrics) -> dict[str, Any]:
    """JSON-ready fields: Decimals as strings, latencies in ms rounded to the microsecond. The
    latency histogram is left out: the JSON API and the log lines keep their shape."""
    fields = attrs.asdict(metrics, filter=_JSON_FIELDS)
    for name, value in fields.items():
        if isinstance(value, Decimal):
            fields[name] = text(value)
        elif isinstance(value, float):
            fields[name] = round(value, 3)
    return fields


def metrics_log_fields(symbol: str, metrics: SymbolMetrics) -> dict[str, Any]:
    """``extra`` of the per-interval ``symbol_metrics`` log line: ``asset`` is the log field
    that names a symbol everywhere else (contract §10)."""
    return {"asset": symbol, **metrics_fields(metrics)}


def service_log_fields(metrics: Mapping[str, SymbolMetrics]) -> dict[str, Any]:
    """``extra`` of the per-interval service-wide line (``service_metrics``)."""
    return metrics_fields(aggregate(metrics))
