"""The Bybit v5 venue adapter: endpoints, caches and the meaning of each write outcome.

Reads return parsed values or raise :class:`VenueUnavailable` / :class:`VenueAuthError`;
a failed read is *unknown*, never *empty*. Writes never raise for venue or network trouble:
they return a :data:`WriteOutcome`. The request policy (threads, retries, rate limits,
clock) lives in :mod:`ordermgr.bybit.client`; pybit itself in :mod:`ordermgr.bybit.transport`.
See contract §8 and bybit.md §3–§5, §7.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from decimal import Decimal
from typing import Any, Final

import anyio
import attrs

from ordermgr.bybit.balance import BackgroundBalance
from ordermgr.bybit.budget import BudgetFigures, BudgetTimeout, RateBudget
from ordermgr.bybit.client import MAX_PAGES, BybitClient, ExchangeStatistics, Withheld
from ordermgr.bybit.tickers import FreshTickers, PriceFigures, StreamPrices
from ordermgr.bybit.transport import Kind, VenueFailure
from ordermgr.bybit.wire import (
    parse_execution,
    parse_instrument,
    parse_order,
    parse_position,
    parse_ticker,
    WalletBalance,
    parse_wallet,
)
from ordermgr.domain.decision import is_own_order_link_id
from ordermgr.domain.errors import VenueAuthError, VenueUnavailable
from ordermgr.domain.model import (
    Accepted,
    Expired,
    Instrument,
    OrderRequest,
    OrderType,
    Priority,
    Rejected,
    RetryPolicy,
    Ticker,
    Unavailable,
    Unknown,
    VenueExecution,
    VenueOrder,
    VenuePosition,
    WriteOutcome,
)

__all__ = ["BybitExchange", "ExchangeStatistics"]

logger = logging.getLogger(__name__)

# 110072 (linear) / 170141 (spot) = duplicate orderLinkId: an earlier attempt landed.
DUPLICATE_LINK_CODES: Final = frozenset({110072, 170141})
CANCELLED_STATUSES: Final = frozenset({"Cancelled", "PartiallyFilledCanceled", "Deactivated"})


class BybitExchange:
    """Bybit v5 over pybit. Safe to share between tasks; every call is independent.

    ``rate_limit_wait_s`` (default ``timeout_s``) bounds how long one call waits for the
    rate-limit budget (``budget``: the account's, shared by every request; one of its own when
    not given); ``sleep`` is used for retry backoff, so tests can pass a zero-delay sleep;
    ``on_answer`` hears of every venue answer (``domain.trading`` ANSWERED / FAILED / NEITHER).
    ``stream``: the prices of ws-gateway's ticker stream (None: every ticker is read over REST).
    """

    def __init__(
        self,
        *,
        api_key: str,
        api_secret: str,
        base_url: str,
        category: str = "linear",
        timeout_s: float = 30.0,
        retry: RetryPolicy = RetryPolicy(),
        max_concurrency: int = 8,
        instrument_ttl_s: float = 300.0,
        balance_interval_s: float = 5.0,
        balance_after_fill_s: float = 0.5,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        settle_coin: str = "USDT",
        rate_limit_wait_s: float | None = None,
        budget: RateBudget | None = None,
        on_answer: Callable[[str, str], None] = lambda kind, detail: None,
        stream: StreamPrices | None = None,
    ) -> None:
        self._client = BybitClient(
            api_key=api_key, api_secret=api_secret, base_url=base_url, timeout_s=timeout_s,
            retry=retry, max_concurrency=max_concurrency, sleep=sleep,
            rate_limit_wait_s=timeout_s if rate_limit_wait_s is None else rate_limit_wait_s, budget=budget,
            on_answer=on_answer,
        )
        self._category = category
        self._settle_coin = settle_coin
        self._instrument_ttl_s = instrument_ttl_s
        self._instruments: dict[str, Instrument] | None = None
        self._instruments_at = 0.0
        self._instruments_lock = anyio.Lock()
        self._balance = BackgroundBalance(self._fetch_wallet, interval_s=balance_interval_s,
                                          after_fill_s=balance_after_fill_s)  # fmt: skip
        self._tickers = FreshTickers(self._fetch_tickers)
        self._stream = stream

    # ----------------------------------------------------------------- reads

    async def server_time_ms(self) -> int:
        """The venue's clock in ms; also re-measures the offset pybit signs with."""
        return await self._client.server_time_ms()

    async def instruments(self) -> Mapping[str, Instrument]:
        """Trading instruments of the category, cached for ``instrument_ttl_s``. Read-only and
        not copied (it is read for every signal); a refresh replaces it, so callers may hold
        it and tell a refreshed list by identity.

        A failed refresh keeps serving the previous list (filters change rarely and the venue
        re-validates every order); with nothing cached it raises :class:`VenueUnavailable`.
        """
        async with self._instruments_lock:
            if self._instruments is None or self._instruments_expired():
                await self._refresh_instruments()
            assert self._instruments is not None
            return self._instruments

    async def instrument(self, symbol: str) -> Instrument | None:
        return (await self.instruments()).get(symbol)

    async def ticker(self, symbol: str) -> Ticker:
        """The reference price (contract §14.1): the ticker stream's while its last price is
        fresh, else the REST ticker read after this call began (concurrent calls share requests)."""
        if self._stream is not None:
            streamed = self._stream.fresh(symbol, self._client.venue_now_latest_ms())
            if streamed is not None:
                return streamed
        return await self._tickers.get(symbol)

    def price_sources(self) -> PriceFigures:
        """How many tickers the stream served and how many were read over REST (since start)."""
        return attrs.evolve(self._stream.figures) if self._stream is not None else PriceFigures()

    async def _fetch_tickers(self, symbols: frozenset[str]) -> dict[str, Ticker]:
        """One symbol: ask for it. Several: one request for the category's whole list."""
        only: dict[str, Any] = {"symbol": next(iter(symbols))} if len(symbols) == 1 else {}
        result = await self._client.read("get_tickers", category=self._category, **only)
        items = [item for item in result.get("list") or [] if item.get("symbol") in symbols]
        return {ticker.symbol: ticker for ticker in map(parse_ticker, items)}

    async def available_balance(self, coin: str = "USDT") -> Decimal:
        """What new ``coin`` orders can use: on a Unified account the account-wide figure
        (contract §16). The last figure read in the background (contract §14.2: never a read
        while a signal waits, but for the very first; see :mod:`ordermgr.bybit.balance`)."""
        return (await self.wallet(coin)).available

    async def wallet(self, coin: str = "USDT") -> WalletBalance:
        """The available figure with the coin's own wallet balance and equity (for display)."""
        return await self._balance.wallet(coin)

    async def refresh_balance(self, coin: str = "USDT") -> WalletBalance:
        """Read the wallet now (a private request: it also proves the credentials)."""
        return await self._balance.refresh(coin)

    def invalidate_balance(self) -> None:
        """A fill changed the wallet: the background reads it within ``balance_after_fill_s``
        (one read for the fills of a burst)."""
        self._balance.fill_happened()

    async def keep_balance_fresh(self) -> None:
        """Read the wallet in the background until cancelled: at start, after fills, and every
        ``balance_interval_s``."""
        await self._balance.run()

    async def next_balance_refresh(self) -> None:
        """Until the background's next round of wallet reads has finished."""
        await self._balance.next_refresh()

    async def _fetch_wallet(self, coin: str) -> WalletBalance:
        result = await self._client.read("get_wallet_balance", accountType="UNIFIED", coin=coin)
        return parse_wallet(result, coin)

    async def find_order(
        self, symbol: str, order_link_id: str, *, lane: Priority = Priority.READ
    ) -> VenueOrder | None:
        """Look an order up by ``orderLinkId``: realtime first (queried by orderLinkId it also
        returns recently closed orders), then history. ``None`` only when both answered
        "not there" — and even then the venue may just be slow to show a fresh order."""
        for method in ("get_open_orders", "get_order_history"):
            result = await self._client.read(method, lane=lane, category=self._category, symbol=symbol,
                                             orderLinkId=order_link_id)
            for item in result.get("list") or []:
                if item.get("orderLinkId") == order_link_id:
                    return parse_order(item)
        return None

    async def open_orders(self, symbol: str | None = None) -> list[VenueOrder]:
        """All open orders of ``symbol`` (or of the settle coin), every page."""
        items = await self._client.read_pages("get_open_orders", self._scope(symbol) | {"limit": 50})
        return _orders(items)

    async def order_history(
        self,
        symbol: str | None = None,
        *,
        start_ms: int | None = None,
        end_ms: int | None = None,
        max_pages: int = MAX_PAGES,
    ) -> list[VenueOrder]:
        """Orders of Bybit's history window (default: last 7 days), every page. Raises
        :class:`VenueUnavailable` rather than return a list cut at ``max_pages``."""
        params = self._scope(symbol) | {"limit": 50, "startTime": start_ms, "endTime": end_ms}
        items = await self._client.read_pages("get_order_history", params, max_pages=max_pages)
        return _orders(items)

    async def executions(self, symbol: str, order_id: str) -> list[VenueExecution]:
        """The order's trades, oldest first (Bybit lists them newest first), every page."""
        params = {"category": self._category, "symbol": symbol, "orderId": order_id, "execType": "Trade",
                  "limit": 100}  # fmt: skip
        items = await self._client.read_pages("get_executions", params)
        return [parse_execution(item) for item in reversed(items)]

    async def positions(self) -> list[VenuePosition]:
        """Non-flat positions of the settle coin, every page (spot has no positions)."""
        if self._category == "spot":
            return []
        params = {"category": self._category, "settleCoin": self._settle_coin, "limit": 200}
        items = await self._client.read_pages("get_positions", params)
        return [p for p in map(parse_position, items) if p.size != 0]

    # ---------------------------------------------------------------- writes

    async def place_order(self, req: OrderRequest) -> WriteOutcome:
        """Create an order, in its lane of the rate-limit budget (``req.lane``). Never raises for
        venue or network trouble. A request in flight is not abandoned on cancellation (the
        caller is cancelled once it has returned). Expired when ``req.not_after`` passes while
        it waits for the budget, or when ``req.allowed`` refuses once it may go: then it was
        never sent."""
        not_after = None if req.not_after is None else self._client.deadline(req.not_after.timestamp())
        try:
            reply = await self._client.request("place_order", _order_params(req), write=True, lane=req.lane,
                                               not_after=not_after, allowed=req.allowed)  # fmt: skip
        except Withheld as withheld:
            return Expired(f"not sent: withheld at the last moment ({withheld})", code=str(withheld))
        except BudgetTimeout:
            return Expired(f"not sent: the rate-limit budget had no room before {req.not_after.isoformat()}"
                           if req.not_after else "not sent")  # fmt: skip
        except VenueFailure as failure:
            if failure.kind is Kind.REJECTED and failure.code in DUPLICATE_LINK_CODES:
                return await self._resolve(req.symbol, req.order_link_id, failure, cancel=False, lane=req.lane)
            if failure.kind is Kind.UNKNOWN:
                self._client.note_unknown_outcome()
                return await self._resolve(req.symbol, req.order_link_id, failure, cancel=False, lane=req.lane)
            return _final_outcome(failure)
        return Accepted(str(reply.result.get("orderId", "")), req.order_link_id)

    async def cancel_order(self, symbol: str, order_link_id: str) -> WriteOutcome:
        """Cancel by ``orderLinkId``. 110001 (not found / too late) comes back Rejected: the
        caller reconciles. Never raises for venue or network trouble."""
        params = {"category": self._category, "symbol": symbol, "orderLinkId": order_link_id}
        try:
            reply = await self._client.request("cancel_order", params, write=True, lane=Priority.CANCEL)
        except VenueFailure as failure:
            if failure.kind is Kind.UNKNOWN:
                self._client.note_unknown_outcome()
                return await self._resolve(symbol, order_link_id, failure, cancel=True, lane=Priority.CANCEL)
            return _final_outcome(failure)
        return Accepted(str(reply.result.get("orderId", "")), order_link_id)

    def statistics(self) -> ExchangeStatistics:
        return self._client.statistics()

    def rate_limits(self) -> BudgetFigures:
        """The rate-limit budget's figures now (read-only): room, waits and 10006 answers."""
        return self._client.budget.figures()

    async def aclose(self) -> None:
        """Close the HTTP sessions of every worker thread."""
        await self._client.aclose()

    # --------------------------------------------------------------- helpers

    async def _resolve(
        self, symbol: str, link: str, failure: VenueFailure, *, cancel: bool, lane: Priority
    ) -> WriteOutcome:
        """The write may have landed: the venue's copy of the order decides."""
        try:
            order = await self.find_order(symbol, link, lane=lane)
        except (VenueUnavailable, VenueAuthError) as exc:
            return Unknown(f"{failure}; lookup of {link} failed: {exc}")
        if order is None:
            # Not (yet) visible is not "never placed" (lessons #1, #9): leave it unknown.
            return Unknown(f"{failure}; {link} not found by lookup")
        if cancel and order.status not in CANCELLED_STATUSES:
            return Unknown(f"{failure}; {link} is still {order.status}")
        logger.info("Bybit outcome resolved by lookup: %s", failure,
                    extra={"order_link_id": link, "order_id": order.order_id})
        return Accepted(order.order_id, order.order_link_id or link)

    def _scope(self, symbol: str | None) -> dict[str, Any]:
        # Linear realtime/history need symbol, baseCoin or settleCoin (bybit.md §1.5).
        if symbol is not None:
            return {"category": self._category, "symbol": symbol}
        if self._category == "spot":  # spot does not support settleCoin
            return {"category": self._category}
        return {"category": self._category, "settleCoin": self._settle_coin}

    def _instruments_expired(self) -> bool:
        return anyio.current_time() - self._instruments_at >= self._instrument_ttl_s

    async def _refresh_instruments(self) -> None:
        params = {"category": self._category, "limit": 1000}
        try:
            items = await self._client.read_pages("get_instruments_info", params)
        except VenueUnavailable:
            if self._instruments is None:
                raise
            logger.warning("Bybit instruments refresh failed; keeping the cached list")
            return
        self._instruments = {i.symbol: i for i in map(parse_instrument, items)}
        self._instruments_at = anyio.current_time()


