"""``python -m bench.venue [--extra-symbols K] [--advertised-limit N] <ordermgr.paper options>``:
the paper venue in its own process, with ``K`` synthetic listings added (see ``bench.listings``).

``--advertised-limit N`` makes the venue announce N requests/s per endpoint in its
``X-Bapi-Limit-*`` headers instead of Bybit's 10 writes / 50 reads. ordermgr obeys those headers
(it waits for the window once ``X-Bapi-Limit-Status`` reads 0, contract §8) while the floor,
plain pybit, ignores them; with the real limits the bench would measure the venue's 10 orders/s
quota, not ordermgr's own cost. 0 keeps the venue's limits.

Everything else is ``python -m ordermgr.paper``: same options, same logging, same shutdown.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence

import anyio

from bench.listings import bench_listings
from ordermgr.paper.__main__ import configure_logging, parse_args, serve
from ordermgr.paper.config import PaperConfig
from ordermgr.paper.instruments import Listing
from ordermgr.paper.limits import LimitStatus, RateLimits
from ordermgr.paper.venue import PaperVenue



class AdvertisedLimits(RateLimits):
    """Counts like the venue does, but against ``limit`` requests/s for every endpoint."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self._limit = limit

    def hit(self, endpoint: str, limit: int, now_ms: int) -> LimitStatus:
        return super().hit(endpoint, self._limit, now_ms)


class BenchVenue(PaperVenue):
    def __init__(self, config: PaperConfig, listings: Mapping[str, Listing], advertised_limit: int) -> None:
        super().__init__(config, listings)
        self._advertised_limit = advertised_limit
        self._install_limits()

    def reset(self) -> None:
        super().reset()  # replaces the rate buckets
        self._install_limits()

    def _install_limits(self) -> None:
        if self._advertised_limit > 0:
            self.limits = AdvertisedLimits(self._advertised_limit)


def main(argv: Sequence[str] | None = None) -> int:
    own = argparse.ArgumentParser(add_help=False)
    own.add_argument("--extra-symbols", type=int, default=0)
    own.add_argument("--advertised-limit", type=int, default=0)
    ours, rest = own.parse_known_args(argv)
    config, level = parse_args(rest)
    configure_logging(level)
    venue = BenchVenue(config, bench_listings(ours.extra_symbols), ours.advertised_limit)
    anyio.run(serve, venue, backend="asyncio")
    return 0


if __name__ == "__main__":
    sys.exit(main())
