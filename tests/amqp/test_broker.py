"""The broker adapter's batching (contract §14.3): outbox events published together under one
confirm wait, acknowledgements sent together. Fakes of aiormq's channel prove the order of
frames; the real RabbitMQ proves the broker takes them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiormq
import anyio
import pytest
from pamqp import commands as spec

from ordermgr.amqp.broker import Broker, ChannelAcks, Delivery, Publisher, consume
from ordermgr.domain.errors import BrokerUnavailable
from ordermgr.ports import OutgoingMessage
from tests import support
from tests.logwait import watching_logs

pytestmark = pytest.mark.anyio


class ConfirmingChannel:
    """Stands for aiormq's channel with publisher confirms: every publish is recorded when it is
    sent; its confirm comes only when the test releases ``confirms``."""

    def __init__(self, answer: object = None) -> None:
        self.is_closed = False
        self.sent: list[tuple[str, bytes]] = []
        self.confirms = anyio.Event()
        self.answer = answer if answer is not None else spec.Basic.Ack()

    async def queue_declare(self, queue: str, **kwargs: Any) -> None:
        pass

    async def basic_publish(self, body: bytes, *, routing_key: str, **kwargs: Any) -> object:
        self.sent.append((routing_key, body))
        await self.confirms.wait()
        return self.answer


class OneChannelBroker:
    def __init__(self, channel: ConfirmingChannel) -> None:
        self._channel = channel

    async def wait_connected(self) -> OneChannelBroker:
        return self

    async def channel(self, **kwargs: Any) -> ConfirmingChannel:
        return self._channel


def messages(n: int, queue: str = "q") -> list[OutgoingMessage]:
    return [OutgoingMessage(queue, f"m{i}".encode(), f"id-{i}", {"trace_id": f"t{i}"}) for i in range(n)]


async def test_a_batch_is_all_sent_before_any_confirm_is_waited_for() -> None:
    channel = ConfirmingChannel()
    publisher = Publisher(OneChannelBroker(channel))  # type: ignore[arg-type]
    done = anyio.Event()

    async def publish() -> None:
        await publisher.publish_all(messages(5))
        done.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(publish)
        await anyio.wait_all_tasks_blocked()
        # Every message is out while no confirm has come yet: one wait for the batch.
        assert channel.sent == [("q", f"m{i}".encode()) for i in range(5)]
        assert not done.is_set()
        channel.confirms.set()
    assert done.is_set()


async def test_a_batch_with_a_message_the_broker_refused_fails_whole() -> None:
    channel = ConfirmingChannel(answer=spec.Basic.Nack())
    channel.confirms.set()
    publisher = Publisher(OneChannelBroker(channel))  # type: ignore[arg-type]
    with pytest.raises(BrokerUnavailable, match="did not confirm"):
        await publisher.publish_all(messages(3))


@pytest.fixture
async def broker() -> AsyncIterator[Broker]:
    connected = Broker(support.AMQP_URL)
    async with anyio.create_task_group() as tg:
        await tg.start(connected.run)
        with anyio.fail_after(10):
            await connected.wait_connected()
        yield connected
        tg.cancel_scope.cancel()


async def test_a_batch_reaches_the_queue_whole_and_in_order(broker: Broker) -> None:
    queue = "ordermgr-test.batch"
    publisher = Publisher(broker)
    connection = await broker.wait_connected()
    reader = await connection.channel()
    await reader.queue_declare(queue, durable=True)
    await reader.queue_purge(queue)
    await publisher.publish_all(messages(300, queue))
    received = []
    for _ in range(300):
        message = await reader.basic_get(queue, no_ack=True)
        assert isinstance(message, aiormq.abc.DeliveredMessage)
        received.append((message.body, message.header.properties.message_id, message.header.properties.headers))
    assert received == [(f"m{i}".encode(), f"id-{i}", {"trace_id": f"t{i}"}) for i in range(300)]
    await reader.queue_delete(queue)


# --- acknowledgements ------------------------------------------------------------------------


class AckingChannel:
    """Stands for aiormq's consumer channel: records the ack and reject frames in order. With
    ``slow``, each frame's socket write waits for the test to release ``written``."""

    def __init__(self, slow: bool = False) -> None:
        self.frames: list[tuple[str, int, bool]] = []
        self.written = anyio.Event()
        if not slow:
            self.written.set()

    async def basic_ack(self, delivery_tag: int, multiple: bool = False) -> None:
        self.frames.append(("ack", delivery_tag, multiple))
        await self.written.wait()

    async def basic_reject(self, delivery_tag: int, *, requeue: bool = True) -> None:
        self.frames.append(("reject", delivery_tag, requeue))
        await self.written.wait()


