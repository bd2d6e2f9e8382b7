"""Per-endpoint 1-second rolling rate buckets and the X-Bapi-Limit-* headers (bybit.md §4)."""

from __future__ import annotations

from collections import deque
from typing import Final

import attrs

WINDOW_MS: Final = 1000
WRITE_LIMIT: Final = 10  # create / amend / cancel / cancel-all, linear
READ_LIMIT: Final = 50  # realtime, history, executions, positions, wallet
# What a venue with its limits lifted announces, so that a client which obeys the headers (as
# ordermgr does) is not held to Bybit's figures either.
LIFTED_LIMIT: Final = 1_000_000


@attrs.frozen
class LimitStatus:
    limit: int
    remaining: int
    reset_ms: int

    @property
    def exceeded(self) -> bool:
        return self.remaining < 0

    def headers(self) -> dict[str, str]:
        return {
            "X-Bapi-Limit": str(self.limit),
            "X-Bapi-Limit-Status": str(max(self.remaining, 0)),
            "X-Bapi-Limit-Reset-Timestamp": str(self.reset_ms),
        }


class RateLimits:
    """Counts requests per endpoint (one account: the venue has one key); the caller decides
    whether to refuse (10006) and says so, for the totals in ``/paper/state``."""

    def __init__(self) -> None:
        self._hits: dict[str, deque[int]] = {}
        self.totals: dict[str, dict[str, int]] = {}  # endpoint → requests, refused (10006)

    def hit(self, endpoint: str, limit: int, now_ms: int) -> LimitStatus:
        self._total(endpoint)["requests"] += 1
        hits = self._hits.setdefault(endpoint, deque())
        while hits and hits[0] <= now_ms - WINDOW_MS:
            hits.popleft()
        hits.append(now_ms)
        remaining = limit - len(hits)
        # Reset = when the oldest request in the window leaves it; "now" when not limited.
        reset = hits[0] + WINDOW_MS if remaining < 0 else now_ms
        return LimitStatus(limit, remaining, reset)

    def refused(self, endpoint: str) -> None:
        self._total(endpoint)["refused"] += 1

    def _total(self, endpoint: str) -> dict[str, int]:
        return self.totals.setdefault(endpoint, {"requests": 0, "refused": 0})
