"""Run the whole service in-process for a test, with a paper venue the test can inspect."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import aiormq
import anyio
import attrs

from ordermgr import app
from ordermgr.amqp.broker import ORDER_EVENTS_QUEUE, SIGNAL_QUEUE
from ordermgr.config import Config, load_config
from ordermgr.paper import PaperConfig, PaperVenue
from tests import support
from tests.logwait import LogWaiter, watching_logs

PAPER_KEY, PAPER_SECRET = "paper-key", "paper-secret"
TEST_ORDER_QUEUE = "test.ws-gateway.order"


@attrs.define
class RunningService:
    config: Config
    port: int
    logs: LogWaiter
    venue: PaperVenue | None
    stop: anyio.Event


async def reset_queues(*queues: str) -> None:
    """Delete the queues a test uses, so nothing from an earlier test leaks in."""
    connection = await aiormq.connect(support.AMQP_URL)
    try:
        channel = await connection.channel()
        for queue in queues or (SIGNAL_QUEUE, ORDER_EVENTS_QUEUE, TEST_ORDER_QUEUE):
            await channel.queue_delete(queue)
    finally:
        await connection.close()


def paper_venue(**overrides: Any) -> PaperVenue:
    settings: dict[str, Any] = {
        "api_key": PAPER_KEY, "api_secret": PAPER_SECRET, "price_walk_interval_s": 0,
        "initial_prices": {"BTCUSDT": Decimal("50000"), "ETHUSDT": Decimal("3000")},
    }  # fmt: skip
    settings.update(overrides)
    return PaperVenue(PaperConfig(**settings))


@asynccontextmanager
async def running_service(
    env: Mapping[str, str] | None = None, *, venue: PaperVenue | None = None
) -> AsyncIterator[RunningService]:
    """Start the paper venue (unless ``venue=None`` and the env says otherwise) and the
    service; yield once it is ready to take signals; stop it cleanly on exit. A venue that
    plays ws-gateway (``ws_gateway=True``) is the service's ws-gateway too."""
    stop = anyio.Event()
    with watching_logs() as logs:
        async with anyio.create_task_group() as tg:
            overrides = dict(env or {})
            if venue is not None:
                overrides["BYBIT_REST_URL"] = url = await tg.start(venue.run)
                if venue.config.ws_gateway:  # the venue plays ws-gateway too: the ticker subscriptions go there
                    overrides |= {"WS_GATEWAY_HOST": "127.0.0.1", "WS_GATEWAY_PORT": url.rsplit(":", 1)[1],
                                  "WS_GATEWAY_API_KEY": venue.config.gateway_api_key}  # fmt: skip
            config = attrs.evolve(load_config(support.service_env(**{"ORDER_MANAGER_PORT": "4600", **overrides})), port=0)
            port = await tg.start(lambda task_status: app.run(
                config, stop=stop, handle_signals=False, http_host="127.0.0.1", task_status=task_status))  # fmt: skip
            await logs.wait_for("ready to take signals", timeout_s=20)
            try:
                yield RunningService(config, port, logs, venue, stop)
            finally:
                stop.set()
                await logs.wait_for("stopped", timeout_s=20)
                tg.cancel_scope.cancel()


class QueueReader:
    """Collects the messages of one queue (e.g. order events) for assertions."""

    def __init__(self, queue: str) -> None:
        self.queue = queue
        self.messages: list[aiormq.abc.DeliveredMessage] = []
        self._arrived = anyio.Event()

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        connection = await aiormq.connect(support.AMQP_URL)
        try:
            channel = await connection.channel()
            await channel.queue_declare(self.queue, durable=True)
            await channel.basic_consume(self.queue, self._on_message, no_ack=True)
            task_status.started()
            await anyio.sleep_forever()
        finally:
            with anyio.CancelScope(shield=True):
                await connection.close()

    async def _on_message(self, message: aiormq.abc.DeliveredMessage) -> None:
        self.messages.append(message)
        self._arrived.set()

    async def wait_for(self, count: int, timeout_s: float = 10.0) -> list[aiormq.abc.DeliveredMessage]:
        with anyio.fail_after(timeout_s):
            while len(self.messages) < count:
                self._arrived = anyio.Event()
                await self._arrived.wait()
        return self.messages


