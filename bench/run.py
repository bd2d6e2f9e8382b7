"""``python -m bench.run``: the floor, then ordermgr, each burst and paced, each run with a fresh
database, fresh queues and its own paper venue process; then the optional memory soak.

Prints a table (floor | ordermgr | ratio) with PASS/FAIL per target and writes
``bench/results/latest.json``. Every child process is stopped on exit, also on Ctrl-C/SIGTERM.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from types import FrameType
from typing import Any

import anyio

from bench import infra, procs, ratelimits, report
from bench.listings import pick_symbols
from bench.phases import PhaseResult, Settings, SoakResult, run_phase, run_soak
from bench.subjects import FLOOR, ORDERMGR, Subject

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    add = parser.add_argument
    add("--signals", type=int, default=2000, help="signals per run (default 2000; 0 = no burst run)")
    add("--symbols", type=int, default=20, help="symbols, round-robin (default 20)")
    add("--rate", type=float, default=0, help="burst publish rate per second; 0 = as fast as possible")
    add("--paced-rate", type=float, default=200, help="paced run's rate per second (0 = skip the paced run)")
    add("--paced-signals", type=int, default=None, help="signals in the paced run (default: --signals)")
    add("--amount", type=Decimal, default=Decimal("20"), help="USDT per signal (default 20)")
    add("--soak-seconds", type=float, default=0, help="ordermgr memory run length; 0 = skip (600 = the target)")
    add("--soak-rate", type=float, default=None, help="soak publish rate (default: --paced-rate)")
    add("--soak-venue-reset", type=int, default=5000,
        help="reset the paper venue every N orders during the soak (0 = never)")
    add("--skip-floor", action="store_true", help="measure ordermgr only (no ratios)")
    add("--skip-ordermgr", action="store_true", help="measure the floor only")
    add("--no-venue-events", action="store_true",
        help="venue publishes no ws-gateway.order events (nor ticker events: every price is read over REST)")
    add("--price-walk", type=float, default=0.1,
        help="seconds between the venue's price steps, each on its ticker stream (default 0.1, as Bybit pushes "
             "tickers); 0 = frozen prices: ordermgr's stream prices age and it reads the REST ticker")
    add("--venue-latency-ms", type=float, default=0,
        help="add a run with this network delay on every venue request, market data included (e.g. 25): "
             "each round trip on a signal's path shows in its latency; 0 = no such run")
    add("--venue-latency-rate", type=float, default=50, help="that run's publish rate per second (default 50)")
    add("--venue-latency-signals", type=int, default=500, help="that run's signals (default 500)")
    add("--venue-rate-limits", action="store_true",
        help="keep the venue's Bybit limits (10 creates/s, enforced), which ordermgr obeys and the floor meets "
             "as 10006; by default they are lifted so the bench measures ordermgr, not the quota")
    add("--rate-limits", action="store_true",
        help="instead of the floor comparison: ordermgr flooded against the venue's enforced Bybit limits "
             "(bench/ratelimits.py); --symbols, --amount and the --flood-*, --max-age, --probes options")
    add("--flood-rate", type=float, default=50, help="--rate-limits: signals/s offered (default 50)")
    add("--flood-seconds", type=float, default=20, help="--rate-limits: how long (default 20)")
    add("--max-age", type=float, default=5, help="--rate-limits: ORDERMANAGER_SIGNAL_MAX_AGE_SECONDS (default 5)")
    add("--probes", type=int, default=4, help="--rate-limits: closes and cancels injected during the flood")
    add("--count-venue-calls", action="store_true",
        help="venue access log on; reports venue requests per signal by path (adds a little venue CPU)")
    add("--profile", action="store_true", help="py-spy ordermgr during each of its runs (needs py-spy in the venv)")
    add("--quiet", type=float, default=25,
        help="before each run wait (up to 120 s) until the machine is at most this %% busy; 0 = don't wait")
    add("--timeout", type=float, default=600, help="seconds to wait for one run to settle")
    add("--output", type=Path, default=RESULTS / "latest.json")
    args = parser.parse_args(argv)
    if args.soak_rate is None:
        args.soak_rate = args.paced_rate or 200
    if args.paced_signals is None:
        args.paced_signals = args.signals
    return args


async def bench(args: argparse.Namespace) -> tuple[dict[str, dict[str, PhaseResult]], SoakResult | None]:
    settings = Settings(
        repo=REPO, results=RESULTS, symbols=args.symbols, amount_usdt=args.amount, timeout_s=args.timeout,
        venue_events=not args.no_venue_events, profile=args.profile, count_venue_calls=args.count_venue_calls,
        quiet_pct=args.quiet,
        enforce_limits=args.venue_rate_limits, price_walk_s=args.price_walk,
    )  # fmt: skip
    subjects: list[Subject] = ([] if args.skip_floor else [FLOOR]) + ([] if args.skip_ordermgr else [ORDERMGR])
    phases = [("burst", args.signals, args.rate, 0.0)] if args.signals > 0 else []
    if args.paced_rate > 0 and args.paced_signals > 0:
        phases.append(("paced", args.paced_signals, args.paced_rate, 0.0))
    if args.venue_latency_ms > 0 and args.venue_latency_signals > 0:
        phases.append(("delayed", args.venue_latency_signals, args.venue_latency_rate, args.venue_latency_ms))
    symbols = pick_symbols(args.symbols, args.amount)
    print(f"bench: {len(symbols)} symbols ({', '.join(symbols)}), {args.amount} USDT per signal", flush=True)
    results: dict[str, dict[str, PhaseResult]] = {}
    for subject in subjects:
        for phase, count, rate, latency_ms in phases:
            label = "as fast as possible" if rate == 0 else f"at {rate:g}/s"
            label += f", venue +{latency_ms:g} ms per request" if latency_ms else ""
            print(f"bench: {subject.name} {phase}: {count} signals {label} ...", flush=True)
            started = time.monotonic()
            result = await run_phase(settings, subject, phase, count, rate, latency_ms)
            results.setdefault(subject.name, {})[phase] = result
            print(f"bench:   {result.throughput:.1f} orders/s, p50 {result.latency.p50_ms:.1f} ms, "
                  f"p99 {result.latency.p99_ms:.1f} ms, CPU {result.cpu_s:.2f} s, "
                  f"peak RSS {result.peak_rss_mb:.1f} MiB ({time.monotonic() - started:.0f} s)",
                  flush=True)  # fmt: skip
    soak = None
    if args.soak_seconds > 0 and not args.skip_ordermgr:
        print(f"bench: ordermgr soak: {args.soak_seconds:g} s at {args.soak_rate:g}/s ...", flush=True)
        soak = await run_soak(settings, ORDERMGR, args.soak_seconds, args.soak_rate, args.soak_venue_reset)
    with anyio.CancelScope(shield=True):
        await infra.drop_database()
    return results, soak


def flood(args: argparse.Namespace) -> int:
    # Frozen prices (as before the ticker stream): the flood is about the account's quota, and
    # its probes' resting orders must not fill by a move of the market.
    settings = Settings(repo=REPO, results=RESULTS, symbols=args.symbols, amount_usdt=args.amount,
                        timeout_s=args.timeout, venue_events=not args.no_venue_events, enforce_limits=True,
                        quiet_pct=args.quiet, price_walk_s=0.0)  # fmt: skip
    options = ratelimits.FloodSettings(rate=args.flood_rate, seconds=args.flood_seconds, symbols=args.symbols,
                                       max_age_s=args.max_age, probes=args.probes,
                                       amount_usdt=args.amount)  # fmt: skip
    print(f"bench: rate-limit flood, {options.rate:g} signals/s over {options.symbols} symbols for "
          f"{options.seconds:g} s ...", flush=True)  # fmt: skip

    async def run() -> ratelimits.FloodResult:
        try:
            return await ratelimits.run_flood(settings, options)
        finally:
            with anyio.CancelScope(shield=True):
                await infra.drop_database()

    try:
        result = anyio.run(run, backend="asyncio")
    except KeyboardInterrupt:
        print("bench: interrupted; stopping child processes", file=sys.stderr)
        return 130
    finally:
        procs.stop_all()
    print()
    print(ratelimits.table(result))
    output = args.output.with_name("rate-limits.json") if args.output == RESULTS / "latest.json" else args.output
    ratelimits.write_json(output, result)
    print(f"\nresults: {output}")
    return 0


def _stop_on_signal(signum: int, frame: FrameType | None) -> None:
    # Turn SIGTERM/SIGHUP into the same unwinding as Ctrl-C, so `finally` stops the children.
    print(f"bench: got {signal.Signals(signum).name}", file=sys.stderr, flush=True)
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(signum, _stop_on_signal)
    infra.ensure_services(REPO)
    if args.rate_limits:
        return flood(args)
    try:
        results, soak = anyio.run(bench, args, backend="asyncio")
    except KeyboardInterrupt:
        print("bench: interrupted; stopping child processes", file=sys.stderr)
        return 130
    finally:
        procs.stop_all()
    print()
    print(report.table(results, soak))
    settings: dict[str, Any] = {k: (str(v) if isinstance(v, Decimal | Path) else v) for k, v in vars(args).items()}
    report.write_json(args.output, results, soak, settings)
    print(f"\nresults: {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
