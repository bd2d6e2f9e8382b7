"""``python -m bench.run --rate-limits``: ordermgr flooded against Bybit's enforced quota
(contract §15). Not a ratio to the floor: the figure to beat is the venue's own limit.

One run: a fresh database, queues and venue process that enforces Bybit's limits (10 creates/s),
ordermgr with ``ORDERMANAGER_SIGNAL_MAX_AGE_SECONDS`` set, then ``--flood-rate`` signals/s over
``--symbols`` symbols for ``--flood-seconds`` (Market buys), five times more than the quota.

Meanwhile ``--probes`` times an operator's cancel and close are asked for, each on a *probe*
symbol of its own: before the flood each probe symbol gets a position (a Market buy) and a
resting Limit buy; during the flood the operator cancels the resting order
(``POST /api/v1/orders/{id}/cancel``) and then closes the position
(``POST /api/v1/positions/{asset}/close``), as in an incident. Operator actions have no age and
never wait in the signal queue the flood fills; what they compete for is the account's budget.

Figures:
- creates sent per second: venue receipts (``createdTime``) of every order between the flood's
  first and last (the probes use the quota too);
- 10006 answers / create requests: the venue's own counters (``/paper/state``);
- every signal answered: a final status and an order event each; every refusal ``stale_signal``
  and older than the limit when it was answered; every placed order younger than the limit
  (plus a round trip) when the venue received it;
- close asked → venue: the POST → the venue's receipt of the reduce-only order the close makes
  (the whole path: the request recorded, the leader woken, the symbol's actor, the budget);
- cancel asked → venue: the POST → the venue's cancel of the resting order; and the budget's own
  cancel-lane waits, from ``GET /api/v1/metrics``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from datetime import UTC, datetime
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
from ordermgr.domain.decision import order_link_id

API_KEY: Final = "bench-api-key"  # what bench.subjects.daemon_env sets
CREATES_MIN_PER_S: Final = 9.5
RATE_LIMITED_MAX_SHARE: Final = 0.01
CLOSE_MAX_MS: Final = 300.0
ROUND_TRIP_S: Final = 0.2  # a placed order's venue receipt may trail its deadline by one request
CREATE, CANCEL = "/v5/order/create", "/v5/order/cancel"


@attrs.frozen
class FloodSettings:
    rate: float = 50.0
    seconds: float = 20.0
    symbols: int = 20
    max_age_s: float = 5.0
    probes: int = 4
    amount_usdt: Decimal = Decimal("20")


@attrs.define
class Probe:
    at_s: float  # seconds into the flood
    symbol: str = ""
    cancel_asked_s: float | None = None  # epoch seconds of the POSTs
    close_asked_s: float | None = None
    cancel_to_venue_ms: float | None = None
    close_to_venue_ms: float | None = None
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
    symbols = pick_symbols(flood.symbols + flood.probes, flood.amount_usdt)
    crowd, probe_symbols = symbols[:flood.symbols], symbols[flood.symbols:]
    port = infra.free_port()
    settings = attrs.evolve(settings, symbols=len(symbols), enforce_limits=True, daemon_env={
        "ORDERMANAGER_SIGNAL_MAX_AGE_SECONDS": f"{flood.max_age_s:g}", "ORDER_MANAGER_PORT": str(port)})  # fmt: skip
    prices = _prices(settings)
    count = int(flood.rate * flood.seconds)
    items = publisher.plan("flood", count, crowd)
    async with Stage(settings, ORDERMGR, "ordermgr-flood") as stage:
        assert stage.child is not None and stage.control is not None
        probes = [Probe(round(flood.seconds * (k + 1) / (flood.probes + 1), 1), symbol)
                  for k, symbol in enumerate(probe_symbols)]  # fmt: skip
        await _set_up_probes(probes, prices, flood)
        baseline = await wait_quiet(settings.quiet_pct, settings.quiet_wait_s)
        system0 = measure.system_cpu()
        async with anyio.create_task_group() as tg:
            started = time.monotonic()
            tg.start_soon(_inject, probes, started, port)
            await publisher.publish(items, rate=flood.rate, amount_usdt=flood.amount_usdt, prices=prices)
        await _wait_all_settled(count + 2 * flood.probes, settings.timeout_s)
        busy = measure.busy_percent(system0, measure.system_cpu())
        state = await stage.control.state()
        orders = await anyio.to_thread.run_sync(infra.venue_orders, stage.control.base_url, PAPER_KEY, PAPER_SECRET)
        daemon = await _daemon_rate_limits(port)
        log_path = stage.child.log_path
    outcomes = await _outcomes()
    limits = state.get("rate_limits", {})
    crowd_orders = {link: o for link, o in orders.items() if outcomes.links.get(link, "").startswith("bench-flood-")}
    flood_receipts = [int(o["createdTime"]) for o in crowd_orders.values()]
    # Every create within the flood's span uses the quota, the probes' included.
    span = (min(flood_receipts, default=0), max(flood_receipts, default=0))
    receipts = [int(o["createdTime"]) for o in orders.values() if span[0] <= int(o["createdTime"]) <= span[1]]
    placed_ages = [int(o["createdTime"]) / 1000 - outcomes.stamps[outcomes.links[link]]
                   for link, o in crowd_orders.items()]  # fmt: skip
    _measure_probes(probes, orders)
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


def probe_body(signal_id: str, symbol: str, side: str, amount: Decimal, price: Decimal, *,
               limit: bool = False) -> bytes:  # fmt: skip
    """A probe's set-up signal: Market (confidence 0.95), or a Limit resting 1 % away (confidence
    0.5 and a 2 % spread)."""
    body: dict[str, Any] = {
        "signal_id": signal_id, "signal_type": side, "asset": symbol, "amount": float(amount),
        "confidence": 0.5 if limit else 0.95,
        "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "strategy_id": "bench-probe", "trace_id": f"trace-{signal_id}",
        "metadata": {"published_at_ms": round(time.time_ns() / 1e6, 3)},
    }  # fmt: skip
    if limit:
        body["market_data_snapshot"] = {"price": float(price), "spread": float(price * Decimal("0.02"))}
    return json.dumps(body).encode()


async def _set_up_probes(probes: Sequence[Probe], prices: dict[str, Decimal], flood: FloodSettings) -> None:
    """Before the flood: each probe symbol gets a position and a resting order to act on."""
    for k, probe in enumerate(probes):
        price = prices[probe.symbol]
        await _publish(probe_body(f"probe-long-{k}", probe.symbol, "buy", flood.amount_usdt * 10, price))
        await _publish(probe_body(f"probe-rest-{k}", probe.symbol, "buy", flood.amount_usdt, price, limit=True))
    for k in range(len(probes)):
        await _wait_status(f"probe-long-{k}", {"accepted"}, 30)
        await _wait_status(f"probe-rest-{k}", {"accepted"}, 30)


async def _inject(probes: Sequence[Probe], started: float, port: int) -> None:
    """During the flood, at each probe's time: cancel its resting order, then close its position."""
    for k, probe in enumerate(probes):
        await anyio.sleep(max(0.0, started + probe.at_s - time.monotonic()))
        probe.cancel_asked_s = time.time()
        cancelled = await _operator_post(port, f"/api/v1/orders/{order_link_id(f'probe-rest-{k}', 1, 1)}/cancel")
        probe.close_asked_s = time.time()
        closed = await _operator_post(port, f"/api/v1/positions/{probe.symbol}/close")
        if (cancelled, closed) != (200, 200):
            probe.note = f"cancel answered HTTP {cancelled}, close HTTP {closed}"


