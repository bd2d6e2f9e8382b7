"""The bench's plumbing: services, a fresh database, fresh queues, free ports, and the venue's
view of what arrived (signed order history through pybit, as a client would read it)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Final

import aiohttp
import aiormq
import anyio
import attrs
import psycopg
from psycopg import sql
from pybit.exceptions import InvalidRequestError
from pybit.unified_trading import HTTP

# Its own RabbitMQ virtual host: a `make run` or a test suite on the same broker neither takes the
# bench's signals nor has its queues deleted by it. ORDERMGR_BENCH_NAME gives a bench its own
# vhost and database, so two benches (two worktrees) on one machine do not meet.
_NAME: Final = os.environ.get("ORDERMGR_BENCH_NAME", "")
AMQP_VHOST: Final = "ordermgr-bench" + (f"-{_NAME}" if _NAME else "")
AMQP_URL: Final = f"amqp://guest:guest@127.0.0.1:5672/{AMQP_VHOST}"
ADMIN_DSN: Final = "host=127.0.0.1 port=5432 dbname=postgres user=postgres"
BENCH_DB: Final = "ordermgr_bench" + (f"_{_NAME}" if _NAME else "")
BENCH_DSN: Final = f"host=127.0.0.1 port=5432 dbname={BENCH_DB} user=postgres"
SIGNAL_QUEUE: Final = "model-service.trading_signals"
# Every queue a run touches: the input, the venue's order stream, the daemon's output.
QUEUES: Final = (SIGNAL_QUEUE, "ws-gateway.order", "ws-gateway.ticker", "order-manager.order_events")
HISTORY_PAGE: Final = 50  # Bybit's maximum for /v5/order/history


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def ensure_services(repo: Path) -> None:
    """Start PostgreSQL / RabbitMQ through the project's script when either is down, and make
    sure the bench's virtual host exists."""
    if not (_port_open(5432) and _port_open(5672)):
        subprocess.run([str(repo / "scripts" / "ensure-services.sh")], check=True)
    for command in (["add_vhost", AMQP_VHOST], ["set_permissions", "-p", AMQP_VHOST, "guest", ".*", ".*", ".*"]):
        done = subprocess.run(["rabbitmqctl", *command], capture_output=True, text=True, timeout=60)
        if done.returncode != 0 and "already_exists" not in done.stdout + done.stderr:
            raise RuntimeError(f"rabbitmqctl {' '.join(command)}: {done.stderr.strip()}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def fresh_database() -> None:
    """Drop and create ``ordermgr_bench`` (FORCE ends connections a killed run left behind)."""
    async with await psycopg.AsyncConnection.connect(ADMIN_DSN, autocommit=True) as conn:
        name = sql.Identifier(BENCH_DB)
        await conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
        await conn.execute(sql.SQL("CREATE DATABASE {}").format(name))


async def drop_database() -> None:
    async with await psycopg.AsyncConnection.connect(ADMIN_DSN, autocommit=True) as conn:
        await conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(BENCH_DB)))


async def delete_queues(queues: Iterable[str] = QUEUES) -> None:
    connection = await aiormq.connect(AMQP_URL)
    try:
        channel = await connection.channel()
        for queue in queues:
            await channel.queue_delete(queue)
    finally:
        await connection.close()


async def purge_queue(queue: str) -> None:
    connection = await aiormq.connect(AMQP_URL)
    try:
        channel = await connection.channel()
        try:
            await channel.queue_purge(queue)
        except aiormq.exceptions.ChannelNotFoundEntity:
            pass  # not declared yet
    finally:
        await connection.close()


async def queue_state(queue: str) -> tuple[int, int]:
    """(ready messages, consumers) of ``queue``; unacknowledged messages are not visible."""
    connection = await aiormq.connect(AMQP_URL)
    try:
        channel = await connection.channel()
        declared = await channel.queue_declare(queue, durable=True)
        return int(declared.message_count or 0), int(declared.consumer_count or 0)
    finally:
        await connection.close()


async def consumer_count(queue: str) -> int:
    return (await queue_state(queue))[1]


# Transactions the bench itself runs in the bench database (one per ``scalar``/``pairs``), so
# they can be taken out of the subject's commit count.
own_queries = 0


@attrs.frozen
class DbCounters:
    commits: int
    rows_written: int  # inserted + updated + deleted

    def __sub__(self, other: DbCounters) -> DbCounters:
        return DbCounters(self.commits - other.commits, self.rows_written - other.rows_written)


async def db_counters() -> DbCounters:
    """Cumulative counters of the bench database from pg_stat_database (read through the admin
    database, so reading them adds nothing). Backends publish their counters when they go idle
    (at most a second late) and when they exit; read them after the subject has stopped."""
    async with await psycopg.AsyncConnection.connect(ADMIN_DSN, autocommit=True) as conn:
        row = await (await conn.execute(
            "SELECT xact_commit, tup_inserted + tup_updated + tup_deleted FROM pg_stat_database WHERE datname = %s",
            (BENCH_DB,),
        )).fetchone()  # fmt: skip
    return DbCounters(int(row[0]), int(row[1])) if row else DbCounters(0, 0)


