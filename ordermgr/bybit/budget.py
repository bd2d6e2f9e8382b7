"""The account's rate-limit budget (contract §15, bybit.md §4): one per process, shared by every
request to the venue, so that concurrent symbol actors never send more than Bybit allows.

Bybit counts requests per account and endpoint in a rolling one-second window (linear create,
amend and cancel 10/s each, reads 50/s) and answers 10006 beyond it. Learning the limit from the
answer to the previous request, as each actor used to, overshoots as soon as several send at
once. Here a request first takes a :class:`Permit`, which needs two things:

- a free worker slot (pybit runs in threads; ``max_in_flight`` at once), and
- room in its endpoint's window. The window counts every request in flight, and every answered
  one until ``WINDOW_S`` (plus a small margin) after the venue counted it: the caller tells when
  (the venue's own time stamp on our clock, within when we sent it and when its answer came; at
  the latest the answer), so a request sent after that can never find it still counted there,
  whatever the latency.

Who goes first when several wait (contract §15): the lanes of :class:`Priority` in order —
cancels, then closes (reduce-only orders, operator closes), then orders that open or grow a
position, then reads — and within a lane the symbols take turns (round robin), so a busy symbol
never starves a quiet one. Orders that open or grow a position are also *paced*: at most one per
``PACE_SHARE × window / limit``, so their window slots free up one at a time rather than in
clumps and a close or cancel never waits more than about one interval. Two worker slots beyond
``max_in_flight`` are kept for cancels and closes, so a slow venue cannot fill every thread with
routine work.

The venue's headers correct the model: ``X-Bapi-Limit`` sets the endpoint's limit (another
account tier, a lifted paper venue); an ``X-Bapi-Limit-Status`` lower than our own count means
someone else uses the account (another process with the same key), and the difference is
counted for a window; a 10006 that still comes blocks the endpoint until its reset.

Public endpoints (time, tickers, instruments) have no per-account limit: they take a slot only.
"""

from __future__ import annotations

import bisect
import logging
import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from typing import Any, Final

import anyio
import attrs

from ordermgr.domain.model import Priority

log = logging.getLogger(__name__)
WINDOW_S: Final = 1.0
# Bybit counts in whole milliseconds: a few ms of slack keep a request from landing in the
# window's last one (the caller's estimate of when the venue counted a request is already late).
MARGIN_S: Final = 0.005
PACE_SHARE: Final = 0.9  # pacing a little faster than the limit, so the window stays what binds
RESERVED_SLOTS: Final = 2  # worker slots beyond max_in_flight that only cancels and closes may take
EXHAUSTED_LOG_EVERY_S: Final = 10.0  # "budget exhausted" is logged at most this often per endpoint
# pybit method → (Bybit path, default requests per window for linear; bybit.md §4).
ENDPOINTS: Final[Mapping[str, tuple[str, int]]] = {
    "place_order": ("/v5/order/create", 10),
    "amend_order": ("/v5/order/amend", 10),
    "cancel_order": ("/v5/order/cancel", 10),
    "cancel_all_orders": ("/v5/order/cancel-all", 10),
    "get_open_orders": ("/v5/order/realtime", 50),
    "get_order_history": ("/v5/order/history", 50),
    "get_executions": ("/v5/execution/list", 50),
    "get_positions": ("/v5/position/list", 50),
    "get_wallet_balance": ("/v5/account/wallet-balance", 50),
}
PUBLIC: Final = "public"  # the key of requests with no per-account limit


class BudgetTimeout(Exception):
    """No permit came before the caller's deadline; nothing was sent."""


@attrs.frozen
class EndpointFigures:
    limit: int  # requests per window, as the venue last said (Bybit's default until it has)
    remaining: int  # room in the window now (0 while blocked by a 10006)
    in_flight: int
    queued: int  # requests waiting for this endpoint now
    requests: int  # permits granted since start
    waited: int  # of those, how many had to wait
    wait_s_total: float
    wait_s_max: float
    rate_limited: int  # 10006 / 403 / 429 answers that still came


@attrs.frozen
class LaneFigures:
    requests: int
    waited: int
    wait_s_max: float
    queued: int


