"""The supervisor owns one task group in which every symbol actor lives; it routes each
message to its symbol's mailbox, starting the actor on the symbol's first message."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectSendStream

from ordermgr.actors.symbol import SymbolActor
from ordermgr.messages import ActorMessage

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
            await self._tg.start(actor.run, receive)
            self._mailboxes[symbol], self.actors[symbol] = send, actor
            log.info("symbol actor started", extra={"asset": symbol})
            mailbox = send
        return mailbox

    async def route(self, symbol: str, message: ActorMessage) -> None:
        """Hand ``message`` to ``symbol``'s actor. Mailboxes hold at least the broker's
        prefetch, so a slow symbol cannot block routing to the others."""
        mailbox = await self.ensure_actor(symbol)
        await mailbox.send(message)

    def mailbox_depth(self, symbol: str) -> int:
        mailbox = self._mailboxes.get(symbol)
        return mailbox.statistics().current_buffer_used if mailbox else 0

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
