"""Trading controls against the paper venue, PostgreSQL and RabbitMQ (contract §11, §12): each
operator action and each automatic trigger, a halt kept across a restart, and a SIGKILL in the
middle of a close. Operator requests take the path every instance's API takes: recorded in
``operator_requests``, NOTIFY, carried out by the leader's desk."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import psycopg
import pytest
from psycopg.rows import dict_row

from ordermgr import failpoints
from ordermgr.amqp.broker import ORDER_EVENTS_QUEUE, ORDER_UPDATES_QUEUE, SIGNAL_QUEUE
from ordermgr.db.requests import RequestStore
from ordermgr.domain.model import OperatorRequest
from ordermgr.db.store import PgStore
from ordermgr.paper import PaperVenue
from tests import support
from tests.service import Daemon, paper_venue, publish, reset_queues, running_service

pytestmark = pytest.mark.slow


def signal(signal_id: str, side: str = "buy", amount: str = "1000", asset: str = "BTCUSDT") -> bytes:
    return json.dumps({"signal_id": signal_id, "signal_type": side, "asset": asset, "amount": amount,
                       "confidence": 0.95, "timestamp": "2026-12-01T10:00:00Z"}).encode()  # fmt: skip


def one(conninfo: str, sql: str, *params: object) -> dict[str, Any] | None:
    with psycopg.connect(conninfo, row_factory=dict_row) as conn:
        return conn.execute(sql, params).fetchone()


def rejection(conninfo: str, signal_id: str) -> str | None:
    row = one(conninfo, "SELECT status, rejection_code FROM signals WHERE signal_id = %s", signal_id)
    assert row is not None and row["status"] in ("accepted", "rejected"), row
    return row["rejection_code"]  # type: ignore[no-any-return]


def state_of(conninfo: str, scope: str = "global") -> tuple[str, str, str] | None:
    row = one(conninfo, "SELECT state, reason, source FROM trading_state WHERE scope = %s", scope)
    return (row["state"], row["reason"], row["source"]) if row else None


async def ask(conninfo: str, kind: str, params: Mapping[str, Any], timeout_s: float = 30.0) -> OperatorRequest:
    """An operator request as any instance's API records it; its outcome once the leader wrote it."""
    async with PgStore(conninfo) as store:
        requests = RequestStore(store, "test")
        request_id = await requests.submit(kind, params, "tester")
        with anyio.fail_after(timeout_s):
            while True:
                request = await requests.get(request_id)
                if request is not None and request.finished:
                    return request
                await anyio.sleep(0.05)  # bounded by the deadline: the outcome row has no log line here


async def acked(service: Any, signal_id: str) -> None:
    await service.logs.wait_for("signal acknowledged", timeout_s=20, signal_id=signal_id)


def venue_size(venue: PaperVenue, symbol: str = "BTCUSDT") -> Decimal:
    return venue.engine.positions[symbol].size


def our_venue_orders(venue: PaperVenue) -> list[Any]:
    return [o for o in venue.engine.orders.values() if o.order_link_id.startswith("om-")]


@pytest.fixture
async def fresh(clean_database: str) -> str:
    await reset_queues(SIGNAL_QUEUE, ORDER_EVENTS_QUEUE, ORDER_UPDATES_QUEUE)
    return clean_database