def _orders(items: list[Mapping[str, Any]]) -> list[VenueOrder]:
    """The listed orders. Listed by settle coin, the account's other orders come too: one that
    is not ours and that we cannot read (an empty side, ...) is left out, not an error
    (contract §16); one of ours that we cannot read leaves the list unknown, never short."""
    parsed = []
    for item in items:
        link = str(item.get("orderLinkId") or "")
        try:
            parsed.append(parse_order(item))
        except (ValueError, KeyError, TypeError, ArithmeticError) as exc:
            if is_own_order_link_id(link):
                raise VenueUnavailable(f"Bybit listed our order {link} in a form we cannot read: {exc!r}") from None
            logger.debug("someone else's order left out: %r", exc, extra={"order_link_id": link})
    return parsed


def _order_params(req: OrderRequest) -> dict[str, Any]:
    params: dict[str, Any] = {
        "category": req.category,
        "symbol": req.symbol,
        "side": req.side.value,
        "orderType": req.order_type.value,
        "qty": _wire_decimal(req.qty),
        "orderLinkId": req.order_link_id,
    }
    if req.order_type is OrderType.LIMIT:
        if req.price is None:
            raise ValueError(f"Limit order {req.order_link_id} needs a price")
        params["price"] = _wire_decimal(req.price)
        params["timeInForce"] = req.time_in_force  # Market orders are always IOC on Bybit
    if req.category == "spot":
        if req.order_type is OrderType.MARKET:
            params["marketUnit"] = "baseCoin"  # spot Market qty is in the quote coin by default
    else:
        params["positionIdx"] = 0  # one-way mode
        params["reduceOnly"] = req.reduce_only
    return params


def _wire_decimal(value: Decimal) -> str:
    return format(value, "f")  # never "1E+1": Bybit wants plain decimal strings


def _final_outcome(failure: VenueFailure) -> WriteOutcome:
    if failure.kind in (Kind.REJECTED, Kind.AUTH):
        return Rejected(failure.code, failure.message)
    if failure.kind is Kind.UNKNOWN:
        return Unknown(str(failure))
    return Unavailable(str(failure))
