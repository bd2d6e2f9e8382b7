"""Requests to Bybit under one policy: every request takes a permit from the account's
rate-limit budget (:mod:`ordermgr.bybit.budget`: a worker slot and room in its endpoint's window,
in its priority lane), budgeted retries for what certainly did not execute, waits for rate
limits that do not use the retry budget, and the venue clock.

:class:`BybitClient` raises :class:`VenueFailure` from :meth:`~BybitClient.request` (writes
decide what a failure means) and our own errors from :meth:`~BybitClient.read`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

import anyio
import attrs

from ordermgr.bybit.budget import BudgetTimeout, Permit, RateBudget
from ordermgr.bybit.transport import PUBLIC_METHODS, Kind, PybitTransport, Reply, VenueFailure
from ordermgr.domain.errors import VenueAuthError, VenueUnavailable
from ordermgr.domain.model import Priority, RetryPolicy
from ordermgr.domain.trading import ANSWERED, FAILED, NEITHER

logger = logging.getLogger("ordermgr.bybit.exchange")

CLOCK_RESYNC_S: Final = 300.0
MIN_RATE_LIMIT_WAIT_S: Final = 0.05
MAX_PAGES: Final = 50


class Withheld(Exception):
    """The caller's last-moment check refused the request; nothing was sent. The refusal code."""


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
        budget: RateBudget | None = None,
        on_answer: Callable[[str, str], None] = lambda kind, detail: None,
    ) -> None:
        self._retry = retry
        # Told of every answer: ANSWERED, FAILED or NEITHER (domain.trading), for the venue-error trigger.
        self._on_answer = on_answer
        self._sleep = sleep
        self._rate_limit_wait_s = rate_limit_wait_s
        # The budget hands out worker slots; the limiter only bounds threads of abandoned reads.
        self.budget = budget or RateBudget(max_in_flight=max_concurrency)
        self._limiter = anyio.CapacityLimiter(self.budget.threads)
        self._transport = PybitTransport(api_key=api_key, api_secret=api_secret, base_url=base_url,
                                         timeout_s=timeout_s, venue_now_ms=self.venue_now_ms)
        self._offset_ms = 0
        self._offset_error_ms = 0  # half the round trip that measured the offset: its uncertainty
        self._next_clock_sync = 0.0
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

    def venue_now_latest_ms(self) -> int:
        """The latest the venue's clock may read now (the offset's uncertainty added): an age
        measured against it is never short."""
        return _local_ms() + self._offset_ms + self._offset_error_ms

    async def server_time_ms(self) -> int:
        """The venue's clock (``/v5/market/time``); also re-measures the offset."""
        sent = _local_ms()
        reply = await self._read_reply("get_server_time", {})
        received = _local_ms()
        server_ms = _server_ms(reply)
        self._offset_ms = server_ms - (sent + received) // 2
        self._offset_error_ms = (received - sent) // 2 + 1
        self._next_clock_sync = anyio.current_time() + CLOCK_RESYNC_S
        return server_ms

    async def read(self, method: str, *, lane: Priority = Priority.READ, **params: Any) -> Mapping[str, Any]:
        """``result`` of a read; raises VenueAuthError / VenueUnavailable, never returns empty
        on failure. ``lane``: a lookup made for a cancel or a close goes in their lane."""
        return (await self._read_reply(method, params, lane)).result

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

    def deadline(self, wall_time_s: float) -> float:
        """A wall-clock instant (``time.time()`` seconds) on the budget's clock."""
        return self.budget.now() + wall_time_s - time.time()

    async def request(
        self, method: str, params: Mapping[str, Any], *, write: bool, lane: Priority = Priority.READ,
        not_after: float | None = None, allowed: Callable[[], str | None] | None = None,
    ) -> Reply:  # fmt: skip
        """One logical request, in ``lane`` of the rate-limit budget. Budgeted retries
        (``retry``) for what certainly did not execute, and for reads also for unknown outcomes;
        waits for the budget and rate limits do not use the retry budget and are bounded by
        ``rate_limit_wait_s`` (then VenueFailure UNAVAILABLE). Raises the last VenueFailure, or
        :class:`BudgetTimeout` when ``not_after`` (budget clock, see :meth:`deadline`) passed
        first while nothing had been sent or everything sent had certainly not executed, and
        :class:`Withheld` when ``allowed``, asked once a permit is in hand, refuses."""
        params = {k: v for k, v in params.items() if v is not None}
        if method not in PUBLIC_METHODS and anyio.current_time() >= self._next_clock_sync:
            await self._sync_clock()
        give_up_at = self.budget.now() + self._rate_limit_wait_s
        symbol = str(params.get("symbol") or "")
        attempt, waits = 1, 0
        limited: VenueFailure | None = None
        while True:
            try:
                permit = await self.budget.acquire(method, lane, symbol, give_up_at=_earlier(give_up_at, not_after))
            except BudgetTimeout:
                if not_after is not None and not_after <= give_up_at:
                    raise
                raise _still_limited(method, self._rate_limit_wait_s, limited) from None
            refusal = allowed() if allowed is not None else None
            if refusal is not None:
                permit.unused()
                raise Withheld(refusal)
            try:
                backoff_s = self._retry.delay_s(waits + 1)
                return await self._attempt(method, params, permit, write=write, backoff_s=backoff_s)
            except VenueFailure as failure:
                if failure.kind is Kind.RATE_LIMITED:
                    waits, limited = waits + 1, failure
                    continue  # the budget holds the endpoint until the venue's reset
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

    async def _read_reply(self, method: str, params: Mapping[str, Any], lane: Priority = Priority.READ) -> Reply:
        try:
            return await self.request(method, params, write=False, lane=lane)
        except VenueFailure as failure:
            if failure.kind is Kind.AUTH:
                raise VenueAuthError(auth_message(failure)) from None
            raise VenueUnavailable(f"Bybit {method}: {failure}") from None

    async def _attempt(
        self, method: str, params: Mapping[str, Any], permit: Permit, *, write: bool, backoff_s: float
    ) -> Reply:
        self._counters.requests += 1
        stamps: list[tuple[float, float, int]] = []  # sent, answered (budget clock), answered (local ms)

        def call() -> Reply:
            sent = self.budget.now()
            try:
                return self._transport.call(method, params)
            finally:  # stamped in the worker thread, before the event loop gets to it
                stamps.append((sent, self.budget.now(), _local_ms()))

        try:
            # A write in flight must finish so we learn its outcome; a read may be abandoned.
            reply = await anyio.to_thread.run_sync(call, limiter=self._limiter, abandon_on_cancel=not write)
        except VenueFailure as failure:
            limited = failure.kind is Kind.RATE_LIMITED
            permit.done(self._counted_at(stamps, failure.time_ms), rate_limited=limited,
                        limit=failure.limit, remaining=None if limited else failure.limit_remaining,
                        blocked_s=self._rate_limit_wait(failure, backoff_s) if limited else None)  # fmt: skip
            self._note_failure(method, failure)
            self._on_answer(_ANSWER_KINDS[failure.kind], f"{method}: {failure}")
            raise
        except BaseException:
            permit.done()  # abandoned in flight: it may still reach the venue
            raise
        permit.done(self._counted_at(stamps, reply.time_ms), limit=reply.limit, remaining=reply.limit_remaining)
        self._on_answer(ANSWERED, method)
        self._counters.last_success_at = time.time()
        if method not in PUBLIC_METHODS:
            self._counters.auth_error = None
        return reply

    def _counted_at(self, stamps: list[tuple[float, float, int]], venue_ms: int | None) -> float | None:
        if not stamps:
            return None
        return counted_at(*stamps[0], venue_ms, self._offset_ms, self._offset_error_ms)

    def _rate_limit_wait(self, failure: VenueFailure, backoff_s: float) -> float:
        """How long the endpoint stays closed after a rate-limit answer: until the venue's
        reset when it says (10006), else the retry backoff (403/429 and the global 10006)."""
        if failure.reset_ms is not None:
            return max(MIN_RATE_LIMIT_WAIT_S, (failure.reset_ms - self.venue_now_ms()) / 1000)
        return backoff_s

    def _note_failure(self, method: str, failure: VenueFailure) -> None:
        if failure.kind is Kind.RATE_LIMITED:
            self._counters.rate_limited += 1
            # The budget should keep these away; one that comes means someone else uses the
            # account, the venue's limit is lower than it says, or an IP limit (403/429).
            logger.warning("Bybit %s rate limited despite the budget; waiting for the reset: %s", method, failure)
        elif failure.kind is Kind.AUTH:
            self._counters.auth_error = auth_message(failure)
            logger.error(self._counters.auth_error)
        elif failure.kind is Kind.REJECTED:  # an answer, often expected (110072, 110001)
            logger.info("Bybit %s refused: %s", method, failure)
        else:
            logger.warning("Bybit %s failed: %s", method, failure)

    async def _sync_clock(self) -> None:
        self._next_clock_sync = anyio.current_time() + CLOCK_RESYNC_S
        try:
            await self.server_time_ms()
        except VenueUnavailable as exc:
            logger.warning("Bybit clock sync failed, keeping offset %d ms: %s", self._offset_ms, exc)