def acks_on(channel: AckingChannel, max_held: int = 25) -> ChannelAcks:
    return ChannelAcks(channel, max_held=max_held)  # type: ignore[arg-type]


async def test_a_lone_ack_leaves_at_once_alone() -> None:
    channel = AckingChannel()
    acks = acks_on(channel)
    await acks.ack(1)
    assert channel.frames == [("ack", 1, False)]
    await acks.ack(2)
    assert channel.frames == [("ack", 1, False), ("ack", 2, False)]


async def test_an_ack_never_covers_a_delivery_still_in_hand() -> None:
    """Deliveries 1-4 in hand; 2, 3 and 4 are done first: nothing may leave that covers 1. Once 1
    is done, one frame covers all four."""
    channel = AckingChannel()
    acks = acks_on(channel)
    for tag in (2, 4, 3):
        await acks.ack(tag)
    assert channel.frames == []
    await acks.ack(1)
    assert channel.frames == [("ack", 4, True)]
    await acks.ack(6)  # 5 still in hand
    await acks.ack(5)
    assert channel.frames == [("ack", 4, True), ("ack", 6, True)]


async def test_acks_that_come_while_one_is_written_leave_together() -> None:
    channel = AckingChannel(slow=True)
    acks = acks_on(channel)
    async with anyio.create_task_group() as tg:
        tg.start_soon(acks.ack, 1)
        await anyio.wait_all_tasks_blocked()
        for tag in (2, 3, 4):
            tg.start_soon(acks.ack, tag)
        await anyio.wait_all_tasks_blocked()
        assert channel.frames == [("ack", 1, False)]
        channel.written.set()
    assert channel.frames == [("ack", 1, False), ("ack", 4, True)]


async def test_acks_held_behind_a_slow_delivery_leave_one_by_one_once_too_many_wait() -> None:
    """A slow delivery (1) must not hold the prefetch window: with ``max_held`` acks waiting
    behind it they are sent one by one; 1's own ack later covers what is left."""
    channel = AckingChannel()
    acks = acks_on(channel, max_held=3)
    await acks.ack(2)
    await acks.ack(3)
    assert channel.frames == []
    await acks.ack(4)
    assert channel.frames == [("ack", 2, False), ("ack", 3, False), ("ack", 4, False)]
    await acks.ack(6)
    await acks.ack(1)
    assert channel.frames[3:] == [("ack", 1, False)]  # 2-4 are settled; 5 is still in hand
    await acks.ack(5)
    assert channel.frames[4:] == [("ack", 6, True)]


async def test_a_requeued_delivery_is_rejected_before_any_ack_could_cover_it() -> None:
    channel = AckingChannel()
    acks = acks_on(channel)
    await acks.ack(2)
    await acks.reject(1)
    await acks.ack(3)
    assert channel.frames == [("reject", 1, True), ("ack", 2, False), ("ack", 3, False)]