async def test_halt_refuses_signals_close_flattens_and_resume_trades(fresh: str) -> None:
    venue = paper_venue(amqp_url=support.AMQP_URL)
    async with running_service({"ORDERMANAGER_MAX_ORDER_SIZE_RATIO": "1"}, venue=venue) as service:
        await publish(signal("c-open"))
        await acked(service, "c-open")
        await service.logs.wait_for("fill applied", timeout_s=10)
        assert venue_size(venue) == Decimal("0.020")

        halted = await ask(fresh, "trading_state", {"state": "halted", "reason": "incident", "message": "look"})
        assert halted.http_status == 200 and halted.result["global"]["state"] == "halted"
        assert halted.result["global"]["operator"] == "tester"
        placed = len(our_venue_orders(venue))
        await publish(signal("c-halted"))
        await acked(service, "c-halted")
        assert rejection(fresh, "c-halted") == "trading_halted" and len(our_venue_orders(venue)) == placed

        closed = await ask(fresh, "close_position", {"asset": "BTCUSDT"})  # under the halt
        assert closed.http_status == 200 and closed.result["status"] == "closed", closed.result
        assert venue_size(venue) == 0
        [close_order] = closed.result["orders"]
        assert (close_order["side"], close_order["reduce_only"], close_order["status"]) == ("Sell", True, "filled")
        again = await ask(fresh, "close_position", {"asset": "BTCUSDT"})
        assert again.result["status"] == "already_flat"

        await ask(fresh, "trading_state", {"state": "active"})
        await publish(signal("c-resumed"))
        await acked(service, "c-resumed")
        assert rejection(fresh, "c-resumed") is None and venue_size(venue) == Decimal("0.020")
        history = one(fresh, "SELECT count(*) AS n FROM trading_state_changes")
        assert history == {"n": 2}


async def test_under_reducing_a_larger_sell_closes_exactly_and_a_buy_is_refused(fresh: str) -> None:
    venue = paper_venue(amqp_url=support.AMQP_URL)
    async with running_service({"ORDERMANAGER_MAX_ORDER_SIZE_RATIO": "1"}, venue=venue) as service:
        await publish(signal("r-open", amount="2000"))  # 0.04 BTC
        await acked(service, "r-open")
        await service.logs.wait_for("fill applied", timeout_s=10)
        await ask(fresh, "trading_state", {"state": "reducing", "asset": "BTCUSDT"})
        await publish(signal("r-grow"))
        await acked(service, "r-grow")
        assert rejection(fresh, "r-grow") == "trading_reducing"
        await publish(signal("r-flip", side="sell", amount="5000"))  # 0.1 BTC against a long of 0.04
        await acked(service, "r-flip")
        assert rejection(fresh, "r-flip") is None
        order = one(fresh, "SELECT quantity, reduce_only FROM orders WHERE signal_id = 'r-flip'")
        assert order == {"quantity": Decimal("0.040"), "reduce_only": True}
        await service.logs.wait_for("fill applied", timeout_s=10, signal_id="r-flip")
        assert venue_size(venue) == 0


async def test_cancel_one_and_cancel_all_touch_only_our_open_orders(fresh: str) -> None:
    venue = paper_venue(amqp_url=support.AMQP_URL)
    foreign = {"category": "linear", "symbol": "BTCUSDT", "side": "Buy", "orderType": "Limit", "qty": "0.01",
               "price": "49500", "orderLinkId": "someone-else-1"}  # fmt: skip
    async with running_service({"ORDERMANAGER_MAX_ORDER_SIZE_RATIO": "1"}, venue=venue) as service:
        venue.engine.create_order(foreign)
        for n in range(3):  # resting Limit buys below the market (low confidence, a wide spread)
            body = json.loads(signal(f"k-{n}"))
            body.update(confidence=0.3, market_data_snapshot={"price": 50000, "spread": 200})
            await publish(json.dumps(body).encode())
            await acked(service, f"k-{n}")
        [first, *_] = [o for o in our_venue_orders(venue) if o.status == "New"]
        venue.faults.fault_path, venue.faults.error_code, venue.faults.error_next = "/v5/order/cancel", 10001, 1
        refused = await ask(fresh, "cancel_order", {"id": first.order_link_id})
        assert refused.http_status == 503 and refused.result["code"] == "cancel_failed", refused.result
        assert refused.result["details"]["order"]["status"] == "pending"
        cancelled = await ask(fresh, "cancel_order", {"id": first.order_link_id})
        assert cancelled.http_status == 200 and cancelled.result["status"] == "cancelled"
        again = await ask(fresh, "cancel_order", {"id": first.order_link_id})
        assert again.http_status == 409 and again.result["code"] == "order_not_open"
        missing = await ask(fresh, "cancel_order", {"id": "om-nothing-1-1"})
        assert missing.http_status == 404
        everything = await ask(fresh, "cancel_all", {})
        assert everything.result["cancelled"] == 2 and everything.result["failed"] == []
        assert [o.status for o in our_venue_orders(venue)] == ["Cancelled"] * 3
        assert venue.engine.find_order(order_link_id="someone-else-1").status == "New"  # type: ignore[union-attr]


