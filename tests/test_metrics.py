"""The per-symbol metrics recorder, its percentiles, the aggregate and the log fields."""

from __future__ import annotations

import json
import random
from decimal import Decimal

import pytest

from ordermgr.metrics import (
    ACK_LATENCY_BUCKETS_S,
    LatencyHistogram,
    MetricsRecorder,
    ServiceMetrics,
    SymbolMetrics,
    aggregate,
    metrics_fields,
    metrics_log_fields,
    percentile,
    service_log_fields,
)

ZERO = Decimal(0)


def test_counters_count_each_event() -> None:
    recorder = MetricsRecorder()
    for call, times in [
        (recorder.signal_received, 5), (recorder.signal_accepted, 3), (recorder.signal_rejected, 2),
        (recorder.order_placed, 4), (recorder.order_filled, 1), (recorder.order_cancelled, 2),
    ]:  # fmt: skip
        for _ in range(times):
            call()
    snapshot = recorder.snapshot(mailbox_depth=7, position_size=Decimal("-0.5"), unrealized_pnl=Decimal("12.3"))
    assert snapshot == SymbolMetrics(5, 3, 2, 4, 1, 2, 7, None, None, Decimal("-0.5"), Decimal("12.3"))


def test_percentiles_are_nearest_rank_samples() -> None:
    recorder = MetricsRecorder()
    samples = [float(ms) for ms in range(1, 101)]
    random.Random(7).shuffle(samples)  # arrival order must not matter
    for ms in samples:
        recorder.ack_latency(ms)
    snapshot = recorder.snapshot(0, ZERO, ZERO)
    assert (snapshot.ack_latency_p50_ms, snapshot.ack_latency_p99_ms) == (50.0, 99.0)


@pytest.mark.parametrize(
    ("samples", "p50", "p99"),
    [([], None, None), ([4.2], 4.2, 4.2), ([1.0, 9.0], 1.0, 9.0), ([1.0, 2.0, 3.0], 2.0, 3.0)],
)
def test_percentiles_of_few_samples(samples: list[float], p50: float | None, p99: float | None) -> None:
    assert (percentile(samples, 50), percentile(samples, 99)) == (p50, p99)


def test_only_the_most_recent_latencies_count() -> None:
    recorder = MetricsRecorder(latency_window=100)
    for _ in range(1000):
        recorder.ack_latency(5000.0)  # an old slow period...
    for ms in range(1, 101):
        recorder.ack_latency(float(ms))  # ...pushed out by the last 100
    snapshot = recorder.snapshot(0, ZERO, ZERO)
    assert (snapshot.ack_latency_p50_ms, snapshot.ack_latency_p99_ms) == (50.0, 99.0)


def test_a_nan_is_dropped_and_a_negative_latency_counts_as_zero() -> None:
    recorder = MetricsRecorder()
    recorder.ack_latency(float("nan"))
    recorder.ack_latency(-3.0)
    snapshot = recorder.snapshot(0, ZERO, ZERO)
    assert (snapshot.ack_latency_p50_ms, snapshot.ack_latency_p99_ms) == (0.0, 0.0)


def test_the_window_must_hold_a_sample() -> None:
    with pytest.raises(ValueError, match="latency_window"):
        MetricsRecorder(latency_window=0)


def test_aggregate_adds_counters_and_takes_the_worst_percentiles() -> None:
    metrics = {
        "BTCUSDT": SymbolMetrics(signals_received=3, orders_placed=2, mailbox_depth=1, ack_latency_p50_ms=10.0,
                                 ack_latency_p99_ms=80.0, unrealized_pnl=Decimal("-1.5")),
        "ETHUSDT": SymbolMetrics(signals_received=4, signals_rejected=4, ack_latency_p50_ms=20.0,
                                 ack_latency_p99_ms=30.0, unrealized_pnl=Decimal("2.25")),
        "SOLUSDT": SymbolMetrics(signals_received=1, mailbox_depth=5),
    }  # fmt: skip
    assert aggregate(metrics) == ServiceMetrics(
        symbols=3, signals_received=8, signals_rejected=4, orders_placed=2, mailbox_depth=6,
        ack_latency_p50_ms_max=20.0, ack_latency_p99_ms_max=80.0, unrealized_pnl=Decimal("0.75"),
    )  # fmt: skip
    assert aggregate({}) == ServiceMetrics()