async def publish(body: bytes, *, queue: str = SIGNAL_QUEUE, headers: Mapping[str, Any] | None = None) -> None:
    """Publish raw bytes to the default exchange, as rabbitmqadmin / model-service do."""
    connection = await aiormq.connect(support.AMQP_URL)
    try:
        channel = await connection.channel()
        await channel.queue_declare(queue, durable=True)
        properties = aiormq.spec.Basic.Properties(headers=dict(headers or {}))
        await channel.basic_publish(body, routing_key=queue, properties=properties)
    finally:
        await connection.close()


async def queue_depth(queue: str) -> int:
    connection = await aiormq.connect(support.AMQP_URL)
    try:
        channel = await connection.channel()
        declared = await channel.queue_declare(queue, durable=True)
        return int(declared.message_count or 0)
    finally:
        await connection.close()


class Daemon:
    """``python -m ordermgr`` as a child process; its JSON log lines are collected so a test
    can wait for one instead of sleeping."""

    def __init__(self, env: Mapping[str, str], cwd: str, on_change: Callable[[], None] = lambda: None) -> None:
        # A free port, not a fixed one: another suite on this machine may run a daemon too.
        self._env = support.child_environment(**{"ORDER_MANAGER_PORT": str(support.free_port()), **env})
        self._cwd = cwd
        self.lines: list[dict[str, Any]] = []
        self.returncode: int | None = None
        self._changed = anyio.Event()
        self._on_change = on_change  # also told of every new line and the exit (several daemons' waiters)
        self._process: anyio.abc.Process | None = None

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        command = [sys.executable, "-m", "ordermgr"]
        async with await anyio.open_process(command, env=self._env, cwd=self._cwd, stderr=subprocess.STDOUT) as process:
            self._process = process
            task_status.started()
            assert process.stdout is not None
            buffer = b""
            async for chunk in process.stdout:
                buffer += chunk
                *complete, buffer = buffer.split(b"\n")
                for line in complete:
                    self.lines.append(json.loads(line) if line.startswith(b"{") else {"message": line.decode()})
                self._changed.set()
                self._on_change()
            self.returncode = await process.wait()
            self._changed.set()
            self._on_change()

    def count(self, message: str, **fields: object) -> int:
        return sum(1 for line in self.lines if line.get("message") == message and
                   all(line.get(k) == v for k, v in fields.items()))  # fmt: skip

    async def wait_for(self, message: str, *, timeout_s: float = 20.0, **fields: object) -> None:
        with anyio.fail_after(timeout_s):
            while not self.count(message, **fields):
                if self.returncode is not None:
                    raise AssertionError(f"daemon exited ({self.returncode}) before logging {message!r}")
                self._changed = anyio.Event()
                await self._changed.wait()

    async def wait_until(self, predicate: Callable[[], bool], *, timeout_s: float = 20.0, what: str = "") -> None:
        """Return once ``predicate()`` holds; it is checked at each log line (and at exit)."""
        with anyio.fail_after(timeout_s):
            while not predicate():
                if self.returncode is not None:
                    raise AssertionError(f"daemon exited ({self.returncode}) while waiting for {what or predicate}")
                self._changed = anyio.Event()
                await self._changed.wait()

    @property
    def port(self) -> int:
        return int(self._env["ORDER_MANAGER_PORT"])

    async def wait_exit(self, timeout_s: float = 20.0) -> int:
        with anyio.fail_after(timeout_s):
            while self.returncode is None:
                self._changed = anyio.Event()
                await self._changed.wait()
        return self.returncode

    def terminate(self) -> None:
        assert self._process is not None
        self._process.send_signal(signal.SIGTERM)

    def freeze(self) -> None:
        """SIGSTOP: the process stops running (a long GC pause, a stalled VM) without dying."""
        assert self._process is not None
        self._process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self._process is not None
        self._process.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL, as a crash or an OOM kill would end it."""
        assert self._process is not None
        self._process.kill()
