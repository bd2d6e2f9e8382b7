"""SIGKILL at the two dangerous instants of a placement; after a restart exactly one order
exists for the signal, on the venue and in the database."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import psycopg
import pytest

from ordermgr import failpoints
from ordermgr.domain.decision import order_link_id
from tests.service import Daemon, paper_venue, publish, reset_queues


def quick_signal(signal_id: str) -> bytes:
    return json.dumps({"signal_id": signal_id, "signal_type": "buy", "asset": "BTCUSDT", "amount": "500",
                       "confidence": 0.95, "timestamp": "2026-11-23T10:00:00Z", "trace_id": signal_id}).encode()  # fmt: skip


@pytest.mark.parametrize(
    ("failpoint", "venue_orders_after_crash", "final_status"),
    [
        # Startup reconciliation finds no order and resends the intent under the same orderLinkId.
        (failpoints.AFTER_INTENT_COMMIT, 0, "pending"),
        # Startup reconciliation finds the (filled) market order and merges it.
        (failpoints.AFTER_VENUE_CALL, 1, "filled"),
    ],
    ids=["killed-before-the-venue-call", "killed-before-the-outcome-commit"],
)
async def test_sigkill_then_restart_leaves_exactly_one_order(
    clean_database: str, tmp_path: Path, failpoint: str, venue_orders_after_crash: int, final_status: str
) -> None:
    await reset_queues()
    signal_id = f"crash-{failpoint}"
    link_id = order_link_id(signal_id, 1, 1)
    venue = paper_venue()

    def on_venue() -> list[object]:
        return [o for o in venue.engine.orders.values() if o.order_link_id == link_id]

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            env = {"BYBIT_REST_URL": await tg.start(venue.run)}
            crashing = Daemon({**env, "ORDERMGR_FAILPOINT": failpoint}, str(tmp_path))
            await tg.start(crashing.run)
            await crashing.wait_for("ready to take signals")
            await publish(quick_signal(signal_id))
            assert await crashing.wait_exit() == -9  # SIGKILL
            assert len(on_venue()) == venue_orders_after_crash
            with psycopg.connect(clean_database) as conn:
                [(status,)] = conn.execute("SELECT status FROM orders WHERE signal_id = %s", (signal_id,)).fetchall()
            assert status == "submitting"  # the intent was committed; its outcome never was

            restarted = Daemon(env, str(tmp_path))
            await tg.start(restarted.run)
            await restarted.wait_for("signal acknowledged", signal_id=signal_id)
            restarted.terminate()
            assert await restarted.wait_exit() == 0
            tg.cancel_scope.cancel()

    assert len(on_venue()) == 1
    with psycopg.connect(clean_database) as conn:
        orders = conn.execute("SELECT order_link_id, status, order_id FROM orders WHERE signal_id = %s",
                              (signal_id,)).fetchall()  # fmt: skip
        [(signal_status,)] = conn.execute("SELECT status FROM signals WHERE signal_id = %s", (signal_id,)).fetchall()
    assert [(link, status) for link, status, _ in orders] == [(link_id, final_status)]
    assert orders[0][2] == on_venue()[0].order_id  # type: ignore[attr-defined]
    assert signal_status == "accepted"
