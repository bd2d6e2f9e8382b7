from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import attrs
import pytest

from ordermgr.domain.decision import (
    DecisionSettings,
    Leg,
    MarketContext,
    OpenOrder,
    Plan,
    Refusal,
    deadline,
    expired,
    is_own_order_link_id,
    order_link_id,
    order_requests,
    orders_to_cancel,
    plan,
    split_evenly,
    stale,
)
from ordermgr.domain.model import Instrument, MarketSnapshot, OrderRequest, OrderType, Side, Signal

D = Decimal
BUY, SELL = Side.BUY, Side.SELL
MARKET, LIMIT = OrderType.MARKET, OrderType.LIMIT
P = pytest.param
T0 = datetime(2025, 1, 27, 10, 0, tzinfo=UTC)

# Bybit's linear BTCUSDT filters (bybit.md §9), with a 5 % price band.
BTC = Instrument(
    symbol="BTCUSDT",
    status="Trading",
    base_coin="BTC",
    quote_coin="USDT",
    tick_size=D("0.10"),
    min_price=D("0.10"),
    max_price=D("1999999.80"),
    qty_step=D("0.001"),
    min_qty=D("0.001"),
    max_qty=D("1190.000"),
    max_mkt_qty=D("500.000"),
    min_notional=D("5"),
    price_limit_ratio=D("0.05"),
)
# Spread threshold 0: any spread > 0 gives a Limit order; roomy limits isolate Limit pricing.
LIMIT_ONLY = DecisionSettings(
    market_spread_threshold_pct=D("0"),
    max_position_size=D("1000000"),
    max_exposure_usdt=D("1000000000"),
)
SPLIT = DecisionSettings(enable_splitting=True)


def signal(
    side: Side = BUY,
    amount: str = "1000",
    confidence: str = "0.5",
    price: str | None = "50000",
    spread: str | None = None,
    urgent: bool = False,
) -> Signal:
    market = MarketSnapshot(
        price=D(price) if price is not None else None,
        spread=D(spread) if spread is not None else None,
    )
    return Signal(
        signal_id="test-signal-001",
        side=side,
        asset="BTCUSDT",
        amount=D(amount),
        confidence=D(confidence),
        timestamp=T0,
        trace_id="trace-1",
        market=market,
        urgent=urgent,
    )


def context(
    last: str | None = "50000",
    balance: str | None = "1000000",
    position: str = "0",
    exposure: str = "0",
    instrument: Instrument = BTC,
    open_orders: tuple[OpenOrder, ...] = (),
) -> MarketContext:
    return MarketContext(
        instrument=instrument,
        last_price=D(last) if last is not None else None,
        available_balance=D(balance) if balance is not None else None,
        position_size=D(position),
        total_exposure_usdt=D(exposure),
        open_orders=open_orders,
    )


def open_order(
    link: str,
    side: Side,
    qty: str = "0.1",
    filled: str = "0",
    order_type: OrderType = LIMIT,
    age_s: int = 0,
) -> OpenOrder:
    return OpenOrder(
        order_link_id=link,
        side=side,
        order_type=order_type,
        qty=D(qty),
        filled=D(filled),
        price=D("50000") if order_type is LIMIT else None,
        created_at=T0 - timedelta(seconds=age_s),
    )


def planned(sig: Signal, ctx: MarketContext, settings: DecisionSettings) -> Plan:
    result = plan(sig, ctx, settings)
    assert isinstance(result, Plan), result
    return result


def refused(sig: Signal, ctx: MarketContext, settings: DecisionSettings) -> Refusal:
    result = plan(sig, ctx, settings)
    assert isinstance(result, Refusal), result
    return result


# --------------------------------------------------------------------------- §7.3 order type

