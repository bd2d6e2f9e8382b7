"""ws-gateway: its order events (the envelope around a Bybit order) and the order-channel
subscription (contract §3.2); its ticker events and the ticker-channel subscriptions (§14.1).
A failed subscription is never fatal: it is retried in the background. Without order events
/ready shows ws_gateway unavailable and the periodic sync keeps orders right; without ticker
events every reference price is read from the venue's REST ticker, as before the stream."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Protocol

import aiohttp
import anyio
from anyio.streams.memory import MemoryObjectSendStream

from ordermgr.amqp.broker import TICKER_ARGUMENTS, TICKER_QUEUE, Broker, Delivery, consume
from ordermgr.bybit.wire import parse_order
from ordermgr.domain.decision import is_own_order_link_id
from ordermgr.domain.market import TickerItem, read_ticker_item
from ordermgr.domain.model import VenueOrder
from ordermgr.ports import OrderEventDelivery

log = logging.getLogger(__name__)

RECHECK_INTERVAL_S = 60.0
UNREADABLE_LOG_EVERY_S = 10.0  # a producer sending garbage is logged, not allowed to flood the log
# One decoder for every event: ``json.loads`` with options builds a new one per call.
_DECIMAL_JSON = json.JSONDecoder(parse_float=Decimal)


def order_of_event(body: bytes) -> VenueOrder | None:
    """The Bybit order inside a ws-gateway order event; None when it is not one (logged) or
    when the order is not ours: others' orders on the account may come with an empty side or
    a status we do not know, and are none of our business (contract §16)."""
    try:
        payload = json.loads(body)["payload"]
        if not isinstance(payload, dict):  # a null or list payload would break the parser
            raise TypeError(f"payload is {type(payload).__name__}, not an object")
        if not is_own_order_link_id(str(payload.get("orderLinkId") or "")):
            return None
        return parse_order(payload)
    except (ValueError, KeyError, TypeError, ArithmeticError) as exc:
        log.warning("order event not understood; dropped", extra={"error": repr(exc), "body": body[:200].decode(errors="replace")})
        return None


def order_events_to(send: MemoryObjectSendStream[OrderEventDelivery]) -> Callable[[Delivery], Awaitable[None]]:
    """A ``consume`` callback that reads each order event and hands it on without waiting;
    when the stream is full or closing the delivery is requeued, so the broker keeps it."""

    async def hand_over(delivery: Delivery) -> None:
        try:
            send.send_nowait(OrderEventDelivery(order_of_event(delivery.body), delivery))
        except (anyio.WouldBlock, anyio.ClosedResourceError, anyio.BrokenResourceError):
            # Full, or closing (the actors drain on a stop): the broker keeps it for later.
            await delivery.requeue()

    return hand_over


async def keep_subscribed(
    base_url: str,
    api_key: str,
    service_name: str,
    on_status: Callable[[bool], None],
    *,
    recheck_interval_s: float = RECHECK_INTERVAL_S,
) -> None:
    """Ask for the order channel, then ask again every ``recheck_interval_s``: 409 means the
    subscription exists, which also tells us ws-gateway is up (and re-creates it if
    ws-gateway lost its state)."""
    body = {"channel_type": "order", "requesting_service": service_name}
    failures = 0
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        while True:
            ok = await _subscribe(http, f"{base_url}/api/v1/subscriptions", api_key, body, quiet=failures > 0)
            on_status(ok)
            failures = 0 if ok else failures + 1
            await anyio.sleep(recheck_interval_s if ok else min(recheck_interval_s, 2.0 * 2**failures))


async def _subscribe(
    http: aiohttp.ClientSession, url: str, api_key: str, body: dict[str, str], *, quiet: bool
) -> bool:
    try:
        async with http.post(url, json=body, headers={"X-API-Key": api_key}) as response:
            if response.status in (200, 201, 409):
                return True
            detail = f"HTTP {response.status}: {(await response.text())[:200]}"
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        detail = f"{type(exc).__name__}: {exc}"
    if not quiet:
        log.error("ws-gateway %s subscription failed; retrying in the background", body["channel_type"],
                  extra={"error": detail, "asset": body.get("symbol")})  # fmt: skip
    return False


# --- tickers ----------------------------------------------------------------------------------


class TickerSubscriptions:
    """Asks ws-gateway for each symbol's ticker channel, in the background. ``want`` is called
    on a signal's path (the first ticker asked for a symbol) and never waits. A failed ask is
    retried with backoff; a made one is asked again every ``recheck_interval_s`` (409 = it
    exists; the ask recreates it if ws-gateway lost its state)."""

    def __init__(
        self, base_url: str, api_key: str, service_name: str, *, recheck_interval_s: float = RECHECK_INTERVAL_S,
        retry_base_s: float = 1.0,
    ) -> None:  # fmt: skip
        self._url = f"{base_url}/api/v1/subscriptions"
        self._api_key = api_key
        self._service_name = service_name
        self._recheck_interval_s = recheck_interval_s
        self._retry_base_s = retry_base_s
        self._due: dict[str, float] = {}  # symbol → when to ask next
        self._failures: dict[str, int] = {}  # symbol → failed asks in a row
        self._wakeup = anyio.Event()

    def want(self, symbol: str) -> None:
        if symbol not in self._due:
            self._due[symbol] = anyio.current_time()
            self._wakeup.set()

    async def run(self) -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            while True:
                await self._ask_due(http)
                next_due = min(self._due.values(), default=anyio.current_time() + self._recheck_interval_s)
                with anyio.move_on_after(next_due - anyio.current_time()):
                    await self._wakeup.wait()
                self._wakeup = anyio.Event()

    async def _ask_due(self, http: aiohttp.ClientSession) -> None:
        for symbol in [symbol for symbol, due in self._due.items() if due <= anyio.current_time()]:
            failures = self._failures.get(symbol, 0)
            body = {"channel_type": "ticker", "symbol": symbol, "requesting_service": self._service_name}
            if await _subscribe(http, self._url, self._api_key, body, quiet=failures > 0):
                if failures:
                    log.info("ws-gateway ticker subscription made", extra={"asset": symbol, "failures": failures})
                self._failures[symbol] = 0
                self._due[symbol] = anyio.current_time() + self._recheck_interval_s
            else:
                self._failures[symbol] = failures + 1
                backoff_s = min(self._recheck_interval_s, self._retry_base_s * 2**failures)
                self._due[symbol] = anyio.current_time() + backoff_s


def ticker_of_event(body: bytes) -> TickerItem:
    """The Bybit ticker item inside a ws-gateway ticker event; ``ValueError`` when it is not one.
    Numbers are read as ``Decimal`` (``parse_float``): a price never passes through a float."""
    try:
        payload = _DECIMAL_JSON.decode(body.decode())["payload"]
    except (KeyError, TypeError, RecursionError) as exc:
        raise ValueError(f"not a ws-gateway event: {exc!r}") from None
    return read_ticker_item(payload)


class HasBody(Protocol):
    @property
    def body(self) -> bytes: ...


class TickerFeed:
    """ws-gateway's ticker events, each read and handed to ``take`` as it arrives. They are
    consumed without acknowledgements: a ticker event lost with a connection costs nothing (the
    next one carries the price again, and a price is only used while its own ``ts`` is fresh),
    and an ack per event would cost as much as reading it. An event that cannot be read is
    logged (at most every ``UNREADABLE_LOG_EVERY_S``, with the count) and dropped."""

    def __init__(self, take: Callable[[TickerItem], None]) -> None:
        self._take = take
        self._unreadable = 0
        self._logged_at: float | None = None
        self.events = 0

    async def on_delivery(self, delivery: HasBody) -> None:
        self.events += 1
        try:
            self._take(ticker_of_event(delivery.body))
        except ValueError as exc:
            self._note_unreadable(delivery.body, exc)

    def _note_unreadable(self, body: bytes, exc: ValueError) -> None:
        self._unreadable += 1
        now = anyio.current_time()
        if self._logged_at is None or now - self._logged_at >= UNREADABLE_LOG_EVERY_S:
            body_text = body[:200].decode(errors="replace")
            log.warning("ticker event not understood; dropped",
                        extra={"error": str(exc), "body": body_text, "dropped": self._unreadable})  # fmt: skip
            self._logged_at, self._unreadable = now, 0


async def follow_tickers(broker: Broker, take: Callable[[TickerItem], None]) -> None:
    """Consume ``ws-gateway.ticker`` (declared as ws-gateway declares it) into ``take`` until cancelled."""
    feed = TickerFeed(take)
    # No acks, so no window either (prefetch 0): the broker sends as the events come.
    await consume(broker, TICKER_QUEUE, feed.on_delivery, prefetch=0, arguments=TICKER_ARGUMENTS, no_ack=True)
