"""Request parsing and the instrument rules Bybit enforces on ``/v5/order/create``.

Every refusal is a :class:`VenueError` with the code Bybit uses (bybit.md §1-§3).
Values arrive as JSON (POST) or strings (GET); both are accepted where Bybit does.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Final, TypeVar

import attrs

from ordermgr.domain.model import Instrument, OrderType, Side
from ordermgr.paper.errors import VenueError, param_error
from ordermgr.paper.instruments import Listing

LINK_ID_PATTERN: Final = re.compile(r"[0-9A-Za-z_-]*")
LINK_ID_MAX_LEN: Final = 36
TIME_IN_FORCE: Final = frozenset({"GTC", "IOC", "FOK", "PostOnly"})
# Parameters of conditional / TP-SL orders, which the paper venue does not emulate.
UNSUPPORTED: Final = ("triggerPrice", "takeProfit", "stopLoss")

Params = Mapping[str, object]
E = TypeVar("E", Side, OrderType)


@attrs.frozen
class OrderSpec:
    """A create request that passed parsing (not yet the rules that need state)."""

    symbol: str
    side: Side
    order_type: OrderType
    qty: Decimal
    price: Decimal | None  # None for Market
    time_in_force: str
    order_link_id: str
    reduce_only: bool


def text(params: Params, name: str, *, required: bool = False) -> str:
    value = params.get(name)
    if value is None or value == "":
        if required:
            raise param_error(f"params error: {name} is required")
        return ""
    return str(value)


def decimal(params: Params, name: str) -> Decimal | None:
    raw = text(params, name)
    if not raw:
        return None
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise param_error(f"params error: {name} invalid") from None
    if not value.is_finite():
        raise param_error(f"params error: {name} invalid")
    return value


def flag(params: Params, name: str) -> bool:
    value = params.get(name)
    return value is True or str(value).lower() == "true" or value == 1


def check_category(params: Params) -> None:
    # The paper venue is a UNIFIED account trading linear perpetuals only.
    if params.get("category") != "linear":
        raise param_error("Illegal category")


def listing_of(listings: Mapping[str, Listing], params: Params) -> Listing:
    symbol = text(params, "symbol", required=True)
    listing = listings.get(symbol)
    if listing is None:
        raise param_error("params error: symbol invalid")
    return listing


def parse_create(params: Params, listing: Listing) -> OrderSpec:
    check_category(params)
    side = _enum(Side, params, "side")
    order_type = _enum(OrderType, params, "orderType")
    qty = decimal(params, "qty")
    if qty is None:
        raise param_error("params error: qty is required")
    price = decimal(params, "price") if order_type is OrderType.LIMIT else None
    if order_type is OrderType.LIMIT and price is None:
        raise param_error("params error: price is required for Limit orders")
    tif = "IOC" if order_type is OrderType.MARKET else (text(params, "timeInForce") or "GTC")
    if tif not in TIME_IN_FORCE:
        raise param_error("params error: timeInForce invalid")
    _check_position_idx(params)
    _check_unsupported(params)
    return OrderSpec(
        symbol=listing.symbol,
        side=side,
        order_type=order_type,
        qty=qty,
        price=price,
        time_in_force=tif,
        order_link_id=check_link_id(text(params, "orderLinkId")),
        reduce_only=flag(params, "reduceOnly") or flag(params, "closeOnTrigger"),
    )


def check_link_id(link_id: str) -> str:
    if len(link_id) > LINK_ID_MAX_LEN:
        # Real wording (passivbot#436) with the documented limit.
        raise param_error(f"order link id is longer than {LINK_ID_MAX_LEN}")
    if not LINK_ID_PATTERN.fullmatch(link_id):
        raise param_error("params error: orderLinkId invalid")
    return link_id


def check_qty(qty: Decimal, instrument: Instrument, order_type: OrderType) -> None:
    """qtyStep, minOrderQty and maxOrderQty / maxMktOrderQty: all retCode 10001."""
    if qty <= 0 or qty % instrument.qty_step != 0:
        raise param_error("params error: qty err")
    if qty < instrument.min_qty:
        raise param_error("The number of contracts exceeds minimum limit allowed")
    cap = instrument.max_mkt_qty if order_type is OrderType.MARKET else instrument.max_qty
    if qty > cap:
        # Bybit prints both sides scaled by 1e8 (bybit.md §3).
        raise param_error(
            "The number of contracts exceeds maximum limit allowed: too large, "
            f"order_qty:{int(qty * 10**8)} > max_qty:{int(cap * 10**8)}"
        )


def check_price(price: Decimal, instrument: Instrument, last: Decimal) -> None:
    """tickSize and [minPrice, maxPrice] (10001), then the price band (110003)."""
    if price <= 0 or price % instrument.tick_size != 0:
        raise param_error("params error: price err")
    if not instrument.min_price <= price <= instrument.max_price:
        raise VenueError(110003, "price is invalid")
    ratio = instrument.price_limit_ratio
    if ratio is not None and not last * (1 - ratio) <= price <= last * (1 + ratio):
        # Real response for a BTCUSDT limit far from the market (ccxt#20967).
        raise VenueError(110003, "price is invalid")


def check_notional(qty: Decimal, price: Decimal, instrument: Instrument) -> None:
    if qty * price < instrument.min_notional:
        raise VenueError(
            110094,
            f"Order does not meet minimum order value {instrument.min_notional}{instrument.quote_coin}",
        )


def _enum(kind: type[E], params: Params, name: str) -> E:
    raw = text(params, name, required=True)
    try:
        return kind(raw)
    except ValueError:
        raise param_error(f"params error: {name} invalid") from None


def _check_position_idx(params: Params) -> None:
    raw = params.get("positionIdx", 0)
    if str(raw) not in ("0", ""):
        # The account is in one-way mode; hedge-mode indexes do not match it.
        raise param_error("position idx not match position mode")


def _check_unsupported(params: Params) -> None:
    for name in UNSUPPORTED:
        value = decimal(params, name)
        if value:
            raise param_error(f"params error: {name} is not supported by the paper venue")