async def scalar(query: str, default: int = 0) -> int:
    """One integer from the bench database; ``default`` while the table does not exist yet."""
    global own_queries
    own_queries += 1
    try:
        async with await psycopg.AsyncConnection.connect(BENCH_DSN, autocommit=True) as conn:
            row = await (await conn.execute(query)).fetchone()
    except psycopg.errors.UndefinedTable:
        return default
    return int(row[0]) if row and row[0] is not None else default


async def pairs(query: str) -> dict[str, str]:
    """A two-column query as a mapping (e.g. orderLinkId → signal_id)."""
    global own_queries
    own_queries += 1
    async with await psycopg.AsyncConnection.connect(BENCH_DSN, autocommit=True) as conn:
        rows = await (await conn.execute(query)).fetchall()
    return {str(a): str(b) for a, b in rows}


class VenueControl:
    """The unsigned ``/paper/*`` endpoints."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url

    async def _request(self, method: str, path: str, sent: Mapping[str, Any] | None = None) -> dict[str, Any]:
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            async with session.request(method, self.base_url + path, json=sent) as response:
                response.raise_for_status()
                body: dict[str, Any] = await response.json()
                return body

    async def state(self) -> dict[str, Any]:
        return await self._request("GET", "/paper/state")

    async def order_count(self) -> int:
        return int((await self.state())["orders"])

    async def reset(self) -> None:
        await self._request("POST", "/paper/reset")

    async def set_faults(self, **faults: Any) -> None:
        await self._request("POST", "/paper/faults", faults)

    async def subscribe_tickers(self, symbols: Iterable[str], api_key: str) -> None:
        """Ask the venue's ws-gateway stand-in for these symbols' ticker channels (201 or 409)."""
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            for symbol in symbols:
                body = {"channel_type": "ticker", "symbol": symbol, "requesting_service": "bench"}
                async with session.post(self.base_url + "/api/v1/subscriptions", json=body,
                                        headers={"X-API-Key": api_key}) as response:  # fmt: skip
                    if response.status not in (201, 409):
                        raise RuntimeError(f"ticker subscription for {symbol}: HTTP {response.status}")

    async def wait_up(self, timeout_s: float) -> None:
        with anyio.fail_after(timeout_s):
            while True:
                try:
                    await self.state()
                    return
                except (aiohttp.ClientError, OSError):
                    await anyio.sleep(0.1)


def venue_calls(log_path: Path, start: int, end: int) -> dict[str, int]:
    """Requests per path in the venue's access log between two byte offsets (``--access-log``)."""
    counts: dict[str, int] = {}
    with log_path.open("rb") as f:
        f.seek(start)
        chunk = f.read(max(0, end - start)).decode(errors="replace")
    for line in chunk.splitlines():
        if '"ordermgr.paper.access"' not in line:
            continue
        try:
            request = json.loads(line)["first_request_line"]
        except (ValueError, KeyError):
            continue
        method, _, rest = request.partition(" ")
        path = rest.split(" ")[0].split("?")[0]
        if path.startswith("/v5/"):
            key = f"{method} {path}"
            counts[key] = counts.get(key, 0) + 1
    return counts


def venue_receipts(base_url: str, api_key: str, api_secret: str) -> dict[str, int]:
    """orderLinkId → createdTime (ms) of every order the venue holds (blocking: run it in a thread)."""
    return {link: int(order["createdTime"]) for link, order in venue_orders(base_url, api_key, api_secret).items()}


def venue_orders(base_url: str, api_key: str, api_secret: str) -> dict[str, dict[str, Any]]:
    """orderLinkId (or orderId) → the order as ``/v5/order/history`` lists it, every order the
    venue holds, via signed pages (blocking: run it in a thread).

    The venue keeps every order in its history, newest first with a stable tie-break, and the
    bench reads only after the last order arrived, so offsets do not shift while paging."""
    client = HTTP(api_key=api_key, api_secret=api_secret, max_retries=1, retry_codes={-999999}, timeout=30)
    client.endpoint = base_url.rstrip("/")
    client.client.trust_env = False
    orders: dict[str, dict[str, Any]] = {}
    cursor = ""
    try:
        while True:
            params: dict[str, Any] = {"category": "linear", "limit": HISTORY_PAGE}
            if cursor:
                params["cursor"] = cursor
            result = _paced(client.get_order_history, params)["result"]
            for order in result["list"]:
                orders[order["orderLinkId"] or order["orderId"]] = order
            cursor = result.get("nextPageCursor") or ""
            if not cursor:
                return orders
    finally:
        client.client.close()


def _paced(call: Any, params: dict[str, Any]) -> Any:
    """One page; a venue that enforces Bybit's 50 reads/s answers 10006 when the bench reads
    faster: wait for its reset and ask again."""
    while True:
        try:
            return call(**params)
        except InvalidRequestError as exc:
            if exc.status_code != 10006:
                raise
            time.sleep(0.2)
