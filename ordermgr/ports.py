"""The venue as the actors see it. ``exchange.BybitExchange`` implements it over pybit;
unit tests may pass a fake."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Protocol

from ordermgr.domain.model import (
    Instrument, OrderRequest, Ticker, VenueExecution, VenueOrder, VenuePosition, WriteOutcome,
)  # fmt: skip


class Venue(Protocol):
    async def instruments(self) -> Mapping[str, Instrument]:
        """Every listed instrument (cached). Raises VenueUnavailable when unknown."""
        ...

    async def instrument(self, symbol: str) -> Instrument | None: ...

    async def ticker(self, symbol: str) -> Ticker: ...

    async def available_balance(self, coin: str = "USDT") -> Decimal: ...

    def invalidate_balance(self) -> None: ...

    async def place_order(self, req: OrderRequest) -> WriteOutcome:
        """Never raises for venue trouble: Accepted, Rejected, Unavailable or Unknown."""
        ...

    async def cancel_order(self, symbol: str, order_link_id: str) -> WriteOutcome: ...

    async def find_order(self, symbol: str, order_link_id: str) -> VenueOrder | None:
        """None only when the venue answered "not there"; VenueUnavailable when it could not tell."""
        ...

    async def open_orders(self, symbol: str | None = None) -> list[VenueOrder]: ...

    async def order_history(self, symbol: str | None = None, *, start_ms: int | None = None) -> list[VenueOrder]: ...

    async def executions(self, symbol: str, order_id: str) -> list[VenueExecution]:
        """The order's trades, oldest first. Raises VenueUnavailable when unknown."""
        ...

    async def positions(self) -> list[VenuePosition]: ...
