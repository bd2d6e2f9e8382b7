"""Helpers shared by the integration tests: the test database, a service environment,
and a TCP proxy that can make a dependency unreachable on demand."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Mapping
from pathlib import Path

import anyio
import anyio.abc
import psycopg

# The checkout under test: child processes import ordermgr from here, whatever is installed.
REPO_ROOT = str(Path(__file__).resolve().parents[1])
PG_HOST = os.environ.get("ORDERMGR_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("ORDERMGR_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("ORDERMGR_TEST_PG_USER", "postgres")
# Each test session (one pytest process) gets its own database and RabbitMQ virtual host, made
# at its start and removed at its end: two suites on one machine, a benchmark or `make run` on
# the same servers, cannot take each other's messages or drop each other's tables.
SESSION = os.getpid()
TEST_DB = os.environ.get("ORDERMGR_TEST_DB", f"ordermgr_test_{SESSION}")
AMQP_VHOST = os.environ.get("ORDERMGR_TEST_VHOST", f"ordermgr-test-{SESSION}")
AMQP_URL = f"amqp://guest:guest@127.0.0.1:5672/{AMQP_VHOST}"


def free_port() -> int:
    """A TCP port nothing listens on right now (for a child's HTTP server)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def admin_conninfo(dbname: str = "postgres") -> str:
    return f"host={PG_HOST} port={PG_PORT} dbname={dbname} user={PG_USER}"


def service_env(**overrides: str) -> dict[str, str]:
    """A complete, valid service environment pointing at the local test services."""
    env = {
        "ORDER_MANAGER_PORT": "0",
        "ORDER_MANAGER_API_KEY": "test-api-key",
        "ORDER_MANAGER_LOG_LEVEL": "INFO",
        "BYBIT_ENVIRONMENT": "paper",
        "POSTGRES_HOST": PG_HOST,
        "POSTGRES_PORT": str(PG_PORT),
        "POSTGRES_DB": TEST_DB,
        "POSTGRES_USER": PG_USER,
        "POSTGRES_PASSWORD": "",
        "RABBITMQ_HOST": "127.0.0.1",
        "RABBITMQ_PORT": "5672",
        "RABBITMQ_VHOST": AMQP_VHOST,
    }
    env.update(overrides)
    return env


def child_environment(**overrides: str) -> dict[str, str]:
    """The environment for ``python -m ordermgr`` children: this process's, without our own
    variables, plus a complete service configuration and the checkout on PYTHONPATH."""
    prefixes = ("ORDER_MANAGER_", "ORDERMANAGER_", "BYBIT_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env.update(service_env(**overrides))
    env["PYTHONPATH"] = REPO_ROOT
    return env


def ensure_vhost(name: str) -> None:
    """Create the virtual host (idempotent) and let guest use it, with the broker's own CLI."""
    for command in (["add_vhost", name], ["set_permissions", "-p", name, "guest", ".*", ".*", ".*"]):
        _rabbitmqctl(command, ok_if="already_exists")


def delete_vhost(name: str) -> None:
    _rabbitmqctl(["delete_vhost", name], ok_if="not_found")


def _rabbitmqctl(command: list[str], *, ok_if: str) -> None:
    result = subprocess.run(["rabbitmqctl", *command], capture_output=True, text=True, timeout=60)
    if result.returncode != 0 and ok_if not in result.stderr + result.stdout:
        raise RuntimeError(f"rabbitmqctl {' '.join(command)} failed: {result.stderr.strip()}")


def recreate_database(name: str) -> None:
    with psycopg.connect(admin_conninfo(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def drop_database(name: str) -> None:
    with psycopg.connect(admin_conninfo(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def user_tables(conninfo: str) -> list[str]:
    with psycopg.connect(conninfo) as conn:
        rows = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'schema_migrations'"
        ).fetchall()
    return sorted(row[0] for row in rows)


def truncate_all(conninfo: str) -> None:
    tables = user_tables(conninfo)
    if tables:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute("TRUNCATE " + ", ".join(f'"{t}"' for t in tables) + " RESTART IDENTITY CASCADE")


class TcpProxy:
    """Forwards a local port to ``target``. ``cut()`` drops every connection and refuses new
    ones; ``restore()`` accepts again. Used to make PostgreSQL unreachable for the service
    without touching the server other tests use."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._open = anyio.Event()
        self._connections: set[anyio.abc.SocketStream] = set()
        self.port = 0

    async def run(self, *, task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED) -> None:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
        self.port = listener.extra(anyio.abc.SocketAttribute.local_port)
        self._open.set()
        async with listener:
            task_status.started(self.port)
            await listener.serve(self._handle)

    async def _handle(self, client: anyio.abc.SocketStream) -> None:
        if self._open.is_set():
            await self._pipe(client)
        else:
            await client.aclose()

    async def _pipe(self, client: anyio.abc.SocketStream) -> None:
        try:
            server = await anyio.connect_tcp(*self._target)
        except OSError:
            await client.aclose()
            return
        self._connections |= {client, server}
        async with client, server, anyio.create_task_group() as tg:
            tg.start_soon(_copy, client, server, tg.cancel_scope)
            tg.start_soon(_copy, server, client, tg.cancel_scope)
        self._connections -= {client, server}

    async def cut(self) -> None:
        self._open = anyio.Event()
        for stream in list(self._connections):
            await stream.aclose()

    def restore(self) -> None:
        self._open.set()


async def _copy(source: anyio.abc.SocketStream, sink: anyio.abc.SocketStream, scope: anyio.CancelScope) -> None:
    try:
        async for chunk in source:
            await sink.send(chunk)
    except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
        pass
    scope.cancel()


def env_for(proxy_port: int | None = None, **overrides: str) -> Mapping[str, str]:
    if proxy_port is not None:
        overrides.setdefault("POSTGRES_PORT", str(proxy_port))
    return service_env(**overrides)
