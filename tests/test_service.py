"""The daemon's skeleton against the real PostgreSQL and RabbitMQ: schema, probes, stop."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

from collections.abc import Iterator
from pathlib import Path

import aiohttp
import anyio
import attrs
import psycopg
import pytest

from ordermgr import app
from ordermgr.config import load_config
from ordermgr.db.migrate import apply_migrations, migration_files
from tests import support
from tests.logwait import watching_logs

EXPECTED_TABLES = [
    "order_events_outbox", "orders", "position_snapshots", "positions", "signal_order_relationships", "signals",
]  # fmt: skip


@pytest.fixture
def empty_database() -> Iterator[str]:
    name = f"ordermgr_migrations_{support.SESSION}"
    support.recreate_database(name)
    yield support.admin_conninfo(name)
    support.drop_database(name)


async def test_migrations_apply_on_an_empty_database_and_twice_change_nothing(empty_database: str) -> None:
    conninfo = empty_database
    versions = [version for version, _ in await anyio.to_thread.run_sync(migration_files)]

    assert await apply_migrations(conninfo) == versions
    assert await apply_migrations(conninfo) == []

    assert [t for t in support.user_tables(conninfo) if t in EXPECTED_TABLES] == EXPECTED_TABLES
    with psycopg.connect(conninfo) as conn:
        recorded = [row[0] for row in conn.execute("SELECT version FROM schema_migrations ORDER BY version")]
    assert recorded == versions


async def test_concurrent_migrators_apply_each_file_once(empty_database: str) -> None:
    conninfo = empty_database
    results: list[list[str]] = []

    async def migrate() -> None:
        results.append(await apply_migrations(conninfo))

    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(migrate)
    assert sorted(len(applied) for applied in results) == [0, 0, len(await anyio.to_thread.run_sync(migration_files))]


async def _ready(port: int) -> tuple[int, dict[str, object]]:
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/ready") as response:
        return response.status, await response.json()


async def test_python_m_migrations_run_applies_the_schema_as_the_quickstart_runs_it(empty_database: str) -> None:
    """`docker compose exec ws-gateway python -m migrations.run`, from the image's working
    directory (the checkout here): only POSTGRES_* are needed, and a second run changes nothing."""
    name = empty_database.split("dbname=")[1].split()[0]
    env = {k: v for k, v in support.child_environment(POSTGRES_DB=name).items()
           if not k.startswith(("ORDER_MANAGER_", "RABBITMQ_"))}  # fmt: skip
    command = [sys.executable, "-m", "migrations.run"]
    first = await anyio.run_process(command, env=env, cwd=support.REPO_ROOT, check=False)
    second = await anyio.run_process(command, env=env, cwd=support.REPO_ROOT, check=False)
    assert (first.returncode, second.returncode) == (0, 0), first.stderr
    versions = [version for version, _ in await anyio.to_thread.run_sync(migration_files)]
    done = [json.loads(line) for line in (first.stdout + second.stdout).splitlines() if b"migrations done" in line]
    assert [line["applied"] for line in done] == [versions, []]
    assert [t for t in support.user_tables(empty_database) if t in EXPECTED_TABLES] == EXPECTED_TABLES


def test_the_migrations_are_found_beside_the_package_when_it_is_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    """As in the image, where `python -m ...` in /app imports the copied source tree, which has no
    ordermgr.migrations subpackage: the files are the checkout's migrations/ beside ordermgr/."""
    from importlib import resources

    from ordermgr.db import migrate

    def not_installed(name: str) -> None:
        raise ModuleNotFoundError(name)

    monkeypatch.setattr(resources, "files", not_installed)
    found = migrate.migrations_dir()
    assert str(found) == str(Path(support.REPO_ROOT) / "migrations")
    assert [version for version, _ in migrate.migration_files()][0] == "001_create_orders_table"


def test_python_m_migrations_run_refuses_a_bad_variable_with_exit_2() -> None:
    env = {**support.child_environment(), "POSTGRES_PORT": "none"}
    result = subprocess.run([sys.executable, "-m", "migrations.run"], env=env, cwd=support.REPO_ROOT,
                            capture_output=True, text=True, timeout=30)  # fmt: skip
    assert result.returncode == 2
    assert "POSTGRES_PORT='none' is invalid: expected an integer from 1 to 65535" in result.stderr


