"""Composition root: opens the resources, starts every task in nested task groups, and
owns the shutdown order. The nesting below IS the shutdown order: leaving the innermost
block first stops intake and drains the actors, then the HTTP server and the broker stop,
then the pool closes."""

from __future__ import annotations

import logging
import signal
from collections.abc import Mapping

import anyio
import attrs
import psycopg
from anyio.abc import TaskStatus

from ordermgr.broker import Broker
from ordermgr.config import Config
from ordermgr.http_api import create_app, serve
from ordermgr.migrate import apply_migrations
from ordermgr.store import PgStore

log = logging.getLogger(__name__)


@attrs.define
class ServiceState:
    """The answers behind ``/ready``."""

    store: PgStore
    broker: Broker
    migrated: bool = False
    reconciled: bool = False
    stopping: bool = False

    async def dependencies(self) -> Mapping[str, bool]:
        return {
            "database": await self.store.ping(),
            "rabbitmq": self.broker.is_connected,
            "bybit_api": False,
            "ws_gateway": False,
        }

    def is_ready(self, dependencies: Mapping[str, bool]) -> bool:
        return (
            dependencies["database"]
            and dependencies["rabbitmq"]
            and self.migrated
            and self.reconciled
            and not self.stopping
        )


async def migrate_until_done(config: Config, *, max_backoff_s: float = 5.0) -> None:
    """Apply migrations, retrying while the database is unreachable (contract §7.13)."""
    failures = 0
    while True:
        try:
            applied = await apply_migrations(config.postgres.conninfo)
            log.info("schema up to date", extra={"applied": applied})
            return
        except (psycopg.OperationalError, OSError) as exc:
            failures += 1
            if failures == 1:
                log.error("database unavailable; retrying migrations", extra={"error": str(exc)})
            await anyio.sleep(min(max_backoff_s, 0.2 * 2**failures))


async def watch_signals(stop: anyio.Event) -> None:
    """SIGTERM / SIGINT → begin a graceful stop."""
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            log.info("stop requested", extra={"signal": signal.Signals(signum).name})
            stop.set()
            return


async def run(
    config: Config,
    *,
    stop: anyio.Event | None = None,
    handle_signals: bool = True,
    http_host: str = "0.0.0.0",
    task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Run the service until ``stop`` is set (or a signal arrives); ``task_status`` gets the HTTP port."""
    stop = stop or anyio.Event()
    async with PgStore(config.postgres.conninfo) as store:
        broker = Broker(config.rabbitmq.url)
        state = ServiceState(store, broker)
        async with anyio.create_task_group() as outer:
            await outer.start(broker.run)
            port = await outer.start(serve, create_app(state), http_host, config.port)
            if handle_signals:
                outer.start_soon(watch_signals, stop)
            task_status.started(port)
            await migrate_until_done(config)
            state.migrated = True
            state.reconciled = True
            log.info("ready to take signals")
            await stop.wait()
            state.stopping = True
            log.info("stopping")
            outer.cancel_scope.cancel()
    log.info("stopped")
