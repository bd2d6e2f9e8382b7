"""Public market endpoints, through pybit."""

from __future__ import annotations

from decimal import Decimal

import aiohttp
from pybit.unified_trading import HTTP

from ordermgr.paper import PaperVenue
from tests.paper.helpers import call, rejected


async def test_server_time_is_strings(session: HTTP) -> None:
    reply = await call(session.get_server_time)
    assert reply["retCode"] == 0 and isinstance(reply["time"], int)
    assert reply["result"]["timeNano"].startswith(reply["result"]["timeSecond"])


async def test_btcusdt_filters_match_bybit_doc_example(session: HTTP) -> None:
    reply = await call(session.get_instruments_info, category="linear", symbol="BTCUSDT")
    (item,) = reply["result"]["list"]
    assert item["priceFilter"] == {"minPrice": "0.10", "maxPrice": "1999999.80", "tickSize": "0.10"}
    assert item["lotSizeFilter"] == {
        "maxOrderQty": "1190.000",
        "minOrderQty": "0.001",
        "qtyStep": "0.001",
        "postOnlyMaxOrderQty": "1190.000",
        "maxMktOrderQty": "500.000",
        "minNotionalValue": "5",
    }
    assert item["priceScale"] == "2" and item["symbolId"] == 5 and item["settleCoin"] == "USDT"
    assert Decimal(item["riskParameters"]["priceLimitRatioX"]) > 0


async def test_instruments_list_every_symbol(session: HTTP) -> None:
    reply = await call(session.get_instruments_info, category="linear")
    symbols = {item["symbol"] for item in reply["result"]["list"]}
    assert {"BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "DOGEUSDT"} <= symbols


async def test_ticker_follows_set_price(venue: PaperVenue, session: HTTP) -> None:
    venue.set_price("ETHUSDT", Decimal("2500.5"))
    reply = await call(session.get_tickers, category="linear", symbol="ETHUSDT")
    (ticker,) = reply["result"]["list"]
    assert ticker["lastPrice"] == "2500.50"
    assert Decimal(ticker["bid1Price"]) < Decimal(ticker["lastPrice"]) < Decimal(ticker["ask1Price"])


async def test_orderbook_is_synthetic_around_last(venue: PaperVenue, session: HTTP) -> None:
    venue.set_price("BTCUSDT", Decimal("50000"))
    book = (await call(session.get_orderbook, category="linear", symbol="BTCUSDT", limit=3))["result"]
    assert [level[0] for level in book["a"]] == ["50000.10", "50000.20", "50000.30"]
    assert [level[0] for level in book["b"]] == ["49999.90", "49999.80", "49999.70"]
    assert isinstance(book["ts"], int)


async def test_unknown_symbol_is_a_param_error(session: HTTP) -> None:
    error = await rejected(session.get_tickers, category="linear", symbol="NOPEUSDT")
    assert error.status_code == 10001


async def test_unknown_path_is_404(venue: PaperVenue) -> None:
    async with aiohttp.ClientSession() as client:
        async with client.get(f"{venue.base_url}/v5/nothing/here") as response:
            assert response.status == 404
