"""The signal publisher: one aiormq channel, bursts or paced, every message stamped with the
wall-clock time it was handed to the broker.

Latency = the venue's ``createdTime`` of the order − this stamp; both are read from the same
machine's clock. The stamp goes into the signal (``metadata.published_at_ms`` and, at ms
precision, ``timestamp``) and is kept here too, so the figures do not depend on what the
consumer stores.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import aiormq
import anyio
import attrs
from pamqp import commands as spec

from bench.infra import AMQP_URL, SIGNAL_QUEUE


@attrs.frozen
class Planned:
    signal_id: str
    symbol: str


@attrs.define
class PublishReport:
    published_ms: dict[str, float] = attrs.field(factory=dict)  # signal_id → wall clock, ms
    started: float = 0.0  # monotonic
    finished: float = 0.0
    max_lag_s: float = 0.0  # how far behind its schedule a paced publish fell at worst

    @property
    def duration_s(self) -> float:
        return self.finished - self.started

    @property
    def achieved_rate(self) -> float:
        count = len(self.published_ms)
        return (count - 1) / self.duration_s if count > 1 and self.duration_s > 0 else float("nan")


def plan(tag: str, count: int, symbols: Sequence[str]) -> list[Planned]:
    """Round-robin over the symbols, so every symbol gets a FIFO stream of its own."""
    return [Planned(f"bench-{tag}-{i:06d}", symbols[i % len(symbols)]) for i in range(count)]


def signal_body(item: Planned, amount_usdt: Decimal, price: Decimal, published_ms: float) -> bytes:
    """A quickstart-shaped signal. confidence 0.95 ≥ the 0.9 market threshold: a Market order."""
    stamp = datetime.fromtimestamp(published_ms / 1000, UTC)
    body: dict[str, Any] = {
        "signal_id": item.signal_id,
        "signal_type": "buy",
        "asset": item.symbol,
        # JSON has only binary floats; model-service sends a number, and these amounts are exact.
        "amount": float(amount_usdt),
        "confidence": 0.95,
        "timestamp": stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "strategy_id": "bench",
        "model_version": None,
        "is_warmup": False,
        "market_data_snapshot": {
            "price": float(price),
            "spread": float(price * Decimal("0.0001")),
            "volume_24h": 1000000.0,
            "volatility": 0.02,
            "orderbook_depth": {"bid_depth": 100.0, "ask_depth": 120.0},
            "technical_indicators": None,
        },
        "metadata": {"reasoning": "bench", "published_at_ms": round(published_ms, 3)},
        "trace_id": f"trace-{item.signal_id}",
    }
    return json.dumps(body, separators=(",", ":")).encode()


async def publish(
    items: Sequence[Planned],
    *,
    rate: float,
    amount_usdt: Decimal,
    prices: Mapping[str, Decimal],
    report: PublishReport | None = None,
) -> PublishReport:
    """Publish ``items`` as fast as possible (``rate`` 0) or at ``rate`` per second on a fixed
    schedule (a late message is sent at once, never skipped; ``max_lag_s`` says how late).

    Persistent messages on a channel without confirms, like a producer that does not wait per
    message; the queue is declared first because publishing to a missing queue drops the message.
    ``report`` may be passed in to watch progress while publishing."""
    report = report if report is not None else PublishReport()
    connection = await aiormq.connect(AMQP_URL)
    try:
        channel = await connection.channel(publisher_confirms=False)
        await channel.queue_declare(SIGNAL_QUEUE, durable=True)
        report.started = time.monotonic()
        for index, item in enumerate(items):
            if rate > 0:
                due = report.started + index / rate
                delay = due - time.monotonic()
                if delay > 0:
                    await anyio.sleep(delay)
                else:
                    report.max_lag_s = max(report.max_lag_s, -delay)
            now_ms = time.time_ns() / 1_000_000
            properties = spec.Basic.Properties(
                delivery_mode=2, content_type="application/json", message_id=item.signal_id
            )
            body = signal_body(item, amount_usdt, prices[item.symbol], now_ms)
            await channel.basic_publish(body, routing_key=SIGNAL_QUEUE, properties=properties)
            report.published_ms[item.signal_id] = now_ms
        report.finished = time.monotonic()
        # A confirm-less publish only reached our socket buffer; a round trip on the same
        # channel proves the broker has read everything before it.
        await channel.queue_declare(SIGNAL_QUEUE, durable=True)
    finally:
        await connection.close()
    return report