async def _operator_post(port: int, path: str) -> int:
    headers = {"X-API-Key": API_KEY, "X-Operator": "bench"}
    async with aiohttp.ClientSession() as http, http.post(f"http://127.0.0.1:{port}{path}", headers=headers) as answer:
        return answer.status


def _measure_probes(probes: Sequence[Probe], orders: dict[str, dict[str, Any]]) -> None:
    """Each POST → the venue: the resting order's cancel time, the close order's receipt."""
    for k, probe in enumerate(probes):
        rest = orders.get(order_link_id(f"probe-rest-{k}", 1, 1))
        if rest and rest["orderStatus"] == "Cancelled" and probe.cancel_asked_s is not None:
            probe.cancel_to_venue_ms = int(rest["updatedTime"]) - probe.cancel_asked_s * 1000
        closes = [o for o in orders.values() if o["symbol"] == probe.symbol and o.get("reduceOnly")]
        if closes and probe.close_asked_s is not None:
            probe.close_to_venue_ms = min(int(o["createdTime"]) for o in closes) - probe.close_asked_s * 1000
        elif not probe.note:
            probe.note = "no close order at the venue (see the daemon log)"


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
    closes = [p.close_to_venue_ms for p in result.probes if p.close_to_venue_ms is not None]
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
        f"  close (POST /api/v1/positions/{{asset}}/close → the venue's receipt): {_ms(closes)}",
        f"  cancel (POST /api/v1/orders/{{id}}/cancel → the venue's cancel): {_ms(cancels)}; budget cancel lane: {cancel_lane.get('requests', 0)} requests, "
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
