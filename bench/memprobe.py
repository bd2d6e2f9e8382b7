"""``python -m bench.memprobe``: where ordermgr's memory grows, by allocation site.

Runs the service in-process under ``tracemalloc`` (the bench's own venue process, fresh database
and queues, logging configured as ``python -m ordermgr`` does, stdout to a log file), publishes a
warm-up batch, snapshots, publishes ``--signals`` more, snapshots again, and prints the
allocation sites whose live memory grew most between the two snapshots (after ``gc.collect``).
Growth that scales with the second batch is what the soak's RSS trend shows.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
import tracemalloc
import types
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path

import anyio

from bench import infra, procs, publisher
from bench.listings import bench_listings, extra_symbols_needed, pick_symbols, prices
from bench.run import REPO, RESULTS
from bench.subjects import PAPER_KEY, PAPER_SECRET, daemon_env


async def _publish_and_settle(tag: str, count: int, rate: float, symbols: list[str], amount: Decimal,
                              price_of: dict[str, Decimal], already: int) -> None:  # fmt: skip
    items = publisher.plan(tag, count, symbols)
    await publisher.publish(items, rate=rate, amount_usdt=amount, prices=price_of)
    query = "SELECT count(*) FROM signals WHERE status NOT IN ('received', 'processing')"
    last, changed_at = -1, time.monotonic()
    # Until all are settled, or nothing moved for 20 s with the queue empty (signals taken by
    # another consumer on the shared broker are reported, not waited for).
    while (settled := await infra.scalar(query)) < already + count:
        if settled != last:
            last, changed_at = settled, time.monotonic()
        elif time.monotonic() - changed_at > 20 and (await infra.queue_state(infra.SIGNAL_QUEUE))[0] == 0:
            print(f"memprobe: {tag}: {already + count - settled} signals never arrived", file=sys.stderr)
            break
        await anyio.sleep(0.5)
    await anyio.sleep(3)  # trailing fills and outbox


def _snapshot() -> tracemalloc.Snapshot:
    gc.collect()
    return tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, "<frozen importlib._bootstrap*>")]
    )


def _describe(obj: object) -> str:
    text = repr(obj)
    return f"{type(obj).__module__}.{type(obj).__qualname__} {text[:150]}"


def who_holds(type_name: str, depth: int = 5) -> str:
    """The chain of referrers that keeps one (middle-aged) live ``type_name`` instance alive:
    at each level the first referrer that is not a frame or this function's own list."""
    gc.collect()
    found = [o for o in gc.get_objects() if type(o).__name__ == type_name]
    if not found:
        return f"no live {type_name} objects"
    lines = [f"{len(found)} live {type_name} objects; what holds one of them (innermost first):"]
    current: object = found[len(found) // 2]
    seen = {id(found), id(current)}
    for level in range(depth):
        raw = gc.get_referrers(current)
        seen.add(id(raw))  # the list get_referrers returns refers to everything it found
        referrers = [r for r in raw if id(r) not in seen and not isinstance(r, types.FrameType)]
        seen.add(id(referrers))
        if not referrers:
            lines.append(f"  {level}: (no further referrers)")
            break
        for r in referrers[:3]:
            lines.append(f"  {level}: {_describe(r)}")
        current = referrers[0]
        seen.add(id(current))
    del found
    return "\n".join(lines)


def _report(before: tracemalloc.Snapshot, after: tracemalloc.Snapshot, signals: int, top: int) -> str:
    lines = []
    total = sum(s.size_diff for s in after.compare_to(before, "filename"))
    lines.append(f"live Python memory grew {total / 1024:.0f} KiB over {signals} signals "
                 f"({total / signals:.0f} B per signal)")  # fmt: skip
    lines.append(f"\n-- top {top} lines by growth")
    for stat in after.compare_to(before, "lineno")[:top]:
        frame = stat.traceback[0]
        lines.append(f"{stat.size_diff / 1024:9.1f} KiB {stat.count_diff:+8d} blocks  {frame.filename}:{frame.lineno}")
    lines.append(f"\n-- top {min(top, 8)} tracebacks by growth (innermost last)")
    for stat in after.compare_to(before, "traceback")[: min(top, 8)]:
        lines.append(f"{stat.size_diff / 1024:9.1f} KiB {stat.count_diff:+8d} blocks")
        for text in stat.traceback.format(limit=12)[-24:]:
            lines.append("      " + text)
    return "\n".join(lines)


async def probe(args: argparse.Namespace) -> str:
    from ordermgr import app
    from ordermgr.config import load_config
    from ordermgr.logs import configure_logging

    await infra.delete_queues()
    await infra.fresh_database()
    extra = extra_symbols_needed(args.symbols, args.amount)
    port = infra.free_port()
    argv = [sys.executable, "-m", "bench.venue", "--host", "127.0.0.1", "--port", str(port), "--price-walk-interval",
            "0", "--initial-balance", "1000000000000", "--extra-symbols", str(extra), "--lift-rate-limits",
            "--amqp-url", infra.AMQP_URL]  # fmt: skip
    venue = procs.spawn("venue", argv, env=procs.python_env(REPO, {}), cwd=REPO,
                        log_path=RESULTS / "logs" / "memprobe-venue.log")  # fmt: skip
    control = infra.VenueControl(f"http://127.0.0.1:{port}")
    try:
        await control.wait_up(30)
        config = load_config(daemon_env(control.base_url))
        configure_logging(config.log_level, config.service_name)
        symbols = pick_symbols(args.symbols, args.amount)
        price_of = prices(bench_listings(extra))
        stop = anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: app.run(config, stop=stop, handle_signals=False, http_host="127.0.0.1"))
            with anyio.fail_after(60):
                while await infra.consumer_count(infra.SIGNAL_QUEUE) < 1:
                    await anyio.sleep(0.2)
            await _publish_and_settle("warm", args.warmup, args.rate, symbols, args.amount, price_of, 0)
            before = _snapshot()
            started = time.monotonic()
            await _publish_and_settle("grow", args.signals, args.rate, symbols, args.amount, price_of, args.warmup)
            after = _snapshot()
            print(f"memprobe: second batch took {time.monotonic() - started:.0f} s", file=sys.stderr)
            holders = "\n\n".join(who_holds(name) for name in args.holders)
            stop.set()
        return _report(before, after, args.signals, args.top) + ("\n\n" + holders if holders else "")
    finally:
        venue.stop(5)
        with anyio.CancelScope(shield=True):
            await infra.delete_queues()
            await infra.drop_database()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.memprobe", description=__doc__)
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--signals", type=int, default=3000)
    parser.add_argument("--rate", type=float, default=40, help="publish rate (the service must keep up)")
    parser.add_argument("--symbols", type=int, default=20)
    parser.add_argument("--amount", type=Decimal, default=Decimal("20"))
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--holders", nargs="*", default=["Signal"],
                        help="class names whose live instances' referrer chains to print")
    parser.add_argument("--frames", type=int, default=10, help="tracemalloc traceback depth")
    args = parser.parse_args(argv)
    tracemalloc.start(args.frames)
    log_path = RESULTS / "logs" / "memprobe-ordermgr.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    real_stdout = sys.stdout
    try:
        with log_path.open("w") as log:
            sys.stdout = log  # the service logs JSON lines to stdout
            text = anyio.run(probe, args, backend="asyncio")
    finally:
        sys.stdout = real_stdout
        procs.stop_all()
    out = RESULTS / "memprobe.txt"
    out.write_text(text + "\n")
    print(text)
    print(f"\nreport: {out}; service log: {log_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
