"""Nothing on the critical path but the order (contract §14), with the whole service, the real
RabbitMQ and PostgreSQL, and the paper venue playing ws-gateway.

The reference price comes from the ticker stream (§14.1): a fresh stream price costs no REST
ticker read; an old one, or a stopped stream, falls back to the REST ticker within the age
limit, so no order is sized on an older price. The balance is read in the background (§14.2):
signals do not read the wallet."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import aiormq
import anyio
import psycopg
import pytest
from psycopg.rows import dict_row

from ordermgr.amqp.broker import TICKER_ARGUMENTS, TICKER_QUEUE
from ordermgr.paper import PaperVenue
from tests import support
from tests.service import RunningService, paper_venue, publish, reset_queues, running_service

GATEWAY_KEY = "gateway-test-key"
TICKERS = "/v5/market/tickers"


WALLET = "/v5/account/wallet-balance"


def signal(signal_id: str, amount: str = "1000", *, resting: bool = False) -> bytes:
    """A Market buy; ``resting``: a Limit buy 0.5 % under the price (low confidence, wide spread)."""
    body: dict[str, object] = {"signal_id": signal_id, "signal_type": "buy", "asset": "BTCUSDT", "amount": amount,
                               "confidence": 0.5 if resting else 0.95, "timestamp": "2026-11-23T10:00:00Z"}  # fmt: skip
    if resting:
        body["market_data_snapshot"] = {"price": 50000, "spread": 500}
    return json.dumps(body).encode()


def decided(conninfo: str, signal_id: str) -> tuple[Decimal, datetime]:
    """The reference price a signal's order was sized on, and when its order was decided."""
    with psycopg.connect(conninfo, row_factory=dict_row) as conn:
        row: Any = conn.execute(
            "SELECT s.decision->>'reference_price' AS price, o.created_at FROM signals s "
            "JOIN orders o USING (signal_id) WHERE s.signal_id = %s", (signal_id,)).fetchone()  # fmt: skip
    return Decimal(row["price"]), row["created_at"]


def rest_tickers(venue: PaperVenue) -> int:
    return venue.request_counts.get(TICKERS, 0)


async def handled(service: RunningService, signal_id: str, acknowledged: int, **options: Any) -> None:
    """Publish one signal and wait until it is acknowledged (the ``acknowledged``-th ack)."""
    await publish(signal(signal_id, **options))
    await service.logs.wait_for("signal acknowledged", count=acknowledged)


async def streaming(venue: PaperVenue, every_s: float = 0.05) -> None:
    """The market moves: every price steps (and the stream publishes it) every ``every_s``."""
    while True:
        await anyio.sleep(every_s)
        venue.step_prices()


@pytest.fixture
async def fresh(clean_database: str) -> AsyncIterator[str]:
    """Clean tables and queues, and clean again afterwards: a test that starts the service on the
    session database as it finds it (test_service.py) must not find these orders to reconcile."""
    await reset_queues()
    await reset_queues(TICKER_QUEUE)
    yield clean_database
    support.truncate_all(clean_database)


def gateway_venue() -> PaperVenue:
    return paper_venue(amqp_url=support.AMQP_URL, ws_gateway=True, gateway_api_key=GATEWAY_KEY)


async def test_a_fresh_stream_price_sizes_orders_with_no_rest_ticker_read(fresh: str) -> None:
    venue = gateway_venue()
    async with running_service(venue=venue) as service, anyio.create_task_group() as tg:
        await handled(service, "first", 1)  # the first signal of the symbol asks for its channel
        await service.logs.wait_for("ticker stream: first item")
        tg.start_soon(streaming, venue)
        read_before = rest_tickers(venue)
        for n in range(2, 7):
            await handled(service, f"streamed-{n}", n)
        read_after = rest_tickers(venue)
        tg.cancel_scope.cancel()
    assert read_after == read_before  # five orders, not one REST ticker read
    assert [s.symbol for s in venue.gateway.subscriptions.values()] == ["BTCUSDT"]
    assert service.logs.count("reference price from the ticker stream") == 1


async def test_a_stream_price_older_than_the_limit_falls_back_to_the_rest_ticker(fresh: str) -> None:
    """The only stream item is 5 s old and says 40000; the venue's price is 50000."""
    venue = paper_venue(amqp_url=support.AMQP_URL)  # no ws-gateway: the subscription fails, in the background
    env = {"WS_GATEWAY_HOST": "127.0.0.1", "WS_GATEWAY_PORT": str(support.free_port())}
    async with running_service(env, venue=venue) as service:
        await publish_ticker({"symbol": "BTCUSDT", "lastPrice": "40000.00", "type": "snapshot",
                              "ts": int(time.time() * 1000) - 5000})  # fmt: skip
        await service.logs.wait_for("ticker stream: first item")
        read_before = rest_tickers(venue)
        await handled(service, "old-stream", 1)
    price, _ = decided(fresh, "old-stream")
    assert (price, rest_tickers(venue) - read_before) == (Decimal("50000"), 1)


