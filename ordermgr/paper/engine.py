"""The matching engine: orders, fills, positions and the wallet as plain synchronous state.

No I/O and no awaits: every command runs to completion before the next one, which is
what makes the HTTP handlers race-free. Order changes are reported through ``on_order``
while they happen (one call per order-stream item), so publishing stays outside.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable, Iterator, Mapping
from decimal import Decimal

import attrs

from ordermgr.domain.model import OrderType, Side
from ordermgr.paper import ledger
from ordermgr.paper.errors import (
    AMEND_QTY_NOT_ABOVE_FILLED,
    BALANCE_NOT_ENOUGH,
    DUPLICATE_LINK_ID,
    ORDER_NOT_EXISTS_CANCEL,
    ORDER_NOT_EXISTS_REPLACE,
    REDUCE_ONLY_RULE,
    VenueError,
    param_error,
)
from ordermgr.paper.instruments import Listing
from ordermgr.paper.ledger import Account
from ordermgr.paper.records import ZERO, Execution, Order, Position
from ordermgr.paper.rules import (
    OrderSpec,
    Params,
    check_category,
    check_notional,
    check_price,
    check_qty,
    decimal,
    listing_of,
    parse_create,
    text,
)


@attrs.frozen
class EngineSettings:
    initial_balance: Decimal
    leverage: Decimal
    taker_fee_rate: Decimal
    maker_fee_rate: Decimal
    maintenance_margin_rate: Decimal
    market_fill_parts: int = 1
    max_open_orders_per_symbol: int = 500


def _ignore(order: Order) -> None:
    pass


class Engine:
    def __init__(
        self,
        listings: Mapping[str, Listing],
        prices: Mapping[str, Decimal],
        settings: EngineSettings,
        *,
        clock_ms: Callable[[], int],
        on_order: Callable[[Order], None] = _ignore,
    ) -> None:
        self.listings = listings
        self.settings = settings
        self.prices: dict[str, Decimal] = dict(prices)
        self.orders: dict[str, Order] = {}
        self.executions: list[Execution] = []
        self.positions = {symbol: Position(symbol) for symbol in listings}
        self.wallet_balance = settings.initial_balance
        self._by_link: dict[str, str] = {}
        # Orders that may still be open: every create adds one, open_orders() drops the closed
        # ones, so a create stays cheap however many filled orders the venue has seen.
        self._maybe_open: dict[str, Order] = {}
        self._clock_ms = clock_ms
        self._on_order = on_order
        self._seq = itertools.count(1)

    # -- commands ---------------------------------------------------------------------

    def create_order(self, params: Params) -> Order:
        """Validate like Bybit, then place and match. Raises :class:`VenueError`."""
        listing = listing_of(self.listings, params)
        spec = parse_create(params, listing)
        # Duplicates first: a retried order must read "already placed" (110072), not
        # trip a balance or reduce-only rule that the first attempt's fill changed.
        if spec.order_link_id in self._by_link:
            raise VenueError(110072, DUPLICATE_LINK_ID)
        last = self.prices[spec.symbol]
        self._check_rules(spec, listing, last)
        order = self._new_order(spec, listing, last)
        self.orders[order.order_id] = order
        self._maybe_open[order.order_id] = order
        if order.order_link_id:
            self._by_link[order.order_link_id] = order.order_id
        self._place(order, last)
        return order

    def amend_order(self, params: Params) -> Order:
        check_category(params)
        listing = listing_of(self.listings, params)
        order = self._lookup(params, listing.symbol)
        if order is None or not order.is_open:
            raise VenueError(110001, ORDER_NOT_EXISTS_REPLACE)
        qty, price = decimal(params, "qty"), decimal(params, "price")
        if (qty is None or qty == order.qty) and (price is None or price == order.price):
            raise param_error("The order remains unchanged as the parameters entered match the existing ones.")
        last = self.prices[order.symbol]
        new_qty, new_price = qty or order.qty, price or order.price
        check_qty(new_qty, listing.instrument, order.order_type)
        if new_qty <= order.cum_exec_qty:
            raise VenueError(110064, AMEND_QTY_NOT_ABOVE_FILLED)
        check_price(new_price, listing.instrument, last)
        check_notional(new_qty, new_price, listing.instrument)
        order.qty, order.price = new_qty, new_price
        order.updated_ms = self._clock_ms()
        self._on_order(order)
        self._match_limit(order, last)
        return order

    def cancel_order(self, params: Params) -> Order:
        check_category(params)
        listing = listing_of(self.listings, params)
        order = self._lookup(params, listing.symbol)
        if order is None or not order.is_open:
            raise VenueError(110001, ORDER_NOT_EXISTS_CANCEL)
        self._close(order, "Cancelled", cancel_type="CancelByUser")
        return order

    def cancel_all(self, params: Params) -> list[Order]:
        check_category(params)
        symbol, base, settle = text(params, "symbol"), text(params, "baseCoin"), text(params, "settleCoin")
        if not (symbol or base or settle):
            raise param_error("Missing some parameters that must be filled in, symbol or settleCoin or baseCoin")
        if text(params, "orderFilter") == "StopOrder" or text(params, "stopOrderType") == "Stop":
            return []  # the paper venue keeps no conditional orders
        cancelled = [o for o in self.open_orders() if self._in_scope(o, symbol, base, settle)]
        for order in cancelled:
            self._close(order, "Cancelled", cancel_type="CancelByUser")
        return cancelled

    def set_price(self, symbol: str, price: Decimal) -> None:
        """Move the last price and fill every resting limit order it crosses (as maker)."""
        if symbol not in self.listings:
            raise KeyError(f"unknown symbol {symbol!r}")
        if not price.is_finite() or price <= 0:
            raise ValueError(f"price must be a positive number, got {price}")
        self.prices[symbol] = price
        for order in sorted(self.open_orders(symbol), key=lambda o: o.seq):
            if order.is_open and _crosses(order, price):
                self._fill(order, order.price, is_maker=True)

    # -- queries ----------------------------------------------------------------------

    def find_order(self, order_id: str = "", order_link_id: str = "") -> Order | None:
        if order_id:
            return self.orders.get(order_id)
        found = self._by_link.get(order_link_id) if order_link_id else None
        return self.orders[found] if found else None

    def open_orders(self, symbol: str = "") -> list[Order]:
        for closed in [order_id for order_id, o in self._maybe_open.items() if not o.is_open]:
            del self._maybe_open[closed]
        return [o for o in self._maybe_open.values() if not symbol or o.symbol == symbol]

    def account(self) -> Account:
        s = self.settings
        upl = im = mm = cum = ZERO
        for position in self.positions.values():
            mark = self.prices[position.symbol]
            upl += ledger.unrealised_pnl(position, mark)
            im += abs(position.size) * position.avg_price / s.leverage
            mm += abs(position.size) * mark * s.maintenance_margin_rate
            cum += position.cum_realised_pnl
        order_im = sum((self._order_cost(o, o.leaves_qty, o.price) for o in self.open_orders()), ZERO)
        return Account(self.wallet_balance, upl, cum, im, mm, order_im)

    # -- internals --------------------------------------------------------------------

    def _check_rules(self, spec: OrderSpec, listing: Listing, last: Decimal) -> None:
        instrument = listing.instrument
        check_qty(spec.qty, instrument, spec.order_type)
        if spec.price is not None:
            check_price(spec.price, instrument, last)
        price = spec.price if spec.price is not None else last
        check_notional(spec.qty, price, instrument)
        position = self.positions[spec.symbol]
        if spec.reduce_only and not ledger.closable_qty(position, spec.side is Side.BUY):
            raise VenueError(110017, REDUCE_ONLY_RULE)
        if len(self.open_orders(spec.symbol)) >= self.settings.max_open_orders_per_symbol:
            raise VenueError(110020, "Not allowed to have more than 500 active orders")
        cost = ZERO if spec.reduce_only else self._opening_cost(spec.symbol, spec.side, spec.qty, price)
        if cost > self.account().available:
            raise VenueError(110007, BALANCE_NOT_ENOUGH)

    def _opening_cost(self, symbol: str, side: Side, qty: Decimal, price: Decimal) -> Decimal:
        closable = ledger.closable_qty(self.positions[symbol], side is Side.BUY)
        opening = max(ZERO, qty - closable)
        s = self.settings
        return ledger.order_cost(opening, price, s.leverage, s.taker_fee_rate)

    def _order_cost(self, order: Order, qty: Decimal, price: Decimal) -> Decimal:
        return ZERO if order.reduce_only else self._opening_cost(order.symbol, order.side, qty, price)

    def _new_order(self, spec: OrderSpec, listing: Listing, last: Decimal) -> Order:
        now = self._clock_ms()
        price = spec.price if spec.price is not None else _protection_price(spec.side, listing, last)
        return Order(
            order_id=str(uuid.uuid4()),
            order_link_id=spec.order_link_id,
            symbol=spec.symbol,
            side=spec.side,
            order_type=spec.order_type,
            qty=spec.qty,
            price=price,
            time_in_force=spec.time_in_force,
            reduce_only=spec.reduce_only,
            created_ms=now,
            updated_ms=now,
            seq=next(self._seq),
            last_price_on_created=last,
        )

    def _place(self, order: Order, last: Decimal) -> None:
        if order.order_type is OrderType.MARKET:
            self._fill(order, last, is_maker=False)
            if order.is_open:  # a market order never rests: IOC
                self._close(order, "Cancelled", reject_reason="EC_NoImmediateQtyToFill")
            return
        self._on_order(order)  # "New" first, as the order stream shows an accepted limit
        self._match_limit(order, last)

    def _match_limit(self, order: Order, last: Decimal) -> None:
        if _crosses(order, last):
            if order.time_in_force == "PostOnly":
                self._close(order, "Cancelled", reject_reason="EC_PostOnlyWillTakeLiquidity")
                return
            # A marketable limit takes liquidity at the last price (never worse than its limit).
            self._fill(order, last, is_maker=False)
        elif order.time_in_force == "IOC":
            self._close(order, "Cancelled", reject_reason="EC_NoImmediateQtyToFill")
        elif order.time_in_force == "FOK":
            self._close(order, "Cancelled", reject_reason="EC_CancelForNoFullFill")

    def _fill(self, order: Order, price: Decimal, *, is_maker: bool) -> None:
        """Execute what the order may fill now; a reduce-only order never outgrows the
        position, and its excess is cancelled as Bybit does (CancelByReduceOnly)."""
        qty = order.leaves_qty
        if order.reduce_only:
            qty = min(qty, ledger.closable_qty(self.positions[order.symbol], order.side is Side.BUY))
        parts = 1 if is_maker else self.settings.market_fill_parts
        step = self.listings[order.symbol].instrument.qty_step
        for part in _split(qty, step, parts):
            self._execute(order, part, price, is_maker=is_maker)
        if order.is_open and order.reduce_only:
            self._close(order, "Cancelled", cancel_type="CancelByReduceOnly")

    def _execute(self, order: Order, qty: Decimal, price: Decimal, *, is_maker: bool) -> None:
        s = self.settings
        rate = s.maker_fee_rate if is_maker else s.taker_fee_rate
        fee = qty * price * rate
        now = self._clock_ms()
        position = self.positions[order.symbol]
        if position.size == 0:
            position.created_ms, position.cur_realised_pnl = now, ZERO
        effect = ledger.apply_fill(position, qty * order.side.sign, price)
        # Bybit's realised PnL is net of trading fees; the wallet moves by the same amount.
        net = effect.realized_pnl - fee
        position.cur_realised_pnl += net
        position.cum_realised_pnl += net
        position.updated_ms, position.seq = now, next(self._seq)
        self.wallet_balance += net
        order.cum_exec_qty += qty
        order.cum_exec_value += qty * price
        order.cum_exec_fee += fee
        order.closed_pnl += effect.realized_pnl
        order.status = "Filled" if order.cum_exec_qty == order.qty else "PartiallyFilled"
        order.updated_ms = now
        self.executions.append(self._execution(order, qty, price, fee, rate, is_maker, effect, now))
        self._on_order(order)

    def _execution(
        self,
        order: Order,
        qty: Decimal,
        price: Decimal,
        fee: Decimal,
        rate: Decimal,
        is_maker: bool,
        effect: ledger.FillEffect,
        now: int,
    ) -> Execution:
        return Execution(
            exec_id=str(uuid.uuid4()),
            order_id=order.order_id,
            order_link_id=order.order_link_id,
            symbol=order.symbol,
            side=order.side,
            order_type=order.order_type,
            order_price=order.price,
            order_qty=order.qty,
            leaves_qty=order.qty - order.cum_exec_qty,
            exec_price=price,
            exec_qty=qty,
            exec_fee=fee,
            fee_rate=rate,
            is_maker=is_maker,
            closed_size=effect.closed_size,
            exec_pnl=effect.realized_pnl,
            mark_price=self.prices[order.symbol],
            exec_ms=now,
            seq=next(self._seq),
        )

    def _close(self, order: Order, status: str, *, reject_reason: str = "", cancel_type: str = "") -> None:
        order.status = status
        order.reject_reason = reject_reason or order.reject_reason
        order.cancel_type = cancel_type or order.cancel_type
        order.updated_ms = self._clock_ms()
        self._on_order(order)

    def _in_scope(self, order: Order, symbol: str, base: str, settle: str) -> bool:
        # Bybit's priority: symbol, then baseCoin, then settleCoin (bybit.md §1.4).
        instrument = self.listings[order.symbol].instrument
        if symbol:
            return order.symbol == symbol
        if base:
            return instrument.base_coin == base
        return instrument.quote_coin == settle

    def _lookup(self, params: Params, symbol: str) -> Order | None:
        # Bybit: when both ids are given and disagree, orderId wins (bybit.md §1.3).
        order_id, link_id = text(params, "orderId"), text(params, "orderLinkId")
        if not (order_id or link_id):
            raise param_error("params error: orderId or orderLinkId is required")
        order = self.find_order(order_id, link_id)
        return order if order is not None and order.symbol == symbol else None


def _crosses(order: Order, last: Decimal) -> bool:
    return last <= order.price if order.side is Side.BUY else last >= order.price


def _protection_price(side: Side, listing: Listing, last: Decimal) -> Decimal:
    """Bybit turns a market order into an IOC limit at a protection price; mimic it."""
    instrument = listing.instrument
    ratio = instrument.price_limit_ratio or Decimal("0.05")
    raw = last * (1 + ratio) if side is Side.BUY else last * (1 - ratio)
    ticks = (raw / instrument.tick_size).to_integral_value()
    return min(max(ticks * instrument.tick_size, instrument.min_price), instrument.max_price)


def _split(qty: Decimal, step: Decimal, parts: int) -> Iterator[Decimal]:
    """Cut ``qty`` into up to ``parts`` step-aligned pieces (the last one takes the rest)."""
    units = int(qty / step)
    if units <= 0:
        return
    parts = max(1, min(parts, units))
    each = units // parts
    for index in range(parts):
        share = each if index < parts - 1 else units - each * (parts - 1)
        yield share * step