async def test_a_halt_is_kept_across_a_restart(fresh: str) -> None:
    venue = paper_venue(amqp_url=support.AMQP_URL)
    async with running_service(venue=venue):
        await ask(fresh, "trading_state", {"state": "halted", "asset": "ETHUSDT", "reason": "maintenance"})
        unlisted = await ask(fresh, "trading_state", {"state": "halted", "asset": "NOPEUSDT"})
        assert unlisted.http_status == 404 and unlisted.result["code"] == "unknown_asset"
    async with running_service(venue=venue) as service:
        await publish(signal("h-after-restart", asset="ETHUSDT"))
        await acked(service, "h-after-restart")
        assert rejection(fresh, "h-after-restart") == "trading_halted"
        assert state_of(fresh, "ETHUSDT") == ("halted", "maintenance", "operator")


async def test_consecutive_venue_errors_halt_everything_until_an_operator_lifts_it(fresh: str) -> None:
    venue = paper_venue(amqp_url=support.AMQP_URL)
    env = {"ORDERMANAGER_HALT_AFTER_VENUE_ERRORS": "3", "ORDERMANAGER_BYBIT_API_RETRY_BASE_DELAY": "0.01",
           "ORDERMANAGER_MAX_ORDER_SIZE_RATIO": "1"}  # fmt: skip
    async with running_service(env, venue=venue) as service:
        venue.faults.http_error_next = 6  # every private request meanwhile: 502
        await publish(signal("v-during"))
        await service.logs.wait_for("trading state latched by a trigger", timeout_s=20)
        await acked(service, "v-during")
        assert state_of(fresh) == ("halted", "venue_errors", "automatic")
        venue.faults.http_error_next = 0
        await publish(signal("v-latched"))
        await acked(service, "v-latched")
        assert rejection(fresh, "v-latched") == "trading_halted"  # the venue is fine again: still latched
        await ask(fresh, "trading_state", {"state": "active"})
        await publish(signal("v-lifted"))
        await acked(service, "v-lifted")
        assert rejection(fresh, "v-lifted") is None


async def test_consecutive_rejections_halt_only_that_asset(fresh: str) -> None:
    venue = paper_venue(amqp_url=support.AMQP_URL)
    env = {"ORDERMANAGER_HALT_AFTER_REJECTIONS": "2", "ORDERMANAGER_MAX_ORDER_SIZE_RATIO": "1"}
    async with running_service(env, venue=venue) as service:
        # Insufficient balance, a final rejection, for the creates only (the wallet is read meanwhile).
        venue.faults.fault_path, venue.faults.error_code, venue.faults.error_next = "/v5/order/create", 110007, 2
        for n in range(2):
            await publish(signal(f"j-{n}"))
            await acked(service, f"j-{n}")
        assert state_of(fresh, "BTCUSDT") == ("halted", "venue_rejections", "automatic")
        await publish(signal("j-btc"))
        await publish(signal("j-eth", asset="ETHUSDT"))
        await acked(service, "j-btc")
        await acked(service, "j-eth")
        assert rejection(fresh, "j-btc") == "trading_halted" and rejection(fresh, "j-eth") is None


