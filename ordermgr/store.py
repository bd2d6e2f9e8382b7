"""PostgreSQL through psycopg's async pool. All SQL lives here; psycopg errors never leave
this module (callers see ``StoreUnavailable``)."""

from __future__ import annotations

import logging
from types import TracebackType

import psycopg
from psycopg_pool import AsyncConnectionPool

from ordermgr.errors import StoreUnavailable

log = logging.getLogger(__name__)


class PgStore:
    """Opens the pool without waiting for the server: a database that is down at startup
    must not stop the process; the pool keeps trying in the background."""

    def __init__(self, conninfo: str, *, min_size: int = 2, max_size: int = 10, timeout_s: float = 5.0) -> None:
        self._pool = AsyncConnectionPool(
            conninfo, open=False, min_size=min_size, max_size=max_size, timeout=timeout_s, name="ordermgr"
        )

    async def __aenter__(self) -> PgStore:
        await self._pool.open(wait=False)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._pool.close(timeout=5)

    async def ping(self, timeout_s: float = 1.0) -> bool:
        """True when a connection answers ``SELECT 1``. After an outage the pool may still
        hold dead idle connections, so a failure makes the pool check them and we try once more."""
        for attempt in (1, 2):
            try:
                async with self._pool.connection(timeout=timeout_s) as conn:
                    await conn.execute("SELECT 1")
                return True
            except psycopg.Error as exc:
                log.debug("database ping failed", extra={"error": str(exc), "attempt": attempt})
                if attempt == 1:
                    await self._pool.check()
        return False


def unavailable(exc: psycopg.Error) -> StoreUnavailable:
    return StoreUnavailable(f"{type(exc).__name__}: {exc}")