async def test_ready_follows_the_database_without_a_restart(test_database: str) -> None:
    proxy = support.TcpProxy(support.PG_HOST, support.PG_PORT)
    stop = anyio.Event()
    with watching_logs() as logs, anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            proxy_port = await tg.start(proxy.run)
            config = attrs.evolve(load_config(support.env_for(proxy_port, ORDER_MANAGER_PORT="4600")), port=0)
            port = await tg.start(lambda task_status: app.run(
                config, stop=stop, handle_signals=False, http_host="127.0.0.1", task_status=task_status))  # fmt: skip
            await logs.wait_for("ready to take signals")

            status, body = await _ready(port)
            assert status == 200 and body["status"] == "ready"
            assert body["dependencies"]["database"] == "available"  # type: ignore[index]
            assert body["dependencies"]["rabbitmq"] == "available"  # type: ignore[index]

            await proxy.cut()
            status, body = await _ready(port)
            assert status == 503 and body["status"] == "not_ready"
            assert body["dependencies"]["database"] == "unavailable"  # type: ignore[index]

            async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/health") as health:
                assert health.status == 200 and (await health.json())["status"] == "healthy"

            proxy.restore()
            status, body = await _ready(port)
            assert status == 200 and body["dependencies"]["database"] == "available"  # type: ignore[index]

            stop.set()
            await logs.wait_for("stopped")
            tg.cancel_scope.cancel()


def _service_env(**overrides: str) -> dict[str, str]:
    # A free port, not a fixed one: another suite on the machine may run this very test now.
    return support.child_environment(**{"ORDER_MANAGER_PORT": str(support.free_port()), **overrides})


async def test_sigterm_drains_and_exits_zero_within_five_seconds(test_database: str, tmp_path: object) -> None:
    process = await anyio.open_process(
        [sys.executable, "-m", "ordermgr"], env=_service_env(), cwd=str(tmp_path), stderr=subprocess.STDOUT
    )
    async with process:
        assert process.stdout is not None
        with anyio.fail_after(30):
            async for line in _lines(process.stdout):
                if json.loads(line).get("message") == "ready to take signals":
                    break
        process.send_signal(signal.SIGTERM)
        with anyio.fail_after(5):
            assert await process.wait() == 0


async def _lines(stream: anyio.abc.ByteReceiveStream):  # type: ignore[no-untyped-def]
    buffer = b""
    async for chunk in stream:
        buffer += chunk
        *complete, buffer = buffer.split(b"\n")
        for line in complete:
            yield line.decode()


def test_bad_configuration_exits_2_with_one_line_per_variable(tmp_path: object) -> None:
    env = _service_env(ORDER_MANAGER_PORT="x", RABBITMQ_PORT="y", POSTGRES_PASSWORD="do-not-print")
    result = subprocess.run([sys.executable, "-m", "ordermgr"], env=env, cwd=str(tmp_path), capture_output=True,
                            text=True, timeout=30)  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "ordermgr: invalid configuration",
        "  ORDER_MANAGER_PORT='x' is invalid: expected an integer from 1 to 65535",
        "  RABBITMQ_PORT='y' is invalid: expected an integer from 1 to 65535",
    ]
    assert "do-not-print" not in result.stderr + result.stdout


async def test_a_second_sigterm_does_not_cut_the_graceful_stop_short(test_database: str, tmp_path: object) -> None:
    process = await anyio.open_process(
        [sys.executable, "-m", "ordermgr"], env=_service_env(), cwd=str(tmp_path), stderr=subprocess.STDOUT
    )
    async with process:
        assert process.stdout is not None
        messages: list[str] = []
        with anyio.fail_after(30):
            async for line in _lines(process.stdout):
                messages.append(json.loads(line).get("message", ""))
                if messages[-1] == "ready to take signals":
                    process.send_signal(signal.SIGTERM)
                elif messages[-1] == "stop requested":
                    process.send_signal(signal.SIGTERM)  # as make forwards one more
        with anyio.fail_after(5):
            assert await process.wait() == 0
    assert "stopped" in messages
