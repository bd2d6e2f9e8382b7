"""Numbered plain-SQL migrations, applied in order under a PostgreSQL advisory lock and
recorded in ``schema_migrations``. Applying twice changes nothing."""

from __future__ import annotations

import logging
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path

import anyio
import psycopg

log = logging.getLogger(__name__)

# Any fixed 64-bit key: every ordermgr instance that migrates takes the same lock, so two
# replicas starting together apply each file once.
_LOCK_KEY = 0x6F726465726D6772  # "ordermgr"


def migrations_dir() -> Traversable:
    """The installed package's copy, or ``migrations/`` beside the package in a checkout (and in
    the image, whose working directory holds the copied source tree first on ``sys.path``)."""
    try:
        installed = resources.files("ordermgr.migrations")
        if any(entry.name.endswith(".sql") for entry in installed.iterdir()):
            return installed
    except ModuleNotFoundError:
        pass
    return Path(__file__).resolve().parents[2] / "migrations"  # ordermgr/db/migrate.py → migrations/


class MigrationsMissing(RuntimeError):
    """The schema files are not where the package looks: a packaging fault, not an outage, so
    it stops the process instead of being retried like an unreachable database."""


def migration_files() -> list[tuple[str, str]]:
    """(version, sql) pairs in order; the version is the file name without ``.sql``."""
    where = migrations_dir()
    try:
        files = sorted((entry for entry in where.iterdir() if entry.name.endswith(".sql")), key=lambda e: e.name)
    except OSError as exc:
        raise MigrationsMissing(f"no migrations directory at {where}: {exc}") from exc
    if not files:
        raise MigrationsMissing(f"no migration files in {where}")
    return [(entry.name.removesuffix(".sql"), entry.read_text(encoding="utf-8")) for entry in files]


async def apply_migrations(conninfo: str) -> list[str]:
    """Apply every migration not yet recorded; return the versions applied now."""
    applied_now: list[str] = []
    files = await anyio.to_thread.run_sync(migration_files)  # file reads stay off the event loop
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        await conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            cursor = await conn.execute("SELECT version FROM schema_migrations")
            done = {row[0] for row in await cursor.fetchall()}
            for version, sql in files:
                if version in done:
                    continue
                async with conn.transaction():
                    await conn.execute(sql.encode())
                    await conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (version,))
                log.info("migration applied", extra={"version": version})
                applied_now.append(version)
        finally:
            await conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    return applied_now
