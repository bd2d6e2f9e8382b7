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

from ordermgr.amqp.broker import Broker, Publisher
from ordermgr.domain.errors import BrokerUnavailable
from ordermgr.ports import OutgoingMessage
from tests import support

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