async def test_a_second_ack_of_one_delivery_sends_nothing() -> None:
    channel = AckingChannel()
    acks = acks_on(channel, max_held=1)
    await acks.ack(1)
    await acks.ack(1)
    await acks.ack(3)  # sent alone: 2 is in hand, and one may wait
    await acks.ack(3)
    assert channel.frames == [("ack", 1, False), ("ack", 3, False)]


async def test_the_broker_takes_acks_sent_together_and_held_ones_sent_alone(broker: Broker) -> None:
    """Against RabbitMQ: deliveries acked out of order, some held and sent alone, some covered by
    a later ``multiple`` ack. Each message is delivered exactly once (the channel never failed on
    an ack), none is left unacknowledged, and fewer frames than messages were sent."""
    queue, count, prefetch = "ordermgr-test.acks", 60, 8
    connection = await broker.wait_connected()
    admin = await connection.channel()
    await admin.queue_declare(queue, durable=True)
    await admin.queue_purge(queue)
    publisher = Publisher(broker)
    await publisher.publish_all(messages(count, queue))
    received: list[Delivery] = []
    arrived = anyio.Event()

    async def hold(delivery: Delivery) -> None:
        received.append(delivery)
        arrived.set()

    stop = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: consume(broker, queue, hold, prefetch=prefetch, stop=stop))
        acked = 0
        with anyio.fail_after(20):
            while acked < count:
                await arrived.wait()
                arrived = anyio.Event()
                await anyio.sleep(0.05)  # let the window fill
                window = received[acked:]
                # The oldest waits until last: the others are held behind it (and, past
                # max_held = prefetch // 4, sent alone).
                for delivery in [*window[1:][::-1], window[0]]:
                    await delivery.ack()
                acked += len(window)
        await anyio.sleep(0.2)
        tg.cancel_scope.cancel()  # closes the channel: anything unacknowledged returns to the queue
    assert [d.body for d in received] == [f"m{i}".encode() for i in range(count)]
    assert not any(d.redelivered for d in received)
    frames = received[0]._acks.frames  # noqa: SLF001
    assert frames < count
    await admin.close()
    check = await connection.channel()
    declared = await check.queue_declare(queue, durable=True)
    assert declared.message_count == 0  # nothing returned unacknowledged
    await check.queue_delete(queue)


async def test_a_sole_consumer_takes_nothing_until_the_previous_one_is_gone(broker: Broker) -> None:
    """A leader that froze holds the signals it prefetched until RabbitMQ drops its connection,
    then they go back to the head of the queue. The next leader (``sole``) waits for that, so it
    takes them first, in their order, and never newer ones before them."""
    queue = "ordermgr-test.sole"
    connection = await broker.wait_connected()
    previous = await connection.channel()
    await previous.queue_declare(queue, durable=True)
    await previous.queue_purge(queue)
    await previous.basic_qos(prefetch_count=10)
    held = anyio.Event()
    held_count = 0

    async def frozen(message: aiormq.abc.DeliveredMessage) -> None:  # takes, never acks
        nonlocal held_count
        held_count += 1
        if held_count == 3:
            held.set()

    await previous.basic_consume(queue, frozen, no_ack=False)
    publisher = Publisher(broker)
    await publisher.publish_all(messages(3, queue))
    with anyio.fail_after(10):
        await held.wait()
    received: list[bytes] = []
    all_five = anyio.Event()

    async def take(delivery: Delivery) -> None:
        received.append(delivery.body)
        await delivery.ack()
        if len(received) == 5:
            all_five.set()

    stop = anyio.Event()
    with watching_logs() as logs:
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: consume(broker, queue, take, prefetch=10, stop=stop, sole=True))
            await logs.wait_for("waiting for the previous consumer to go")
            await publisher.publish_all(messages(5, queue)[3:])  # newer ones, while the old consumer holds m0..m2
            await previous.close()  # RabbitMQ gives its unacknowledged messages back
            with anyio.fail_after(10):
                await all_five.wait()
            stop.set()
    assert received == [f"m{i}".encode() for i in range(5)]
