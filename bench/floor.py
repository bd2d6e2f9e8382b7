"""``python -m bench.floor``: the floor — the least any consumer must do per signal.

Per message: one INSERT + commit, one signed create-order through pybit in a worker thread
(at most 8 at once, like ordermgr's adapter), one UPDATE + commit, ack. Symbols run
concurrently, each in its own task fed by a memory stream, so each symbol stays FIFO. Manual
acks and the same prefetch as the daemon. Nothing else: no validation beyond reading the
fields, no risk checks, no events, no logging per message.

Instrument filters and prices are read once at startup (ordermgr caches instruments too); the
quantity is ``amount / last price`` rounded down to the step.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Sequence
from decimal import ROUND_DOWN, Decimal
from typing import Any, Final

import aiormq
import aiormq.abc
import anyio
import attrs
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from psycopg_pool import AsyncConnectionPool
from pybit.exceptions import InvalidRequestError
from pybit.unified_trading import HTTP

SIGNAL_QUEUE: Final = "model-service.trading_signals"
READY_LINE: Final = "floor ready"
SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS floor_orders (
    signal_id      text PRIMARY KEY,
    order_link_id  text NOT NULL UNIQUE,
    symbol         text NOT NULL,
    side           text NOT NULL,
    qty            numeric NOT NULL,
    status         text NOT NULL,
    order_id       text,
    error          text,
    received_at    timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz
)
"""
INSERT: Final = (
    "INSERT INTO floor_orders (signal_id, order_link_id, symbol, side, qty, status)"
    " VALUES (%s, %s, %s, %s, %s, 'received') ON CONFLICT (signal_id) DO NOTHING"
)
UPDATE: Final = (
    "UPDATE floor_orders SET status = %s, order_id = %s, error = %s, updated_at = now() WHERE signal_id = %s"
)

Message = tuple[dict[str, Any], aiormq.abc.DeliveredMessage]


@attrs.frozen
class Filters:
    qty_step: Decimal
    min_qty: Decimal
    min_notional: Decimal
    price: Decimal

    def quantity(self, amount_usdt: Decimal) -> Decimal:
        steps = (amount_usdt / self.price / self.qty_step).to_integral_value(rounding=ROUND_DOWN)
        # Below the minimum the venue rejects it: send the minimum so the I/O still happens.
        return max(steps * self.qty_step, self.min_qty)


@attrs.frozen
class Placed:
    status: str  # "placed" or "rejected"
    order_id: str | None
    error: str | None


class Venue:
    """One pybit client per worker thread (a requests.Session is not documented thread-safe)."""

    def __init__(self, url: str, api_key: str, api_secret: str) -> None:
        self._url, self._key, self._secret = url.rstrip("/"), api_key, api_secret
        self._local = threading.local()

    def _client(self) -> HTTP:
        client: HTTP | None = getattr(self._local, "client", None)
        if client is None:
            # One attempt and no pybit retries, exactly as ordermgr's transport configures it
            # (an empty retry_codes set would be replaced by pybit's defaults).
            client = HTTP(api_key=self._key, api_secret=self._secret, max_retries=1, retry_codes={-999999}, timeout=30)
            client.endpoint = self._url
            client.client.trust_env = False
            self._local.client = client
        return client

    def filters(self) -> dict[str, Filters]:
        client = self._client()
        instruments = client.get_instruments_info(category="linear", limit=1000)["result"]["list"]
        listed = client.get_tickers(category="linear")["result"]["list"]
        tickers = {t["symbol"]: Decimal(t["lastPrice"]) for t in listed}
        return {
            i["symbol"]: Filters(
                qty_step=Decimal(i["lotSizeFilter"]["qtyStep"]),
                min_qty=Decimal(i["lotSizeFilter"]["minOrderQty"]),
                min_notional=Decimal(i["lotSizeFilter"].get("minNotionalValue") or "0"),
                price=tickers[i["symbol"]],
            )
            for i in instruments
        }

    def place(self, symbol: str, side: str, qty: Decimal, link_id: str) -> Placed:
        try:
            reply = self._client().place_order(
                category="linear", symbol=symbol, side=side, orderType="Market", qty=str(qty), orderLinkId=link_id
            )
        except InvalidRequestError as exc:  # retCode != 0: the venue said no
            return Placed("rejected", None, f"{exc.status_code}: {exc.message}")
        except Exception as exc:  # network trouble: recorded, the bench counts it as not placed
            return Placed("error", None, f"{type(exc).__name__}: {exc}")
        return Placed("placed", reply["result"].get("orderId"), None)