@attrs.frozen
class BudgetFigures:
    """A read-only snapshot for the metrics API, the log lines and any exporter."""

    endpoints: Mapping[str, EndpointFigures]  # by Bybit path
    lanes: Mapping[str, LaneFigures]  # by lane name: cancel, close, open, read
    waits_by_symbol: Mapping[str, tuple[int, float]]  # symbol → (requests that waited, seconds waited)
    in_flight: int

    def as_fields(self) -> dict[str, Any]:
        """JSON-ready, seconds rounded to the millisecond."""
        return {
            "endpoints": {path: _rounded(attrs.asdict(f)) for path, f in self.endpoints.items()},
            "lanes": {lane: _rounded(attrs.asdict(f)) for lane, f in self.lanes.items()},
            "in_flight": self.in_flight,
        }


def _rounded(fields: dict[str, Any]) -> dict[str, Any]:
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in fields.items()}


@attrs.define
class _Window:
    """One endpoint's rolling window, as far as we can tell from here."""

    path: str
    limit: int
    in_flight: int = 0
    leaving: list[float] = attrs.field(factory=list)  # when each answered request leaves it, sorted
    blocked_until: float = 0.0
    next_open: float = 0.0  # pacing: the earliest next grant in the OPEN lane
    requests: int = 0
    waited: int = 0
    wait_s_total: float = 0.0
    wait_s_max: float = 0.0
    rate_limited: int = 0
    exhausted_logged_at: float = -math.inf

    def used(self, now: float) -> int:
        cut = bisect.bisect_right(self.leaving, now)
        if cut:
            del self.leaving[:cut]
        return self.in_flight + len(self.leaving)

    def has_room(self, now: float, lane: Priority) -> bool:
        if now < self.blocked_until or self.used(now) >= self.limit:
            return False
        return lane is not Priority.OPEN or now >= self.next_open

    def next_change(self, now: float) -> float:
        """The earliest instant at which room may appear without an answer arriving: the end of
        a 10006, of the pacing interval, or (only when the window is full) the next leaving."""
        later = [t for t in (self.blocked_until, self.next_open) if t > now]
        if self.used(now) >= self.limit and self.leaving:
            later.append(self.leaving[0])
        return min(later, default=math.inf)

    def count_until(self, at: float, n: int = 1) -> None:
        for _ in range(n):
            bisect.insort(self.leaving, at)


@attrs.define(eq=False)
class Ticket:
    """A place in the queue; ``permit`` is set once it is granted."""

    window: _Window | None
    lane: Priority
    symbol: str
    since: float
    first_pass: bool = True
    permit: Permit | None = None
    wake: anyio.Event = attrs.field(factory=anyio.Event)  # granted, or room may come sooner


class Permit:
    """The right to send one request now. Report its end with :meth:`done` (exactly once)."""

    def __init__(self, budget: RateBudget, window: _Window | None) -> None:
        self._budget = budget
        self._window = window
        self._open = True

    def done(
        self, counted_at: float | None = None, *, limit: int | None = None, remaining: int | None = None,
        blocked_s: float | None = None, rate_limited: bool = False,
    ) -> None:  # fmt: skip
        """The request has its answer (or failed): ``counted_at`` is when the venue counted it
        (the budget's clock; at the latest when the answer arrived; now when None), and the
        venue's headers and 10006 say what it knows."""
        if self._open:
            self._open = False
            self._budget._finish(self._window, counted_at, limit, remaining, blocked_s, rate_limited)

    def unused(self) -> None:
        """Never sent: give the slot and the window's room back."""
        if self._open:
            self._open = False
            self._budget._give_back(self._window)


