"""Value objects shared by the venue adapter, the decision logic and the actors.

Plain frozen attrs classes: no I/O, no serialization. Every price, quantity and amount
is a ``Decimal``; Bybit sends them as strings and the adapter converts at the edge.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

import attrs


class Side(str, enum.Enum):
    BUY = "Buy"
    SELL = "Sell"

    @property
    def sign(self) -> int:
        """+1 for Buy, -1 for Sell: the direction a fill moves a signed position."""
        return 1 if self is Side.BUY else -1

    @property
    def opposite(self) -> Side:
        return Side.SELL if self is Side.BUY else Side.BUY


class OrderType(str, enum.Enum):
    MARKET = "Market"
    LIMIT = "Limit"


@attrs.frozen
class MarketSnapshot:
    """``market_data_snapshot`` of a signal. ``spread`` is absolute, in quote currency."""

    price: Decimal | None = None
    spread: Decimal | None = None
    volume_24h: Decimal | None = None
    volatility: Decimal | None = None


@attrs.frozen
class Signal:
    """A validated trading signal from model-service (contract §3.1)."""

    signal_id: str
    side: Side  # from signal_type "buy" / "sell"
    asset: str  # upper-cased symbol, e.g. "BTCUSDT"
    amount: Decimal  # quote currency (USDT), > 0
    confidence: Decimal  # 0..1
    timestamp: datetime  # timezone-aware
    trace_id: str
    strategy_id: str | None = None
    model_version: str | None = None
    is_warmup: bool = False
    market: MarketSnapshot | None = None
    urgent: bool = False  # metadata.urgency == true forces a Market order
    # The decoded JSON object as received (unknown fields kept), for storage and events.
    payload: Mapping[str, object] = attrs.field(factory=dict, eq=False, repr=False)


@attrs.frozen
class Instrument:
    """The trading rules of one symbol, from ``/v5/market/instruments-info`` (linear)."""

    symbol: str
    status: str  # "Trading" when orders are accepted
    base_coin: str
    quote_coin: str
    tick_size: Decimal
    min_price: Decimal
    max_price: Decimal
    qty_step: Decimal
    min_qty: Decimal
    max_qty: Decimal  # Limit orders
    max_mkt_qty: Decimal  # Market orders (Bybit keeps a lower cap for them)
    min_notional: Decimal  # qty * price must reach it
    # riskParameters.priceLimitRatioX: a Limit price must stay within last * (1 ± ratio).
    price_limit_ratio: Decimal | None = None

    @property
    def is_trading(self) -> bool:
        return self.status == "Trading"


@attrs.frozen
class Ticker:
    symbol: str
    last_price: Decimal
    bid_price: Decimal | None = None
    ask_price: Decimal | None = None
    mark_price: Decimal | None = None


@attrs.frozen
class RetryPolicy:
    """Backoff for requests that certainly did not execute: base × multiplier^n, capped."""

    max_attempts: int = 3
    base_delay_s: float = 1.0
    max_delay_s: float = 30.0
    multiplier: float = 2.0

    def delay_s(self, attempt: int) -> float:
        """Delay before retry number ``attempt`` (1 = the first retry)."""
        return min(self.max_delay_s, self.base_delay_s * self.multiplier ** (attempt - 1))


class Priority(enum.IntEnum):
    """A request's place in the account's rate-limit budget (contract §15): lower goes first.
    Cancels and orders that take risk off never wait behind orders that add to it."""

    CANCEL = 0
    CLOSE = 1  # reduce-only orders and operator closes
    OPEN = 2  # orders that open or grow a position
    READ = 3  # lookups and listings (their budgets are separate; only worker slots are shared)


@attrs.frozen
class OrderRequest:
    """One order as we send it to the venue (``POST /v5/order/create``)."""

    symbol: str
    side: Side
    order_type: OrderType
    qty: Decimal
    price: Decimal | None  # None for Market
    order_link_id: str  # ≤ 36 chars, [0-9A-Za-z_-], deterministic per signal and leg
    time_in_force: str = "GTC"
    reduce_only: bool = False
    category: str = "linear"
    # None: CLOSE when reduce_only, else OPEN. An operator's close may say CLOSE itself.
    priority: Priority | None = None
    # Never sent after this instant: a signal's order that waited for the rate-limit budget
    # past the signal's age limit is stale (contract §15). None = no limit.
    not_after: datetime | None = None
    # Asked at the last moment, once the request may go (after any wait for the budget): a
    # refusal code (e.g. the trading state turned halted meanwhile) withholds it. None = always.
    allowed: Callable[[], str | None] | None = attrs.field(default=None, eq=False, repr=False)

    @property
    def lane(self) -> Priority:
        if self.priority is not None:
            return self.priority
        return Priority.CLOSE if self.reduce_only else Priority.OPEN


@attrs.frozen
class VenueOrder:
    """An order as the venue reports it (REST realtime/history, or a ws-gateway order event)."""

    order_id: str
    order_link_id: str
    symbol: str
    side: Side
    order_type: str
    status: str  # Bybit orderStatus, e.g. "New", "PartiallyFilled", "Filled", "Cancelled"
    qty: Decimal
    price: Decimal | None
    cum_exec_qty: Decimal
    cum_exec_value: Decimal
    cum_exec_fee: Decimal
    avg_price: Decimal | None  # None when nothing executed ("" or "0" on the wire)
    leaves_qty: Decimal
    reject_reason: str
    created_ms: int
    updated_ms: int
    reduce_only: bool = False


@attrs.frozen
class VenuePosition:
    """One linear position from ``/v5/position/list``; ``size`` is signed (Sell = negative)."""

    symbol: str
    size: Decimal
    avg_price: Decimal
    realized_pnl: Decimal  # cumRealisedPnl
    unrealized_pnl: Decimal
    mark_price: Decimal | None = None


@attrs.frozen
class VenueExecution:
    """One trade of an order from ``/v5/execution/list``: the venue moves the position (and
    rounds its average entry) once per execution."""

    exec_id: str
    order_id: str
    qty: Decimal
    price: Decimal
    value: Decimal
    fee: Decimal
    time_ms: int


# Outcomes of a write to the venue (create / cancel). Exactly one of these, never an exception.


@attrs.frozen
class Accepted:
    """The venue acknowledged the request (retCode 0, or 110072 resolved by lookup)."""

    order_id: str
    order_link_id: str


# retCodes (and HTTP 401) by which the venue refuses our credentials: a configuration error.
CREDENTIAL_REJECTIONS = frozenset({10003, 10004, 10005, 10007, 401})


@attrs.frozen
class Rejected:
    """The venue refused the request; final. ``code`` is Bybit's retCode."""

    code: int
    message: str

    @property
    def is_credentials(self) -> bool:
        return self.code in CREDENTIAL_REJECTIONS


