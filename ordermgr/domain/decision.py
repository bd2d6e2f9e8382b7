"""From a trading signal to the orders to place, or a refusal with a code (contract §7.3–§7.7).

Everything here is pure and synchronous. The symbol actor gathers what it knows into a
:class:`MarketContext`, calls :func:`plan`, and either sends the plan's orders or records the
:class:`Refusal`. Every price and quantity is a ``Decimal`` rounded in an explicit direction:
quantities down to ``qtyStep``, buy prices down and sell prices up to ``tickSize``.

Refusal codes, in the order the checks run:

``stale_signal``
    the signal is older than ``SIGNAL_MAX_AGE_SECONDS`` (:func:`stale`, checked before anything
    else; its orders carry the same limit as ``not_after`` while they wait for the venue's
    rate-limit budget, contract §15).
``instrument_not_trading``
    the venue does not accept orders for the symbol (status other than ``Trading``).
``no_reference_price``
    neither the venue's last price nor the signal's ``market_data_snapshot.price`` is known.
``exceeds_max_single_order_size``
    the amount is above ``MAX_SINGLE_ORDER_SIZE`` and splitting is disabled.
``no_valid_price``
    no Limit price fits the tick, ``[minPrice, maxPrice]`` and the venue's price band together.
``qty_below_min`` / ``notional_below_min`` / ``qty_above_max``
    a leg's quantity breaks ``minOrderQty`` / ``minNotionalValue`` / ``maxOrderQty``
    (``maxMktOrderQty`` for Market orders).
``insufficient_balance``
    the available balance is zero or negative.
``exceeds_order_size_ratio``
    the order's notional is above ``available balance × MAX_ORDER_SIZE_RATIO``.
``exceeds_max_position_size``
    the resulting |position| would be above ``MAX_POSITION_SIZE``.
``exceeds_max_exposure``
    total exposure plus the order's notional would be above ``MAX_EXPOSURE``.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Final

import attrs

from ordermgr.domain.model import Instrument, OrderRequest, OrderType, Side, Signal
from ordermgr.domain.trading import FREE, Admission

_ZERO: Final = Decimal(0)
_HUNDRED: Final = Decimal(100)

# --------------------------------------------------------------------------- value types


@attrs.frozen
class DecisionSettings:
    """The knobs of contract §2 that shape a decision (``ORDERMANAGER_`` variable in brackets)."""

    market_confidence_threshold: Decimal = Decimal("0.9")  # [MARKET_ORDER_CONFIDENCE_THRESHOLD]
    market_spread_threshold_pct: Decimal = Decimal("0.1")  # [MARKET_ORDER_SPREAD_THRESHOLD], %
    limit_price_offset_ratio: Decimal = Decimal("0.5")  # [LIMIT_ORDER_PRICE_OFFSET_RATIO]
    max_single_order_usdt: Decimal = Decimal("10000")  # [MAX_SINGLE_ORDER_SIZE]
    enable_splitting: bool = False  # [ENABLE_ORDER_SPLITTING]
    max_position_size: Decimal = Decimal("1.0")  # [MAX_POSITION_SIZE], base units per asset
    max_exposure_usdt: Decimal = Decimal("50000")  # [MAX_EXPOSURE], all symbols
    max_order_size_ratio: Decimal = Decimal("0.1")  # [MAX_ORDER_SIZE_RATIO], of available


@attrs.frozen
class OpenOrder:
    """One of our orders that is open or in flight on a symbol, as §7.7 needs to see it."""

    order_link_id: str
    side: Side
    order_type: OrderType
    qty: Decimal
    filled: Decimal
    price: Decimal | None  # None for Market
    created_at: datetime

    @property
    def remaining(self) -> Decimal:
        return max(self.qty - self.filled, _ZERO)


@attrs.frozen
class MarketContext:
    """What the symbol actor knows when it decides.

    :param last_price: the venue's last price; ``None`` when the venue is unreachable (dry-run).
        The snapshot price stands in for it, also as the centre of the price band.
    :param available_balance: USDT available for new orders; ``None`` means *unknown* (dry-run
        without a venue) and then the two balance rules are skipped rather than guessed.
    :param position_size: signed, base units, this symbol.
    :param total_exposure_usdt: |positions| valued at last price plus open and in-flight orders,
        all symbols. Include the opposite-side orders this signal is about to cancel: the cancel
        may fail, so counting them is the safe side.
    :param open_orders: this symbol's open and in-flight orders (ours). The same-side ones stay
        (§7.7), so their remaining quantity counts toward the position limit as if filled.
    """

    instrument: Instrument
    last_price: Decimal | None
    available_balance: Decimal | None
    position_size: Decimal
    total_exposure_usdt: Decimal
    open_orders: tuple[OpenOrder, ...] = ()


@attrs.frozen
class Leg:
    """One exchange order of a plan. ``allocation_usdt`` is the share of the signal's amount."""

    sequence: int  # 1..N, the execution_sequence
    qty: Decimal
    allocation_usdt: Decimal