ORDER_TYPES = [
    # signal, order type, reason, price, time in force
    P(signal(urgent=True), MARKET, "urgent", None, "IOC", id="urgent"),
    P(signal(confidence="0.9"), MARKET, "confidence", None, "IOC", id="confidence-at-threshold"),
    P(signal(confidence="0.95", spread="500"), MARKET, "confidence", None, "IOC", id="confident"),
    P(signal(spread="50"), MARKET, "tight_spread", None, "IOC", id="spread-at-threshold-0.1pct"),
    P(signal(confidence="0.85", spread="1.5"), MARKET, "tight_spread", None, "IOC", id="example"),
    P(signal(spread="50.5"), LIMIT, "limit", D("49974.7"), "GTC", id="spread-above-threshold"),
    P(signal(confidence="0.89"), LIMIT, "limit", D("50000.0"), "GTC", id="no-spread-at-reference"),
]


@pytest.mark.parametrize(("sig", "order_type", "reason", "price", "tif"), ORDER_TYPES)
def test_order_type(
    sig: Signal, order_type: OrderType, reason: str, price: Decimal | None, tif: str
) -> None:
    result = planned(sig, context(), DecisionSettings())
    assert (result.order_type, result.type_reason, result.price, result.time_in_force) == (
        order_type,
        reason,
        price,
        tif,
    )


# --------------------------------------------------------------------------- §7.3 limit price

NARROW_BAND = attrs.evolve(
    BTC, tick_size=D("1000"), min_price=D("1000"), price_limit_ratio=D("0.0001")
)
NO_BAND = attrs.evolve(BTC, price_limit_ratio=None)
NO_FLOOR = attrs.evolve(BTC, min_price=D("0"), price_limit_ratio=None)

LIMIT_PRICES = [
    # side, spread, last price, snapshot price, instrument, expected price
    pytest.param(BUY, "100", "50000", "50000", BTC, "49950.0", id="buy-below-reference"),
    pytest.param(SELL, "100", "50000", "50000", BTC, "50050.0", id="sell-above-reference"),
    pytest.param(BUY, "0.3", "50000", "50000", BTC, "49999.8", id="buy-rounds-down-to-tick"),
    pytest.param(SELL, "0.3", "50000", "50000", BTC, "50000.2", id="sell-rounds-up-to-tick"),
    pytest.param(BUY, "100", "48000", "50000", BTC, "47950.0", id="venue-last-price-wins"),
    pytest.param(BUY, "100", None, "40000", BTC, "39950.0", id="snapshot-price-without-venue"),
    pytest.param(BUY, "10000", "50000", "50000", BTC, "47500.0", id="buy-clamped-to-band-floor"),
    pytest.param(SELL, "10000", "50000", "50000", BTC, "52500.0", id="sell-clamped-to-band-top"),
    pytest.param(BUY, "10000", None, "50000", BTC, "47500.0", id="dry-run-band-around-snapshot"),
    pytest.param(BUY, "10000", "50000", "50000", NO_BAND, "45000.0", id="no-band-no-clamp"),
    pytest.param(BUY, "200000", "50000", "50000", NO_BAND, "0.10", id="no-band-min-price"),
    pytest.param(SELL, "8000000", "50000", "50000", NO_BAND, "1999999.80", id="no-band-max-price"),
]


@pytest.mark.parametrize(
    ("side", "spread", "last", "snapshot", "instrument", "price"), LIMIT_PRICES
)
def test_limit_price(
    side: Side, spread: str, last: str | None, snapshot: str, instrument: Instrument, price: str
) -> None:
    # Amounts that keep the quantity inside the filters at any of these prices.
    amount = {"0.10": "100", "1999999.80": "10000"}.get(price, "1000")
    sig = signal(side=side, spread=spread, price=snapshot, amount=amount)
    result = planned(sig, context(last=last, instrument=instrument), LIMIT_ONLY)
    assert (result.order_type, result.price, result.time_in_force) == (LIMIT, D(price), "GTC")


NO_PRICE = [
    # instrument, last price, spread, details
    pytest.param(
        NARROW_BAND, "50500", "1",
        {"price": "50499.5", "min_allowed": "51000", "max_allowed": "50000"},
        id="band-narrower-than-tick",
    ),
    pytest.param(
        NO_FLOOR, "50000", "200000",
        {"price": "-50000", "min_allowed": "0", "max_allowed": "1999999.8"},
        id="price-not-positive",
    ),
]


