"""Crash points for the crash-recovery tests. With ``ORDERMGR_FAILPOINT=<name>`` in its
environment the process kills itself with SIGKILL on reaching that point, exactly as a
crash or an OOM kill would. Never set in production; unset, a check is one comparison."""

from __future__ import annotations

import os
import signal

AFTER_INTENT_COMMIT = "after_intent_commit"  # intents committed, venue not called yet
AFTER_VENUE_CALL = "after_venue_call"  # the venue answered, the outcome not committed yet
AFTER_CLOSE_INTENT = "after_close_intent"  # an operator close's orders committed, venue not called yet

_ARMED = os.environ.get("ORDERMGR_FAILPOINT", "")


def hit(name: str) -> None:
    if _ARMED == name:
        os.kill(os.getpid(), signal.SIGKILL)
