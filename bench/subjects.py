"""The two things measured: the floor and ordermgr. Each knows how to start, how it says it is
ready, and how to read from its database what it has finished."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Final

import attrs

from bench import procs
from bench.infra import AMQP_URL, AMQP_VHOST, BENCH_DB, BENCH_DSN, free_port

PAPER_KEY: Final = "paper-key"
PAPER_SECRET: Final = "paper-secret"
GATEWAY_KEY: Final = "bench-gateway-key"
PREFETCH: Final = 100  # ordermgr's default; the floor uses the same
# Risk limits "out of the way": nothing the bench sends may be refused for size or exposure.
HUGE: Final = Decimal("1000000000000")


@attrs.frozen
class Subject:
    name: str  # "floor" or "ordermgr"
    ready_line: str
    settled_sql: str  # signals whose outcome is committed (and acked)
    refused_sql: str  # of those, signals that produced no venue order
    links_sql: str  # orderLinkId → signal_id

    def start(self, repo: Path, venue_url: str, log_path: Path, env: Mapping[str, str] | None = None) -> procs.Child:
        """``env``: more of ordermgr's variables (the floor takes none)."""
        if self.name == "floor":
            argv = [sys.executable, "-m", "bench.floor", "--amqp-url", AMQP_URL, "--dsn", BENCH_DSN,
                    "--venue-url", venue_url, "--api-key", PAPER_KEY, "--api-secret", PAPER_SECRET,
                    "--prefetch", str(PREFETCH)]  # fmt: skip
            return procs.spawn("floor", argv, env=procs.python_env(repo, {}), cwd=repo, log_path=log_path)
        # The daemon runs from the results folder: no stray .env can reach it.
        cwd = log_path.parent
        argv = [sys.executable, "-m", "ordermgr"]
        return procs.spawn("ordermgr", argv, env=procs.python_env(repo, {**daemon_env(venue_url), **(env or {})}),
                           cwd=cwd, log_path=log_path)  # fmt: skip


def daemon_env(venue_url: str) -> dict[str, str]:
    return {
        "ORDER_MANAGER_PORT": str(free_port()),
        "ORDER_MANAGER_API_KEY": "bench-api-key",
        "ORDER_MANAGER_LOG_LEVEL": "INFO",  # production's level: logging is part of the cost
        "BYBIT_ENVIRONMENT": "paper",
        "BYBIT_REST_URL": venue_url,
        "BYBIT_API_KEY": PAPER_KEY,
        "BYBIT_API_SECRET": PAPER_SECRET,
        "POSTGRES_HOST": "127.0.0.1",
        "POSTGRES_PORT": "5432",
        "POSTGRES_DB": BENCH_DB,
        "POSTGRES_USER": "postgres",
        "POSTGRES_PASSWORD": "",
        "RABBITMQ_HOST": "127.0.0.1",
        "RABBITMQ_PORT": "5672",
        "RABBITMQ_USER": "guest",
        "RABBITMQ_PASSWORD": "guest",
        "RABBITMQ_VHOST": AMQP_VHOST,
        # The bench's venue plays ws-gateway (--ws-gateway): the ticker subscriptions go to it
        # (contract §14.1); it publishes the order stream itself.
        "WS_GATEWAY_HOST": "127.0.0.1",
        "WS_GATEWAY_PORT": venue_url.rsplit(":", 1)[1],
        "WS_GATEWAY_API_KEY": GATEWAY_KEY,
        "ORDERMANAGER_MAX_POSITION_SIZE": str(HUGE),
        "ORDERMANAGER_MAX_EXPOSURE": str(HUGE),
        "ORDERMANAGER_MAX_ORDER_SIZE_RATIO": "1",
        "ORDERMANAGER_MAX_SINGLE_ORDER_SIZE": str(HUGE),
        "ORDERMANAGER_PREFETCH": str(PREFETCH),
    }


FLOOR: Final = Subject(
    name="floor",
    ready_line="floor ready",
    settled_sql="SELECT count(*) FROM floor_orders WHERE status <> 'received'",
    refused_sql="SELECT count(*) FROM floor_orders WHERE status NOT IN ('received', 'placed')",
    links_sql="SELECT order_link_id, signal_id FROM floor_orders",
)
ORDERMGR: Final = Subject(
    name="ordermgr",
    ready_line="ready to take signals",
    # 'processing' = intents recorded, venue outcome not committed yet (or unknown).
    settled_sql="SELECT count(*) FROM signals WHERE status NOT IN ('received', 'processing')",
    refused_sql="SELECT count(*) FROM signals WHERE status IN ('rejected', 'invalid')",
    links_sql="SELECT order_link_id, signal_id FROM orders",
)