@pytest.mark.parametrize(("instrument", "last", "spread", "details"), NO_PRICE)
def test_no_valid_limit_price(
    instrument: Instrument, last: str, spread: str, details: dict[str, str]
) -> None:
    ctx = context(last=last, instrument=instrument)
    result = refused(signal(spread=spread, price=last), ctx, LIMIT_ONLY)
    assert (result.code, dict(result.details)) == ("no_valid_price", details)


# --------------------------------------------------------------------------- §7.4 quantity

TINY_MARKET_CAP = attrs.evolve(BTC, max_mkt_qty=D("0.01"), max_qty=D("1"))
TINY_LIMIT_CAP = attrs.evolve(BTC, max_qty=D("0.01"))

QUANTITIES = [
    # signal, last price, instrument, order type, qty
    P(signal(urgent=True), "50000", BTC, MARKET, D("0.020"), id="market-at-reference"),
    P(signal(spread="100"), "50000", BTC, LIMIT, D("0.020"), id="limit-at-limit-price"),
    P(signal(urgent=True), "30000", BTC, MARKET, D("0.033"), id="rounds-down-to-step"),
    P(signal(urgent=True, amount="5"), "5000", BTC, MARKET, D("0.001"), id="exactly-minimums"),
    P(signal(spread="100"), "50000", TINY_MARKET_CAP, LIMIT, D("0.020"), id="mkt-cap-not-limit"),
]


@pytest.mark.parametrize(("sig", "last", "instrument", "order_type", "qty"), QUANTITIES)
def test_quantity(
    sig: Signal, last: str, instrument: Instrument, order_type: OrderType, qty: Decimal
) -> None:
    result = planned(sig, context(last=last, instrument=instrument), DecisionSettings())
    assert (result.order_type, result.legs) == (order_type, (Leg(1, qty, sig.amount),))


QTY_REFUSALS = [
    # signal, last price, instrument, code, details
    pytest.param(
        signal(amount="40", urgent=True), "50000", BTC, "qty_below_min",
        {"qty": "0", "min_qty": "0.001", "price": "50000"}, id="qty-below-min",
    ),
    pytest.param(
        signal(amount="6", urgent=True), "4000", BTC, "notional_below_min",
        {"notional": "4", "min_notional": "5", "qty": "0.001", "price": "4000"},
        id="notional-below-min",
    ),
    pytest.param(
        signal(urgent=True), "50000", TINY_MARKET_CAP, "qty_above_max",
        {"qty": "0.02", "max_qty": "0.01", "order_type": "Market"}, id="above-max-market-qty",
    ),
    pytest.param(
        signal(spread="100"), "50000", TINY_LIMIT_CAP, "qty_above_max",
        {"qty": "0.02", "max_qty": "0.01", "order_type": "Limit"}, id="above-max-limit-qty",
    ),
    pytest.param(
        signal(), "50000", attrs.evolve(BTC, status="Closed"), "instrument_not_trading",
        {"symbol": "BTCUSDT", "status": "Closed"}, id="instrument-not-trading",
    ),
    pytest.param(
        signal(price=None), None, BTC, "no_reference_price", {"symbol": "BTCUSDT"},
        id="no-reference-price",
    ),
]


@pytest.mark.parametrize(("sig", "last", "instrument", "code", "details"), QTY_REFUSALS)
def test_quantity_refusals(
    sig: Signal, last: str | None, instrument: Instrument, code: str, details: dict[str, str]
) -> None:
    result = refused(sig, context(last=last, instrument=instrument), DecisionSettings())
    assert (result.code, dict(result.details)) == (code, details)
    assert result.message.endswith(".") and result.message.count(". ") == 0


# --------------------------------------------------------------------------- §7.5 splitting

SPLITS = [
    # amount, settings, legs (sequence, qty, allocation), relationship
    P("10000", DecisionSettings(), [(1, "0.200", "10000")], "one_to_one", id="at-limit-not-split"),
    P(
        "20000", SPLIT, [(1, "0.200", "10000"), (2, "0.200", "10000")], "one_to_many",
        id="two-even-legs",
    ),
    P(
        "25000", SPLIT,
        [(1, "0.166", "8333.34"), (2, "0.166", "8333.33"), (3, "0.166", "8333.33")],
        "one_to_many", id="three-legs-cents-to-first",
    ),
    pytest.param(
        "10000.01", SPLIT, [(1, "0.100", "5000.01"), (2, "0.100", "5000.00")], "one_to_many",
        id="just-over-limit",
    ),
]


