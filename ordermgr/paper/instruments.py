"""The static instrument table: linear USDT perpetuals with real-looking Bybit filters.

BTCUSDT copies the filters of Bybit's own doc example (bybit.md §9). The others are
plausible values of the same shape; the exponent of each literal is kept on purpose,
because Bybit formats quantities and prices to the step's decimals ("1190.000").
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Final

import attrs

from ordermgr.domain.model import Instrument

LAUNCH_TIME_MS: Final = 1_584_230_400_000
MIN_NOTIONAL_USDT: Final = Decimal("5")


@attrs.frozen
class Listing:
    """An instrument plus what ``/v5/market/instruments-info`` shows beyond the filters."""

    instrument: Instrument
    initial_price: Decimal
    symbol_id: int
    max_leverage: Decimal
    price_limit_ratio_y: Decimal

    @property
    def symbol(self) -> str:
        return self.instrument.symbol

    @property
    def price_scale(self) -> int:
        return -self.instrument.tick_size.as_tuple().exponent  # type: ignore[operator]


def _listing(
    symbol: str,
    *,
    tick: str,
    max_price: str,
    step: str,
    max_qty: str,
    min_qty: str | None = None,
    max_mkt_qty: str,
    price: str,
    symbol_id: int,
    max_leverage: str = "100.00",
    ratio_x: str = "0.05",
    ratio_y: str = "0.1",
) -> Listing:
    tick_size, qty_step = Decimal(tick), Decimal(step)
    instrument = Instrument(
        symbol=symbol,
        status="Trading",
        base_coin=symbol.removesuffix("USDT"),
        quote_coin="USDT",
        tick_size=tick_size,
        min_price=tick_size,
        max_price=Decimal(max_price),
        qty_step=qty_step,
        min_qty=Decimal(min_qty) if min_qty is not None else qty_step,
        max_qty=Decimal(max_qty),
        max_mkt_qty=Decimal(max_mkt_qty),
        min_notional=MIN_NOTIONAL_USDT,
        price_limit_ratio=Decimal(ratio_x),
    )
    return Listing(
        instrument=instrument,
        initial_price=Decimal(price),
        symbol_id=symbol_id,
        max_leverage=Decimal(max_leverage),
        price_limit_ratio_y=Decimal(ratio_y),
    )


_TABLE: Final = (
    _listing("BTCUSDT", tick="0.10", max_price="1999999.80", step="0.001",
             max_qty="1190.000", max_mkt_qty="500.000", price="65000.00", symbol_id=5),
    _listing("ETHUSDT", tick="0.01", max_price="199999.98", step="0.01",
             max_qty="7240.00", max_mkt_qty="3620.00", price="3000.00", symbol_id=6),
    _listing("SOLUSDT", tick="0.010", max_price="19999.980", step="0.1",
             max_qty="79770.0", max_mkt_qty="15000.0", price="150.000", symbol_id=33,
             max_leverage="75.00"),
    _listing("XRPUSDT", tick="0.0001", max_price="199.9998", step="1",
             max_qty="1534700", max_mkt_qty="800000", price="0.6000", symbol_id=25,
             max_leverage="75.00", ratio_x="0.1", ratio_y="0.15"),
    _listing("DOGEUSDT", tick="0.00001", max_price="19.99998", step="1", min_qty="10",
             max_qty="18386000", max_mkt_qty="4000000", price="0.15000", symbol_id=41,
             max_leverage="75.00", ratio_x="0.1", ratio_y="0.15"),
    _listing("BNBUSDT", tick="0.10", max_price="19999.80", step="0.01",
             max_qty="1620.00", max_mkt_qty="330.00", price="580.00", symbol_id=47,
             max_leverage="75.00"),
    _listing("ADAUSDT", tick="0.0001", max_price="19.9998", step="1",
             max_qty="2520000", max_mkt_qty="1000000", price="0.4500", symbol_id=52,
             max_leverage="75.00", ratio_x="0.1", ratio_y="0.15"),
    _listing("LTCUSDT", tick="0.01", max_price="19999.98", step="0.1",
             max_qty="35000.0", max_mkt_qty="7000.0", price="80.00", symbol_id=30,
             max_leverage="50.00", ratio_x="0.1", ratio_y="0.15"),
    _listing("LINKUSDT", tick="0.001", max_price="1999.998", step="0.1",
             max_qty="127800.0", max_mkt_qty="25000.0", price="15.000", symbol_id=34,
             max_leverage="50.00", ratio_x="0.1", ratio_y="0.15"),
    _listing("AVAXUSDT", tick="0.001", max_price="1999.998", step="0.1",
             max_qty="38000.0", max_mkt_qty="7600.0", price="30.000", symbol_id=58,
             max_leverage="50.00", ratio_x="0.1", ratio_y="0.15"),
)

LISTINGS: Final[Mapping[str, Listing]] = {listing.symbol: listing for listing in _TABLE}