@attrs.frozen
class Plan:
    """The orders one signal becomes: one leg, or N equal legs when split (§7.5)."""

    symbol: str
    side: Side
    order_type: OrderType
    price: Decimal | None  # the Limit price; None for Market
    time_in_force: str  # "GTC" for Limit, "IOC" for Market
    reduce_only: bool
    legs: tuple[Leg, ...]
    reference_price: Decimal  # venue last price, else the snapshot price
    type_reason: str  # why this order type: "urgent", "confidence", "tight_spread", "limit"

    @property
    def relationship(self) -> str:
        """``one_to_one`` or ``one_to_many``, as stored with the signal-order link."""
        return "one_to_one" if len(self.legs) == 1 else "one_to_many"

    @property
    def sizing_price(self) -> Decimal:
        """The price quantities were computed at: the Limit price, or the reference."""
        return self.price if self.price is not None else self.reference_price

    @property
    def total_qty(self) -> Decimal:
        return sum((leg.qty for leg in self.legs), _ZERO)

    @property
    def notional(self) -> Decimal:
        return self.total_qty * self.sizing_price


@attrs.frozen
class Refusal:
    """Why a signal places no order. ``details`` carries the failing numbers as strings."""

    code: str
    message: str
    details: Mapping[str, str] = attrs.field(factory=dict)


class RefusalCode(enum.StrEnum):
    INSTRUMENT_NOT_TRADING = "instrument_not_trading"
    NO_REFERENCE_PRICE = "no_reference_price"
    EXCEEDS_MAX_SINGLE_ORDER_SIZE = "exceeds_max_single_order_size"
    NO_VALID_PRICE = "no_valid_price"
    QTY_BELOW_MIN = "qty_below_min"
    NOTIONAL_BELOW_MIN = "notional_below_min"
    QTY_ABOVE_MAX = "qty_above_max"
    INSUFFICIENT_BALANCE = "insufficient_balance"
    EXCEEDS_ORDER_SIZE_RATIO = "exceeds_order_size_ratio"
    EXCEEDS_MAX_POSITION_SIZE = "exceeds_max_position_size"
    EXCEEDS_MAX_EXPOSURE = "exceeds_max_exposure"


STALE_SIGNAL: Final = "stale_signal"


def deadline(signal: Signal, max_age_s: float) -> datetime | None:
    """When ``signal`` goes stale: ``max_age_s`` after its timestamp; None without a limit (0)."""
    return signal.timestamp + timedelta(seconds=max_age_s) if max_age_s > 0 else None


def stale(signal: Signal, now: datetime, max_age_s: float) -> Refusal | None:
    """The refusal of a signal already older than ``max_age_s``, however it got old (late from
    its producer, or waiting in the queue behind others); None while it is fresh."""
    limit = deadline(signal, max_age_s)
    if limit is None or now <= limit:
        return None
    age_s = (now - signal.timestamp).total_seconds()
    return Refusal(STALE_SIGNAL, f"The signal is {age_s:.1f} s old, over the limit of {max_age_s:g} s.",
                   {"timestamp": signal.timestamp.isoformat(), "age_s": f"{age_s:.3f}", "max_age_s": f"{max_age_s:g}"})


def _refuse(code: RefusalCode, message: str, **details: Decimal | str | int) -> Refusal:
    return Refusal(code.value, message, {k: _text(v) for k, v in details.items()})


def _text(value: Decimal | str | int) -> str:
    # Plain notation without trailing zeros: "10000", never "1E+4".
    return format(value.normalize(), "f") if isinstance(value, Decimal) else str(value)


# --------------------------------------------------------------------------- plan