@pytest.mark.parametrize(("amount", "settings", "legs", "relationship"), SPLITS)
def test_splitting(
    amount: str, settings: DecisionSettings, legs: list[tuple[int, str, str]], relationship: str
) -> None:
    result = planned(signal(amount=amount, urgent=True), context(), settings)
    assert result.legs == tuple(Leg(seq, D(qty), D(alloc)) for seq, qty, alloc in legs)
    assert result.relationship == relationship
    assert sum(leg.allocation_usdt for leg in result.legs) == D(amount)


SPLIT_REFUSALS = [
    pytest.param(
        "12000", DecisionSettings(), "exceeds_max_single_order_size",
        {"amount": "12000", "limit": "10000"}, id="splitting-disabled",
    ),
    pytest.param(
        "25", attrs.evolve(SPLIT, max_single_order_usdt=D("10")), "qty_below_min",
        {"qty": "0", "min_qty": "0.001", "price": "50000", "leg": "1", "legs": "3"},
        id="leg-too-small",
    ),
]


@pytest.mark.parametrize(("amount", "settings", "code", "details"), SPLIT_REFUSALS)
def test_splitting_refusals(
    amount: str, settings: DecisionSettings, code: str, details: dict[str, str]
) -> None:
    result = refused(signal(amount=amount, urgent=True), context(), settings)
    assert (result.code, dict(result.details)) == (code, details)


EVEN_SPLITS = [
    pytest.param(D("25000"), 3, ("8333.34", "8333.33", "8333.33"), id="cents"),
    pytest.param(D("10"), 3, ("3.34", "3.33", "3.33"), id="small"),
    pytest.param(D("1000.5"), 2, ("500.25", "500.25"), id="exact"),
    pytest.param(D("100.001"), 2, ("50.001", "50.000"), id="amount-precision-kept"),
    pytest.param(D("2.5E+4"), 2, ("12500.00", "12500.00"), id="exponent-notation"),
]


@pytest.mark.parametrize(("amount", "parts", "shares"), EVEN_SPLITS)
def test_split_evenly(amount: Decimal, parts: int, shares: tuple[str, ...]) -> None:
    result = split_evenly(amount, parts)
    assert result == tuple(D(s) for s in shares)
    assert sum(result) == amount


# --------------------------------------------------------------------------- §7.6 risk

RISK_REFUSALS = [
    # side, context, code, details (every order here: 0.02 BTC at 50000 = 1000 USDT)
    pytest.param(
        BUY, context(balance="0"), "insufficient_balance",
        {"available_balance": "0", "order_notional": "1000"}, id="zero-balance",
    ),
    pytest.param(
        BUY, context(balance="-5"), "insufficient_balance",
        {"available_balance": "-5", "order_notional": "1000"}, id="negative-balance",
    ),
    pytest.param(
        BUY, context(balance="5000"), "exceeds_order_size_ratio",
        {"order_notional": "1000", "available_balance": "5000", "ratio": "0.1", "limit": "500"},
        id="order-size-ratio",
    ),
    pytest.param(
        BUY, context(position="0.99"), "exceeds_max_position_size",
        {"position": "0.99", "open_order_qty": "0", "order_qty": "0.02",
         "resulting_position": "1.01", "limit": "1"},
        id="long-position-limit",
    ),
    pytest.param(
        SELL, context(position="-0.99"), "exceeds_max_position_size",
        {"position": "-0.99", "open_order_qty": "0", "order_qty": "0.02",
         "resulting_position": "-1.01", "limit": "1"},
        id="short-position-limit",
    ),
    pytest.param(
        BUY, context(position="0.9", open_orders=(open_order("a", BUY, "0.1", "0.01"),)),
        "exceeds_max_position_size",
        {"position": "0.9", "open_order_qty": "0.09", "order_qty": "0.02",
         "resulting_position": "1.01", "limit": "1"},
        id="resting-same-side-orders-count",
    ),
    pytest.param(
        BUY, context(exposure="49000.01"), "exceeds_max_exposure",
        {"exposure": "49000.01", "order_notional": "1000", "resulting_exposure": "50000.01",
         "limit": "50000"},
        id="exposure-limit",
    ),
    pytest.param(
        SELL, context(position="0.01", exposure="49500"), "exceeds_max_exposure",
        {"exposure": "49500", "order_notional": "1000", "resulting_exposure": "50500",
         "limit": "50000"},
        id="flip-through-zero-fully-checked",
    ),
    pytest.param(
        SELL, context(position="0.02", balance="0"), "insufficient_balance",
        {"available_balance": "0", "order_notional": "1000"},
        id="reduce-only-still-needs-balance",
    ),
]


