"""Fault injection knobs. The adapter's test helper relies on exactly these names."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, Literal

import attrs

RequestFault = Literal["rate_limit", "error", "http_error"]
COUNTERS: Final = ("rate_limit_next", "error_next", "http_error_next", "lose_response_next")


@attrs.define
class Faults:
    """Mutable on purpose: tests flip fields on ``venue.faults`` between requests.

    Every ``*_next`` counter is the number of upcoming requests it hits; it goes down
    by one each time it fires.
    """

    latency_s: float = 0.0  # delay before every private request is handled
    network_latency_s: float = 0.0  # delay before every /v5 request, market data included (a slow network)
    rate_limit_next: int = 0  # answer 10006 "Too many visits!" (not executed)
    error_next: int = 0  # answer retCode ``error_code`` (not executed)
    error_code: int = 10016
    http_error_next: int = 0  # answer HTTP ``http_status`` with a non-JSON body
    http_status: int = 502
    lose_response_next: int = 0  # execute /v5/order/create, then never answer
    # The one path the *_next request faults hit (e.g. "/v5/order/create"); "" = every private path.
    fault_path: str = ""
    event_duplicate: float = 0.0  # probability an order event is published twice
    event_drop: float = 0.0  # probability an order event is never published
    event_delay_s: float = 0.0  # delay before each order event is published
    event_reorder: bool = False  # shuffle order events within small windows
    # ws-gateway's ticker stream stalls: no ticker event is published while set; each symbol's
    # next price change after it is a snapshot (as after ws-gateway reconnects to Bybit).
    ticker_stall: bool = False

    def take_request_fault(self, path: str = "") -> RequestFault | None:
        """The fault (if any) this private request to ``path`` suffers; decrements its counter."""
        if self.fault_path and path != self.fault_path:
            return None
        if self._take("rate_limit_next"):
            return "rate_limit"
        if self._take("error_next"):
            return "error"
        if self._take("http_error_next"):
            return "http_error"
        return None

    def take_lost_response(self) -> bool:
        return self._take("lose_response_next")

    def update(self, changes: Mapping[str, object]) -> None:
        """Apply a partial update (``POST /paper/faults``); unknown names or wrong types
        raise ``ValueError`` and change nothing."""
        fields = attrs.fields_dict(Faults)
        converted = {}
        for name, value in changes.items():
            if name not in fields:
                raise ValueError(f"unknown fault {name!r}")
            converted[name] = _convert(name, fields[name].type, value)
        for name, value in converted.items():
            setattr(self, name, value)

    def reset(self) -> None:
        for name, value in attrs.asdict(Faults()).items():
            setattr(self, name, value)

    def as_dict(self) -> dict[str, object]:
        return attrs.asdict(self)

    def _take(self, counter: str) -> bool:
        remaining = getattr(self, counter)
        if remaining <= 0:
            return False
        setattr(self, counter, remaining - 1)
        return True


def _convert(name: str, kind: object, value: object) -> object:
    # With ``from __future__ import annotations`` attrs keeps the annotation text.
    if kind == "bool":
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be a boolean")
        return value
    if kind == "str":
        if not isinstance(value, str):
            raise ValueError(f"{name} must be a string")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"{name} must be a number")
    try:
        return int(value) if kind == "int" else float(value)
    except ValueError:
        raise ValueError(f"{name} must be a number") from None
