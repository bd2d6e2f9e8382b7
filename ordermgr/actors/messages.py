"""Messages to the symbol actors: frozen attrs classes, one closed union."""

from __future__ import annotations

import uuid
from typing import Any

import attrs

from anyio.streams.memory import MemoryObjectSendStream

from ordermgr.domain.model import Signal, VenueOrder, VenuePosition
from ordermgr.ports import Delivery


@attrs.frozen
class SignalReceived:
    """A decoded, valid signal; ``delivery`` is acknowledged once its outcome is committed."""

    signal: Signal
    delivery: Delivery
    body_size: int
    received_monotonic: float


@attrs.frozen
class OrderUpdate:
    """A venue report of one of our orders (a ws-gateway order event); ``delivery`` is acked
    once merged, or None when the report comes from elsewhere."""

    order: VenueOrder
    delivery: Delivery | None = None


@attrs.frozen
class SyncRequest:
    """Look the symbol's open orders up on the venue. ``strict``: keep trying until the venue
    has answered for every one (the startup gate). The result goes to ``reply`` if given."""

    reply: MemoryObjectSendStream[Any] | None = None
    strict: bool = False


@attrs.frozen
class AdoptOrder:
    """An order with our prefix that the venue has and we do not."""

    order: VenueOrder
    signal_id: str


@attrs.frozen
class SnapshotTick:
    pass


@attrs.frozen
class ValidatePosition:
    """The venue's position for the symbol, or None when the venue shows it flat."""

    venue_position: VenuePosition | None


@attrs.frozen
class GetState:
    """Reply with the actor's state; also a barrier: every earlier message has been handled."""

    reply: MemoryObjectSendStream[Any]


@attrs.frozen
class CancelOrder:
    """An operator's cancel of one of our orders (contract §12); replies a CancelResult."""

    order_link_id: str
    reply: MemoryObjectSendStream[Any]


@attrs.frozen
class CancelAll:
    """Cancel every open order of ours on the symbol; replies a CancelAllResult."""

    reply: MemoryObjectSendStream[Any]


@attrs.frozen
class ClosePosition:
    """Close the symbol's position for an operator request; replies a CloseResult."""

    request_id: uuid.UUID
    operator: str | None
    reply: MemoryObjectSendStream[Any]


@attrs.frozen
class Nudge:
    """Wakes an idle actor to look at its urgent messages (operator actions jump the queue)."""


OperatorAction = CancelOrder | CancelAll | ClosePosition
ActorMessage = (
    SignalReceived | OrderUpdate | SyncRequest | AdoptOrder | SnapshotTick | ValidatePosition | GetState
    | CancelOrder | CancelAll | ClosePosition | Nudge
)  # fmt: skip
