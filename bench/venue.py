"""``python -m bench.venue [--extra-symbols K] <ordermgr.paper options>``: the paper venue in its
own process, with ``K`` synthetic listings added (see ``bench.listings``).

The bench passes ``--lift-rate-limits`` except where the run is about the quota: the venue then
refuses nothing and announces 1 000 000 requests/s in its ``X-Bapi-Limit-*`` headers, so
ordermgr's rate-limit budget (which follows the headers, contract §15) does not hold it to
Bybit's 10 creates/s while the floor, plain pybit, ignores them; with the real limits the bench
would measure the quota, not ordermgr's own cost.

Everything else is ``python -m ordermgr.paper``: same options, same logging, same shutdown.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import anyio

from bench.listings import bench_listings
from ordermgr.paper.__main__ import configure_logging, parse_args, serve
from ordermgr.paper.venue import PaperVenue


def main(argv: Sequence[str] | None = None) -> int:
    own = argparse.ArgumentParser(add_help=False)
    own.add_argument("--extra-symbols", type=int, default=0)
    ours, rest = own.parse_known_args(argv)
    config, level = parse_args(rest)
    configure_logging(level)
    venue = PaperVenue(config, bench_listings(ours.extra_symbols))
    anyio.run(serve, venue, backend="asyncio")
    return 0


if __name__ == "__main__":
    sys.exit(main())
