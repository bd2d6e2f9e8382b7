"""Order events (and the ws-gateway stand-in's ticker events) to RabbitMQ, shaped as ws-gateway
publishes them (contract §3.2, §14.1).

HTTP handlers and the engine never wait for the broker: they hand envelopes to a bounded
in-memory stream (``offer``), and one publisher task drains it, reconnecting whenever
RabbitMQ goes away. The event faults (drop, duplicate, delay, reorder) apply here:
drop and duplicate when an update is offered, delay and reorder when it is published.
"""

from __future__ import annotations

import json
import logging
import random
import uuid
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Final

import aiormq
from pamqp.common import FieldTable
import anyio
import attrs
from aiormq.abc import AbstractChannel
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ordermgr.paper.faults import Faults

log = logging.getLogger(__name__)

Json = dict[str, object]
QUEUE_ARGUMENTS: Final[FieldTable] = {"x-message-ttl": 86_400_000, "x-max-length": 100_000, "x-overflow": "drop-head"}
REORDER_WINDOW: Final = 4  # events shuffled together when event_reorder is on
REORDER_WAIT_S: Final = 0.05  # how long a reorder window waits to fill up
REORDER_POLL_S: Final = 0.005
RECONNECT_MIN_S: Final = 0.2
RECONNECT_MAX_S: Final = 5.0
CLOSE_TIMEOUT_S: Final = 1.0
# Failures that mean "the broker went away": reconnect. Anything else is a bug.
TRANSIENT: Final = (aiormq.exceptions.AMQPError, aiormq.exceptions.ChannelInvalidStateError, OSError, TimeoutError)


@attrs.define
class EventStats:
    offered: int = 0
    published: int = 0
    overflowed: int = 0  # the buffer was full: dropped rather than blocking a request
    dropped: int = 0  # by the event_drop fault
    duplicated: int = 0
    reconnects: int = 0
    connected: bool = False


def envelope(payload: Json) -> Json:
    """ws-gateway's envelope around one Bybit order-stream item."""
    updated = int(str(payload.get("updatedTime") or 0)) / 1000
    return {
        "event_id": str(uuid.uuid4()),
        "event_type": "order",
        "topic": "order",
        "timestamp": datetime.fromtimestamp(updated, UTC).isoformat(),
        "received_at": datetime.now(UTC).isoformat(),
        "payload": payload,
        "trace_id": None,
    }


class EventStream:
    """One queue's events; ``wrap`` puts each payload in its envelope (the order one by default)."""

    def __init__(
        self, amqp_url: str | None, queue: str, buffer: int, faults: Faults, seed: int,
        wrap: Callable[[Json], Json] = envelope,
    ) -> None:  # fmt: skip
        self.stats = EventStats()
        self._wrap = wrap
        self._url = amqp_url
        self._queue = queue
        self._buffer = buffer
        self._faults = faults
        self._rng = random.Random(seed)
        self._send: MemoryObjectSendStream[Json] | None = None
        self._unsent: deque[Json] = deque()  # taken from the stream, not yet confirmed

    def offer(self, payload: Json) -> None:
        """Queue one order-stream item; never blocks, never raises.

        Drop and duplicate faults are decided here, when the update happens, so that a
        test changing them between two orders knows which orders they hit.
        """
        if self._send is None:
            return  # events are off (no AMQP URL) or the publisher is not running
        self.stats.offered += 1
        if self._rng.random() < self._faults.event_drop:
            self.stats.dropped += 1
            return
        copies = 1
        if self._rng.random() < self._faults.event_duplicate:
            # Bybit re-sent the same update: ws-gateway stamps each copy as a new event.
            self.stats.duplicated += 1
            copies = 2
        for _ in range(copies):
            try:
                self._send.send_nowait(self._wrap(payload))
            except anyio.WouldBlock:
                self.stats.overflowed += 1
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                pass

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Publish until cancelled. Does nothing (but stays startable) without a URL."""
        if self._url is None:
            task_status.started()
            return
        send, receive = anyio.create_memory_object_stream[Json](self._buffer)
        with send, receive:
            self._send = send
            task_status.started()
            try:
                await self._serve(self._url, receive)
            finally:
                self._send = None

    async def _serve(self, url: str, receive: MemoryObjectReceiveStream[Json]) -> None:
        delay = RECONNECT_MIN_S
        while True:
            try:
                connection = await aiormq.connect(url)
            except TRANSIENT as exc:
                log.warning("RabbitMQ unreachable, retrying", extra={"error": repr(exc)})
                await anyio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX_S)
                continue
            try:
                channel = await connection.channel()
                await channel.queue_declare(self._queue, durable=True, arguments=QUEUE_ARGUMENTS)
                self.stats.connected, delay = True, RECONNECT_MIN_S
                await self._drain(channel, receive)
            except aiormq.exceptions.ChannelPreconditionFailed:
                raise  # the queue exists with other arguments: a setup bug, not an outage
            except TRANSIENT as exc:
                self.stats.reconnects += 1
                log.warning("RabbitMQ connection lost, reconnecting", extra={"error": repr(exc)})
            finally:
                self.stats.connected = False
                await _close(connection)
            await anyio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX_S)

    async def _drain(self, channel: AbstractChannel, receive: MemoryObjectReceiveStream[Json]) -> None:
        while True:
            while self._unsent:  # left over from a lost connection: publish them first
                await self._publish(channel, self._unsent[0])
                self._unsent.popleft()
            self._unsent.extend(await self._next_batch(receive))

    async def _next_batch(self, receive: MemoryObjectReceiveStream[Json]) -> list[Json]:
        batch = [await receive.receive()]
        if not self._faults.event_reorder:
            return batch
        # Poll rather than cancel a pending receive(): a cancelled receive may lose an item.
        with anyio.move_on_after(REORDER_WAIT_S):
            while len(batch) < REORDER_WINDOW:
                try:
                    batch.append(receive.receive_nowait())
                except anyio.WouldBlock:
                    await anyio.sleep(REORDER_POLL_S)
        self._rng.shuffle(batch)
        return batch

    async def _publish(self, channel: AbstractChannel, item: Json) -> None:
        if self._faults.event_delay_s > 0:
            await anyio.sleep(self._faults.event_delay_s)
        body = json.dumps(item).encode()
        properties = aiormq.spec.Basic.Properties(content_type="application/json", delivery_mode=2)
        await channel.basic_publish(body, routing_key=self._queue, properties=properties)
        self.stats.published += 1


async def _close(connection: aiormq.abc.AbstractConnection) -> None:
    with anyio.move_on_after(CLOSE_TIMEOUT_S, shield=True):
        try:
            await connection.close()
        except TRANSIENT:
            pass  # already gone; nothing left to release
