"""Wait for a log line instead of sleeping: the service says when it reaches a state."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import anyio


class LogWaiter(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self._waiters: list[tuple[str, anyio.Event]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        for message, event in self._waiters:
            if record.getMessage() == message:
                event.set()

    async def wait_for(self, message: str, *, count: int = 1, timeout_s: float = 10.0, **fields: object) -> None:
        """Return once ``message`` has been logged ``count`` times (counting earlier ones), with
        ``fields`` among its extras when given (``signal_id="s-1"``)."""
        with anyio.fail_after(timeout_s):
            while self.count(message, **fields) < count:
                event = anyio.Event()
                self._waiters.append((message, event))
                try:
                    await event.wait()
                finally:
                    self._waiters.remove((message, event))

    def count(self, message: str, **fields: object) -> int:
        return sum(1 for record in self.records if record.getMessage() == message
                   and all(getattr(record, name, None) == value for name, value in fields.items()))  # fmt: skip


@contextmanager
def watching_logs(logger_name: str = "ordermgr") -> Iterator[LogWaiter]:
    waiter = LogWaiter()
    logger = logging.getLogger(logger_name)
    previous = logger.level
    logger.addHandler(waiter)
    logger.setLevel(logging.DEBUG)
    try:
        yield waiter
    finally:
        logger.removeHandler(waiter)
        logger.setLevel(previous)
