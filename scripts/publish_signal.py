"""Publish a signal body to model-service.trading_signals, as the quickstart's
`rabbitmqadmin publish routing_key=model-service.trading_signals payload='...'` does:
default exchange, the body's bytes unchanged.

    python scripts/publish_signal.py signal.json          # or: ... - < signal.json
"""

from __future__ import annotations

import sys

import aiormq
import anyio

QUEUE = "model-service.trading_signals"


async def publish(body: bytes, url: str) -> None:
    connection = await aiormq.connect(url)
    try:
        channel = await connection.channel()
        await channel.basic_publish(body, routing_key=QUEUE)
    finally:
        await connection.close()


if __name__ == "__main__":
    source = sys.argv[1] if len(sys.argv) > 1 else "-"
    data = sys.stdin.buffer.read() if source == "-" else open(source, "rb").read()
    url = sys.argv[2] if len(sys.argv) > 2 else "amqp://guest:guest@127.0.0.1:5672/"
    anyio.run(publish, data, url)
    print(f"published {len(data)} bytes to {QUEUE}")