async def test_a_position_mismatch_halts_that_asset(fresh: str) -> None:
    venue = paper_venue(amqp_url=support.AMQP_URL)
    async with running_service({"ORDERMANAGER_MAX_ORDER_SIZE_RATIO": "1"}, venue=venue) as service:
        await publish(signal("m-open"))
        await acked(service, "m-open")
        await service.logs.wait_for("fill applied", timeout_s=10)
        venue.engine.create_order({"category": "linear", "symbol": "BTCUSDT", "side": "Buy", "orderType": "Market",
                                   "qty": "0.005", "orderLinkId": "manual-by-hand"})  # fmt: skip
        report = await ask(fresh, "sync", {"scope": "all"})
        assert report.http_status == 200
        assert state_of(fresh, "BTCUSDT") == ("halted", "position_mismatch", "automatic")


async def test_two_evaluations_below_the_daily_loss_latch_reducing(fresh: str) -> None:
    venue = paper_venue(amqp_url=support.AMQP_URL)
    env = {"ORDERMANAGER_MAX_DAILY_LOSS": "50", "ORDERMANAGER_POSITION_SNAPSHOT_INTERVAL": "0.2",
           "ORDERMANAGER_MAX_ORDER_SIZE_RATIO": "1"}  # fmt: skip
    async with running_service(env, venue=venue) as service:
        await publish(signal("d-open", amount="5000"))  # 0.1 BTC at 50000
        await acked(service, "d-open")
        await service.logs.wait_for("fill applied", timeout_s=10)
        venue.set_price("BTCUSDT", "49000")  # -100 USDT unrealized: below -50 at every snapshot from now on
        await service.logs.wait_for("trading state latched by a trigger", timeout_s=20)
        assert state_of(fresh) == ("reducing", "daily_loss_limit", "automatic")


async def test_a_close_killed_after_its_intent_is_resumed_never_repeated(fresh: str, tmp_path: Path) -> None:
    """SIGKILL right after the close's orders are committed: the next leader sends those same
    orders (reconciliation) and carries the request out again without sizing a second close."""
    venue = paper_venue(amqp_url=support.AMQP_URL)
    async with anyio.create_task_group() as tg:
        env = {"BYBIT_REST_URL": await tg.start(venue.run), "ORDERMANAGER_LEADER_LEASE_SECONDS": "2",
               "ORDERMANAGER_MAX_ORDER_SIZE_RATIO": "1"}  # fmt: skip
        opener = Daemon(env, str(tmp_path))
        await tg.start(opener.run)
        await opener.wait_for("ready to take signals", timeout_s=30)
        await publish(signal("k-open", amount="2000"))
        await opener.wait_for("fill applied", timeout_s=20)
        opener.terminate()
        assert await opener.wait_exit() == 0

        crashing = Daemon({**env, "ORDERMGR_FAILPOINT": failpoints.AFTER_CLOSE_INTENT}, str(tmp_path))
        await tg.start(crashing.run)
        await crashing.wait_for("ready to take signals", timeout_s=30)
        async with PgStore(fresh) as store:
            request_id = await RequestStore(store, "test").submit("close_position", {"asset": "BTCUSDT"}, "tester")
        assert await crashing.wait_exit() == -9
        assert venue_size(venue) == Decimal("0.040")  # the close was stored, never sent

        resuming = Daemon(env, str(tmp_path))
        await tg.start(resuming.run)
        await resuming.wait_for("operator request done", timeout_s=30)
        request = await _request(fresh, request_id)
        assert request.result["status"] == "closed", request.result
        closes = [o for o in our_venue_orders(venue) if o.reduce_only]
        assert len(closes) == 1 and venue_size(venue) == 0
        resuming.terminate()
        await resuming.wait_exit()
        tg.cancel_scope.cancel()


async def _request(conninfo: str, request_id: uuid.UUID) -> OperatorRequest:
    async with PgStore(conninfo) as store:
        request = await RequestStore(store, "test").get(request_id)
    assert request is not None
    return request
