"""The symbols the bench trades.

The paper venue lists ten real-looking symbols; the issue asks for twenty by default. The
venue takes its listing table as a constructor argument, so the bench's venue process
(``bench.venue``) adds clearly synthetic ``BENCHnnUSDT`` listings instead of patching
``ordermgr.paper``. ordermgr learns the symbols from the venue's instruments-info like any other.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import ROUND_DOWN, Decimal
from typing import Final

from ordermgr.domain.model import Instrument
from ordermgr.paper.instruments import LISTINGS, MIN_NOTIONAL_USDT, Listing

SYNTHETIC_PRICE: Final = Decimal("10.000")


def synthetic_listing(index: int) -> Listing:
    """A cheap symbol (min order 0.1 × 10 USDT) so small per-signal amounts always trade."""
    symbol = f"BENCH{index:02d}USDT"
    instrument = Instrument(
        symbol=symbol,
        status="Trading",
        base_coin=symbol.removesuffix("USDT"),
        quote_coin="USDT",
        tick_size=Decimal("0.001"),
        min_price=Decimal("0.001"),
        max_price=Decimal("1999.998"),
        qty_step=Decimal("0.1"),
        min_qty=Decimal("0.1"),
        max_qty=Decimal("1000000.0"),
        max_mkt_qty=Decimal("200000.0"),
        min_notional=MIN_NOTIONAL_USDT,
        price_limit_ratio=Decimal("0.1"),
    )
    return Listing(
        instrument=instrument,
        initial_price=SYNTHETIC_PRICE,
        symbol_id=9000 + index,
        max_leverage=Decimal("50.00"),
        price_limit_ratio_y=Decimal("0.15"),
    )


def quantity(amount_usdt: Decimal, price: Decimal, instrument: Instrument) -> Decimal:
    """USDT amount → base quantity, rounded down to the step (0 when below the minimums)."""
    steps = (amount_usdt / price / instrument.qty_step).to_integral_value(rounding=ROUND_DOWN)
    qty = steps * instrument.qty_step
    if qty < instrument.min_qty or qty * price < instrument.min_notional:
        return Decimal(0)
    return qty


def tradable_real_symbols(amount_usdt: Decimal) -> list[str]:
    """The venue's own symbols on which ``amount_usdt`` makes a valid order (BTC and ETH need
    more than 20 USDT: their minimum quantity costs 65 and 30 USDT)."""
    return [
        symbol
        for symbol, listing in LISTINGS.items()
        if quantity(amount_usdt, listing.initial_price, listing.instrument) > 0
    ]


def extra_symbols_needed(count: int, amount_usdt: Decimal) -> int:
    return max(0, count - len(tradable_real_symbols(amount_usdt)))


def bench_listings(extra: int) -> dict[str, Listing]:
    listings: dict[str, Listing] = dict(LISTINGS)
    for index in range(1, extra + 1):
        listing = synthetic_listing(index)
        listings[listing.symbol] = listing
    return listings


def pick_symbols(count: int, amount_usdt: Decimal) -> list[str]:
    """``count`` symbols: the real ones that accept the amount first, then synthetic ones."""
    real = tradable_real_symbols(amount_usdt)
    synthetic = [f"BENCH{i:02d}USDT" for i in range(1, extra_symbols_needed(count, amount_usdt) + 1)]
    return (real + synthetic)[:count]


def prices(listings: Mapping[str, Listing]) -> dict[str, Decimal]:
    return {symbol: listing.initial_price for symbol, listing in listings.items()}
