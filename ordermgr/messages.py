"""Messages to the symbol actors: frozen attrs classes, one closed union."""

from __future__ import annotations

from typing import Protocol

import attrs

from ordermgr.model import Signal


class Delivery(Protocol):
    """A broker message in hand (``broker.Delivery``): acknowledge once its outcome is committed."""

    @property
    def redelivered(self) -> bool: ...

    async def ack(self) -> None: ...

    async def requeue(self) -> None: ...


@attrs.frozen
class SignalReceived:
    """A decoded, valid signal; ``delivery`` is acknowledged once its outcome is committed."""

    signal: Signal
    delivery: Delivery
    body_size: int
    received_monotonic: float


ActorMessage = SignalReceived
