"""Statistics and /proc sampling. No I/O beyond reading /proc; pure where it can be."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Final

import attrs

CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between ranks (numpy's default),
    so p99 of a small sample does not jump to the maximum."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@attrs.frozen
class LatencyStats:
    count: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float

    @classmethod
    def of(cls, latencies_ms: Sequence[float]) -> LatencyStats:
        if not latencies_ms:
            return cls(0, math.nan, math.nan, math.nan, math.nan, math.nan)
        return cls(
            count=len(latencies_ms),
            p50_ms=percentile(latencies_ms, 50),
            p90_ms=percentile(latencies_ms, 90),
            p99_ms=percentile(latencies_ms, 99),
            max_ms=max(latencies_ms),
            mean_ms=sum(latencies_ms) / len(latencies_ms),
        )


def throughput(receipts_ms: Sequence[int]) -> float:
    """Orders per second between the first and the last venue receipt (ms timestamps).

    ``count - 1`` intervals over the span: the first order opens the window, it is not
    "processed" within it."""
    if len(receipts_ms) < 2:
        return math.nan
    span_s = (max(receipts_ms) - min(receipts_ms)) / 1000
    return (len(receipts_ms) - 1) / span_s if span_s > 0 else math.inf


def cpu_seconds(pid: int) -> float:
    """utime + stime of the whole process (every thread), from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
        fields = f.read().rpartition(")")[2].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def system_cpu() -> tuple[float, float]:
    """(busy, total) jiffies over all cores, from the first line of /proc/stat."""
    with open("/proc/stat", encoding="ascii") as f:
        values = [float(v) for v in f.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    total = sum(values[:8])  # guest time is already inside user/nice
    return total - idle, total


def busy_percent(before: tuple[float, float], after: tuple[float, float]) -> float:
    """Share of all cores busy between two ``system_cpu`` readings: tells whether the machine
    (PostgreSQL, RabbitMQ, the venue, the subject, anything else) was saturated."""
    busy, total = after[0] - before[0], after[1] - before[1]
    return 100 * busy / total if total else math.nan


def _status_kb(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(f"{key} missing in /proc/{pid}/status")


def rss_mb(pid: int) -> float:
    """Resident set size now (VmRSS), in MiB."""
    return _status_kb(pid, "VmRSS") / 1024


def peak_rss_mb(pid: int) -> float:
    """Peak resident set size over the process's life (VmHWM), in MiB."""
    return _status_kb(pid, "VmHWM") / 1024


@attrs.frozen
class Trend:
    """Least-squares line through (seconds, MiB) samples."""

    slope_mb_per_min: float
    first_mb: float
    last_mb: float
    samples: int


def rss_trend(samples: Sequence[tuple[float, float]], skip_fraction: float = 0.2) -> Trend:
    """The RSS trend after the warm-up: the first ``skip_fraction`` of the samples is dropped,
    because caches, pools and the allocator's arenas fill up early and that is not a leak."""
    kept = list(samples[int(len(samples) * skip_fraction) :])
    if len(kept) < 2:
        last = kept[-1][1] if kept else math.nan
        return Trend(math.nan, last, last, len(kept))
    n = len(kept)
    mean_t = sum(t for t, _ in kept) / n
    mean_m = sum(m for _, m in kept) / n
    var_t = sum((t - mean_t) ** 2 for t, _ in kept)
    cov = sum((t - mean_t) * (m - mean_m) for t, m in kept)
    slope_per_s = cov / var_t if var_t else 0.0
    return Trend(slope_per_s * 60, kept[0][1], kept[-1][1], n)


def ratio(value: float, floor: float) -> float:
    if not floor or math.isnan(floor) or math.isnan(value):
        return math.nan
    return value / floor
