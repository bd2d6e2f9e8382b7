"""Test helpers: a paper venue served in-process on port 0, and pybit calls against it."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from pybit.exceptions import InvalidRequestError
from pybit.unified_trading import HTTP

from ordermgr.paper import PaperConfig, PaperVenue

API_KEY = "paper-key"
API_SECRET = "paper-secret"


@asynccontextmanager
async def running_venue(**overrides: Any) -> AsyncIterator[PaperVenue]:
    """Serve a venue (price walk off unless overridden) until the block ends."""
    config = PaperConfig(**{"price_walk_interval_s": 0.0, **overrides})
    venue = PaperVenue(config)
    async with anyio.create_task_group() as tg:
        await tg.start(venue.run)
        try:
            yield venue
        finally:
            tg.cancel_scope.cancel()


def make_session(
    base_url: str, *, key: str = API_KEY, secret: str = API_SECRET, timeout: float = 5, **kw: Any
) -> HTTP:
    # One attempt, no pybit-internal retries or sleeps: failures surface as they are.
    session = HTTP(api_key=key, api_secret=secret, max_retries=1, retry_codes={-999999}, timeout=timeout, **kw)
    session.endpoint = base_url
    session.client.trust_env = False  # no proxies from the environment
    return session


async def call(method: Callable[..., Any], /, **kwargs: Any) -> Any:
    """Run one blocking pybit call in a worker thread."""
    return await anyio.to_thread.run_sync(functools.partial(method, **kwargs))


async def rejected(method: Callable[..., Any], /, **kwargs: Any) -> InvalidRequestError:
    """Run a call that must be refused with a retCode; return pybit's error."""
    with pytest.raises(InvalidRequestError) as info:
        await call(method, **kwargs)
    return info.value


async def place(session: HTTP, **kwargs: Any) -> dict[str, Any]:
    """``place_order`` with linear/BTCUSDT defaults; returns ``result`` (ids)."""
    params = {"category": "linear", "symbol": "BTCUSDT", **kwargs}
    reply = await call(session.place_order, **params)
    assert reply["retCode"] == 0, reply
    return reply["result"]  # type: ignore[no-any-return]


async def order_by_link(session: HTTP, link_id: str, symbol: str = "BTCUSDT") -> dict[str, Any]:
    """The order as ``/v5/order/realtime`` shows it (open or recently closed)."""
    reply = await call(session.get_open_orders, category="linear", symbol=symbol, orderLinkId=link_id)
    (order,) = reply["result"]["list"]
    return order  # type: ignore[no-any-return]


async def position_of(session: HTTP, symbol: str = "BTCUSDT") -> dict[str, Any]:
    reply = await call(session.get_positions, category="linear", symbol=symbol)
    (row,) = reply["result"]["list"]
    return row  # type: ignore[no-any-return]


async def usdt_wallet(session: HTTP) -> dict[str, Any]:
    reply = await call(session.get_wallet_balance, accountType="UNIFIED", coin="USDT")
    return reply["result"]["list"][0]  # type: ignore[no-any-return]
