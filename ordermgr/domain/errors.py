"""The error taxonomy. Adapters translate foreign exceptions into these at their boundary;
anything else is a bug and propagates."""

from __future__ import annotations


class OrderManagerError(Exception):
    """Base of the errors our own code raises on purpose."""


class VenueUnavailable(OrderManagerError):
    """A read from the venue failed or its answer cannot be trusted. The answer is
    *unknown*, never *empty*: callers must not conclude that nothing exists."""


class VenueAuthError(VenueUnavailable):
    """The venue refused our credentials (10003 / 10004 / 10005 / 10007 / HTTP 401): a
    configuration error, not a reason to reject signals one by one. A kind of unavailable:
    the venue has told us nothing about the question asked."""


class StoreUnavailable(OrderManagerError):
    """PostgreSQL could not be reached or the pool timed out."""


class BrokerUnavailable(OrderManagerError):
    """RabbitMQ could not be reached or the channel closed."""


class SyncInProgress(OrderManagerError):
    """A sync with the venue is already running (answered 409)."""


class UnknownAsset(OrderManagerError):
    """A symbol the venue does not list (answered 404 ``unknown_asset``): nothing is started for it."""

    def __init__(self, asset: str) -> None:
        super().__init__(f"{asset} is not a symbol the venue lists")
        self.asset = asset


class Fenced(OrderManagerError):
    """A guarded write found that our leadership epoch no longer leads (contract §13.2): this
    instance must stop trading at once. Never retried."""


class StaleWrite(OrderManagerError):
    """A write expected a row (an order, a position) as it was read, and the database holds a
    newer version: our copy is stale. Nothing was written; reload and decide again."""


class NoLeader(OrderManagerError):
    """No instance holds the leader lease: an operator request cannot be carried out (503)."""
