"""``python -m ordermgr.paper``: serve the paper venue until SIGTERM or SIGINT (exit 0); with
``--ws-gateway`` it also plays ws-gateway (the standalone stack of docker-compose.yml)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from decimal import Decimal

import anyio
from pythonjsonlogger.json import JsonFormatter

from ordermgr.paper.config import PaperConfig
from ordermgr.paper.venue import PaperVenue

log = logging.getLogger("ordermgr.paper")


def parse_args(argv: Sequence[str] | None = None, environ: Mapping[str, str] = os.environ) -> tuple[PaperConfig, str]:
    """Secrets may come from the environment instead (PAPER_API_KEY, PAPER_API_SECRET,
    PAPER_AMQP_URL, PAPER_GATEWAY_API_KEY), so they stay off the command line."""
    defaults = PaperConfig()
    parser = argparse.ArgumentParser(prog="python -m ordermgr.paper", description=__doc__)
    add = parser.add_argument
    add("--host", default=defaults.host)
    add("--port", type=int, default=8600)
    add("--api-key", default=environ.get("PAPER_API_KEY") or defaults.api_key)
    add("--api-secret", default=environ.get("PAPER_API_SECRET") or defaults.api_secret)
    add("--amqp-url", default=environ.get("PAPER_AMQP_URL") or None,
        help="RabbitMQ URL for order events; omit to switch them off")
    add("--order-queue", default=defaults.order_queue)
    add("--ws-gateway", action="store_true",
        help="play ws-gateway too: its subscription API, and ticker events of the subscribed symbols")
    add("--gateway-api-key", default=environ.get("PAPER_GATEWAY_API_KEY", defaults.gateway_api_key))
    add("--ticker-queue", default=defaults.ticker_queue)
    add("--seed", type=int, default=defaults.seed)
    add("--price-walk-interval", type=float, default=defaults.price_walk_interval_s, help="seconds; 0 = off")
    add("--price-walk-step", type=Decimal, default=defaults.price_walk_step, help="max relative move per tick")
    add("--initial-balance", type=Decimal, default=defaults.initial_balance)
    add("--market-fill-parts", type=int, default=defaults.market_fill_parts)
    add("--lift-rate-limits", action="store_true",
        help="do not refuse requests beyond Bybit's limits with 10006 (they are enforced by default)")
    add("--access-log", action="store_true")
    add("--log-level", default="INFO")
    args = parser.parse_args(argv)
    config = PaperConfig(
        host=args.host,
        port=args.port,
        api_key=args.api_key,
        api_secret=args.api_secret,
        amqp_url=args.amqp_url,
        order_queue=args.order_queue,
        seed=args.seed,
        price_walk_interval_s=args.price_walk_interval,
        price_walk_step=args.price_walk_step,
        initial_balance=args.initial_balance,
        market_fill_parts=args.market_fill_parts,
        enforce_rate_limits=not args.lift_rate_limits,
        access_log=args.access_log,
        ws_gateway=args.ws_gateway,
        gateway_api_key=args.gateway_api_key,
        ticker_queue=args.ticker_queue,
    )
    return config, args.log_level


async def serve(venue: PaperVenue) -> None:
    """Run ``venue``; the first SIGTERM or SIGINT stops it cleanly."""
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with anyio.create_task_group() as tg:
            await tg.start(venue.run)
            async for received in signals:
                log.info("stopping on %s", signal.Signals(received).name)
                tg.cancel_scope.cancel()
                break


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter(
            "{asctime}{levelname}{name}{message}",
            style="{",
            rename_fields={"asctime": "timestamp", "levelname": "level", "name": "logger"},
            static_fields={"service": "paper-venue"},
        )
    )
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)


def main(argv: Sequence[str] | None = None) -> int:
    config, level = parse_args(argv)
    configure_logging(level)
    anyio.run(serve, PaperVenue(config), backend="asyncio")
    return 0


if __name__ == "__main__":
    sys.exit(main())
