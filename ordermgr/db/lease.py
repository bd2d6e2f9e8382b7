"""The leader lease in PostgreSQL (contract §13.2): take it when it has lapsed, renew it while
holding it, give it back after a drain. Every time is the database's ``clock_timestamp()``, so
instances never compare their own clocks. Taking the lease increments the fencing ``epoch``.
"""

from __future__ import annotations

import logging
from typing import Any, Final

import attrs
import psycopg

from ordermgr.db.store import PgStore, unavailable
from ordermgr.domain.model import Fence

log = logging.getLogger(__name__)

LEASE: Final = "trading"
LEADER_CHANNEL: Final = "ordermgr_leader"  # NOTIFY'd when a leader gives the lease back


@attrs.frozen
class LeaderInfo:
    holder: str
    epoch: int
    expires_in_s: float


_ACQUIRE = """
WITH taken AS (
    INSERT INTO leader_lease AS l (name, holder, epoch, acquired_at, renewed_at, expires_at)
    VALUES (%(name)s, %(holder)s, 1, clock_timestamp(), clock_timestamp(),
            clock_timestamp() + %(ttl_s)s * interval '1 second')
    ON CONFLICT (name) DO UPDATE
        SET holder = EXCLUDED.holder, epoch = l.epoch + 1, acquired_at = EXCLUDED.acquired_at,
            renewed_at = EXCLUDED.renewed_at, expires_at = EXCLUDED.expires_at
        WHERE l.expires_at <= clock_timestamp()
    RETURNING epoch
), lapsed AS (
    UPDATE leader_epochs SET ended_at = clock_timestamp(), ended = 'lost'
    WHERE ended_at IS NULL AND epoch < (SELECT epoch FROM taken)
), recorded AS (
    INSERT INTO leader_epochs (epoch, holder) SELECT epoch, %(holder)s FROM taken
)
SELECT epoch FROM taken
"""

_RENEW = """
UPDATE leader_lease SET renewed_at = clock_timestamp(), expires_at = clock_timestamp() + %(ttl_s)s * interval '1 second'
WHERE name = %(name)s AND holder = %(holder)s AND epoch = %(epoch)s AND expires_at > clock_timestamp()
RETURNING epoch
"""

_RELEASE = """
WITH released AS (
    UPDATE leader_lease SET expires_at = clock_timestamp()
    WHERE name = %(name)s AND holder = %(holder)s AND epoch = %(epoch)s
    RETURNING epoch
), ended AS (
    UPDATE leader_epochs SET ended_at = clock_timestamp(), ended = 'released'
    WHERE epoch IN (SELECT epoch FROM released)
)
SELECT pg_notify(%(channel)s, epoch::text) FROM released
"""

_CURRENT = """
SELECT holder, epoch, extract(epoch FROM expires_at - clock_timestamp())::float8 AS expires_in_s
FROM leader_lease WHERE name = %(name)s AND expires_at > clock_timestamp()
"""


class LeaseStore:
    """The lease's statements, on the store's pool (each one statement, autocommit)."""

    def __init__(self, store: PgStore, holder: str, *, name: str = LEASE) -> None:
        self._store = store
        self.holder = holder
        self._name = name

    async def acquire(self, ttl_s: float) -> Fence | None:
        """Take the lease if it is free or has lapsed: the new epoch, or None when someone holds it."""
        row = await self._one(_ACQUIRE, ttl_s=ttl_s)
        return Fence(self.holder, int(row["epoch"])) if row else None

    async def renew(self, fence: Fence, ttl_s: float) -> bool:
        """Extend our lease by ``ttl_s`` from now; False when it is no longer ours (it lapsed)."""
        return await self._one(_RENEW, ttl_s=ttl_s, epoch=fence.epoch) is not None

    async def release(self, fence: Fence) -> None:
        """Give the lease back at once (after a drain) and wake the standbys."""
        await self._one(_RELEASE, epoch=fence.epoch, channel=LEADER_CHANNEL)

    async def current(self) -> LeaderInfo | None:
        """Who leads now, or None when no lease is valid."""
        row = await self._one(_CURRENT)
        return LeaderInfo(row["holder"], int(row["epoch"]), float(row["expires_in_s"])) if row else None

    async def _one(self, statement: str, **params: Any) -> dict[str, Any] | None:
        try:
            async with self._store.pool.connection() as conn:
                cursor = await conn.execute(statement, {"name": self._name, "holder": self.holder, **params})
                row: dict[str, Any] | None = await cursor.fetchone()
                return row
        except psycopg.OperationalError as exc:
            raise unavailable(exc) from exc
