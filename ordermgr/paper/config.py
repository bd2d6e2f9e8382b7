"""Configuration of the paper venue: one frozen record, sensible defaults for everything."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

import attrs


@attrs.frozen
class PaperConfig:
    """How a :class:`~ordermgr.paper.PaperVenue` serves and behaves.

    Durations carry their unit in the name; money, prices and rates are ``Decimal``.
    """

    host: str = "127.0.0.1"
    port: int = 0  # 0 = pick a free port; ``PaperVenue.run`` reports the real one
    api_key: str = "paper-key"
    api_secret: str = attrs.field(default="paper-secret", repr=False)
    # RabbitMQ URL for order events (contract §3.2); None switches events off.
    amqp_url: str | None = attrs.field(default=None, repr=False)
    order_queue: str = "ws-gateway.order"
    seed: int = 0  # seeds the price walk and the event faults
    price_walk_interval_s: float = 1.0  # 0 switches the random walk off
    price_walk_step: Decimal = Decimal("0.0005")  # max relative move per tick
    initial_balance: Decimal = Decimal("100000")  # USDT
    initial_prices: Mapping[str, Decimal] = attrs.field(factory=dict)  # overrides the table
    leverage: Decimal = Decimal("10")  # default leverage for margin checks
    taker_fee_rate: Decimal = Decimal("0.00055")
    maker_fee_rate: Decimal = Decimal("0.0002")
    maintenance_margin_rate: Decimal = Decimal("0.005")
    market_fill_parts: int = 1  # split every taker fill into this many executions
    max_open_orders_per_symbol: int = 500  # Bybit's limit for perps (110020)
    # Bybit's per-account limits (10 writes/s, 50 reads/s per endpoint), announced in the
    # X-Bapi-Limit-* headers and refused with 10006 beyond them, as Bybit does. False lifts them
    # (benchmarks, tests not about them): never refused, and the headers announce 1 000 000/s.
    enforce_rate_limits: bool = True
    rate_limit_reset_ms: int = 200  # how far in the future a 10006 says the limit resets
    event_buffer: int = 10_000  # events kept while RabbitMQ is slow or away
    # Play ws-gateway too (ordermgr.paper.gateway): serve its subscription API and publish the
    # subscribed symbols' ticker events to ``ticker_queue``.
    ws_gateway: bool = False
    gateway_api_key: str = attrs.field(default="", repr=False)  # X-API-Key of the subscription API
    ticker_queue: str = "ws-gateway.ticker"
    shutdown_timeout_s: float = 0.5
    access_log: bool = False