def plan(
    signal: Signal, ctx: MarketContext, settings: DecisionSettings, admission: Admission = FREE
) -> Plan | Refusal:
    """Turn ``signal`` into the orders to place, or refuse it with a code and the numbers.

    Checks run in the order of the module docstring; the first failing one is returned.
    ``admission`` is what the trading state allows (``trading.admit``): under ``reducing`` the
    quantity is capped so the order cannot take the position through zero, and sent reduce-only."""
    reference = _reference_price(signal, ctx)
    if isinstance(reference, Refusal):
        return reference
    allocations = _allocate(signal.amount, settings)
    if isinstance(allocations, Refusal):
        return allocations
    order_type, type_reason = choose_order_type(signal, reference, settings)
    price = limit_price(signal, reference, ctx, settings) if order_type is OrderType.LIMIT else None
    if isinstance(price, Refusal):
        return price
    sizing_price = price if price is not None else reference
    legs = _size_legs(allocations, sizing_price, order_type, ctx.instrument)
    if isinstance(legs, Refusal):
        return legs
    if admission.max_qty is not None:
        legs = _capped(legs, admission.max_qty, sizing_price, order_type, ctx.instrument)
        if isinstance(legs, Refusal):
            return legs
    total_qty = sum((leg.qty for leg in legs), _ZERO)
    result = Plan(
        symbol=ctx.instrument.symbol,
        side=signal.side,
        order_type=order_type,
        price=price,
        time_in_force="GTC" if order_type is OrderType.LIMIT else "IOC",
        reduce_only=admission.reduce_only
        or only_reduces(signal.side, total_qty, projected_position(signal.side, ctx)),
        legs=legs,
        reference_price=reference,
        type_reason=type_reason,
    )
    refusal = check_risk(result, ctx, settings)
    return refusal if refusal is not None else result


def _reference_price(signal: Signal, ctx: MarketContext) -> Decimal | Refusal:
    """The venue's last price, else the snapshot price; a refusal when the symbol does not
    trade or neither price is known."""
    instrument = ctx.instrument
    if not instrument.is_trading:
        return _refuse(
            RefusalCode.INSTRUMENT_NOT_TRADING,
            f"Instrument {instrument.symbol} is not trading (status {instrument.status}).",
            symbol=instrument.symbol,
            status=instrument.status,
        )
    if ctx.last_price is not None and ctx.last_price > 0:
        return ctx.last_price
    snapshot = signal.market.price if signal.market is not None else None
    if snapshot is not None and snapshot > 0:
        return snapshot
    return _refuse(
        RefusalCode.NO_REFERENCE_PRICE,
        f"No reference price for {instrument.symbol}: the venue has no last price "
        "and the signal carries no market price.",
        symbol=instrument.symbol,
    )


# --------------------------------------------------------------------------- §7.3 type and price


def choose_order_type(
    signal: Signal, reference: Decimal, settings: DecisionSettings
) -> tuple[OrderType, str]:
    """Market when urgent, confident, or the spread is tight; otherwise Limit. Returns the
    type and the reason. The spread is measured against the reference price."""
    if signal.urgent:
        return OrderType.MARKET, "urgent"
    if signal.confidence >= settings.market_confidence_threshold:
        return OrderType.MARKET, "confidence"
    spread = _spread(signal)
    if spread is not None and spread / reference * _HUNDRED <= settings.market_spread_threshold_pct:
        return OrderType.MARKET, "tight_spread"
    return OrderType.LIMIT, "limit"


def limit_price(
    signal: Signal, reference: Decimal, ctx: MarketContext, settings: DecisionSettings
) -> Decimal | Refusal:
    """``reference ∓ spread × offset`` (buy below, sell above), rounded to the tick away from
    the market (buy down, sell up), then clamped into the venue's allowed range.

    Without a spread in the signal the offset is zero: the order rests at the reference price.
    """
    instrument = ctx.instrument
    spread = _spread(signal)
    offset = spread * settings.limit_price_offset_ratio if spread is not None else _ZERO
    raw = reference - signal.side.sign * offset
    rounding = ROUND_FLOOR if signal.side is Side.BUY else ROUND_CEILING
    price = round_to_step(raw, instrument.tick_size, rounding)
    # The band is centred on the venue's last price; in dry-run the reference stands in.
    low, high = price_bounds(instrument, ctx.last_price or reference)
    clamped = min(max(price, low), high)
    if low > high or clamped <= 0:
        return _refuse(
            RefusalCode.NO_VALID_PRICE,
            f"No valid limit price for {instrument.symbol}: {_text(raw)} cannot be placed "
            f"within the allowed range {_text(low)} to {_text(high)}.",
            price=raw,
            min_allowed=low,
            max_allowed=high,
        )
    return clamped


