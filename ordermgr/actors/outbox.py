"""The outbox publisher: sends committed events (order events, trading-state events) to their
queues on RabbitMQ with publisher confirms and marks them published. A broker outage delays
events; none is lost (contract §4, §11.5)."""

from __future__ import annotations

import logging

import anyio

from ordermgr.domain.errors import BrokerUnavailable, StoreUnavailable
from ordermgr.ports import EventPublisher, OutgoingMessage, Store

log = logging.getLogger(__name__)


class OutboxWakeup:
    """Set after a commit that wrote events, so they leave at once rather than at the next poll."""

    def __init__(self) -> None:
        self._event = anyio.Event()

    def notify(self) -> None:
        self._event.set()

    async def wait(self, timeout_s: float) -> None:
        with anyio.move_on_after(timeout_s):
            await self._event.wait()
        self._event = anyio.Event()


BATCH = 200  # events published under one confirm wait, at most


async def publish_pending(store: Store, publisher: EventPublisher, *, batch: int = BATCH) -> int:
    """Publish what is waiting (up to ``batch`` events) in commit order, each to its queue, under
    one confirm wait, and mark it published in one statement; return how many were sent. Under
    load a batch holds whatever was committed meanwhile; a lone event goes alone, at once."""
    rows = await store.unpublished_events(batch)
    if rows:
        await publisher.publish_all([
            OutgoingMessage(row.queue, row.body, str(row.event_id), {"trace_id": row.trace_id or ""}) for row in rows
        ])  # fmt: skip
        await store.mark_published([row.seq for row in rows])
    return len(rows)


async def run_outbox(store: Store, publisher: EventPublisher, wakeup: OutboxWakeup, *, poll_s: float = 1.0) -> None:
    """Publish until cancelled; events are at-least-once (``event_id`` lets consumers dedupe)."""
    failures = 0
    while True:
        try:
            sent = await publish_pending(store, publisher)
            failures = 0
        except (BrokerUnavailable, StoreUnavailable) as exc:
            failures += 1
            if failures == 1:
                log.error("order events waiting for their destination", extra={"error": str(exc)})
            await anyio.sleep(min(5.0, 0.2 * 2**failures))
            continue
        if sent < BATCH:
            # All that was committed before the read has gone. A commit since then has set the
            # wakeup (it is cleared before each read), so this returns at once; otherwise
            # reading again would only find nothing, at the cost of a statement per event.
            await wakeup.wait(poll_s)


async def flush_outbox(store: Store, publisher: EventPublisher, *, timeout_s: float) -> None:
    """At shutdown: publish what is left, bounded in time; the rest leaves at the next start."""
    with anyio.move_on_after(timeout_s, shield=True):
        try:
            while await publish_pending(store, publisher):
                pass
        except (BrokerUnavailable, StoreUnavailable) as exc:
            log.warning("order events left in the outbox for the next start", extra={"error": str(exc)})