@attrs.frozen
class Unavailable:
    """The request certainly did not execute (refused before sending, 10006, ...) and the
    retry budget is spent. Safe to try again later."""

    reason: str


@attrs.frozen
class Unknown:
    """The request may or may not have executed (timeout after sending, 10000/10016, 5xx).
    Never retried blindly: resolved by looking the ``orderLinkId`` up."""

    reason: str


@attrs.frozen
class Expired:
    """Never sent: the request's ``not_after`` passed while it waited for the rate-limit
    budget (``stale_signal``), or ``allowed`` withheld it at the last moment (its refusal code).
    Final, like a rejection, and certain: nothing reached the venue."""

    reason: str
    code: str = "stale_signal"


WriteOutcome = Accepted | Rejected | Unavailable | Unknown | Expired


@attrs.frozen
class OrderRecord:
    """One row of the ``orders`` table: our view of an exchange order."""

    id: uuid.UUID
    order_id: str | None  # venue id, once acknowledged
    order_link_id: str
    signal_id: str
    asset: str
    side: str  # "Buy" / "Sell"
    order_type: str  # "Market" / "Limit"
    status: str  # submitting, pending, partially_filled, filled, cancelled, rejected, dry_run
    quantity: Decimal
    price: Decimal | None
    created_at: datetime
    updated_at: datetime
    filled_quantity: Decimal = Decimal(0)
    filled_value: Decimal = Decimal(0)
    average_price: Decimal | None = None
    fees: Decimal = Decimal(0)
    executed_at: datetime | None = None
    is_dry_run: bool = False
    trace_id: str | None = None
    rejection_reason: str | None = None
    category: str = "linear"
    time_in_force: str = "GTC"
    reduce_only: bool = False
    venue_updated_ms: int | None = None
    version: int = 0  # the row's version as read: a write of this record expects it (optimistic concurrency)
    last_write: uuid.UUID | None = None  # made per write: a redo of the same write recognises itself


# The order fields the API shows (``GET /api/v1/orders``, operator answers), in their order.
ORDER_API_FIELDS = (
    "id", "order_id", "order_link_id", "signal_id", "asset", "category", "side", "order_type", "time_in_force",
    "reduce_only", "status", "quantity", "price", "filled_quantity", "average_price", "fees", "rejection_reason",
    "created_at", "updated_at", "executed_at", "trace_id", "is_dry_run",
)  # fmt: skip


@attrs.frozen
class SignalRecord:
    """What we already know of a signal id when it arrives (again)."""

    signal_id: str
    status: str
    attempts: int
    deliveries: int
    is_new: bool
    same_payload: bool = True  # False: the id is known with another body (a reused signal_id)


@attrs.frozen
class FillRecord:
    """One fill delta as it is applied to the position."""

    quantity: Decimal
    value: Decimal
    price: Decimal | None
    fee: Decimal
    source: str
    venue_time_ms: int
    side: str = ""  # Buy / Sell, as read back for a replay
    # Made once per delta: a transaction redone after a lost COMMIT answer inserts it once.
    fill_id: uuid.UUID = attrs.field(factory=uuid.uuid4)


@attrs.frozen
class OutboxRow:
    seq: int
    event_id: uuid.UUID
    trace_id: str | None
    body: bytes
    queue: str = "order-manager.order_events"  # order events; trading-state events go to their own


@attrs.frozen
class OperatorRequest:
    """An operator's request (contract §13.4) as recorded in ``operator_requests``: taken by any
    instance, carried out by the leader, its outcome (an HTTP status and a JSON body) kept."""

    id: uuid.UUID
    kind: str  # trading_state, cancel_order, cancel_all, close_position, close_all, sync
    params: Mapping[str, Any]
    operator: str | None
    status: str  # pending, running, done, failed
    created_at: datetime
    http_status: int | None = None
    result: Any = None
    taken_by: str = ""
    executed_by: str | None = None
    finished_at: datetime | None = None

    @property
    def finished(self) -> bool:
        return self.status in ("done", "failed")


@attrs.frozen
class Fence:
    """Who leads, under which epoch (contract §13.2): the token every guarded write carries."""

    holder: str
    epoch: int


@attrs.frozen
class SyncReport:
    """What one on-demand sync with the venue did (``POST /api/v1/sync``)."""

    status: str  # "completed" | "partial" | "failed"
    synced_orders: int
    updated_orders: int
    errors: tuple[str, ...] = ()