class Floor:
    def __init__(self, args: argparse.Namespace, pool: AsyncConnectionPool[Any], venue: Venue) -> None:
        self._args = args
        self._pool = pool
        self._venue = venue
        self._limiter = anyio.CapacityLimiter(args.threads)
        self._filters: dict[str, Filters] = {}
        # Like the daemon: buffers larger than the prefetch, so routing never blocks.
        self._capacity = 2 * args.prefetch + 16

    async def run(self) -> None:
        self._filters = await anyio.to_thread.run_sync(self._venue.filters)
        async with self._pool.connection() as conn:
            await conn.execute(SCHEMA)
        connection = await aiormq.connect(self._args.amqp_url)
        try:
            send, receive = anyio.create_memory_object_stream[aiormq.abc.DeliveredMessage](self._capacity)
            channel = await connection.channel(publisher_confirms=False)
            await channel.basic_qos(prefetch_count=self._args.prefetch)
            await channel.queue_declare(self._args.queue, durable=True)

            async def on_message(message: aiormq.abc.DeliveredMessage) -> None:
                send.send_nowait(message)  # never more than the prefetch in flight

            async with anyio.create_task_group() as tg:
                tg.start_soon(self._route, receive, tg)
                await channel.basic_consume(self._args.queue, on_message, no_ack=False)
                print(json.dumps({"message": READY_LINE}), flush=True)
                await _until_signalled()
                tg.cancel_scope.cancel()
        finally:
            with anyio.move_on_after(2, shield=True):
                await connection.close()

    async def _route(
        self, receive: MemoryObjectReceiveStream[aiormq.abc.DeliveredMessage], tg: anyio.abc.TaskGroup
    ) -> None:
        workers: dict[str, MemoryObjectSendStream[Message]] = {}
        async for message in receive:
            body = json.loads(message.body)
            symbol = str(body["asset"]).upper()
            worker = workers.get(symbol)
            if worker is None:
                worker, inbox = anyio.create_memory_object_stream[Message](self._capacity)
                workers[symbol] = worker
                tg.start_soon(self._work, symbol, inbox)
            worker.send_nowait((body, message))

    async def _work(self, symbol: str, inbox: MemoryObjectReceiveStream[Message]) -> None:
        filters = self._filters[symbol]
        async for body, message in inbox:
            signal_id = str(body["signal_id"])
            link_id = signal_id[:36]  # Bybit's orderLinkId limit
            side = "Buy" if str(body["signal_type"]).lower() == "buy" else "Sell"
            qty = filters.quantity(Decimal(str(body["amount"])))
            async with self._pool.connection() as conn, conn.transaction():
                await conn.execute(INSERT, (signal_id, link_id, symbol, side, qty))
            placed = await anyio.to_thread.run_sync(
                self._venue.place, symbol, side, qty, link_id, limiter=self._limiter
            )
            async with self._pool.connection() as conn, conn.transaction():
                await conn.execute(UPDATE, (placed.status, placed.order_id, placed.error, signal_id))
            assert message.delivery_tag is not None
            await message.channel.basic_ack(message.delivery_tag)


async def _until_signalled() -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for _ in signals:
            return


async def main_async(args: argparse.Namespace) -> None:
    venue = Venue(args.venue_url, args.api_key, args.api_secret)
    # The daemon's pool size (PgStore: 2..10), so both contend for connections alike.
    async with AsyncConnectionPool(args.dsn, min_size=2, max_size=10, open=False) as pool:
        await pool.wait()
        await Floor(args, pool, venue).run()


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.floor", description=__doc__)
    parser.add_argument("--amqp-url", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--dsn", required=True, help="PostgreSQL conninfo")
    parser.add_argument("--venue-url", required=True)
    parser.add_argument("--api-key", default="paper-key")
    parser.add_argument("--api-secret", default="paper-secret")
    parser.add_argument("--queue", default=SIGNAL_QUEUE)
    parser.add_argument("--prefetch", type=int, default=100)
    parser.add_argument("--threads", type=int, default=8, help="concurrent venue calls (CapacityLimiter)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    # The same event loop as ordermgr's, so the ratio measures our work, not the loop.
    anyio.run(main_async, parse_args(argv), backend="asyncio", backend_options={"use_uvloop": True})
    return 0


if __name__ == "__main__":
    sys.exit(main())
