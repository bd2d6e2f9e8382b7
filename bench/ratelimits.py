"""``python -m bench.run --rate-limits``: ordermgr flooded against Bybit's enforced quota
(contract §15). Not a ratio to the floor: the figure to beat is the venue's own limit.

One run: a fresh database, queues and venue process that enforces Bybit's limits (10 creates/s),
ordermgr with ``ORDERMANAGER_SIGNAL_MAX_AGE_SECONDS`` set, then ``--flood-rate`` signals/s over
``--symbols`` symbols for ``--flood-seconds`` (Market buys), five times more than the quota.

Meanwhile ``--probes`` times an operator close and a cancel are injected on a symbol of their
own (the *probe* symbol, long before the flood starts). The close endpoint
(``POST /api/v1/positions/{asset}/close``) belongs to another issue; until it exists the close
is stood in for by a reduce-only order: each probe is a resting Limit buy then a sell signal,
and the sell cancels the buy (contract §7.7: a cancel) and sends a reduce-only Market sell (a
close). Probe signals are stamped 10 minutes ahead: they stand for operator actions, which have
no age, and must not go stale in the queue the flood fills. ``--close-via api`` times the real
endpoint instead (POST → the venue's receipt of the reduce-only order it makes).

Figures:
- creates sent per second: venue receipts (``createdTime``) of every order between the flood's
  first and last (the probes use the quota too);
- 10006 answers / create requests: the venue's own counters (``/paper/state``);
- every signal answered: a final status and an order event each; every refusal ``stale_signal``
  and older than the limit when it was answered; every placed order younger than the limit
  (plus a round trip) when the venue received it;
- close sent → venue: the daemon's ``order sent`` line → the venue's receipt (the budget's part;
  publish → venue also includes the flood's queue, reported for context);
- cancel asked → venue: the sell's decision line → the venue's cancel of the buy; and the
  budget's own cancel-lane waits, from ``GET /api/v1/metrics``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

import aiohttp
import aiormq
import anyio
import attrs
from pamqp import commands as spec

from bench import infra, measure, publisher
from bench.listings import pick_symbols
from bench.phases import Settings, Stage, wait_quiet
from bench.subjects import ORDERMGR, PAPER_KEY, PAPER_SECRET

API_KEY: Final = "bench-api-key"  # what bench.subjects.daemon_env sets
CREATES_MIN_PER_S: Final = 9.5
RATE_LIMITED_MAX_SHARE: Final = 0.01
CLOSE_MAX_MS: Final = 300.0
PROBE_AHEAD: Final = timedelta(minutes=10)
ROUND_TRIP_S: Final = 0.2  # a placed order's venue receipt may trail its deadline by one request
CREATE, CANCEL = "/v5/order/create", "/v5/order/cancel"


@attrs.frozen
class FloodSettings:
    rate: float = 50.0
    seconds: float = 20.0
    symbols: int = 20
    max_age_s: float = 5.0
    probes: int = 4
    close_via: str = "reduce-only"  # or "api"
    amount_usdt: Decimal = Decimal("20")


@attrs.define
class Probe:
    at_s: float  # seconds into the flood
    close_sent_to_venue_ms: float | None = None
    close_publish_to_venue_ms: float | None = None
    cancel_to_venue_ms: float | None = None
    note: str = ""


@attrs.define
class FloodResult:
    settings: dict[str, Any]
    signals: int
    settled: int
    placed: int
    stale_on_pickup: int  # refused before anything was asked of the venue
    stale_waiting: int  # order never sent: the budget had no room before the deadline
    other_outcomes: dict[str, int]  # anything else: what and how many (should be empty)
    unanswered: int  # signals without an order event
    creates_per_s: float
    create_requests: int
    create_rate_limited: int
    cancel_requests: int
    cancel_rate_limited: int
    oldest_placed_s: float  # age of the oldest signal when the venue received its order
    youngest_stale_s: float  # age of the youngest stale_signal refusal when it was answered
    probes: list[Probe]
    daemon_rate_limits: dict[str, Any]
    machine_busy_pct: float
    baseline_busy_pct: float
    log: str

    def as_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


async def run_flood(settings: Settings, flood: FloodSettings) -> FloodResult:
    symbols = pick_symbols(flood.symbols + 1, flood.amount_usdt)
    crowd, probe_symbol = symbols[:-1], symbols[-1]
    port = infra.free_port()
    settings = attrs.evolve(settings, symbols=flood.symbols + 1, enforce_limits=True, daemon_env={
        "ORDERMANAGER_SIGNAL_MAX_AGE_SECONDS": f"{flood.max_age_s:g}", "ORDER_MANAGER_PORT": str(port)})  # fmt: skip
    prices = _prices(settings)
    count = int(flood.rate * flood.seconds)
    items = publisher.plan("flood", count, crowd)
    async with Stage(settings, ORDERMGR, "ordermgr-flood") as stage:
        assert stage.child is not None and stage.control is not None
        await _publish(probe_body("probe-long", probe_symbol, "buy", flood.amount_usdt * 10, prices[probe_symbol]))
        await _wait_status("probe-long", {"accepted"}, 30)
        baseline = await wait_quiet(settings.quiet_pct, settings.quiet_wait_s)
        system0 = measure.system_cpu()
        probes = [Probe(round(flood.seconds * (k + 1) / (flood.probes + 1), 1)) for k in range(flood.probes)]
        posts: dict[int, float] = {}
        async with anyio.create_task_group() as tg:
            started = time.monotonic()
            tg.start_soon(_inject, probes, probe_symbol, prices[probe_symbol], flood, started, port, posts)
            await publisher.publish(items, rate=flood.rate, amount_usdt=flood.amount_usdt, prices=prices)
        expected = count + 1 + (2 * flood.probes if flood.close_via == "reduce-only" else 0)
        await _wait_all_settled(expected, settings.timeout_s)
        busy = measure.busy_percent(system0, measure.system_cpu())
        state = await stage.control.state()
        orders = await anyio.to_thread.run_sync(infra.venue_orders, stage.control.base_url, PAPER_KEY, PAPER_SECRET)
        daemon = await _daemon_rate_limits(port)
        log_path = stage.child.log_path
    outcomes = await _outcomes()
    lines = _log_lines(log_path)
    limits = state.get("rate_limits", {})
    crowd_orders = {link: o for link, o in orders.items() if outcomes.links.get(link, "").startswith("bench-flood-")}
    flood_receipts = [int(o["createdTime"]) for o in crowd_orders.values()]
    # Every create within the flood's span uses the quota, the probes' included.
    span = (min(flood_receipts, default=0), max(flood_receipts, default=0))
    receipts = [int(o["createdTime"]) for o in orders.values() if span[0] <= int(o["createdTime"]) <= span[1]]
    placed_ages = [int(o["createdTime"]) / 1000 - outcomes.stamps[outcomes.links[link]]
                   for link, o in crowd_orders.items()]  # fmt: skip
    _measure_probes(probes, flood, orders, outcomes, lines, posts)
    return FloodResult(
        settings={k: str(v) for k, v in attrs.asdict(flood).items()}, signals=count,
        settled=outcomes.settled, placed=len(flood_receipts), stale_on_pickup=outcomes.stale_on_pickup,
        stale_waiting=outcomes.stale_waiting, other_outcomes=outcomes.other, unanswered=outcomes.unanswered,
        creates_per_s=measure.throughput(receipts),
        create_requests=limits.get(CREATE, {}).get("requests", 0), create_rate_limited=limits.get(CREATE, {}).get(
            "refused", 0), cancel_requests=limits.get(CANCEL, {}).get("requests", 0),
        cancel_rate_limited=limits.get(CANCEL, {}).get("refused", 0),
        oldest_placed_s=max(placed_ages, default=math.nan), youngest_stale_s=outcomes.youngest_stale_s,
        probes=probes, daemon_rate_limits=daemon, machine_busy_pct=busy, baseline_busy_pct=baseline,
        log=str(log_path),
    )  # fmt: skip


# --- the probes -------------------------------------------------------------------------------


def probe_body(signal_id: str, symbol: str, side: str, amount: Decimal, price: Decimal, *, limit: bool = False,
               stamp: datetime | None = None) -> bytes:  # fmt: skip
    """A probe signal: Market (confidence 0.95), or a Limit resting 1 % away (confidence 0.5 and a
    2 % spread), stamped ``stamp`` (default: 10 minutes ahead, see the module docstring)."""
    body: dict[str, Any] = {
        "signal_id": signal_id, "signal_type": side, "asset": symbol, "amount": float(amount),
        "confidence": 0.5 if limit else 0.95,
        "timestamp": (stamp or datetime.now(UTC) + PROBE_AHEAD).isoformat(timespec="milliseconds").replace(
            "+00:00", "Z"),
        "strategy_id": "bench-probe", "trace_id": f"trace-{signal_id}",
        "metadata": {"published_at_ms": round(time.time_ns() / 1e6, 3)},
    }  # fmt: skip
    if limit:
        body["market_data_snapshot"] = {"price": float(price), "spread": float(price * Decimal("0.02"))}
    return json.dumps(body).encode()


async def _inject(probes: Sequence[Probe], symbol: str, price: Decimal, flood: FloodSettings, started: float,
                  port: int, posts: dict[int, float]) -> None:  # fmt: skip
    for k, probe in enumerate(probes):
        await anyio.sleep(max(0.0, started + probe.at_s - time.monotonic()))
        if flood.close_via == "api":
            posts[k] = time.time()
            probe.note = await _post_close(port, symbol)
            continue
        await _publish(probe_body(f"probe-rest-{k}", symbol, "buy", flood.amount_usdt, price, limit=True))
        await _wait_status(f"probe-rest-{k}", {"accepted", "rejected"}, flood.max_age_s + 30)
        await _publish(probe_body(f"probe-close-{k}", symbol, "sell", flood.amount_usdt, price))


async def _post_close(port: int, symbol: str) -> str:
    url = f"http://127.0.0.1:{port}/api/v1/positions/{symbol}/close"
    async with aiohttp.ClientSession() as http, http.post(url, json={}, headers={"X-API-Key": API_KEY}) as answer:
        return f"HTTP {answer.status}" + (": the close endpoint does not exist yet" if answer.status == 404 else "")


def _measure_probes(probes: Sequence[Probe], flood: FloodSettings, orders: dict[str, dict[str, Any]],
                    outcomes: _Outcomes, lines: _Lines, posts: dict[int, float]) -> None:  # fmt: skip
    by_signal: dict[str, list[dict[str, Any]]] = {}
    for link, order in orders.items():
        by_signal.setdefault(outcomes.links.get(link, ""), []).append(order | {"link": link})
    if flood.close_via == "api":
        closes = sorted((o for o in orders.values() if o.get("reduceOnly")), key=lambda o: int(o["createdTime"]))
        for k, probe in enumerate(probes):
            after = [o for o in closes if k in posts and int(o["createdTime"]) >= posts[k] * 1000]
            if after:
                probe.close_publish_to_venue_ms = int(after[0]["createdTime"]) - posts[k] * 1000
        return
    for k, probe in enumerate(probes):
        close = [o for o in by_signal.get(f"probe-close-{k}", []) if o.get("reduceOnly")]
        rest = by_signal.get(f"probe-rest-{k}", [])
        if not close:
            probe.note = "no reduce-only order (see the daemon log)"
            continue
        created = int(close[0]["createdTime"])
        sent = lines.sent.get(close[0]["link"])
        probe.close_sent_to_venue_ms = created - sent if sent else None
        probe.close_publish_to_venue_ms = created - outcomes.published_ms.get(f"probe-close-{k}", math.nan)
        decided = lines.decided.get(f"probe-close-{k}")
        if rest and rest[0]["orderStatus"] == "Cancelled" and decided:
            probe.cancel_to_venue_ms = int(rest[0]["updatedTime"]) - decided


# --- reading what happened ----------------------------------------------------------------------


@attrs.define
class _Outcomes:
    settled: int = 0
    stale_on_pickup: int = 0
    stale_waiting: int = 0
    other: dict[str, int] = attrs.field(factory=dict)
    unanswered: int = 0
    youngest_stale_s: float = math.inf
    links: dict[str, str] = attrs.field(factory=dict)  # orderLinkId → signal_id
    stamps: dict[str, float] = attrs.field(factory=dict)  # signal_id → its timestamp, epoch s
    published_ms: dict[str, float] = attrs.field(factory=dict)  # probe signal_id → metadata.published_at_ms


async def _outcomes() -> _Outcomes:
    out = _Outcomes()
    rows = await _rows("""
        SELECT s.signal_id, s.status, s.rejection_code, extract(epoch FROM s.signal_timestamp),
               extract(epoch FROM s.processed_at), (s.raw_payload->'metadata'->>'published_at_ms')::float,
               (SELECT array_agg(o.rejection_reason) FROM orders o WHERE o.signal_id = s.signal_id),
               EXISTS (SELECT 1 FROM order_events_outbox e WHERE e.body->'order'->>'signal_id' = s.signal_id
                       OR e.body->'signal'->>'signal_id' = s.signal_id)
        FROM signals s""")  # fmt: skip
    for signal_id, status, code, stamp, processed, published, reasons, answered in rows:
        out.stamps[signal_id] = float(stamp)
        if signal_id.startswith("probe-") and published is not None:
            out.published_ms[signal_id] = float(published)
        if not signal_id.startswith("bench-flood-"):
            continue
        out.settled += status in ("accepted", "rejected")
        out.unanswered += not answered
        stale_orders = bool(reasons) and all((r or "").startswith("stale_signal") for r in reasons)
        if status == "accepted":
            continue
        if status == "rejected" and code == "stale_signal":
            out.stale_on_pickup += 1
        elif status == "rejected" and stale_orders:
            out.stale_waiting += 1
        else:
            key = f"{status}:{code or (reasons or ['-'])[0]}"
            out.other[key] = out.other.get(key, 0) + 1
            continue
        if processed is not None:
            out.youngest_stale_s = min(out.youngest_stale_s, float(processed) - float(stamp))
    out.links = {link: signal_id for link, signal_id in await _rows("SELECT order_link_id, signal_id FROM orders")}
    return out


@attrs.define
class _Lines:
    sent: dict[str, float] = attrs.field(factory=dict)  # orderLinkId → "order sent", epoch ms
    decided: dict[str, float] = attrs.field(factory=dict)  # signal_id → "signal validated; decision made"


def _log_lines(path: Path) -> _Lines:
    out = _Lines()
    with path.open(encoding="utf-8", errors="replace") as log:
        for text in log:
            if not text.startswith("{") or '"probe-' not in text and '"order sent"' not in text:
                continue
            line = json.loads(text)
            at = datetime.fromisoformat(line["timestamp"]).timestamp() * 1000
            if line.get("message") == "order sent":
                out.sent[line["order_link_id"]] = at
            elif line.get("message") == "signal validated; decision made":
                out.decided[line["signal_id"]] = at
    return out


async def _rows(query: str) -> list[tuple[Any, ...]]:
    import psycopg

    infra.own_queries += 1
    async with await psycopg.AsyncConnection.connect(infra.BENCH_DSN, autocommit=True) as conn:
        return list(await (await conn.execute(query)).fetchall())


async def _wait_status(signal_id: str, statuses: set[str], timeout_s: float) -> None:
    quoted = "', '".join(sorted(statuses))
    with anyio.fail_after(timeout_s):
        while not await infra.scalar(f"SELECT count(*) FROM signals WHERE signal_id = '{signal_id}' "
                                     f"AND status IN ('{quoted}')"):  # fmt: skip
            await anyio.sleep(0.1)


async def _wait_all_settled(expected: int, timeout_s: float) -> None:
    settled_sql = "SELECT count(*) FROM signals WHERE status NOT IN ('received', 'processing')"
    with anyio.move_on_after(timeout_s):
        while await infra.scalar(settled_sql) < expected:
            await anyio.sleep(0.5)


async def _daemon_rate_limits(port: int) -> dict[str, Any]:
    url = f"http://127.0.0.1:{port}/api/v1/metrics"
    async with aiohttp.ClientSession() as http, http.get(url, headers={"X-API-Key": API_KEY}) as answer:
        body: dict[str, Any] = await answer.json()
    return body.get("rate_limits") or {}


async def _publish(body: bytes) -> None:
    connection = await aiormq.connect(infra.AMQP_URL)
    try:
        channel = await connection.channel()
        properties = spec.Basic.Properties(delivery_mode=2, content_type="application/json")
        await channel.basic_publish(body, routing_key=infra.SIGNAL_QUEUE, properties=properties)
    finally:
        await connection.close()


def _prices(settings: Settings) -> dict[str, Decimal]:
    from bench.listings import bench_listings, extra_symbols_needed, prices

    return prices(bench_listings(extra_symbols_needed(settings.symbols, settings.amount_usdt)))


# --- the report -------------------------------------------------------------------------------


def table(result: FloodResult) -> str:
    s = result.settings
    share = result.create_rate_limited / result.create_requests if result.create_requests else math.nan
    closes = [p.close_sent_to_venue_ms for p in result.probes if p.close_sent_to_venue_ms is not None]
    if s["close_via"] == "api":
        closes = [p.close_publish_to_venue_ms for p in result.probes if p.close_publish_to_venue_ms is not None]
    cancels = [p.cancel_to_venue_ms for p in result.probes if p.cancel_to_venue_ms is not None]
    lane = result.daemon_rate_limits.get("lanes", {})
    cancel_lane, close_lane = lane.get("cancel", {}), lane.get("close", {})
    answered = result.settled == result.signals and not result.unanswered and not result.other_outcomes
    in_limits = result.oldest_placed_s <= float(s["max_age_s"]) + ROUND_TRIP_S and \
        result.youngest_stale_s >= float(s["max_age_s"])  # fmt: skip
    lines = [
        f"rate-limit flood: {result.signals} signals at {s['rate']}/s over {s['symbols']} symbols for "
        f"{s['seconds']} s against the enforced 10 creates/s, ORDERMANAGER_SIGNAL_MAX_AGE_SECONDS={s['max_age_s']}",
        f"  machine busy before / during (all cores): {result.baseline_busy_pct:.0f} % / "
        f"{result.machine_busy_pct:.0f} %",
        f"  creates sent: {result.creates_per_s:.2f}/s ({result.creates_per_s / 10:.2f} of the quota), "
        f"{result.placed} flood orders placed",
        f"  10006 answers: {result.create_rate_limited} of {result.create_requests} create requests ({share:.2%}); "
        f"cancels: {result.cancel_rate_limited} of {result.cancel_requests}",
        f"  signals: {result.settled}/{result.signals} answered ({result.unanswered} without an order event): "
        f"{result.placed} placed, {result.stale_on_pickup + result.stale_waiting} stale_signal "
        f"({result.stale_on_pickup} already stale when picked up, {result.stale_waiting} while their order "
        f"waited), other outcomes {result.other_outcomes or 'none'}",
        f"  oldest signal placed: {result.oldest_placed_s:.2f} s old at the venue; youngest stale_signal: "
        f"{result.youngest_stale_s:.2f} s old when answered",
        f"  close ({'POST /api/v1/positions/{asset}/close' if s['close_via'] == 'api' else 'reduce-only stand-in'}"
        f", sent → venue): {_ms(closes)}",
        f"  close publish → venue (includes the flood's queue): "
        f"{_ms([p.close_publish_to_venue_ms for p in result.probes if p.close_publish_to_venue_ms is not None])}",
        f"  cancel asked → venue: {_ms(cancels)}; budget cancel lane: {cancel_lane.get('requests', 0)} requests, "
        f"{cancel_lane.get('waited', 0)} waited (max {1000 * cancel_lane.get('wait_s_max', 0):.0f} ms); close lane: "
        f"{close_lane.get('requests', 0)} requests, max wait {1000 * close_lane.get('wait_s_max', 0):.0f} ms",
    ]  # fmt: skip
    for k, probe in enumerate(result.probes):
        if probe.note:
            lines.append(f"  probe {k} at {probe.at_s} s: {probe.note}")
    verdicts = [
        (f"creates sent ≥ {CREATES_MIN_PER_S}/s", f"{result.creates_per_s:.2f}/s",
         result.creates_per_s >= CREATES_MIN_PER_S),
        (f"10006 ≤ {RATE_LIMITED_MAX_SHARE:.0%} of create requests", f"{share:.2%}", share <= RATE_LIMITED_MAX_SHARE),
        ("every signal answered: placed, or stale_signal once older than the limit",
         f"{result.settled}/{result.signals}", answered and in_limits),
        (f"a close reaches the venue within {CLOSE_MAX_MS:.0f} ms", _ms(closes),
         bool(closes) and max(closes) <= CLOSE_MAX_MS and len(closes) == len(result.probes)),
        ("cancels never queued behind creates", f"cancel lane waited {cancel_lane.get('waited', 0)} times of "
         f"{cancel_lane.get('requests', 0)}", None if not cancel_lane.get("requests") else not cancel_lane["waited"]),
    ]  # fmt: skip
    words = {True: "PASS", False: "FAIL", None: "n/a"}
    lines += ["", "targets:"] + [f"  [{words[ok]}] {what}: {value}" for what, value, ok in verdicts]
    return "\n".join(lines)


def _ms(values: Sequence[float]) -> str:
    if not values:
        return "none measured"
    return f"max {max(values):.0f} ms, median {sorted(values)[len(values) // 2]:.0f} ms over {len(values)}"


def write_json(path: Path, result: FloodResult) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"rate_limits": result.as_dict(), "report": table(result)}, indent=2, default=str))
