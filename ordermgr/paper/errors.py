"""Refusals the venue answers with a Bybit retCode and retMsg (HTTP 200, ``result: {}``)."""

from __future__ import annotations


class VenueError(Exception):
    """A request the venue refuses; ``code``/``message`` go into the envelope as they are."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def param_error(message: str = "Request parameter error.") -> VenueError:
    """retCode 10001: Bybit uses it for every malformed or out-of-filter parameter."""
    return VenueError(10001, message)


# Exact strings (bybit.md §1-§3; real responses quoted in public issues where known).
ORDER_NOT_EXISTS_CANCEL = "order not exists or too late to cancel"
ORDER_NOT_EXISTS_REPLACE = "order not exists or too late to replace"
DUPLICATE_LINK_ID = "OrderLinkedID is duplicate"
BALANCE_NOT_ENOUGH = "ab not enough for new order"
REDUCE_ONLY_RULE = "Reduce-only rule not satisfied"
AMEND_QTY_NOT_ABOVE_FILLED = "The modified contract quantity cannot be less than or equal to the filled quantity."
