"""Bybit v5 request signing, checked on the raw bytes exactly as they arrived (bybit.md §5).

Never re-serialize or re-sort the payload before verifying: pybit signs its own text
(sorted, unencoded query; ``json.dumps`` body) and any normalization breaks equality.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

from ordermgr.paper.errors import VenueError

DEFAULT_RECV_WINDOW_MS = 5000
FUTURE_TOLERANCE_MS = 1000  # Bybit: timestamp < server_time + 1000


def sign(secret: str, timestamp: str, api_key: str, recv_window: str, payload: bytes) -> str:
    message = (timestamp + api_key + recv_window).encode() + payload
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def verify(headers: Mapping[str, str], payload: bytes, keys: Mapping[str, str], now_ms: int) -> None:
    """Raise :class:`VenueError` 10003 (key), 10002 (time window) or 10004 (signature).

    ``payload`` is the raw query string (GET) or the raw body (POST); ``keys`` maps
    api key to secret; ``headers`` must look names up case-insensitively.
    """
    api_key = headers.get("X-BAPI-API-KEY", "")
    secret = keys.get(api_key)
    if secret is None:
        raise VenueError(10003, "API key is invalid.")
    timestamp = headers.get("X-BAPI-TIMESTAMP", "")
    recv_window = headers.get("X-BAPI-RECV-WINDOW", "") or str(DEFAULT_RECV_WINDOW_MS)
    _check_window(timestamp, recv_window, now_ms)
    expected = sign(secret, timestamp, api_key, recv_window, payload)
    if not hmac.compare_digest(expected, headers.get("X-BAPI-SIGN", "").lower()):
        origin = timestamp + api_key + recv_window + payload.decode("utf-8", "replace")
        raise VenueError(10004, f"error sign! origin_string[{origin}]")


def _check_window(timestamp: str, recv_window: str, now_ms: int) -> None:
    try:
        ts, window = int(timestamp), int(recv_window)
    except ValueError:
        ts, window = 0, DEFAULT_RECV_WINDOW_MS
    if not now_ms - window <= ts < now_ms + FUTURE_TOLERANCE_MS:
        raise VenueError(
            10002,
            "invalid request, please check your server timestamp or recv_window param. "
            f"req_timestamp[{timestamp}],server_timestamp[{now_ms}],recv_window[{recv_window}]",
        )
