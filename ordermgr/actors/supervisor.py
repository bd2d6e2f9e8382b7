"""The supervisor owns one task group in which every symbol actor lives; it routes each
message to its symbol's mailbox, starting the actor on the symbol's first message."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectSendStream

from ordermgr.actors.messages import ActorMessage, Nudge
from ordermgr.actors.symbol import SymbolActor
from ordermgr.metrics import SymbolMetrics

log = logging.getLogger(__name__)


class Supervisor:
    def __init__(self, task_group: TaskGroup, make_actor: Callable[[str], SymbolActor], mailbox_size: int) -> None:
        self._tg = task_group
        self._make_actor = make_actor
        self._mailbox_size = mailbox_size
        self._mailboxes: dict[str, MemoryObjectSendStream[ActorMessage]] = {}
        self.actors: dict[str, SymbolActor] = {}

    async def ensure_actor(self, symbol: str) -> MemoryObjectSendStream[ActorMessage]:
        """The symbol's mailbox, starting its actor (state loaded) if it is not running yet."""
        mailbox = self._mailboxes.get(symbol)
        if mailbox is None:
            send, receive = anyio.create_memory_object_stream[ActorMessage](self._mailbox_size)
            actor = self._make_actor(symbol)
            # Registered before the actor loads its state (an await): a second route meanwhile
            # must find this mailbox, not start a second actor for the symbol.
            self._mailboxes[symbol], self.actors[symbol] = send, actor
            await self._tg.start(actor.run, receive)
            log.info("symbol actor started", extra={"asset": symbol})
            mailbox = send
        return mailbox

    async def route_urgent(self, symbol: str, message: ActorMessage) -> None:
        """Hand ``message`` to ``symbol``'s actor ahead of its mailbox's queue (operator actions):
        it is handled right after the message in hand. An idle actor is woken by a nudge; a full
        mailbox means the actor is busy and will look before its next message anyway."""
        mailbox = await self.ensure_actor(symbol)
        self.actors[symbol].urgent.append(message)
        try:
            mailbox.send_nowait(Nudge())
        except anyio.WouldBlock:
            pass

    async def route(self, symbol: str, message: ActorMessage) -> None:
        """Hand ``message`` to ``symbol``'s actor. Mailboxes hold at least the broker's
        prefetch, so a slow symbol cannot block routing to the others."""
        mailbox = await self.ensure_actor(symbol)
        await mailbox.send(message)

    def broadcast(self, make: Callable[[], ActorMessage]) -> int:
        """Offer a tick to every actor without waiting; a full mailbox skips it (the next tick
        does the same job). Returns how many were skipped."""
        skipped = 0
        for mailbox in list(self._mailboxes.values()):
            try:
                mailbox.send_nowait(make())
            except anyio.WouldBlock:
                skipped += 1
        return skipped

    def broadcast_to(self, symbol: str, message: ActorMessage) -> bool:
        """Offer one actor a message without waiting; False when its mailbox is full."""
        try:
            self._mailboxes[symbol].send_nowait(message)
            return True
        except anyio.WouldBlock:
            return False

    async def ask(
        self, make: Callable[[MemoryObjectSendStream[Any]], ActorMessage], symbols: Iterable[str] | None = None
    ) -> dict[str, Any]:
        """Send each actor a request with a reply channel and gather the replies. The requests
        queue behind earlier messages, so the replies also mark that those were handled."""
        receivers = {}
        for symbol in list(symbols if symbols is not None else self._mailboxes):
            send, receive = anyio.create_memory_object_stream[Any](1)
            await self.route(symbol, make(send))
            receivers[symbol] = receive
        replies = {}
        for symbol, receive in receivers.items():
            with receive:
                replies[symbol] = await receive.receive()
        return replies

    @property
    def symbols(self) -> list[str]:
        return list(self._mailboxes)

    def mailbox_depth(self, symbol: str) -> int:
        mailbox = self._mailboxes.get(symbol)
        return mailbox.statistics().current_buffer_used if mailbox else 0

    def symbol_metrics(self) -> dict[str, SymbolMetrics]:
        """Each actor's counters (read on the event loop thread, like the actors write them)."""
        return {symbol: actor.book.metrics_snapshot(self.mailbox_depth(symbol)) for symbol, actor in self.actors.items()}

    def close(self) -> None:
        """Tell every actor to stop once its mailbox is empty."""
        for mailbox in self._mailboxes.values():
            mailbox.close()


@asynccontextmanager
async def open_supervisor(make_actor: Callable[[str], SymbolActor], mailbox_size: int) -> AsyncIterator[Supervisor]:
    """Leaving the block closes every mailbox and waits for the actors to drain."""
    async with anyio.create_task_group() as tg:
        supervisor = Supervisor(tg, make_actor, mailbox_size)
        try:
            yield supervisor
        finally:
            supervisor.close()