async def test_a_stopped_stream_falls_back_within_the_limit(fresh: str) -> None:
    """The stream says 51000 and stalls; the venue moves to 52000. Signals handled one after the
    other are sized on a streamed price only within the age limit of it, then on the REST one."""
    limit_s, slack_s = 0.3, 0.15  # slack: from the ticker read to the order's decision time
    venue = gateway_venue()
    async with running_service({"ORDERMANAGER_PRICE_MAX_AGE_MS": str(int(limit_s * 1000))}, venue=venue) as service:
        await handled(service, "first", 1)
        await service.logs.wait_for("ticker stream: first item")
        venue.set_price("BTCUSDT", Decimal("51000"))
        streamed_at = datetime.now(UTC)
        venue.faults.ticker_stall = True
        venue.set_price("BTCUSDT", Decimal("52000"))
        read_before = rest_tickers(venue)
        sized: list[tuple[Decimal, datetime]] = []
        with anyio.fail_after(20):
            while not sized or sized[-1][0] != Decimal("52000"):
                signal_id = f"after-stall-{len(sized)}"
                await handled(service, signal_id, len(sized) + 2)
                sized.append(decided(fresh, signal_id))
    stale = [(price, (at - streamed_at).total_seconds()) for price, at in sized if price != Decimal("52000")]
    assert all(age <= limit_s + slack_s for _, age in stale), stale
    assert rest_tickers(venue) > read_before
    assert service.logs.count("ticker stream not fresh; reference price from the REST ticker") >= 1


async def test_signals_do_not_read_the_wallet(fresh: str) -> None:
    """Ten resting orders (no fill to refresh the balance after): the wallet is read at start (two
    reads, which may still be under way) and on the background's own clock (every 5 s, and the
    venue check every 15 s), never per signal."""
    venue = gateway_venue()
    async with running_service(venue=venue) as service:
        await handled(service, "first", 1, resting=True)
        reads, started = venue.request_counts.get(WALLET, 0), time.monotonic()
        for n in range(2, 12):
            await handled(service, f"resting-{n}", n, resting=True)
        reads_during, elapsed_s = venue.request_counts.get(WALLET, 0) - reads, time.monotonic() - started
    assert len(venue.engine.open_orders()) == 11
    assert reads_during <= 2 + elapsed_s / 5 + elapsed_s / 15 < 10, (reads_during, elapsed_s)


async def test_the_balance_a_signal_may_use_is_less_what_our_open_orders_commit(fresh: str) -> None:
    """1000 USDT; an order may use all of it (ratio 1). A resting 600 USDT buy commits 597: a
    second 600 USDT buy is refused, a 300 USDT one goes."""
    venue = paper_venue(amqp_url=support.AMQP_URL, initial_balance=Decimal(1000))
    env = {"ORDERMANAGER_MAX_ORDER_SIZE_RATIO": "1"}
    async with running_service(env, venue=venue) as service:
        await handled(service, "resting-600", 1, amount="600", resting=True)
        await handled(service, "second-600", 2, amount="600", resting=True)
        await handled(service, "third-300", 3, amount="300", resting=True)
    with psycopg.connect(fresh, row_factory=dict_row) as conn:
        statuses: Any = {r["signal_id"]: r for r in conn.execute(
            "SELECT signal_id, status, rejection_code, rejection_details FROM signals").fetchall()}  # fmt: skip
    assert [statuses[s]["status"] for s in ("resting-600", "second-600", "third-300")] == ["accepted", "rejected",
                                                                                            "accepted"]  # fmt: skip
    refused = statuses["second-600"]
    assert refused["rejection_code"] == "exceeds_order_size_ratio"
    # 1000 less the 597 committed (less the venue's own margin for the resting order too, when a
    # background read came after it: without our subtraction 940 would have let 600 through).
    assert Decimal(refused["rejection_details"]["available_balance"]) <= Decimal(1000) - Decimal("0.012") * 49750


async def publish_ticker(payload: dict[str, object]) -> None:
    """One ws-gateway ticker event, on the queue declared as ws-gateway declares it."""
    body = json.dumps({"event_id": "e1", "event_type": "ticker", "topic": f"tickers.{payload['symbol']}",
                       "timestamp": "", "received_at": "", "payload": payload, "trace_id": None}).encode()  # fmt: skip
    connection = await aiormq.connect(support.AMQP_URL)
    try:
        channel = await connection.channel()
        await channel.queue_declare(TICKER_QUEUE, durable=True, arguments=dict(TICKER_ARGUMENTS))
        await channel.basic_publish(body, routing_key=TICKER_QUEUE)
    finally:
        await connection.close()
