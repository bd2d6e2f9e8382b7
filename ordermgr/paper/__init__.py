"""The paper venue: a Bybit v5 (linear, one-way, UNIFIED) venue that pybit talks to over HTTP.

Typical use::

    venue = PaperVenue(PaperConfig(port=0, price_walk_interval_s=0))
    base_url = await task_group.start(venue.run)   # "http://127.0.0.1:<port>"
    venue.set_price("BTCUSDT", Decimal("50000"))
    venue.faults.rate_limit_next = 3

Out of process: ``python -m ordermgr.paper --port 8600`` plus the ``/paper/*`` control
endpoints (faults, price, reset, state).
"""

from __future__ import annotations

from ordermgr.paper.config import PaperConfig
from ordermgr.paper.faults import Faults
from ordermgr.paper.venue import PaperVenue

__all__ = ["Faults", "PaperConfig", "PaperVenue"]
