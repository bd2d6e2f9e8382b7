"""pybit at arm's length: one client per worker thread, signing on the venue's clock, and
every pybit/requests outcome sorted into a :class:`Kind`.

Everything here runs in worker threads (pybit is blocking). Nothing foreign leaves this
module and :mod:`ordermgr.bybit.exchange`: callers see a :class:`Reply` or a :class:`VenueFailure`.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import requests
from pybit.exceptions import FailedRequestError, InvalidRequestError
from pybit.unified_trading import HTTP
from urllib3.exceptions import MaxRetryError

# Credentials refused: key invalid / bad signature / permission denied / auth failed.
AUTH_CODES = frozenset({10003, 10004, 10005, 10007})
# 10006 per-UID limit, 10018 IP limit, 429 "system level frequency protection", spot 170005/170222.
RATE_LIMIT_CODES = frozenset({10006, 10018, 429, 170005, 170222})
# 10002 = timestamp outside recv_window; -1 = "request expired". Refused before execution.
CLOCK_CODES = frozenset({10002, -1})
# Server timeout / restarting / "order is processing" and the spot timeouts: the request may
# have executed (bybit.md §3), so only a lookup can tell.
UNKNOWN_CODES = frozenset({10000, 10016, 110079, 170001, 170007, 170032, 170146, 170147, 170234})
# 5xxx: the venue's own server trouble (live Bybit answers 5004 "Server Timeout"), the same as
# an HTTP 5xx: the request may have gone through (contract §16).
SERVER_ERROR_CODES = range(5000, 6000)
_BAD_URL = (
    requests.exceptions.InvalidURL | requests.exceptions.MissingSchema | requests.exceptions.InvalidSchema
)
PUBLIC_METHODS = frozenset({"get_server_time", "get_tickers", "get_instruments_info"})


class Kind(enum.Enum):
    REJECTED = "rejected"  # the venue said no; final
    AUTH = "auth"  # credentials refused; final until the configuration changes
    UNAVAILABLE = "unavailable"  # certainly not executed; safe to retry
    RATE_LIMITED = "rate_limited"  # not executed; wait for the window to reset
    CLOCK = "clock"  # not executed; our timestamp was outside recv_window
    UNKNOWN = "unknown"  # may have executed; never retry a write blindly


class VenueFailure(Exception):
    """One request that did not return retCode 0, classified."""

    def __init__(self, kind: Kind, code: int, message: str, reset_ms: int | None = None) -> None:
        super().__init__(f"{kind.value} ({code}): {message}")
        self.kind = kind
        self.code = code
        self.message = message
        self.reset_ms = reset_ms  # X-Bapi-Limit-Reset-Timestamp, venue clock
        # X-Bapi-Limit, X-Bapi-Limit-Status and Timenow of a refusal: it counted in the window too.
        self.limit: int | None = None
        self.limit_remaining: int | None = None
        self.time_ms: int | None = None


@attrs.frozen
class Reply:
    """A retCode-0 answer: ``result``, the envelope ``time`` and the rate-limit headers."""

    result: Mapping[str, Any]
    time_ms: int | None
    limit_remaining: int | None
    limit_reset_ms: int | None
    limit: int | None = None  # X-Bapi-Limit: this endpoint's requests per window for the account


class ClockedHTTP(HTTP):  # type: ignore[misc]  # pybit is untyped
    """pybit's HTTP client, signing with the venue's clock.

    pybit stamps ``X-BAPI-TIMESTAMP`` from ``_helpers.generate_timestamp()`` (local clock)
    inside ``_prepare_headers``; Bybit refuses stamps outside
    ``[server - recv_window, server + 1000)`` with 10002. This override builds the same
    headers from ``venue_now_ms()``, so a skewed host clock does not cause 10002.
    """

    venue_now_ms: Callable[[], int]

    def _prepare_headers(
        self, payload: Any, recv_window: int, content_type: str = "application/json"
    ) -> dict[str, str]:
        if isinstance(payload, bytes):  # file uploads: not used by us, keep pybit's path
            return super()._prepare_headers(payload, recv_window, content_type)  # type: ignore[no-any-return]
        timestamp = self.venue_now_ms()
        signature = self._auth(payload=payload, recv_window=recv_window, timestamp=timestamp)
        return {
            "Content-Type": content_type,
            "X-BAPI-API-KEY": self.api_key,
            "X-BAPI-SIGN": signature,
            "X-BAPI-SIGN-TYPE": "2",
            "X-BAPI-TIMESTAMP": str(timestamp),
            "X-BAPI-RECV-WINDOW": str(recv_window),
        }


class PybitTransport:
    """Thread-local pybit clients (``requests.Session`` is not documented thread-safe)."""

    def __init__(
        self,
        *,
        api_key: str,
        api_secret: str,
        base_url: str,
        timeout_s: float,
        venue_now_ms: Callable[[], int],
    ) -> None:
        self._make: Callable[[], ClockedHTTP] = lambda: _new_client(
            api_key, api_secret, base_url, timeout_s, venue_now_ms
        )
        self._local = threading.local()
        self._clients: list[ClockedHTTP] = []
        self._lock = threading.Lock()

    def call(self, method: str, params: Mapping[str, Any]) -> Reply:
        """Run one pybit call (blocking; call from a worker thread)."""
        try:
            body, _elapsed, headers = getattr(self._client(), method)(**params)
        except InvalidRequestError as exc:
            raise with_limits(failure_from_ret_code(exc.status_code, exc.message, exc.resp_headers),
                              exc.resp_headers) from None
        except FailedRequestError as exc:
            raise failure_from_http(exc) from None
        except requests.RequestException as exc:
            raise failure_from_network(exc) from None
        remaining, reset = limit_headers(headers)
        time_ms = body.get("time")
        return Reply(body.get("result") or {}, time_ms if isinstance(time_ms, int) else None,
                     remaining, reset, _int_header(headers, "X-Bapi-Limit") if headers is not None else None)

    def close(self) -> None:
        with self._lock:
            clients, self._clients = self._clients, []
        for client in clients:
            client.client.close()

    def _client(self) -> ClockedHTTP:
        client: ClockedHTTP | None = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = self._make()
            with self._lock:
                self._clients.append(client)
        return client


def _new_client(
    api_key: str, api_secret: str, base_url: str, timeout_s: float, venue_now_ms: Callable[[], int]
) -> ClockedHTTP:
    client = ClockedHTTP(
        api_key=api_key,
        api_secret=api_secret,
        timeout=timeout_s,
        # One attempt, no sleeping inside the worker thread: the adapter owns the policy.
        # An empty retry_codes set is replaced by pybit's defaults, so name an unused code.
        max_retries=1,
        retry_codes={-999999},
        return_response_headers=True,
    )
    client.endpoint = base_url.rstrip("/")  # each pybit method builds f"{endpoint}{path}"
    client.client.trust_env = False  # no proxies from the environment
    client.venue_now_ms = venue_now_ms
    return client


def failure_from_ret_code(code: int, message: str, headers: Mapping[str, str] | None) -> VenueFailure:
    if code in AUTH_CODES:
        return VenueFailure(Kind.AUTH, code, message)
    if code in RATE_LIMIT_CODES:
        return VenueFailure(Kind.RATE_LIMITED, code, message, limit_headers(headers)[1])
    if code in CLOCK_CODES:
        return VenueFailure(Kind.CLOCK, code, message)
    if code in UNKNOWN_CODES or code in SERVER_ERROR_CODES:
        return VenueFailure(Kind.UNKNOWN, code, message)
    return VenueFailure(Kind.REJECTED, code, message)


def failure_from_http(exc: FailedRequestError) -> VenueFailure:
    status = int(exc.status_code)
    if exc.resp_headers is None:
        # pybit's own 409 "Could not decode JSON": the venue answered something unreadable.
        return VenueFailure(Kind.UNKNOWN, status, f"undecodable response: {exc.message}")
    message = f"HTTP {status}: {exc.message}"
    if status == 401:
        return VenueFailure(Kind.AUTH, status, message)
    if status in (403, 429):  # 403 = IP limit breached, 429 = frequency protection (bybit.md §3)
        return VenueFailure(Kind.RATE_LIMITED, status, message, limit_headers(exc.resp_headers)[1])
    if status >= 500:  # the gateway may have forwarded the request before failing
        return VenueFailure(Kind.UNKNOWN, status, message)
    return VenueFailure(Kind.REJECTED, status, message)


def failure_from_network(exc: requests.RequestException) -> VenueFailure:
    message = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, requests.ConnectTimeout | _BAD_URL):
        return VenueFailure(Kind.UNAVAILABLE, 0, message)
    # requests sends with urllib3 Retry(0, read=False): only connect-phase failures (refused,
    # DNS, TLS handshake) come wrapped in MaxRetryError; read-phase ones (reset, aborted) are
    # re-raised bare, and by then the request may have reached the venue.
    if isinstance(exc, requests.ConnectionError) and exc.args and isinstance(exc.args[0], MaxRetryError):
        return VenueFailure(Kind.UNAVAILABLE, 0, message)
    return VenueFailure(Kind.UNKNOWN, 0, message)


def with_limits(failure: VenueFailure, headers: Mapping[str, str] | None) -> VenueFailure:
    if headers is not None:
        failure.limit = _int_header(headers, "X-Bapi-Limit")
        failure.limit_remaining = _int_header(headers, "X-Bapi-Limit-Status")
        failure.time_ms = _int_header(headers, "Timenow")
    return failure


def limit_headers(headers: Mapping[str, str] | None) -> tuple[int | None, int | None]:
    """``(X-Bapi-Limit-Status, X-Bapi-Limit-Reset-Timestamp)``, each None when absent."""
    if headers is None:
        return None, None
    return _int_header(headers, "X-Bapi-Limit-Status"), _int_header(headers, "X-Bapi-Limit-Reset-Timestamp")


def _int_header(headers: Mapping[str, str], name: str) -> int | None:
    try:
        return int(headers[name])
    except (KeyError, ValueError, TypeError):
        return None
