"""Bybit v5 dictionaries → our value objects. Pure functions, no I/O.

Bybit sends almost every number as a JSON string, and uses ``""`` for "not applicable"
(bybit.md §1.0). These helpers turn strings into ``Decimal`` at the edge and tolerate the
fields Bybit omits or blanks: an order from ``/v5/order/realtime`` and the same order pushed
on the private ``order`` topic (relayed by ws-gateway) go through the same ``parse_order``.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

import attrs

from ordermgr.domain.model import Instrument, Side, Ticker, VenueExecution, VenueOrder, VenuePosition

Wire = Mapping[str, Any]

# Statuses in which an order still rests on the book (bybit.md §2).
OPEN_STATUSES = frozenset({"New", "PartiallyFilled", "Untriggered"})


def parse_order(d: Wire) -> VenueOrder:
    """One order object from REST realtime/history or a WS ``order`` push."""
    qty = _dec(d, "qty")
    cum_qty = _dec(d, "cumExecQty")
    status = str(d["orderStatus"])
    return VenueOrder(
        order_id=str(d["orderId"]),
        order_link_id=str(d.get("orderLinkId") or ""),
        symbol=str(d["symbol"]),
        side=Side(d["side"]),
        order_type=str(d.get("orderType") or ""),
        status=status,
        qty=qty,
        price=_positive_or_none(d, "price"),
        cum_exec_qty=cum_qty,
        cum_exec_value=_dec(d, "cumExecValue"),
        cum_exec_fee=_order_fee(d),
        # Bybit documents "" for "no fills" but its own example shows "0" (bybit.md §1.5).
        avg_price=_positive_or_none(d, "avgPrice"),
        leaves_qty=_leaves_qty(d, status, qty, cum_qty),
        reject_reason=str(d.get("rejectReason") or ""),
        created_ms=_int(d, "createdTime"),
        updated_ms=_int(d, "updatedTime") or _int(d, "createdTime"),
        reduce_only=_bool(d, "reduceOnly"),
    )


def parse_instrument(d: Wire) -> Instrument:
    """One item of ``/v5/market/instruments-info``; linear fields, spot ones as fallback."""
    lot: Wire = d.get("lotSizeFilter") or {}
    price: Wire = d.get("priceFilter") or {}
    tick = _dec(price, "tickSize")
    max_qty = _first_dec(lot, "maxOrderQty", "maxLimitOrderQty")
    return Instrument(
        symbol=str(d["symbol"]),
        status=str(d.get("status") or ""),
        base_coin=str(d.get("baseCoin") or ""),
        quote_coin=str(d.get("quoteCoin") or ""),
        tick_size=tick,
        min_price=_opt_dec(price, "minPrice") or tick,
        max_price=_opt_dec(price, "maxPrice") or Decimal("Infinity"),
        # Spot has basePrecision instead of qtyStep, minOrderAmt instead of minNotionalValue.
        qty_step=_first_dec(lot, "qtyStep", "basePrecision"),
        min_qty=_first_dec(lot, "minOrderQty"),
        max_qty=max_qty,
        max_mkt_qty=_opt_dec(lot, "maxMktOrderQty") or _opt_dec(lot, "maxMarketOrderQty") or max_qty,
        min_notional=_first_dec(lot, "minNotionalValue", "minOrderAmt"),
        price_limit_ratio=_opt_dec(d.get("riskParameters") or {}, "priceLimitRatioX"),
    )


def parse_ticker(d: Wire) -> Ticker:
    """One item of ``/v5/market/tickers``."""
    return Ticker(
        symbol=str(d["symbol"]),
        last_price=_dec(d, "lastPrice"),
        bid_price=_positive_or_none(d, "bid1Price"),
        ask_price=_positive_or_none(d, "ask1Price"),
        mark_price=_positive_or_none(d, "markPrice"),
    )


def parse_execution(d: Wire) -> VenueExecution:
    """One item of ``/v5/execution/list``."""
    return VenueExecution(
        exec_id=str(d["execId"]),
        order_id=str(d.get("orderId") or ""),
        qty=_dec(d, "execQty"),
        price=_dec(d, "execPrice"),
        value=_dec(d, "execValue"),
        fee=_dec(d, "execFee"),
        time_ms=int(d.get("execTime") or 0),
    )


def parse_position(d: Wire) -> VenuePosition:
    """One item of ``/v5/position/list`` (or a WS ``position`` push). Sell → negative size."""
    size = _dec(d, "size")
    if d.get("side") == Side.SELL.value:
        size = -size
    # REST calls the entry price avgPrice, WS calls it entryPrice (bybit.md §0 item 10).
    avg = _opt_dec(d, "avgPrice")
    return VenuePosition(
        symbol=str(d["symbol"]),
        size=size,
        avg_price=avg if avg is not None else _dec(d, "entryPrice"),
        realized_pnl=_dec(d, "cumRealisedPnl"),
        unrealized_pnl=_dec(d, "unrealisedPnl"),
        mark_price=_positive_or_none(d, "markPrice"),
    )


@attrs.frozen
class WalletBalance:
    """What the account can put into new orders, and the coin's own figures (for display)."""

    available: Decimal  # USD on a Unified account (counted as USDT), else the coin's own
    coin: str
    wallet_balance: Decimal | None  # the coin's walletBalance; None when the coin is not listed
    equity: Decimal | None


