"""JSON logs: one object per line with timestamp, level, logger, message, service, and the
context a caller passes through ``extra=`` (trace_id, signal_id, asset, order_link_id, ...)."""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Any

from pythonjsonlogger.json import JsonFormatter

# Keys the venue client or a caller might pass that must never reach a log line.
_SECRET_KEYS = frozenset({"api_key", "api_secret", "password", "x-api-key", "sign"})


class _Formatter(JsonFormatter):
    def add_fields(self, log_record: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]) -> None:
        super().add_fields(log_record, record, message_dict)
        log_record["timestamp"] = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        log_record["level"] = record.levelname
        log_record["logger"] = record.name
        for key in list(log_record):
            if key.lower() in _SECRET_KEYS:
                log_record[key] = "(hidden)"


def configure_logging(level: str, service: str) -> None:
    """Configure the root logger once, before any pybit client exists (pybit adds its own
    handler to a root logger that has none)."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(_Formatter(static_fields={"service": service}, reserved_attrs=_RESERVED))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Our lines carry no file/line; skipping the caller lookup saves a stack walk per record
    # (the optimisation the logging HOWTO documents).
    logging._srcfile = None
    # pybit logs every retry at ERROR and request bodies at DEBUG; ours say it better.
    logging.getLogger("pybit").setLevel(logging.WARNING)
    logging.getLogger("aiormq").setLevel(logging.WARNING)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


_RESERVED = [
    "args", "asctime", "created", "exc_info", "exc_text", "filename", "funcName", "levelname", "levelno",
    "lineno", "module", "msecs", "message", "msg", "name", "pathname", "process", "processName",
    "relativeCreated", "stack_info", "thread", "threadName", "taskName",
]  # fmt: skip
