"""Request signing, checked the way Bybit checks it (bybit.md §5)."""

from __future__ import annotations

import pybit._helpers
import pytest
from pybit.unified_trading import HTTP

from ordermgr.paper import PaperVenue
from tests.paper.helpers import call, make_session, rejected


async def test_signed_get_and_post_pass(session: HTTP) -> None:
    balance = await call(session.get_wallet_balance, accountType="UNIFIED", coin="USDT,USDC")
    assert balance["retCode"] == 0
    created = await call(
        session.place_order, category="linear", symbol="BTCUSDT", side="Buy", orderType="Market", qty="0.001"
    )
    assert created["retCode"] == 0


async def test_wrong_secret_is_10004(venue: PaperVenue) -> None:
    assert venue.base_url is not None
    session = make_session(venue.base_url, secret="not-the-secret")
    error = await rejected(session.get_positions, category="linear", symbol="BTCUSDT")
    assert error.status_code == 10004
    assert error.message.startswith("error sign! origin_string[")
    await call(session.client.close)


async def test_unknown_key_is_10003(venue: PaperVenue) -> None:
    assert venue.base_url is not None
    session = make_session(venue.base_url, key="someone-else")
    error = await rejected(session.get_positions, category="linear", symbol="BTCUSDT")
    assert (error.status_code, error.message) == (10003, "API key is invalid.")
    await call(session.client.close)


async def test_stale_timestamp_is_10002(session: HTTP, monkeypatch: pytest.MonkeyPatch) -> None:
    real = pybit._helpers.generate_timestamp
    monkeypatch.setattr(pybit._helpers, "generate_timestamp", lambda: real() - 60_000)
    error = await rejected(session.get_positions, category="linear", symbol="BTCUSDT")
    assert error.status_code == 10002
    assert "req_timestamp[" in error.message and "recv_window[5000]" in error.message


async def test_private_responses_carry_limit_headers(venue: PaperVenue) -> None:
    assert venue.base_url is not None
    session = make_session(venue.base_url, return_response_headers=True)
    _, _, headers = await call(session.get_open_orders, category="linear", symbol="BTCUSDT")
    assert headers["X-Bapi-Limit"] == "50"
    assert int(headers["X-Bapi-Limit-Status"]) == 49
    assert int(headers["X-Bapi-Limit-Reset-Timestamp"]) > 0
    await call(session.client.close)