def test_log_fields_are_json_ready_with_decimals_as_strings() -> None:
    metrics = SymbolMetrics(signals_received=2, ack_latency_p50_ms=1.23456, ack_latency_p99_ms=2.0,
                            position_size=Decimal("0.010"), unrealized_pnl=Decimal("-3.5"))  # fmt: skip
    fields = metrics_log_fields("BTCUSDT", metrics)
    assert fields == {
        "asset": "BTCUSDT", "signals_received": 2, "signals_accepted": 0, "signals_rejected": 0,
        "orders_placed": 0, "orders_filled": 0, "orders_cancelled": 0, "mailbox_depth": 0,
        "ack_latency_p50_ms": 1.235, "ack_latency_p99_ms": 2.0, "position_size": "0.010", "unrealized_pnl": "-3.5",
    }  # fmt: skip
    json.dumps(fields)  # no Decimal, no float NaN
    service = service_log_fields({"BTCUSDT": metrics})
    assert (service["symbols"], service["unrealized_pnl"], service["ack_latency_p99_ms_max"]) == (1, "-3.5", 2.0)
    assert metrics_fields(ServiceMetrics())["ack_latency_p50_ms_max"] is None


def test_latencies_are_counted_into_cumulative_buckets_in_seconds() -> None:
    recorder = MetricsRecorder()
    # 3 ms and exactly 5 ms (a bound belongs to its own bucket), 7 ms, 1.2 s, and 45 s past the last bound.
    for ms in (3.0, 5.0, 7.0, 1200.0, 45_000.0):
        recorder.ack_latency(ms)
    histogram = recorder.snapshot(0, ZERO, ZERO).ack_latency_histogram
    by_bound = dict(zip(histogram.bounds, histogram.cumulative, strict=True))
    assert histogram.bounds == ACK_LATENCY_BUCKETS_S
    assert (by_bound[0.005], by_bound[0.01], by_bound[1.0], by_bound[2.5], by_bound[30.0]) == (2, 3, 3, 4, 4)
    assert histogram.count == 5
    assert histogram.sum_s == pytest.approx(46.215)


def test_the_histogram_keeps_every_sample_since_start_while_percentiles_keep_the_window() -> None:
    recorder = MetricsRecorder(latency_window=10)
    for _ in range(1000):
        recorder.ack_latency(40.0)
    for _ in range(10):
        recorder.ack_latency(2.0)
    snapshot = recorder.snapshot(0, ZERO, ZERO)
    assert snapshot.ack_latency_p99_ms == 2.0  # the window holds the last ten only
    histogram = snapshot.ack_latency_histogram
    assert (histogram.cumulative[0], histogram.cumulative[-1], histogram.count) == (10, 1010, 1010)
    assert histogram.sum_s == pytest.approx(1000 * 0.040 + 10 * 0.002)


def test_the_histogram_drops_a_nan_and_counts_a_negative_latency_as_zero() -> None:
    recorder = MetricsRecorder()
    recorder.ack_latency(float("nan"))
    recorder.ack_latency(-3.0)
    histogram = recorder.snapshot(0, ZERO, ZERO).ack_latency_histogram
    assert (histogram.cumulative[0], histogram.count, histogram.sum_s) == (1, 1, 0.0)


def test_an_empty_histogram_has_every_bucket_at_zero() -> None:
    histogram = MetricsRecorder().snapshot(0, ZERO, ZERO).ack_latency_histogram
    assert histogram == LatencyHistogram()
    assert histogram.cumulative == (0,) * len(ACK_LATENCY_BUCKETS_S) and histogram.count == 0


def test_the_histogram_stays_out_of_the_json_fields() -> None:
    recorder = MetricsRecorder()
    recorder.ack_latency(12.0)
    fields = metrics_fields(recorder.snapshot(0, ZERO, ZERO))
    assert "ack_latency_histogram" not in fields
    assert fields["ack_latency_p50_ms"] == 12.0
