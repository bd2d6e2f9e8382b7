"""ws-gateway: its order events (the envelope around a Bybit order) and the order-channel
subscription (contract §3.2). A failed subscription is never fatal: it is retried in the
background, /ready shows ws_gateway unavailable meanwhile, and the periodic sync keeps orders
right without events."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable

import aiohttp
import anyio
from anyio.streams.memory import MemoryObjectSendStream

from ordermgr.amqp.broker import Delivery
from ordermgr.bybit.wire import parse_order
from ordermgr.domain.decision import is_own_order_link_id
from ordermgr.domain.model import VenueOrder
from ordermgr.ports import OrderEventDelivery

log = logging.getLogger(__name__)

RECHECK_INTERVAL_S = 60.0


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
        log.error("ws-gateway order subscription failed; retrying in the background", extra={"error": detail})
    return False