def parse_wallet(result: Wire, coin: str) -> WalletBalance:
    """The ``result`` of ``/v5/account/wallet-balance``.

    On a Unified account every collateral coin funds USDT perpetuals, so what is available is
    the account's ``totalAvailableBalance`` (contract §16), not the coin's figure. Isolated-margin
    and classic accounts leave the account-wide fields blank; then the coin's own figure counts.
    """
    for account in result.get("list") or []:
        item = next((c for c in account.get("coin") or [] if c.get("coin") == coin), None)
        total = _opt_dec(account, "totalAvailableBalance")
        own = _coin_available(item) if item is not None else Decimal(0)
        return WalletBalance(
            available=total if total is not None else own,
            coin=coin,
            wallet_balance=None if item is None else _dec(item, "walletBalance"),
            equity=None if item is None else _opt_dec(item, "equity"),
        )
    return WalletBalance(Decimal(0), coin, None, None)


def _coin_available(item: Wire) -> Decimal:
    """What the coin alone can fund. ``availableToWithdraw`` is deprecated since 2025-01-09
    (bybit.md §1.9), so it is derived: the smaller of wallet balance and equity (unrealised
    losses count, unrealised gains do not) minus what open orders, positions and spot orders hold."""
    wallet = _dec(item, "walletBalance")
    equity = _opt_dec(item, "equity")
    base = wallet if equity is None else min(wallet, equity)
    held = sum((_dec(item, k) for k in ("locked", "totalOrderIM", "totalPositionIM")), Decimal(0))
    return max(Decimal(0), base - held)


def _order_fee(d: Wire) -> Decimal:
    fee = _opt_dec(d, "cumExecFee")
    if fee is not None:
        return fee
    # cumExecFee is deprecated for linear/spot in favour of cumFeeDetail {coin: fee}.
    detail = d.get("cumFeeDetail")
    if isinstance(detail, Mapping) and len(detail) == 1:
        return _dec(detail, next(iter(detail)))
    return Decimal(0)


def _leaves_qty(d: Wire, status: str, qty: Decimal, cum_qty: Decimal) -> Decimal:
    leaves = _opt_dec(d, "leavesQty")
    if leaves is not None:
        return leaves
    # WS pushes may blank leavesQty (bybit.md §9, WS order example).
    return max(Decimal(0), qty - cum_qty) if status in OPEN_STATUSES else Decimal(0)


def _opt_dec(d: Wire, key: str) -> Decimal | None:
    raw = d.get(key)
    if raw is None or raw == "":
        return None
    try:
        return Decimal(str(raw))
    except InvalidOperation:
        raise ValueError(f"Bybit field {key}={raw!r} is not a number") from None


def _dec(d: Wire, key: str) -> Decimal:
    value = _opt_dec(d, key)
    return Decimal(0) if value is None else value


def _first_dec(d: Wire, *keys: str) -> Decimal:
    for key in keys:
        value = _opt_dec(d, key)
        if value is not None:
            return value
    return Decimal(0)


def _positive_or_none(d: Wire, key: str) -> Decimal | None:
    value = _opt_dec(d, key)
    return value if value is not None and value > 0 else None


def _bool(d: Wire, key: str) -> bool:
    """A JSON boolean, or the strings "true" / "false" read as what they say (contract §16):
    ``bool("false")`` is True. Absent or ``""`` is false; anything else is not a boolean."""
    raw = d.get(key)
    if isinstance(raw, bool):
        return raw
    if raw is None or raw == "":
        return False
    if isinstance(raw, str) and raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    raise ValueError(f"Bybit field {key}={raw!r} is not a boolean")


def _int(d: Wire, key: str) -> int:
    raw = d.get(key)
    return int(raw) if raw not in (None, "") else 0