class RateBudget:
    """Shared by every request of the process (see the module docstring)."""

    def __init__(self, *, max_in_flight: int = 8, clock: Callable[[], float] = time.monotonic) -> None:
        """``max_in_flight``: routine requests (opens, reads) at once; cancels and closes may use
        ``RESERVED_SLOTS`` more (``threads`` in all)."""
        self._clock = clock
        self._max_in_flight = max_in_flight
        self.threads = max_in_flight + RESERVED_SLOTS
        self._in_flight = 0
        self._windows = {method: _Window(path, limit) for method, (path, limit) in ENDPOINTS.items()}
        # (lane, endpoint) → symbol → its waiting tickets; symbols in the order they are served next.
        self._queues: dict[tuple[Priority, str], OrderedDict[str, deque[Ticket]]] = {}
        self._lanes = {lane: [0, 0, 0.0] for lane in Priority}  # requests, waited, max wait
        self._armed = 0.0  # the instant sleeping tickets will next look again by themselves
        self._by_symbol: dict[str, tuple[int, float]] = {}

    def now(self) -> float:
        """The budget's clock (monotonic seconds); safe to call from worker threads."""
        return self._clock()

    # --- taking a permit -------------------------------------------------------------------

    async def acquire(
        self, method: str, lane: Priority, symbol: str = "", *, give_up_at: float | None = None
    ) -> Permit:
        """Wait for a permit; :class:`BudgetTimeout` once ``give_up_at`` (budget clock) passes."""
        ticket = self.enqueue(method, lane, symbol)
        try:
            while ticket.permit is None:
                now = self._clock()
                if give_up_at is not None and now >= give_up_at:
                    raise BudgetTimeout(method)
                soonest = self.next_change(now)
                self._armed = soonest if self._armed <= now else min(self._armed, soonest)
                ticket.wake = anyio.Event()
                with anyio.move_on_after(min(soonest, math.inf if give_up_at is None else give_up_at) - now):
                    await ticket.wake.wait()
                self.dispatch()
        except BaseException:
            self.withdraw(ticket)
            raise
        return ticket.permit

    def enqueue(self, method: str, lane: Priority, symbol: str = "") -> Ticket:
        """Queue a request and serve the queue; the ticket's permit is set if it went at once."""
        window = self._windows.get(method)
        ticket = Ticket(window, lane, symbol, self._clock())
        key = (lane, window.path if window else PUBLIC)
        self._queues.setdefault(key, OrderedDict()).setdefault(symbol, deque()).append(ticket)
        self.dispatch()
        ticket.first_pass = False
        if ticket.permit is None and window is not None:
            self._note_exhausted(window, ticket.since)
        return ticket

    def _note_exhausted(self, window: _Window, now: float) -> None:
        """What an operator sees when the window is full: one line per endpoint now and then."""
        full = now < window.blocked_until or window.used(now) >= window.limit
        if full and now - window.exhausted_logged_at >= EXHAUSTED_LOG_EVERY_S:
            window.exhausted_logged_at = now
            queued = sum(len(t) for (_, path), s in self._queues.items() if path == window.path for t in s.values())
            log.warning("rate-limit budget exhausted; requests wait for room", extra={
                "endpoint": window.path, "limit_per_s": window.limit, "in_flight": window.in_flight, "queued": queued,
                "blocked_for_s": round(max(0.0, window.blocked_until - now), 3)})  # fmt: skip

    def withdraw(self, ticket: Ticket) -> None:
        """The caller gave up: out of the queue, or its unused permit given back."""
        if ticket.permit is not None:
            ticket.permit.unused()
            return
        key = (ticket.lane, ticket.window.path if ticket.window else PUBLIC)
        symbols = self._queues.get(key, OrderedDict())
        waiting = symbols.get(ticket.symbol)
        if waiting is not None and ticket in waiting:
            waiting.remove(ticket)
            if not waiting:
                del symbols[ticket.symbol]

    def dispatch(self) -> None:
        """Grant every ticket that may go now: lanes in order, symbols in turn within a lane."""
        now = self._clock()
        for key in sorted(self._queues):
            lane = key[0]
            symbols = self._queues[key]
            for symbol in list(symbols):
                if not self._slot_free(lane):
                    break
                ticket = symbols[symbol][0]
                if ticket.window is not None and not ticket.window.has_room(now, lane):
                    break  # one endpoint and lane: every ticket here waits for the same room
                symbols[symbol].popleft()
                if symbols[symbol]:
                    symbols.move_to_end(symbol)  # its turn is over
                else:
                    del symbols[symbol]
                self._grant(ticket, now)
        self._wake_if_sooner(now)

    def _wake_if_sooner(self, now: float) -> None:
        """Sleeping tickets look again at the soonest instant room may appear; when an answer
        or a grant has made that sooner than they know (e.g. the first answer after a burst
        that was all in flight), wake them to re-arm."""
        if self.next_change(now) < self._armed or self._armed <= now:
            self._armed = math.inf
            for symbols in self._queues.values():
                for tickets in symbols.values():
                    for ticket in tickets:
                        ticket.wake.set()
    def next_change(self, now: float) -> float:
        return min((w.next_change(now) for w in self._windows.values()), default=math.inf)

    def _slot_free(self, lane: Priority) -> bool:
        return self._in_flight < (self.threads if lane <= Priority.CLOSE else self._max_in_flight)

    def _grant(self, ticket: Ticket, now: float) -> None:
        self._in_flight += 1
        waited = not ticket.first_pass
        wait_s = now - ticket.since
        window = ticket.window
        if window is not None:
            window.in_flight += 1
            window.requests += 1
            if ticket.lane is Priority.OPEN:
                window.next_open = now + PACE_SHARE * WINDOW_S / max(window.limit, 1)
            if waited:
                window.waited += 1
                window.wait_s_total += wait_s
                window.wait_s_max = max(window.wait_s_max, wait_s)
        figures = self._lanes[ticket.lane]
        figures[0] += 1
        if waited:
            figures[1] += 1
            figures[2] = max(figures[2], wait_s)
            count, seconds = self._by_symbol.get(ticket.symbol, (0, 0.0))
            self._by_symbol[ticket.symbol] = (count + 1, seconds + wait_s)
        ticket.permit = Permit(self, window)
        ticket.wake.set()

    # --- the answers -----------------------------------------------------------------------

    def _finish(
        self, window: _Window | None, counted_at: float | None, limit: int | None, remaining: int | None,
        blocked_s: float | None, rate_limited: bool,
    ) -> None:  # fmt: skip
        self._in_flight -= 1
        if window is not None:
            now = self._clock()
            leaves_at = (now if counted_at is None else min(counted_at, now)) + WINDOW_S + MARGIN_S
            window.in_flight -= 1
            window.count_until(leaves_at)
            if limit is not None and limit > 0:
                window.limit = limit  # X-Bapi-Limit: the account's real limit for this endpoint
            if remaining is not None:
                # The venue counts more than we do: someone else is using this account.
                foreign = min(window.limit, window.limit - remaining - window.used(now))
                window.count_until(now + WINDOW_S + MARGIN_S, max(0, foreign))
            if rate_limited:
                window.rate_limited += 1
            if blocked_s is not None and blocked_s > 0:
                window.blocked_until = max(window.blocked_until, now + blocked_s)
        self.dispatch()

    def _give_back(self, window: _Window | None) -> None:
        self._in_flight -= 1
        if window is not None:
            window.in_flight -= 1
        self.dispatch()

    # --- figures ---------------------------------------------------------------------------

    def figures(self) -> BudgetFigures:
        now = self._clock()
        queued: dict[str, int] = {}
        lane_queued = dict.fromkeys(Priority, 0)
        for (lane, path), symbols in self._queues.items():
            n = sum(len(tickets) for tickets in symbols.values())
            queued[path] = queued.get(path, 0) + n
            lane_queued[lane] += n
        endpoints = {
            w.path: EndpointFigures(
                limit=w.limit, remaining=0 if now < w.blocked_until else max(0, w.limit - w.used(now)),
                in_flight=w.in_flight, queued=queued.get(w.path, 0), requests=w.requests, waited=w.waited,
                wait_s_total=w.wait_s_total, wait_s_max=w.wait_s_max, rate_limited=w.rate_limited,
            )
            for w in self._windows.values()
        }  # fmt: skip
        lanes = {lane.name.lower(): LaneFigures(int(f[0]), int(f[1]), float(f[2]), lane_queued[lane])
                 for lane, f in self._lanes.items()}  # fmt: skip
        return BudgetFigures(endpoints, lanes, dict(self._by_symbol), self._in_flight)
