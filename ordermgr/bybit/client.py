"""Requests to Bybit under one policy: worker threads behind our own limiter, budgeted retries
for what certainly did not execute, unbudgeted waits for rate limits, and the venue clock.

:class:`BybitClient` raises :class:`VenueFailure` from :meth:`~BybitClient.request` (writes
decide what a failure means) and our own errors from :meth:`~BybitClient.read`.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

import anyio
import attrs

from ordermgr.bybit.transport import PUBLIC_METHODS, Kind, PybitTransport, Reply, VenueFailure
from ordermgr.domain.errors import VenueAuthError, VenueUnavailable
from ordermgr.domain.model import RetryPolicy

logger = logging.getLogger("ordermgr.bybit.exchange")

CLOCK_RESYNC_S: Final = 300.0
MIN_RATE_LIMIT_WAIT_S: Final = 0.05
MAX_PAGES: Final = 50


@attrs.frozen
class ExchangeStatistics:
    requests: int  # HTTP requests sent (every attempt)
    rate_limited: int  # answers that were 10006 / 403 / 429 / ...
    unknown_outcomes: int  # writes whose outcome was ambiguous on the wire (then looked up)
    retries: int  # budgeted retries (rate-limit waits are not counted here)
    last_success_at: float | None  # time.time() of the last retCode-0 answer
    auth_error: str | None  # set while the venue refuses our credentials
    clock_offset_ms: int  # venue clock minus local clock


@attrs.define
class _Counters:
    requests: int = 0
    rate_limited: int = 0
    unknown_outcomes: int = 0
    retries: int = 0
    last_success_at: float | None = None
    auth_error: str | None = None


class BybitClient:
    def __init__(
        self,
        *,
        api_key: str,
        api_secret: str,
        base_url: str,
        timeout_s: float,
        retry: RetryPolicy,
        max_concurrency: int,
        sleep: Callable[[float], Awaitable[None]],
        rate_limit_wait_s: float,
    ) -> None:
        self._retry = retry
        self._sleep = sleep
        self._rate_limit_wait_s = rate_limit_wait_s
        self._limiter = anyio.CapacityLimiter(max_concurrency)
        self._transport = PybitTransport(api_key=api_key, api_secret=api_secret, base_url=base_url,
                                         timeout_s=timeout_s, venue_now_ms=self.venue_now_ms)
        self._offset_ms = 0
        self._next_clock_sync = 0.0
        self._blocked_until_ms: dict[str, int] = {}
        self._counters = _Counters()

    def statistics(self) -> ExchangeStatistics:
        c = self._counters
        return ExchangeStatistics(c.requests, c.rate_limited, c.unknown_outcomes, c.retries,
                                  c.last_success_at, c.auth_error, self._offset_ms)

    def note_unknown_outcome(self) -> None:
        self._counters.unknown_outcomes += 1

    def venue_now_ms(self) -> int:
        """Local time corrected by the measured offset; what pybit signs with."""
        return _local_ms() + self._offset_ms

    async def server_time_ms(self) -> int:
        """The venue's clock (``/v5/market/time``); also re-measures the offset."""
        sent = _local_ms()
        reply = await self._read_reply("get_server_time", {})
        received = _local_ms()
        server_ms = _server_ms(reply)
        self._offset_ms = server_ms - (sent + received) // 2
        self._next_clock_sync = anyio.current_time() + CLOCK_RESYNC_S
        return server_ms

    async def read(self, method: str, **params: Any) -> Mapping[str, Any]:
        """``result`` of a read; raises VenueAuthError / VenueUnavailable, never returns empty
        on failure."""
        return (await self._read_reply(method, params)).result

    async def read_pages(
        self, method: str, params: Mapping[str, Any], *, max_pages: int = MAX_PAGES
    ) -> list[Mapping[str, Any]]:
        """Every ``list`` item, following ``nextPageCursor``; all pages or VenueUnavailable.

        Live Bybit puts a cursor on the last page too (contract §16), so the end is an empty
        page, a missing cursor, or a cursor already followed."""
        items: list[Mapping[str, Any]] = []
        cursor: str | None = None
        followed: set[str] = set()
        for _ in range(max_pages):
            page = await self.read(method, **params, cursor=cursor)
            listed = page.get("list") or []
            items.extend(listed)
            cursor = page.get("nextPageCursor") or None
            if not listed or cursor is None or cursor in followed:
                return items
            followed.add(cursor)
        raise VenueUnavailable(f"Bybit {method} has more than {max_pages} pages")

    async def request(self, method: str, params: Mapping[str, Any], *, write: bool) -> Reply:
        """One logical request. Budgeted retries (``retry``) for what certainly did not
        execute, and for reads also for unknown outcomes; rate limits are waited out without
        using the budget, within ``rate_limit_wait_s``. Raises the last VenueFailure."""
        params = {k: v for k, v in params.items() if v is not None}
        if method not in PUBLIC_METHODS and anyio.current_time() >= self._next_clock_sync:
            await self._sync_clock()
        deadline = anyio.current_time() + self._rate_limit_wait_s
        attempt, waits = 1, 0
        while True:
            await self._wait_for_window(method)
            try:
                return await self._attempt(method, params, write=write)
            except VenueFailure as failure:
                if failure.kind is Kind.RATE_LIMITED:
                    waits += 1
                    await self._wait_rate_limit(method, failure, deadline, waits)
                    continue
                if attempt >= self._retry.max_attempts or not _retryable(failure, write):
                    raise
                if failure.kind is Kind.CLOCK:
                    await self._sync_clock()  # the remedy; the retry needs no extra delay
                else:
                    await self._sleep(self._retry.delay_s(attempt))
                self._counters.retries += 1
                attempt += 1

    async def aclose(self) -> None:
        await anyio.to_thread.run_sync(self._transport.close, limiter=self._limiter)

    async def _read_reply(self, method: str, params: Mapping[str, Any]) -> Reply:
        try:
            return await self.request(method, params, write=False)
        except VenueFailure as failure:
            if failure.kind is Kind.AUTH:
                raise VenueAuthError(auth_message(failure)) from None
            raise VenueUnavailable(f"Bybit {method}: {failure}") from None

    async def _attempt(self, method: str, params: Mapping[str, Any], *, write: bool) -> Reply:
        self._counters.requests += 1
        call = functools.partial(self._transport.call, method, params)
        try:
            # A write in flight must finish so we learn its outcome; a read may be abandoned.
            reply = await anyio.to_thread.run_sync(call, limiter=self._limiter,
                                                   abandon_on_cancel=not write)
        except VenueFailure as failure:
            self._note_failure(method, failure)
            raise
        self._counters.last_success_at = time.time()
        if method not in PUBLIC_METHODS:
            self._counters.auth_error = None
        if reply.limit_remaining == 0 and reply.limit_reset_ms is not None:
            # X-Bapi-Limit-Status 0: the next call to this endpoint would get 10006.
            self._blocked_until_ms[method] = reply.limit_reset_ms
        return reply

    def _note_failure(self, method: str, failure: VenueFailure) -> None:
        if failure.kind is Kind.RATE_LIMITED:
            self._counters.rate_limited += 1
            if failure.reset_ms is not None:
                self._blocked_until_ms[method] = failure.reset_ms
        elif failure.kind is Kind.AUTH:
            self._counters.auth_error = auth_message(failure)
            logger.error(self._counters.auth_error)
        elif failure.kind is Kind.REJECTED:  # an answer, often expected (110072, 110001)
            logger.info("Bybit %s refused: %s", method, failure)
        else:
            logger.warning("Bybit %s failed: %s", method, failure)

    async def _wait_for_window(self, method: str) -> None:
        until = self._blocked_until_ms.get(method)
        if until is None:
            return
        delay_s = (until - self.venue_now_ms()) / 1000
        if delay_s <= 0:
            del self._blocked_until_ms[method]
            return
        await self._sleep(min(delay_s, self._rate_limit_wait_s))

    async def _wait_rate_limit(
        self, method: str, failure: VenueFailure, deadline: float, waits: int
    ) -> None:
        if failure.reset_ms is not None:
            delay_s = max(MIN_RATE_LIMIT_WAIT_S, (failure.reset_ms - self.venue_now_ms()) / 1000)
        else:  # 403/429 and the global 10006 carry no reset header: back off
            delay_s = self._retry.delay_s(waits)
        if anyio.current_time() + delay_s > deadline:
            raise VenueFailure(Kind.UNAVAILABLE, failure.code,
                               f"still rate limited after {self._rate_limit_wait_s}s: {failure.message}")
        self._blocked_until_ms.pop(method, None)  # this wait covers the window
        await self._sleep(delay_s)

    async def _sync_clock(self) -> None:
        self._next_clock_sync = anyio.current_time() + CLOCK_RESYNC_S
        try:
            await self.server_time_ms()
        except VenueUnavailable as exc:
            logger.warning("Bybit clock sync failed, keeping offset %d ms: %s", self._offset_ms, exc)


def auth_message(failure: VenueFailure) -> str:
    return (f"Bybit refused our credentials ({failure.code} {failure.message}): check "
            "BYBIT_API_KEY / BYBIT_API_SECRET and that BYBIT_ENVIRONMENT matches the key")


def _retryable(failure: VenueFailure, write: bool) -> bool:
    if failure.kind in (Kind.UNAVAILABLE, Kind.CLOCK):
        return True
    return failure.kind is Kind.UNKNOWN and not write  # reads are idempotent


def _server_ms(reply: Reply) -> int:
    if nano := reply.result.get("timeNano"):
        return int(nano) // 1_000_000
    if reply.time_ms is not None:
        return reply.time_ms
    if seconds := reply.result.get("timeSecond"):
        return int(seconds) * 1000
    raise VenueUnavailable("Bybit /v5/market/time answered without a time")


def _local_ms() -> int:
    return time.time_ns() // 1_000_000
