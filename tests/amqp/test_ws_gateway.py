"""ws-gateway's order events are read by their adapter: the actors only ever see a venue order."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from decimal import Decimal

import anyio
import attrs
import pytest

from ordermgr.amqp.ws_gateway import TickerFeed, order_events_to, order_of_event, ticker_of_event
from ordermgr.domain.model import Side
from ordermgr.ports import OrderEventDelivery

BYBIT_ORDER = {
    "category": "linear", "symbol": "BTCUSDT", "orderId": "5e1c6a8e-0d4e-4b1e-9b7e-2f0c8f1d2a11",
    "orderLinkId": "om-0123456789abcdef0123-1-1", "side": "Buy", "orderType": "Market", "price": "66000.0",
    "qty": "0.015", "orderStatus": "Filled", "cumExecQty": "0.015", "cumExecValue": "975.69", "cumExecFee": "0.5366295",
    "avgPrice": "65046", "leavesQty": "0", "rejectReason": "EC_NoError", "reduceOnly": False, "timeInForce": "IOC",
    "createdTime": "1733280000000", "updatedTime": "1733280000012",
}  # fmt: skip


def envelope(payload: object) -> bytes:
    return json.dumps({"event_id": "e1", "event_type": "order", "topic": "order", "timestamp": "2026-12-04T00:00:00Z",
                       "received_at": "2026-12-04T00:00:00Z", "payload": payload, "trace_id": None}).encode()  # fmt: skip


@attrs.define
class RecordedDelivery:
    """A delivery that remembers what was done with it."""

    body: bytes
    headers: Mapping[str, object] = attrs.field(factory=dict)
    redelivered: bool = False
    outcome: str = "unsettled"

    async def ack(self) -> None:
        self.outcome = "acked"

    async def requeue(self) -> None:
        self.outcome = "requeued"


def test_an_order_event_is_read_as_the_venue_order_it_carries() -> None:
    order = order_of_event(envelope(BYBIT_ORDER))
    assert order is not None
    assert (order.symbol, order.side, order.status) == ("BTCUSDT", Side.BUY, "Filled")
    assert (order.cum_exec_qty, order.cum_exec_value, order.cum_exec_fee) == (Decimal("0.015"), Decimal("975.69"), Decimal("0.5366295"))


def test_a_message_that_is_not_an_order_event_reads_as_none() -> None:
    bodies = (b"not json", b"[]", envelope(None), envelope([BYBIT_ORDER]), envelope({"symbol": "BTCUSDT"}), b'{"x": 1}')
    for body in bodies:
        assert order_of_event(body) is None


@pytest.mark.parametrize("oddity", [{"side": ""}, {"orderStatus": "SomethingNew"}, {"orderStatus": None}])
def test_an_order_that_is_not_ours_is_ignored_without_a_warning(
    oddity: dict[str, object], caplog: pytest.LogCaptureFixture
) -> None:
    """contract §16: others' orders on the account may carry an empty side or a status we do not
    know; they are none of our business, not errors."""
    foreign = {**BYBIT_ORDER, "orderLinkId": "someone-elses-1", **oddity}
    with caplog.at_level(logging.DEBUG, logger="ordermgr"):
        assert order_of_event(envelope(foreign)) is None
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_an_order_of_ours_that_cannot_be_read_is_still_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="ordermgr"):
        assert order_of_event(envelope({**BYBIT_ORDER, "side": ""})) is None
    assert [r.getMessage() for r in caplog.records] == ["order event not understood; dropped"]


async def test_events_are_handed_on_read_and_requeued_when_the_stream_is_full() -> None:
    send, receive = anyio.create_memory_object_stream[OrderEventDelivery](1)
    hand_over = order_events_to(send)
    first, second = RecordedDelivery(envelope(BYBIT_ORDER)), RecordedDelivery(b"junk")
    await hand_over(first)
    await hand_over(second)  # the stream holds one: the broker keeps this one
    handed = receive.receive_nowait()
    assert handed.delivery is first and handed.order is not None and handed.order.order_link_id.startswith("om-")
    assert (first.outcome, second.outcome) == ("unsettled", "requeued")
    send.close()
    receive.close()


async def test_an_event_that_arrives_while_the_actors_drain_goes_back_to_the_broker() -> None:
    """The actors have stopped reading (a stop in progress): the callback used to raise
    BrokenResourceError and leave the message unacknowledged until its channel closed."""
    send, receive = anyio.create_memory_object_stream[OrderEventDelivery](4)
    receive.close()
    late = RecordedDelivery(envelope(BYBIT_ORDER))
    await order_events_to(send)(late)
    assert late.outcome == "requeued"
    send.close()


# --- ticker events ------------------------------------------------------------------------------


def ticker_envelope(payload: object) -> bytes:
    return json.dumps({"event_id": "t1", "event_type": "ticker", "topic": "tickers.BTCUSDT",
                       "timestamp": "2026-12-04T00:00:00Z", "received_at": "2026-12-04T00:00:00Z",
                       "payload": payload, "trace_id": None}).encode()  # fmt: skip


SNAPSHOT = {"symbol": "BTCUSDT", "lastPrice": "50000.10", "bid1Price": "50000.00", "type": "snapshot",
            "ts": 1733280000000}  # fmt: skip


@attrs.frozen
class Body:
    """A delivery of the ticker queue, which is consumed without acks: only its body counts."""

    body: bytes


def test_a_ticker_event_is_read_as_the_item_it_carries_with_numbers_never_floats() -> None:
    item = ticker_of_event(ticker_envelope(SNAPSHOT))
    assert (item.symbol, item.is_snapshot, item.ts_ms, item.last_price) == ("BTCUSDT", True, 1733280000000,
                                                                              Decimal("50000.10"))  # fmt: skip
    as_number = ticker_of_event(b'{"payload": {"symbol": "BTCUSDT", "type": "delta", "ts": 1, "lastPrice": 50000.1}}')
    assert as_number.last_price == Decimal("50000.1")  # exactly: read as a Decimal, not through a float


@pytest.mark.parametrize("body", [b"not json", b"[]", b'{"x": 1}', ticker_envelope(None), ticker_envelope([SNAPSHOT]),
                                  ticker_envelope({**SNAPSHOT, "type": "update"}), b"\xff\xfe"])  # fmt: skip
def test_a_message_that_is_not_a_ticker_event_is_a_value_error(body: bytes) -> None:
    with pytest.raises(ValueError):
        ticker_of_event(body)


async def test_ticker_events_are_taken_as_they_come_and_junk_is_logged_and_dropped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    taken: list[str] = []
    feed = TickerFeed(lambda item: taken.append(str(item.last_price)))
    bodies = [ticker_envelope(SNAPSHOT), b"junk", ticker_envelope({**SNAPSHOT, "type": "delta", "lastPrice": "1.5"})]
    with caplog.at_level(logging.WARNING, logger="ordermgr"):
        for body in bodies:
            await feed.on_delivery(Body(body))
    assert taken == ["50000.10", "1.5"]
    assert feed.events == 3
    assert [r.getMessage() for r in caplog.records] == ["ticker event not understood; dropped"]
