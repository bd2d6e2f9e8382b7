"""RabbitMQ through aiormq: one connection kept open with backoff, consumers that
re-subscribe after every reconnect, and confirmed publishing.

aiormq exceptions never leave this module: callers see ``BrokerUnavailable``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, cast

import aiormq
import aiormq.abc
import anyio
import attrs
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectSendStream
from pamqp import commands as spec

from ordermgr.domain.errors import BrokerUnavailable
from ordermgr.ports import OutgoingMessage

log = logging.getLogger(__name__)

SIGNAL_QUEUE = "model-service.trading_signals"
ORDER_UPDATES_QUEUE = "ws-gateway.order"
ORDER_EVENTS_QUEUE = "order-manager.order_events"
TICKER_QUEUE = "ws-gateway.ticker"
# ws-gateway declares its queues with these arguments; a declaration that differs is refused.
ORDER_UPDATES_ARGUMENTS: Mapping[str, Any] = {
    "x-message-ttl": 86_400_000,
    "x-max-length": 100_000,
    "x-overflow": "drop-head",
}
TICKER_ARGUMENTS = ORDER_UPDATES_ARGUMENTS  # contract §14.1: declared as ws-gateway.order is
# How long a new consumer of the signal queue waits for a previous one to go (see consume's ``sole``):
# far beyond the heartbeat after which RabbitMQ drops a frozen peer.
SOLE_WAIT_S = 30.0
# ChannelInvalidStateError (a RuntimeError) is what an ack on a channel the broker closed raises.
_AMQP_ERRORS = (
    aiormq.exceptions.AMQPError, aiormq.exceptions.ChannelInvalidStateError, ConnectionError, OSError, TimeoutError,
)
# aiormq's handshake raises StopAsyncIteration when the server has already closed the socket
# (FrameReceiver.get_frame at EOF): seen while RabbitMQ restarts.
_CONNECT_ERRORS = (*_AMQP_ERRORS, StopAsyncIteration)


class ChannelAcks:
    """The acknowledgements of one consumer channel, sent together (contract §14.3).

    A delivery's handler acks it once its outcome is committed; what is sent is decided here.
    Delivery tags on a channel count 1, 2, 3, ... in delivery order. An ack with ``multiple``
    covers every tag at or below it, so it is sent only for a tag whose every predecessor has
    been settled by its own handler (acked, or rejected on the wire before): never for a
    delivery still in hand, nor for one this channel never handed over. Acks that arrive
    together, or while an earlier delivery is still in hand, so leave as one frame; a lone
    ack at low load leaves at once, alone. Acks held behind a slow delivery are sent one by
    one once ``max_held`` wait, so a slow message never holds the prefetch window."""

    def __init__(self, channel: aiormq.abc.AbstractChannel, *, max_held: int) -> None:
        self._channel = channel
        self._max_held = max(1, max_held)
        self._floor = 0  # every tag at or below it is settled on the wire
        self._done: set[int] = set()  # acked by their handlers, not sent yet
        self._sent: set[int] = set()  # above the floor and settled on the wire (one by one)
        self._lock = anyio.Lock()  # frames leave in the order they are decided
        self.frames = 0  # ack frames sent (for tests and metrics)

    async def ack(self, tag: int) -> None:
        if tag <= self._floor or tag in self._sent:
            return  # settled already: a second ack of one delivery would close the channel
        self._done.add(tag)
        async with self._lock:
            for upto, multiple in self._ready():
                self.frames += 1
                await self._channel.basic_ack(upto, multiple=multiple)

    async def reject(self, tag: int) -> None:
        """Requeue: sent at once, before any ack that could cover the tag."""
        async with self._lock:
            await self._channel.basic_reject(tag, requeue=True)
            self._sent.add(tag)
            for upto, multiple in self._ready():
                self.frames += 1
                await self._channel.basic_ack(upto, multiple=multiple)

    def _ready(self) -> list[tuple[int, bool]]:
        """What to send now: one ack for the run of settled tags above the floor, and the held
        ones one by one when too many wait."""
        frames: list[tuple[int, bool]] = []
        tag, last, count = self._floor + 1, 0, 0
        while tag in self._done or tag in self._sent:
            if tag in self._done:
                self._done.discard(tag)
                last, count = tag, count + 1
            else:
                self._sent.discard(tag)
            tag += 1
        self._floor = tag - 1
        if count:
            frames.append((last, count > 1))
        if len(self._done) >= self._max_held:
            held = sorted(self._done)
            frames += [(held_tag, False) for held_tag in held]
            self._sent.update(held)
            self._done.clear()
        return frames


@attrs.frozen
class Delivery:
    """One message handed to us; acknowledge it only once its outcome is committed."""

    body: bytes
    headers: Mapping[str, object]
    redelivered: bool
    _acks: ChannelAcks | None = attrs.field(repr=False)  # None: consumed without acks (``no_ack``)
    _tag: int = attrs.field(repr=False)

    async def ack(self) -> None:
        """Acknowledge (together with others where it can: ``ChannelAcks``). If the channel has
        closed meanwhile the broker redelivers the message, which the idempotent handlers absorb."""
        if self._acks is None:
            return  # the broker counted it settled when it sent it
        try:
            await self._acks.ack(self._tag)
        except _AMQP_ERRORS as exc:
            log.warning("ack lost with its channel; the message will be redelivered", extra={"error": str(exc)})

    async def requeue(self) -> None:
        if self._acks is None:
            return  # settled on delivery: there is nothing to give back
        try:
            await self._acks.reject(self._tag)
        except _AMQP_ERRORS as exc:
            log.warning("requeue lost with its channel", extra={"error": str(exc)})


class Broker:
    """Owns the AMQP connection. ``run`` keeps it open until cancelled, reconnecting with
    capped exponential backoff; users wait for it with ``wait_connected``."""

    def __init__(self, url: str, *, max_backoff_s: float = 5.0, heartbeat_s: int = 60) -> None:
        # The heartbeat bounds how long the broker keeps a frozen peer's unacknowledged messages:
        # a leader that stops running (a stalled VM) must let them go before its lease passes,
        # or the next leader would take newer messages first (app.py sets it from the lease).
        separator = "&" if "?" in url else "?"
        self._url = f"{url}{separator}heartbeat={heartbeat_s}"
        self._max_backoff_s = max_backoff_s
        self._connection: aiormq.abc.AbstractConnection | None = None
        self._up = anyio.Event()

    @property
    def is_connected(self) -> bool:
        return self._connection is not None and not self._connection.is_closed

    async def wait_connected(self) -> aiormq.abc.AbstractConnection:
        while not self.is_connected:
            await self._up.wait()
        assert self._connection is not None
        return self._connection

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        # Started at once: a broker that is down must not stop the process (contract §7.13).
        task_status.started()
        failures = 0
        try:
            while True:
                try:
                    self._connection = await aiormq.connect(self._url)
                except _CONNECT_ERRORS as exc:
                    failures += 1
                    if failures == 1:
                        log.error("rabbitmq unavailable; retrying", extra={"error": str(exc) or type(exc).__name__})
                    await anyio.sleep(min(self._max_backoff_s, 0.2 * 2**failures))
                    continue
                failures = 0
                log.info("rabbitmq connected")
                self._up.set()
                await _wait_closed(self._connection)
                self._up = anyio.Event()
                log.error("rabbitmq connection lost; reconnecting")
        finally:
            await self._close()

    async def _close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None and not connection.is_closed:
            with anyio.move_on_after(2, shield=True):
                await connection.close()


async def _wait_closed(closable: aiormq.abc.AbstractConnection | aiormq.abc.AbstractChannel) -> None:
    """Wait until the connection or channel closes, whatever the reason. Not ``await
    closing``: a future cancelled by aiormq would look like our own cancellation."""
    closed = anyio.Event()

    def on_done(future: Any) -> None:
        if not future.cancelled():
            future.exception()  # mark the close reason as seen
        closed.set()

    closable.closing.add_done_callback(on_done)
    await closed.wait()


async def consume(
    broker: Broker,
    queue: str,
    on_delivery: Callable[[Delivery], Awaitable[None]],
    *,
    prefetch: int,
    arguments: Mapping[str, Any] | None = None,
    stop: anyio.Event | None = None,
    sole: bool = False,
    no_ack: bool = False,
) -> None:
    """Consume ``queue`` for as long as the task runs (or until ``stop`` is set), re-subscribing
    after each reconnect. ``on_delivery`` runs in aiormq's own task, so it must not block:
    it hands the delivery on (or requeues it). ``sole``: wait for any other consumer to go
    first (:func:`_previous_consumer_gone`). ``no_ack``: the broker counts each message
    settled as it sends it (for a stream where a message lost with the connection costs
    nothing); ``ack`` and ``requeue`` then do nothing."""
    stop = stop or anyio.Event()
    while not stop.is_set():
        connection = await broker.wait_connected()
        channel: aiormq.abc.AbstractChannel | None = None
        try:
            channel = await connection.channel(publisher_confirms=False)
            await channel.basic_qos(prefetch_count=prefetch)
            await channel.queue_declare(queue, durable=True, arguments=dict(arguments or {}))
            if sole:
                await _previous_consumer_gone(channel, queue, arguments)

            acks = None if no_ack else ChannelAcks(channel, max_held=prefetch // 4)

            async def callback(message: aiormq.abc.DeliveredMessage) -> None:
                await on_delivery(_wrap(message, acks))

            consumer = await channel.basic_consume(queue, callback, no_ack=no_ack)
            log.info("consuming", extra={"queue": queue})
            await _until_closed_or_stopped(channel, stop)
            if stop.is_set() and not channel.is_closed:
                # Stop deliveries; prefetched unacked messages stay ours until acked or the channel closes.
                with anyio.move_on_after(2, shield=True):
                    await channel.basic_cancel(consumer.consumer_tag or "")
                    log.info("consumer cancelled", extra={"queue": queue})
        except _AMQP_ERRORS as exc:
            log.error("consumer interrupted; resubscribing", extra={"queue": queue, "error": str(exc)})
            await anyio.sleep(0.5)
        finally:
            if channel is not None and not stop.is_set():
                await _close_channel(channel)


async def _previous_consumer_gone(
    channel: aiormq.abc.AbstractChannel, queue: str, arguments: Mapping[str, Any] | None, *,
    every_s: float = 0.2, give_up_s: float = SOLE_WAIT_S,
) -> None:  # fmt: skip
    """Per-symbol FIFO across a hand-over: a leader that froze still holds the signals it had
    prefetched until RabbitMQ notices its connection is dead (its heartbeat), and only then puts
    them back at the head of the queue. Consuming before that would take newer signals first. So
    a new leader waits until the queue has no consumer left; past ``give_up_s`` (someone else
    consumes it for good) it says so and consumes all the same."""
    waited = 0.0
    while (await channel.queue_declare(queue, durable=True, arguments=dict(arguments or {}))).consumer_count:
        if waited == 0.0:
            log.info("waiting for the previous consumer to go", extra={"queue": queue})
        if waited >= give_up_s:
            log.warning("another consumer stays on the queue; consuming beside it", extra={"queue": queue})
            return
        await anyio.sleep(every_s)
        waited += every_s


async def _close_channel(channel: aiormq.abc.AbstractChannel) -> None:
    """A consumer cancelled from outside (this instance stopped leading) closes its channel at
    once, so the broker hands the messages it had prefetched to the next consumer."""
    if not channel.is_closed:
        with anyio.move_on_after(2, shield=True):
            try:
                await channel.close()
            except _AMQP_ERRORS:
                pass


async def _until_closed_or_stopped(channel: aiormq.abc.AbstractChannel, stop: anyio.Event) -> None:
    async with anyio.create_task_group() as tg:

        async def closed() -> None:
            await _wait_closed(channel)
            tg.cancel_scope.cancel()

        async def stopped() -> None:
            await stop.wait()
            tg.cancel_scope.cancel()

        tg.start_soon(closed)
        tg.start_soon(stopped)


def hand_over_to(send: MemoryObjectSendStream[Delivery]) -> Callable[[Delivery], Awaitable[None]]:
    """A ``consume`` callback that passes each delivery to ``send`` without waiting; when the
    stream is full or closing the delivery is requeued, so the broker keeps it for later."""

    async def hand_over(delivery: Delivery) -> None:
        try:
            send.send_nowait(delivery)
        except (anyio.WouldBlock, anyio.ClosedResourceError, anyio.BrokenResourceError):
            await delivery.requeue()

    return hand_over


def _wrap(message: aiormq.abc.DeliveredMessage, acks: ChannelAcks | None) -> Delivery:
    properties = message.header.properties
    tag = message.delivery_tag
    assert tag is not None  # consumer deliveries always carry one
    return Delivery(
        body=message.body,
        headers=dict(properties.headers or {}),
        redelivered=bool(message.redelivered),
        acks=acks,
        tag=tag,
    )


class Publisher:
    """Publishes persistent JSON messages with publisher confirms on its own channel."""

    def __init__(self, broker: Broker, *, timeout_s: float = 10.0) -> None:
        self._broker = broker
        self._timeout_s = timeout_s
        self._channel: aiormq.abc.AbstractChannel | None = None
        self._declared: set[str] = set()

    async def _ready_channel(self) -> aiormq.abc.AbstractChannel:
        if self._channel is None or self._channel.is_closed:
            connection = await self._broker.wait_connected()
            self._channel = await connection.channel(publisher_confirms=True)
            self._declared.clear()
        return self._channel

    async def declare(self, queue: str, arguments: Mapping[str, Any] | None = None) -> None:
        """Declare a durable queue once per channel."""
        try:
            channel = await self._ready_channel()
            if queue not in self._declared:
                await channel.queue_declare(queue, durable=True, arguments=dict(arguments or {}))
                self._declared.add(queue)
        except _AMQP_ERRORS as exc:
            self._channel = None
            raise BrokerUnavailable(str(exc)) from exc

    async def publish(self, queue: str, body: bytes, *, message_id: str, headers: Mapping[str, object]) -> None:
        """Publish to ``queue`` on the default exchange and wait for the broker's confirm."""
        await self.publish_all([OutgoingMessage(queue, body, message_id, headers)])

    async def publish_all(self, messages: Sequence[OutgoingMessage]) -> None:
        """Publish every message in order, then wait for all the confirms together: the broker
        confirms a run of messages with one frame (``multiple``), and the batch costs one wait
        instead of one round trip per message. Each publish is its own task; aiormq's channel
        lock is first come, first served, so the messages leave in the order given."""
        if not messages:
            return
        for queue in dict.fromkeys(message.queue for message in messages):
            await self.declare(queue)
        # aiormq's Channel (not its abstract base) takes wait=False.
        channel = cast(aiormq.Channel, await self._ready_channel())
        confirmations: list[object] = [None] * len(messages)

        async def send(index: int, message: OutgoingMessage) -> None:
            properties = spec.Basic.Properties(
                delivery_mode=2,
                content_type="application/json",
                message_id=message.message_id,
                headers={key: str(value) for key, value in message.headers.items()},
            )
            # wait=False: no wait for the socket write of each message; the confirm is awaited.
            confirmations[index] = await channel.basic_publish(
                message.body, routing_key=message.queue, properties=properties, timeout=self._timeout_s, wait=False
            )

        try:
            async with anyio.create_task_group() as tg:
                for index, message in enumerate(messages):
                    tg.start_soon(send, index, message)
        except* _AMQP_ERRORS as group:
            self._channel = None
            raise BrokerUnavailable(str(group.exceptions[0])) from group
        for message, confirmation in zip(messages, confirmations):
            if not isinstance(confirmation, spec.Basic.Ack):
                raise BrokerUnavailable(f"broker did not confirm message {message.message_id}: {confirmation!r}")