@pytest.mark.parametrize(("side", "ctx", "code", "details"), RISK_REFUSALS)
def test_risk_refusals(side: Side, ctx: MarketContext, code: str, details: dict[str, str]) -> None:
    result = refused(signal(side=side, urgent=True), ctx, DecisionSettings())
    assert (result.code, dict(result.details)) == (code, details)


RISK_PASSES = [
    # side, context, reduce_only
    pytest.param(BUY, context(balance="10000"), False, id="ratio-exactly-at-limit"),
    pytest.param(BUY, context(balance=None), False, id="unknown-balance-skipped"),
    pytest.param(BUY, context(position="0.98"), False, id="position-exactly-at-limit"),
    pytest.param(SELL, context(position="-0.98"), False, id="short-exactly-at-limit"),
    pytest.param(BUY, context(exposure="49000"), False, id="exposure-exactly-at-limit"),
    pytest.param(
        BUY, context(position="0.9", open_orders=(open_order("a", SELL, "0.5"),)), False,
        id="opposite-side-orders-ignored",
    ),
    pytest.param(SELL, context(position="5", exposure="250000"), True, id="reduce-beyond-limits"),
    pytest.param(BUY, context(position="-5", exposure="250000"), True, id="reduce-short"),
    pytest.param(SELL, context(position="0.02", exposure="60000"), True, id="close-exactly"),
    pytest.param(SELL, context(position="0.01"), False, id="flip-not-reduce-only"),
]


@pytest.mark.parametrize(("side", "ctx", "reduce_only"), RISK_PASSES)
def test_risk_passes(side: Side, ctx: MarketContext, reduce_only: bool) -> None:
    result = planned(signal(side=side, urgent=True), ctx, DecisionSettings())
    assert (result.reduce_only, result.total_qty, result.notional) == (
        reduce_only,
        D("0.020"),
        D("1000"),
    )


# --------------------------------------------------------------------------- §7.7 existing orders

BOOK = (
    open_order("buy-limit", BUY, age_s=10),
    open_order("sell-limit", SELL, age_s=120),
    open_order("sell-market", SELL, order_type=MARKET, age_s=600),
    open_order("sell-filled", SELL, qty="0.1", filled="0.1", age_s=600),
    open_order("buy-old", BUY, qty="0.2", filled="0.05", age_s=61),
)

CANCELS = [
    pytest.param(BUY, ["sell-limit"], id="buy-cancels-resting-sells-not-market-ones"),
    pytest.param(SELL, ["buy-limit", "buy-old"], id="sell-cancels-buys"),
]


@pytest.mark.parametrize(("side", "links"), CANCELS)
def test_orders_to_cancel(side: Side, links: list[str]) -> None:
    assert [o.order_link_id for o in orders_to_cancel(side, BOOK)] == links


EXPIRIES = [
    pytest.param(timedelta(seconds=60), ["sell-limit", "buy-old"], id="older-than-ttl"),
    pytest.param(timedelta(seconds=120), [], id="exactly-ttl-not-expired"),
    pytest.param(timedelta(seconds=5), ["buy-limit", "sell-limit", "buy-old"], id="short-ttl"),
    pytest.param(timedelta(0), [], id="zero-ttl-disabled"),
]


