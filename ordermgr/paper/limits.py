"""Per-endpoint 1-second rolling rate buckets and the X-Bapi-Limit-* headers (bybit.md §4)."""

from __future__ import annotations

from collections import deque
from typing import Final

import attrs

WINDOW_MS: Final = 1000
WRITE_LIMIT: Final = 10  # create / amend / cancel / cancel-all, linear
READ_LIMIT: Final = 50  # realtime, history, executions, positions, wallet


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
    """Counts requests per endpoint; the caller decides whether to refuse (10006)."""

    def __init__(self) -> None:
        self._hits: dict[str, deque[int]] = {}

    def hit(self, endpoint: str, limit: int, now_ms: int) -> LimitStatus:
        hits = self._hits.setdefault(endpoint, deque())
        while hits and hits[0] <= now_ms - WINDOW_MS:
            hits.popleft()
        hits.append(now_ms)
        remaining = limit - len(hits)
        # Reset = when the oldest request in the window leaves it; "now" when not limited.
        reset = hits[0] + WINDOW_MS if remaining < 0 else now_ms
        return LimitStatus(limit, remaining, reset)
