"""Two instances on one database and one broker (contract §13): one leads and trades, the other
stands by, ready, consuming nothing; so the risk limits hold for the account as a whole."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import psycopg
import pytest

from ordermgr.amqp.broker import ORDER_EVENTS_QUEUE, ORDER_UPDATES_QUEUE, SIGNAL_QUEUE
from tests import support
from tests.service import Daemon, paper_venue, publish, reset_queues

pytestmark = pytest.mark.slow


async def ready(port: int) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/ready") as response:
        return response.status, await response.json()


def buy(signal_id: str) -> bytes:
    return json.dumps({"signal_id": signal_id, "signal_type": "buy", "asset": "BTCUSDT", "amount": "1000",
                       "confidence": 0.95, "timestamp": "2026-12-01T10:00:00Z"}).encode()  # fmt: skip


async def test_two_instances_hold_the_position_limit_as_one(clean_database: str, tmp_path: Path) -> None:
    """40 buys of 0.02 BTC against a limit of 0.1 BTC with two instances running: before
    leadership each checked only its own view and the venue ended at 0.2 BTC."""
    await reset_queues(SIGNAL_QUEUE, ORDER_EVENTS_QUEUE, ORDER_UPDATES_QUEUE)
    venue = paper_venue(amqp_url=support.AMQP_URL, initial_prices={"BTCUSDT": Decimal(50000)})
    async with anyio.create_task_group() as tg:
        env = {"BYBIT_REST_URL": await tg.start(venue.run), "ORDERMANAGER_MAX_POSITION_SIZE": "0.1",
               "ORDERMANAGER_MAX_ORDER_SIZE_RATIO": "1"}  # fmt: skip
        first, second = Daemon(env, str(tmp_path)), Daemon(env, str(tmp_path))
        await tg.start(first.run)
        await first.wait_for("ready to take signals", timeout_s=30)
        await tg.start(second.run)
        await second.wait_for("standing by", timeout_s=30)

        leader_status, leader_body = await ready(first.port)
        standby_status, standby_body = await ready(second.port)
        assert (leader_status, leader_body["role"], leader_body["trading_state"]) == (200, "leader", "active")
        assert (standby_status, standby_body["role"]) == (200, "standby")

        for n in range(40):
            await publish(buy(f"limit-{n:02d}"))
        await first.wait_until(lambda: first.count("signal acknowledged") >= 40, timeout_s=60, what="40 acks")
        with psycopg.connect(clean_database) as conn:
            refused = conn.execute("SELECT count(*) FROM signals WHERE rejection_code = 'exceeds_max_position_size'"
                                   ).fetchone()  # fmt: skip
        assert venue.engine.positions["BTCUSDT"].size == Decimal("0.100")
        assert refused == (35,)
        assert second.count("signal received") == 0
        first.terminate()
        second.terminate()
        assert await first.wait_exit() == 0 and await second.wait_exit() == 0
        tg.cancel_scope.cancel()
