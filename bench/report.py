"""The table, the verdicts and ``bench/results/latest.json``."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import attrs

from bench.measure import ratio
from bench.phases import PhaseResult, SoakResult

THROUGHPUT_MIN_RATIO: Final = 0.8  # ordermgr ≥ 80 % of the floor's orders/s (burst)
P99_MAX_RATIO: Final = 2.0  # ordermgr's p99 at the paced rate ≤ 2 × the floor's
RSS_MAX_MB: Final = 150.0  # absolute, after 100 000 signals
# "Flat": the least-squares RSS trend after the first 20 % of the soak stays under this;
# 0.5 MiB/min is 5 MiB over the 10-minute run.
FLAT_MAX_MB_PER_MIN: Final = 0.5

Results = Mapping[str, Mapping[str, PhaseResult]]  # subject → phase → result
# burst and paced as they come; delayed: paced with a network delay on every venue request
# (--venue-latency-ms), where each round trip on a signal's path adds to its latency.
PHASES: Final = ("burst", "paced", "delayed")


@attrs.frozen
class Verdict:
    target: str
    value: str
    passed: bool | None  # None = not measured in this run

    @property
    def word(self) -> str:
        return {True: "PASS", False: "FAIL", None: "n/a"}[self.passed]


def _fmt(value: float | None, digits: int = 1) -> str:
    if value is None or math.isnan(value):
        return "-"
    return f"{value:,.{digits}f}"


def _row(label: str, floor: float | None, ours: float | None, digits: int = 1, note: str = "") -> list[str]:
    r = ratio(ours, floor) if floor is not None and ours is not None else math.nan
    return [label, _fmt(floor, digits), _fmt(ours, digits), _fmt(r, 2), note]


def _get(results: Results, subject: str, phase: str) -> PhaseResult | None:
    return results.get(subject, {}).get(phase)


def rows(results: Results) -> list[list[str]]:
    out: list[list[str]] = []
    for phase in PHASES:
        f, o = _get(results, "floor", phase), _get(results, "ordermgr", phase)
        any_ = o or f
        if any_ is None:
            continue
        rate = "as fast as possible" if any_.rate == 0 else f"{any_.rate:g}/s"
        delay = f", venue +{any_.venue_latency_ms:g} ms per request" if any_.venue_latency_ms else ""
        out.append([f"{phase}: {any_.signals} signals, {rate}{delay}", "", "", "", ""])

        def both(attr: str) -> tuple[float | None, float | None]:
            return (_attr(f, attr), _attr(o, attr))

        out.append(_row("  throughput (orders/s)", *both("throughput"),
                        note=f"target ratio ≥ {THROUGHPUT_MIN_RATIO}" if phase == "burst" else ""))  # fmt: skip
        for q in ("p50", "p90", "p99"):
            note = f"target ratio ≤ {P99_MAX_RATIO}" if phase == "paced" and q == "p99" else ""
            out.append(_row(f"  publish→venue {q} (ms)", *both(f"latency.{q}_ms"), note=note))
        out.append(_row("  publish→venue max (ms)", *both("latency.max_ms")))
        out.append(_row("  CPU (s)", *both("cpu_s"), digits=2))
        out.append(_row("  CPU per signal (ms)", *both("cpu_ms_per_signal"), digits=2))
        out.append(_row("  CPU before any signal (% of a core)", *both("idle_cpu_pct"),
                        note="ordermgr: the ticker stream (in CPU above too)"))  # fmt: skip
        out.append(_row("  peak RSS (MiB)", *both("peak_rss_mb")))
        out.append(_row("  venue CPU (s)", *both("venue_cpu_s"), digits=2))
        out.append(_row("  machine busy, all cores (%)", *both("system_busy_pct"), note="context, not a target"))
        out.append(_row("  machine busy before, idle subject (%)", *both("baseline_busy_pct"),
                        note="others' work on the box"))  # fmt: skip
        out.append(_row("  DB commits per signal", *both("db_commits_per_signal"), digits=2))
        out.append(_row("  DB rows written per signal", *both("db_rows_per_signal"), digits=2))
        paths = sorted({k for r in (f, o) if r for k in r.venue_calls_per_signal})
        for path in paths:
            fv = f.venue_calls_per_signal.get(path, 0.0) if f else None
            ov = o.venue_calls_per_signal.get(path, 0.0) if o else None
            out.append(_row(f"  venue {path} per signal", fv, ov, digits=2))
        out.append(_row("  venue orders placed", *both("placed"), digits=0))
        if (f and f.refused) or (o and o.refused):
            out.append(_row("  signals refused (no order)", *both("refused"), digits=0))
        if phase != "burst":
            out.append(_row("  achieved publish rate (/s)", *both("publish_rate")))
    return out


def _attr(result: PhaseResult | None, path: str) -> float | None:
    if result is None:
        return None
    value: Any = result
    for part in path.split("."):
        value = getattr(value, part)
    return float(value)


def verdicts(results: Results, soak: SoakResult | None) -> list[Verdict]:
    out: list[Verdict] = []
    fb, ob = _get(results, "floor", "burst"), _get(results, "ordermgr", "burst")
    if fb and ob:
        r = ratio(ob.throughput, fb.throughput)
        out.append(Verdict(f"throughput ≥ {THROUGHPUT_MIN_RATIO:.0%} of the floor's", f"{r:.2f}",
                           r >= THROUGHPUT_MIN_RATIO))  # fmt: skip
    else:
        out.append(Verdict(f"throughput ≥ {THROUGHPUT_MIN_RATIO:.0%} of the floor's", "floor or ordermgr skipped",
                           None))  # fmt: skip
    fp, op = _get(results, "floor", "paced"), _get(results, "ordermgr", "paced")
    if fp and op:
        r = ratio(op.latency.p99_ms, fp.latency.p99_ms)
        out.append(Verdict(f"p99 at {op.rate:g}/s ≤ {P99_MAX_RATIO:g}× the floor's", f"{r:.2f}", r <= P99_MAX_RATIO))
    else:
        out.append(Verdict(f"p99 paced ≤ {P99_MAX_RATIO:g}× the floor's", "floor or ordermgr skipped", None))
    if soak is not None:
        out.append(Verdict(f"RSS ≤ {RSS_MAX_MB:g} MiB after {soak.published} signals",
                           f"{soak.end_rss_mb:.1f} MiB (peak {soak.peak_rss_mb:.1f})",
                           soak.peak_rss_mb <= RSS_MAX_MB))  # fmt: skip
        slope = soak.trend.slope_mb_per_min
        flat = not math.isnan(slope) and slope <= FLAT_MAX_MB_PER_MIN
        out.append(Verdict(f"memory flat over {soak.seconds / 60:.1f} min (trend ≤ {FLAT_MAX_MB_PER_MIN} MiB/min)",
                           f"{slope:+.2f} MiB/min", flat))  # fmt: skip
    else:
        peaks = [r.peak_rss_mb for r in results.get("ordermgr", {}).values()]
        if peaks:
            n = max(r.signals for r in results["ordermgr"].values())
            out.append(Verdict(f"RSS ≤ {RSS_MAX_MB:g} MiB (only {n} signals; 100 000: --soak-seconds 600)",
                               f"peak {max(peaks):.1f} MiB", max(peaks) <= RSS_MAX_MB))  # fmt: skip
        out.append(Verdict("memory flat over 10 min", "not run (--soak-seconds 600)", None))
    return out


def table(results: Results, soak: SoakResult | None) -> str:
    header = ["metric", "floor", "ordermgr", "ratio", "note"]
    body = rows(results)
    if soak is not None:
        body.append([f"soak ({soak.subject}): {soak.published} signals at {soak.rate:g}/s for {soak.seconds:g} s",
                     "", "", "", ""])  # fmt: skip
        body.append(["  RSS start → end (MiB)", "", f"{soak.start_rss_mb:.1f} → {soak.end_rss_mb:.1f}", "", ""])
        body.append(["  peak RSS (MiB)", "", f"{soak.peak_rss_mb:.1f}", "", f"target ≤ {RSS_MAX_MB:g}"])
        body.append(["  RSS trend after warm-up (MiB/min)", "", f"{soak.trend.slope_mb_per_min:+.2f}", "",
                     f"target ≤ {FLAT_MAX_MB_PER_MIN}"])  # fmt: skip
        body.append(["  settled / max backlog", "", f"{soak.settled} / {soak.max_backlog}", "",
                     "drained" if soak.drained else "NOT drained"])  # fmt: skip
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = [c.rjust(w) if i < 3 else c.ljust(w) for i, (c, w) in enumerate(zip(cells[1:], widths[1:]))]
        return " | ".join([first, *rest]).rstrip()

    sep = "-+-".join("-" * w for w in widths)
    lines = [line(header), sep, *(line(r) for r in body), "", "targets:"]
    tainted = [f"{r.subject} {r.phase}" for phases in results.values() for r in phases.values() if r.foreign_consumers]
    if soak is not None and soak.foreign_consumers:
        tainted.append(f"{soak.subject} soak")
    if tainted:
        lines.insert(-1, f"WARNING: another consumer shared the signal queue during: {', '.join(tainted)}")
    for v in verdicts(results, soak):
        lines.append(f"  [{v.word}] {v.target}: {v.value}")
    return "\n".join(lines)


def write_json(path: Path, results: Results, soak: SoakResult | None, settings: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "settings": dict(settings),
        "runs": {s: {p: r.as_dict() for p, r in phases.items()} for s, phases in results.items()},
        "ratios": _ratios(results),
        "soak": soak.as_dict() if soak else None,
        "verdicts": [{"target": v.target, "value": v.value, "result": v.word} for v in verdicts(results, soak)],
    }
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")


def _ratios(results: Results) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for phase in PHASES:
        f, o = _get(results, "floor", phase), _get(results, "ordermgr", phase)
        if not (f and o):
            continue
        out[phase] = {
            "throughput": ratio(o.throughput, f.throughput),
            "p50": ratio(o.latency.p50_ms, f.latency.p50_ms),
            "p90": ratio(o.latency.p90_ms, f.latency.p90_ms),
            "p99": ratio(o.latency.p99_ms, f.latency.p99_ms),
            "cpu": ratio(o.cpu_s, f.cpu_s),
            "peak_rss": ratio(o.peak_rss_mb, f.peak_rss_mb),
        }
    return out