@pytest.mark.parametrize(("ttl", "links"), EXPIRIES)
def test_expired(ttl: timedelta, links: list[str]) -> None:
    assert [o.order_link_id for o in expired(BOOK, T0, ttl)] == links


# --------------------------------------------------------------------------- orderLinkId

LINK_IDS = [
    pytest.param("test-signal-001", 1, 1, "om-bbca3ee2f79c5b36f54e-1-1", id="quickstart-id"),
    pytest.param("test-signal-001", 2, 1, "om-bbca3ee2f79c5b36f54e-2-1", id="second-attempt"),
    pytest.param("test-signal-001", 1, 3, "om-bbca3ee2f79c5b36f54e-1-3", id="third-leg"),
]


@pytest.mark.parametrize(("signal_id", "attempt", "leg", "link_id"), LINK_IDS)
def test_order_link_id_format(signal_id: str, attempt: int, leg: int, link_id: str) -> None:
    assert order_link_id(signal_id, attempt, leg) == link_id


ANY_SIGNAL_IDS = [
    pytest.param("x" * 100, id="100-chars"),
    pytest.param("0b8f6a0e-6b0c-4f4e-9c3a-1c2d3e4f5a6b", id="uuid"),
    pytest.param("sïgnal / with spaces & ünicode ✓", id="unicode-and-punctuation"),
    pytest.param("a", id="one-char"),
]


@pytest.mark.parametrize("signal_id", ANY_SIGNAL_IDS)
def test_order_link_id_is_valid_for_bybit(signal_id: str) -> None:
    link_id = order_link_id(signal_id, 99999, 999999)
    assert re.fullmatch(r"[0-9A-Za-z_-]{1,36}", link_id)
    assert is_own_order_link_id(link_id)
    assert link_id == order_link_id(signal_id, 99999, 999999)
    assert link_id != order_link_id(signal_id + " ", 99999, 999999)


@pytest.mark.parametrize(
    ("attempt", "leg"),
    [pytest.param(0, 1, id="attempt-0"), pytest.param(1, 0, id="leg-0"),
     pytest.param(999999, 999999, id="too-long")],
)
def test_order_link_id_bounds(attempt: int, leg: int) -> None:
    with pytest.raises(ValueError):
        order_link_id("s", attempt, leg)


@pytest.mark.parametrize(
    ("link_id", "ours"),
    [pytest.param("om-abc-1-1", True, id="ours"), pytest.param("manual-1", False, id="manual"),
     pytest.param("", False, id="empty")],
)
def test_is_own_order_link_id(link_id: str, ours: bool) -> None:
    assert is_own_order_link_id(link_id) is ours


def test_order_requests_one_per_leg() -> None:
    sig = signal(amount="20000", spread="100", side=SELL)
    result = planned(sig, context(position="0.5"), SPLIT)
    assert order_requests(result, "test-signal-001", 1) == tuple(
        OrderRequest(
            symbol="BTCUSDT",
            side=SELL,
            order_type=LIMIT,
            qty=D("0.199"),
            price=D("50050.0"),
            order_link_id=f"om-bbca3ee2f79c5b36f54e-1-{leg}",
            time_in_force="GTC",
            reduce_only=True,
        )
        for leg in (1, 2)
    )


# --------------------------------------------------------------------------- staleness (§15)


def test_a_signal_is_stale_once_older_than_the_limit_and_never_without_one() -> None:
    old = attrs.evolve(signal(), timestamp=T0)
    assert deadline(old, 5) == T0 + timedelta(seconds=5) and deadline(old, 0) is None
    assert stale(old, T0 + timedelta(seconds=5), 5) is None
    refusal = stale(old, T0 + timedelta(seconds=7.5), 5)
    assert refusal == Refusal("stale_signal", "The signal is 7.5 s old, over the limit of 5 s.",
                              {"timestamp": T0.isoformat(), "age_s": "7.500", "max_age_s": "5"})  # fmt: skip
    assert stale(old, T0 + timedelta(days=365), 0) is None