def price_bounds(instrument: Instrument, last_price: Decimal) -> tuple[Decimal, Decimal]:
    """The lowest and highest Limit price the venue accepts, both on the tick: inside
    ``[minPrice, maxPrice]`` and inside ``last × (1 ± priceLimitRatioX)`` when it is known."""
    low, high = instrument.min_price, instrument.max_price
    ratio = instrument.price_limit_ratio
    if ratio is not None:
        tick = instrument.tick_size
        low = max(low, round_to_step(last_price * (1 - ratio), tick, ROUND_CEILING))
        high = min(high, round_to_step(last_price * (1 + ratio), tick, ROUND_FLOOR))
    return low, high


def round_to_step(value: Decimal, step: Decimal, rounding: str) -> Decimal:
    """``value`` rounded to a multiple of ``step`` in the given direction (exact Decimal)."""
    return (value / step).to_integral_value(rounding=rounding) * step


def _spread(signal: Signal) -> Decimal | None:
    return signal.market.spread if signal.market is not None else None


# --------------------------------------------------------------------------- §7.4/§7.5 sizing


def _allocate(amount: Decimal, settings: DecisionSettings) -> tuple[Decimal, ...] | Refusal:
    limit = settings.max_single_order_usdt
    if amount <= limit:
        return (amount,)
    if not settings.enable_splitting:
        return _refuse(
            RefusalCode.EXCEEDS_MAX_SINGLE_ORDER_SIZE,
            f"Amount {_text(amount)} USDT exceeds the maximum single order size of "
            f"{_text(limit)} USDT and order splitting is disabled.",
            amount=amount,
            limit=limit,
        )
    # Integer arithmetic on Decimals is exact: N = ceil(amount / limit).
    legs = int(amount // limit) + (1 if amount % limit else 0)
    return split_evenly(amount, legs)


def split_evenly(amount: Decimal, parts: int) -> tuple[Decimal, ...]:
    """``amount`` in ``parts`` shares that differ by at most one unit of the amount's own
    precision (at least cents) and sum exactly to ``amount``; larger shares come first."""
    exponent = amount.as_tuple().exponent
    if not isinstance(exponent, int) or parts < 1:
        raise ValueError(f"cannot split {amount} in {parts} parts")
    scale = min(exponent, -2)
    units = int(amount.scaleb(-scale))
    base, extra = divmod(units, parts)
    return tuple(Decimal(base + (1 if i < extra else 0)).scaleb(scale) for i in range(parts))


def _size_legs(
    allocations: tuple[Decimal, ...], price: Decimal, order_type: OrderType, instrument: Instrument
) -> tuple[Leg, ...] | Refusal:
    legs: list[Leg] = []
    for sequence, allocation in enumerate(allocations, start=1):
        qty = round_to_step(allocation / price, instrument.qty_step, ROUND_FLOOR)
        refusal = check_qty(qty, price, order_type, instrument)
        if refusal is not None:
            return _with_leg(refusal, sequence, len(allocations))
        legs.append(Leg(sequence, qty, allocation))
    return tuple(legs)


def _capped(
    legs: tuple[Leg, ...], cap: Decimal, price: Decimal, order_type: OrderType, instrument: Instrument
) -> tuple[Leg, ...] | Refusal:
    """The legs shrunk in proportion so that together they stay within ``cap`` (rounded down to
    the step, so never above it); each still has to pass the size filters."""
    total = sum((leg.qty for leg in legs), _ZERO)
    if total <= cap:
        return legs
    capped = []
    for leg in legs:
        qty = round_to_step(cap * leg.qty / total, instrument.qty_step, ROUND_FLOOR)
        refusal = check_qty(qty, price, order_type, instrument)
        if refusal is not None:
            details = {**refusal.details, "capped_at": _text(cap)}
            return Refusal(refusal.code, f"{refusal.message} (capped at {_text(cap)} by the reducing state)", details)
        capped.append(Leg(leg.sequence, qty, qty * price))
    return tuple(capped)


def check_qty(
    qty: Decimal, price: Decimal, order_type: OrderType, instrument: Instrument
) -> Refusal | None:
    """The instrument's size filters for one order of ``qty`` at ``price`` (§7.4)."""
    if qty < instrument.min_qty:
        return _refuse(
            RefusalCode.QTY_BELOW_MIN,
            f"Quantity {_text(qty)} is below the minimum order quantity "
            f"{_text(instrument.min_qty)} for {instrument.symbol}.",
            qty=qty,
            min_qty=instrument.min_qty,
            price=price,
        )
    notional = qty * price
    if notional < instrument.min_notional:
        return _refuse(
            RefusalCode.NOTIONAL_BELOW_MIN,
            f"Order value {_text(notional)} USDT is below the minimum notional "
            f"{_text(instrument.min_notional)} USDT for {instrument.symbol}.",
            notional=notional,
            min_notional=instrument.min_notional,
            qty=qty,
            price=price,
        )
    # Bybit keeps a separate, lower cap for Market orders (maxMktOrderQty).
    is_market = order_type is OrderType.MARKET
    max_qty = instrument.max_mkt_qty if is_market else instrument.max_qty
    if qty > max_qty:
        return _refuse(
            RefusalCode.QTY_ABOVE_MAX,
            f"Quantity {_text(qty)} is above the maximum {order_type.value} order quantity "
            f"{_text(max_qty)} for {instrument.symbol}.",
            qty=qty,
            max_qty=max_qty,
            order_type=order_type.value,
        )
    return None


def _with_leg(refusal: Refusal, sequence: int, count: int) -> Refusal:
    if count == 1:
        return refusal
    details = {**refusal.details, "leg": str(sequence), "legs": str(count)}
    message = refusal.message[:1].lower() + refusal.message[1:]
    return Refusal(refusal.code, f"Leg {sequence} of {count}: {message}", details)


# --------------------------------------------------------------------------- §7.6 risk


def projected_position(side: Side, ctx: MarketContext) -> Decimal:
    """The position once this symbol's open orders on ``side`` have filled. Orders just placed
    may already have filled on the venue before their events arrive; opposite-side orders are
    cancelled before a new signal's order is sent (§7.7), so only same-side ones count."""
    resting = sum((o.remaining for o in ctx.open_orders if o.side is side), _ZERO)
    return ctx.position_size + side.sign * resting


def only_reduces(side: Side, qty: Decimal, position_size: Decimal) -> bool:
    """True when the order is against the position and no larger than it: it can only bring
    the position toward zero, never through it."""
    return position_size * side.sign < 0 and qty <= abs(position_size)


def check_risk(candidate: Plan, ctx: MarketContext, settings: DecisionSettings) -> Refusal | None:
    """The risk rules of §7.6, in order: balance, order-size ratio, position, exposure.

    A reduce-only plan skips the position and exposure rules (it can only lower both); the
    balance rules still apply to it, as the contract lists them without that exemption.
    """
    notional = candidate.notional
    refusal = _check_balance(notional, ctx.available_balance, settings)
    if refusal is None and not candidate.reduce_only:
        refusal = _check_position(candidate, ctx, settings)
        if refusal is None:
            refusal = _check_exposure(notional, ctx.total_exposure_usdt, settings)
    return refusal


def _check_balance(
    notional: Decimal, available: Decimal | None, settings: DecisionSettings
) -> Refusal | None:
    if available is None:  # unknown (dry-run without a venue): skipped, not assumed
        return None
    if available <= 0:
        return _refuse(
            RefusalCode.INSUFFICIENT_BALANCE,
            f"Available balance {_text(available)} USDT is not positive.",
            available_balance=available,
            order_notional=notional,
        )
    limit = available * settings.max_order_size_ratio
    if notional > limit:
        return _refuse(
            RefusalCode.EXCEEDS_ORDER_SIZE_RATIO,
            f"Order value {_text(notional)} USDT exceeds {_text(settings.max_order_size_ratio)} "
            f"of the available balance {_text(available)} USDT ({_text(limit)} USDT).",
            order_notional=notional,
            available_balance=available,
            ratio=settings.max_order_size_ratio,
            limit=limit,
        )
    return None


def _check_position(
    candidate: Plan, ctx: MarketContext, settings: DecisionSettings
) -> Refusal | None:
    side = candidate.side
    resting = sum((o.remaining for o in ctx.open_orders if o.side is side), _ZERO)
    resulting = ctx.position_size + side.sign * (resting + candidate.total_qty)
    limit = settings.max_position_size
    if abs(resulting) > limit:
        return _refuse(
            RefusalCode.EXCEEDS_MAX_POSITION_SIZE,
            f"Resulting position {_text(resulting)} {ctx.instrument.base_coin} would exceed "
            f"the maximum position size {_text(limit)} {ctx.instrument.base_coin}.",
            position=ctx.position_size,
            open_order_qty=resting,
            order_qty=candidate.total_qty,
            resulting_position=resulting,
            limit=limit,
        )
    return None


def _check_exposure(
    notional: Decimal, exposure: Decimal, settings: DecisionSettings
) -> Refusal | None:
    total = exposure + notional
    limit = settings.max_exposure_usdt
    if total > limit:
        return _refuse(
            RefusalCode.EXCEEDS_MAX_EXPOSURE,
            f"Exposure {_text(exposure)} USDT plus this order's {_text(notional)} USDT "
            f"is {_text(total)} USDT, above the maximum exposure {_text(limit)} USDT.",
            exposure=exposure,
            order_notional=notional,
            resulting_exposure=total,
            limit=limit,
        )
    return None


# --------------------------------------------------------------------------- §7.7 existing orders


def orders_to_cancel(side: Side, open_orders: Iterable[OpenOrder]) -> list[OpenOrder]:
    """The orders a new ``side`` signal cancels before placing its own: resting Limit orders on
    the opposite side that still have something left to fill. Same-side orders stay; Market
    orders are IOC and never rest (one still open here only awaits its fill report)."""
    return [
        o for o in open_orders if o.side is side.opposite and o.order_type is OrderType.LIMIT and o.remaining > 0
    ]


def expired(open_orders: Iterable[OpenOrder], now: datetime, ttl: timedelta) -> list[OpenOrder]:
    """Resting Limit orders older than ``ttl`` at ``now``. A ``ttl`` of zero or less means no
    time-to-live: nothing expires. Market orders never rest, so they never expire here."""
    if ttl <= timedelta(0):
        return []
    return [
        o
        for o in open_orders
        if o.order_type is OrderType.LIMIT and o.remaining > 0 and now - o.created_at > ttl
    ]


# --------------------------------------------------------------------------- orderLinkId

ORDER_LINK_PREFIX: Final = "om-"
_HASH_HEX_CHARS: Final = 20  # 80 bits of SHA-256: collisions are out of reach
_MAX_ORDER_LINK_ID: Final = 36  # Bybit's documented limit


def order_link_id(signal_id: str, attempt: int, leg: int) -> str:
    """The deterministic Bybit ``orderLinkId`` of one leg of one attempt of a signal.

    Format: ``om-<h>-<attempt>-<leg>`` where ``<h>`` is the first 20 hex digits of the SHA-256
    of the UTF-8 ``signal_id``, and ``attempt`` and ``leg`` are decimal, from 1: for
    ``test-signal-001`` it is ``om-bbca3ee2f79c5b36f54e-1-1`` (26 characters). Only
    ``[0-9a-z-]`` appear. A resend of the same intent produces the same id, so Bybit answers
    110072 instead of placing it twice; a new attempt (after a rejection) gets a new id.

    :raises ValueError: if ``attempt`` or ``leg`` is below 1, or together they need more than
        11 digits (the id would exceed Bybit's 36 characters).
    """
    if attempt < 1 or leg < 1:
        raise ValueError(f"attempt and leg start at 1, got attempt={attempt} leg={leg}")
    link_id = f"{ORDER_LINK_PREFIX}{link_key(signal_id)}-{attempt}-{leg}"
    if len(link_id) > _MAX_ORDER_LINK_ID:
        raise ValueError(f"orderLinkId {link_id!r} is longer than {_MAX_ORDER_LINK_ID} characters")
    return link_id


def link_key(signal_id: str) -> str:
    """The signal's part of its orderLinkIds (stored with the signal, to trace orders back)."""
    return hashlib.sha256(signal_id.encode("utf-8")).hexdigest()[:_HASH_HEX_CHARS]


def link_key_of(link_id: str) -> str | None:
    """The signal part of one of our orderLinkIds, or None for an id not in our namespace."""
    if not is_own_order_link_id(link_id):
        return None
    return link_id.removeprefix(ORDER_LINK_PREFIX).split("-", 1)[0]


def is_own_order_link_id(link_id: str) -> bool:
    """True for ids in our namespace (sync adopts these, and only these, §7.10)."""
    return link_id.startswith(ORDER_LINK_PREFIX)


def order_requests(chosen: Plan, signal_id: str, attempt: int) -> tuple[OrderRequest, ...]:
    """The venue requests of a plan, one per leg, each with its deterministic orderLinkId."""
    return tuple(
        OrderRequest(
            symbol=chosen.symbol,
            side=chosen.side,
            order_type=chosen.order_type,
            qty=leg.qty,
            price=chosen.price,
            order_link_id=order_link_id(signal_id, attempt, leg.sequence),
            time_in_force=chosen.time_in_force,
            reduce_only=chosen.reduce_only,
        )
        for leg in chosen.legs
    )