# What each failure means for the venue-error streak (contract §11.6): unknown and unavailable
# answers are venue errors; a rejection is a certain answer; rate limits and clock drift are neither.
_ANSWER_KINDS = {Kind.REJECTED: ANSWERED, Kind.AUTH: NEITHER, Kind.UNAVAILABLE: FAILED, Kind.RATE_LIMITED: NEITHER,
                 Kind.CLOCK: NEITHER, Kind.UNKNOWN: FAILED}  # fmt: skip


def auth_message(failure: VenueFailure) -> str:
    return (f"Bybit refused our credentials ({failure.code} {failure.message}): check "
            "BYBIT_API_KEY / BYBIT_API_SECRET and that BYBIT_ENVIRONMENT matches the key")


def counted_at(
    sent: float, answered: float, answered_local_ms: int, venue_ms: int | None, offset_ms: int, offset_error_ms: int
) -> float:
    """When the venue counted a request in its window, on the budget's clock (``sent`` and
    ``answered``): the venue's own stamp of its answer (envelope ``time`` / ``Timenow``) moved to
    our clock and made later by the clock offset's uncertainty; never before we sent it, never
    after its answer came. A long round trip then costs the window half of it, not all of it."""
    if venue_ms is None:
        return answered
    behind_s = (answered_local_ms + offset_ms - offset_error_ms - venue_ms) / 1000
    return min(answered, max(sent, answered - behind_s))


def _earlier(a: float, b: float | None) -> float:
    return a if b is None else min(a, b)


def _still_limited(method: str, wait_s: float, last: VenueFailure | None) -> VenueFailure:
    if last is None:
        return VenueFailure(Kind.UNAVAILABLE, 0, f"rate limited: no budget for {method} within {wait_s:g}s")
    return VenueFailure(Kind.UNAVAILABLE, last.code, f"still rate limited after {wait_s:g}s: {last.message}")


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
