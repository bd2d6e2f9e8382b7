"""bybit_wire against the verbatim doc examples of bybit.md §9 (golden fixtures)."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from ordermgr.bybit.wire import (
    parse_execution,
    parse_instrument,
    parse_order,
    parse_position,
    parse_ticker,
    parse_wallet,
)
from ordermgr.domain.model import Side

FIXTURES = Path(__file__).resolve().parents[1] / "data" / "bybit-v5"

REALTIME_NEW = json.loads(
    '{"orderId":"fd4300ae-7847-404e-b947-b46980a4d140","orderLinkId":"test-000005","blockTradeId":"",'
    '"symbol":"ETHUSDT","price":"1600.00","qty":"0.10","side":"Buy","isLeverage":"","positionIdx":1,'
    '"orderStatus":"New","cancelType":"UNKNOWN","rejectReason":"EC_NoError","avgPrice":"0",'
    '"leavesQty":"0.10","leavesValue":"160","cumExecQty":"0.00","cumExecValue":"0","cumExecFee":"0",'
    '"timeInForce":"GTC","orderType":"Limit","stopOrderType":"UNKNOWN","orderIv":"","triggerPrice":"0.00",'
    '"takeProfit":"2500.00","stopLoss":"1500.00","tpTriggerBy":"LastPrice","slTriggerBy":"LastPrice",'
    '"triggerDirection":0,"triggerBy":"UNKNOWN","lastPriceOnCreated":"","reduceOnly":false,'
    '"closeOnTrigger":false,"smpType":"None","smpGroup":0,"smpOrderId":"","tpslMode":"Full",'
    '"tpLimitPrice":"","slLimitPrice":"","placeType":"","createdTime":"1684738540559",'
    '"updatedTime":"1684738540561","cumFeeDetail":{"MNT":"0.00242968"}}'
)

WS_FILLED = json.loads(
    '{"symbol":"ETH-30DEC22-1400-C","orderId":"5cf98598-39a7-459e-97bf-76ca765ee020","side":"Sell",'
    '"orderType":"Market","cancelType":"UNKNOWN","price":"72.5","qty":"1","orderIv":"","timeInForce":"IOC",'
    '"orderStatus":"Filled","orderLinkId":"","lastPriceOnCreated":"","reduceOnly":false,"leavesQty":"",'
    '"leavesValue":"","cumExecQty":"1","cumExecValue":"75","avgPrice":"75","blockTradeId":"",'
    '"positionIdx":0,"cumExecFee":"0.358635","closedPnl":"0","createdTime":"1672364262444",'
    '"updatedTime":"1672364262457","rejectReason":"EC_NoError","stopOrderType":"","tpslMode":"",'
    '"triggerPrice":"","takeProfit":"","stopLoss":"","tpTriggerBy":"","slTriggerBy":"","tpLimitPrice":"",'
    '"slLimitPrice":"","triggerDirection":0,"triggerBy":"","closeOnTrigger":false,"category":"option",'
    '"placeType":"price","smpType":"None","smpGroup":0,"smpOrderId":"","feeCurrency":"",'
    '"cumFeeDetail":{"MNT":"0.00242968"},"rpiTakerAccess":false,"rpiMatchedQty":"0"}'
)

POSITION_SELL = json.loads(
    '{"positionIdx":0,"riskId":1,"riskLimitValue":"150","symbol":"BTCUSD","side":"Sell","size":"300",'
    '"avgPrice":"27464.50441675","positionValue":"0.01092319","tradeMode":0,"positionStatus":"Normal",'
    '"autoAddMargin":1,"adlRankIndicator":2,"leverage":"10","breakEvenPrice":"93556.73034991",'
    '"positionBalance":"0.00139186","markPrice":"28224.50","liqPrice":"","bustPrice":"999999.00",'
    '"positionMM":"0.0000015","positionMMByMp":"0.0000015","positionIM":"0.00010923",'
    '"positionIMByMp":"0.00010923","tpslMode":"Full","takeProfit":"0.00","stopLoss":"0.00",'
    '"trailingStop":"0.00","unrealisedPnl":"-0.00029413","curRealisedPnl":"0.00013123",'
    '"cumRealisedPnl":"-0.00096902","seq":5723621632,"isReduceOnly":false,"mmrSysUpdateTime":"",'
    '"leverageSysUpdatedTime":"","sessionAvgPrice":"","createdTime":"1676538056258",'
    '"updatedTime":"1697673600012"}'
)

WS_POSITION_FLAT = json.loads(
    '{"positionIdx":2,"tradeMode":0,"riskId":1,"riskLimitValue":"2000000","symbol":"BTCUSDT","side":"",'
    '"size":"0","entryPrice":"0","leverage":"10","breakEvenPrice":"93556.73034991","positionValue":"0",'
    '"positionBalance":"0","markPrice":"28184.5","positionIM":"0","positionIMByMp":"0","positionMM":"0",'
    '"positionMMByMp":"0","takeProfit":"0","stopLoss":"0","trailingStop":"0","unrealisedPnl":"0",'
    '"curRealisedPnl":"1.26","cumRealisedPnl":"-25.06579337","sessionAvgPrice":"0",'
    '"createdTime":"1694402496913","updatedTime":"1697682317038","tpslMode":"Full","liqPrice":"0",'
    '"bustPrice":"","category":"linear","positionStatus":"Normal","adlRankIndicator":0,"autoAddMargin":0,'
    '"leverageSysUpdatedTime":"","mmrSysUpdatedTime":"","seq":8327597863,"isReduceOnly":false}'
)

WALLET = json.loads(
    '{"list":[{"totalEquity":"3.31216591","accountIMRate":"0","accountIMRateByMp":"0",'
    '"totalMarginBalance":"3.00326056","totalInitialMargin":"0","totalInitialMarginByMp":"0",'
    '"accountType":"UNIFIED","totalAvailableBalance":"3.00326056","accountMMRate":"0",'
    '"accountMMRateByMp":"0","totalPerpUPL":"0","totalWalletBalance":"3.00326056","accountLTV":"0",'
    '"totalMaintenanceMargin":"0","totalMaintenanceMarginByMp":"0","coin":[{"availableToBorrow":"3",'
    '"bonus":"0","accruedInterest":"0","availableToWithdraw":"0","totalOrderIM":"0","equity":"0",'
    '"totalPositionMM":"0","usdValue":"0","spotHedgingQty":"0.01592413","unrealisedPnl":"0",'
    '"collateralSwitch":true,"borrowAmount":"0.0","totalPositionIM":"0","walletBalance":"0",'
    '"cumRealisedPnl":"0","locked":"0","marginCollateral":true,"coin":"BTC","spotBorrow":"0"}]}]}'
)

LINEAR_BTC: dict[str, Any] = {
    "symbol": "BTCUSDT",
    "contractType": "LinearPerpetual",
    "status": "Trading",
    "baseCoin": "BTC",
    "quoteCoin": "USDT",
    "priceScale": "2",
    "priceFilter": {"minPrice": "0.10", "maxPrice": "1999999.80", "tickSize": "0.10"},
    "lotSizeFilter": {
        "maxOrderQty": "1190.000",
        "minOrderQty": "0.001",
        "qtyStep": "0.001",
        "postOnlyMaxOrderQty": "1190.000",
        "maxMktOrderQty": "500.000",
        "minNotionalValue": "5",
    },
    "leverageFilter": {"minLeverage": "1", "maxLeverage": "100.00", "leverageStep": "0.01"},
    "fundingInterval": 480,
    "settleCoin": "USDT",
    "symbolId": 5,
    "riskParameters": {"priceLimitRatioX": "0.05", "priceLimitRatioY": "0.1"},
}

SPOT_BTC: dict[str, Any] = {
    "symbol": "BTCUSDT",
    "baseCoin": "BTC",
    "quoteCoin": "USDT",
    "status": "Trading",
    "lotSizeFilter": {
        "basePrecision": "0.000001",
        "quotePrecision": "0.0000001",
        "minOrderQty": "0.000011",
        "maxOrderQty": "83",
        "minOrderAmt": "5",
        "maxOrderAmt": "8000000",
        "maxLimitOrderQty": "83",
        "maxMarketOrderQty": "41.5",
        "postOnlyMaxLimitOrderSize": "60000",
    },
    "priceFilter": {"tickSize": "0.1"},
    "marginTrading": "utaOnly",
}


def test_realtime_new_order() -> None:
    o = parse_order(REALTIME_NEW)
    assert o.order_id == "fd4300ae-7847-404e-b947-b46980a4d140"
    assert o.order_link_id == "test-000005"
    assert (o.symbol, o.side, o.order_type, o.status) == ("ETHUSDT", Side.BUY, "Limit", "New")
    assert (o.qty, o.price, o.leaves_qty) == (Decimal("0.10"), Decimal("1600.00"), Decimal("0.10"))
    assert o.cum_exec_qty == 0 and o.cum_exec_value == 0 and o.cum_exec_fee == 0
    assert o.avg_price is None  # "0" means no fills
    assert (o.created_ms, o.updated_ms) == (1684738540559, 1684738540561)
    assert o.reject_reason == "EC_NoError" and o.reduce_only is False


def test_ws_filled_order_with_blank_fields() -> None:
    o = parse_order(WS_FILLED)
    assert (o.side, o.status, o.order_link_id) == (Side.SELL, "Filled", "")
    assert o.avg_price == Decimal("75")
    assert o.cum_exec_fee == Decimal("0.358635")
    assert o.leaves_qty == 0  # "" on a closed order


def test_history_postonly_cancelled() -> None:
    d = dict(REALTIME_NEW, orderStatus="Cancelled", rejectReason="EC_PostOnlyWillTakeLiquidity",
             timeInForce="PostOnly", leavesQty="0.000", avgPrice="")
    o = parse_order(d)
    assert (o.status, o.reject_reason, o.leaves_qty, o.avg_price) == (
        "Cancelled", "EC_PostOnlyWillTakeLiquidity", Decimal("0.000"), None)


@pytest.mark.parametrize("avg", ["", "0", None])
def test_avg_price_absent_forms(avg: str | None) -> None:
    d = {k: v for k, v in REALTIME_NEW.items() if k != "avgPrice"}
    if avg is not None:
        d["avgPrice"] = avg
    assert parse_order(d).avg_price is None


def test_minimal_order_tolerates_omitted_fields() -> None:
    o = parse_order({"orderId": "x", "symbol": "BTCUSDT", "side": "Buy", "orderStatus": "New",
                     "qty": "0.5", "cumExecQty": "0.2"})
    assert o.order_link_id == "" and o.price is None and o.leaves_qty == Decimal("0.3")
    assert o.created_ms == 0 and o.cum_exec_value == 0


def test_fee_falls_back_to_cum_fee_detail() -> None:
    d = {k: v for k, v in REALTIME_NEW.items() if k != "cumExecFee"}
    assert parse_order(d).cum_exec_fee == Decimal("0.00242968")


@pytest.mark.parametrize(("given", "read"), [(False, False), (True, True), ("false", False), ("true", True),
                                             ("False", False), ("TRUE", True), ("", False), (None, False)])
def test_reduce_only_is_read_as_it_says_never_by_truthiness(given: object, read: bool) -> None:
    # contract §16: a string "false" is false, though a non-empty string is truthy in Python.
    assert parse_order(dict(REALTIME_NEW, reduceOnly=given)).reduce_only is read


@pytest.mark.parametrize("given", ["yes", "0", 1, [True]])
def test_a_reduce_only_that_is_no_boolean_is_a_value_error(given: object) -> None:
    with pytest.raises(ValueError, match="reduceOnly"):
        parse_order(dict(REALTIME_NEW, reduceOnly=given))


def test_bad_number_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="qty"):
        parse_order(dict(REALTIME_NEW, qty="abc"))


def test_linear_instrument() -> None:
    i = parse_instrument(LINEAR_BTC)
    assert (i.symbol, i.status, i.base_coin, i.quote_coin) == ("BTCUSDT", "Trading", "BTC", "USDT")
    assert (i.tick_size, i.min_price, i.max_price) == (
        Decimal("0.10"), Decimal("0.10"), Decimal("1999999.80"))
    assert (i.qty_step, i.min_qty, i.max_qty, i.max_mkt_qty) == (
        Decimal("0.001"), Decimal("0.001"), Decimal("1190.000"), Decimal("500.000"))
    assert i.min_notional == Decimal("5") and i.price_limit_ratio == Decimal("0.05")
    assert i.is_trading


def test_spot_instrument_uses_spot_filters() -> None:
    i = parse_instrument(SPOT_BTC)
    assert (i.qty_step, i.min_notional, i.max_qty, i.max_mkt_qty) == (
        Decimal("0.000001"), Decimal("5"), Decimal("83"), Decimal("41.5"))
    assert i.tick_size == i.min_price == Decimal("0.1") and i.price_limit_ratio is None


def test_spot_ticker() -> None:
    t = parse_ticker(json.loads(
        '{"symbol":"BTCUSDT","bid1Price":"20517.96","bid1Size":"2","ask1Price":"20527.77",'
        '"ask1Size":"1.862172","lastPrice":"20533.13","prevPrice24h":"20393.48","price24hPcnt":"0.0068",'
        '"highPrice24h":"21128.12","lowPrice24h":"20318.89","turnover24h":"243765620.65899866",'
        '"volume24h":"11801.27771","usdIndexPrice":"20784.12009279"}'))
    assert (t.symbol, t.last_price, t.bid_price, t.ask_price, t.mark_price) == (
        "BTCUSDT", Decimal("20533.13"), Decimal("20517.96"), Decimal("20527.77"), None)


def test_linear_ticker_mark_price() -> None:
    t = parse_ticker({"symbol": "BTCUSDT", "lastPrice": "50000", "markPrice": "50001.5",
                      "bid1Price": "", "ask1Price": "50000.1"})
    assert (t.mark_price, t.bid_price, t.ask_price) == (Decimal("50001.5"), None, Decimal("50000.1"))


def test_sell_position_is_negative() -> None:
    p = parse_position(POSITION_SELL)
    assert (p.symbol, p.size, p.avg_price) == ("BTCUSD", Decimal("-300"), Decimal("27464.50441675"))
    assert (p.realized_pnl, p.unrealized_pnl, p.mark_price) == (
        Decimal("-0.00096902"), Decimal("-0.00029413"), Decimal("28224.50"))


def test_buy_position_positive_and_ws_flat_leg() -> None:
    assert parse_position(dict(POSITION_SELL, side="Buy")).size == Decimal("300")
    flat = parse_position(WS_POSITION_FLAT)
    assert (flat.size, flat.avg_price, flat.realized_pnl) == (
        Decimal("0"), Decimal("0"), Decimal("-25.06579337"))


def test_wallet_available_on_a_unified_account_is_the_account_figure() -> None:
    # contract §16: all collateral counts (USD), not the coin's own figure; the doc example's
    # account holds only BTC, yet 3.00326056 is available for USDT perpetuals.
    wallet = parse_wallet(WALLET, "USDT")
    assert (wallet.available, wallet.wallet_balance, wallet.equity) == (Decimal("3.00326056"), None, None)
    assert parse_wallet(WALLET, "BTC").wallet_balance == Decimal("0")


def test_captured_unified_wallet_with_btc_and_usdt_collateral() -> None:
    """The captured UNIFIED wallet of the finding: Bybit's totalAvailableBalance is 78 429.80 USD
    while the USDT coin alone (1439.62 wallet, 100 locked) has 1 339.62."""
    result = json.loads((FIXTURES / "hirokisan_bybit" / "v5-account-get-wallet-balance.json").read_text())
    wallet = parse_wallet(result, "USDT")
    assert wallet.available == Decimal("78429.79924861")
    assert (wallet.wallet_balance, wallet.equity) == (Decimal("1439.61537267"), Decimal("1439.61537267"))


def test_captured_ws_wallet_borrowing_usdt_still_has_the_account_figure() -> None:
    push = json.loads((FIXTURES / "hirokisan_bybit" / "private-v5-wallet.json").read_text())
    wallet = parse_wallet({"list": push["data"]}, "USDT")
    assert wallet.available == Decimal("27208.34094304")
    assert wallet.wallet_balance == Decimal("-620.53813709")  # borrowed: the coin alone has nothing


def test_wallet_without_account_figures_falls_back_to_the_coin() -> None:
    """Isolated-margin and classic accounts leave the account-wide fields blank (Bybit docs;
    seen in the wild on a UNIFIED account too, ccxt#20948): the coin's own figure then."""
    usdt = {"list": [{"accountType": "UNIFIED", "totalAvailableBalance": "",
                      "coin": [{"coin": "USDT", "walletBalance": "1000.5", "locked": "0",
                                "totalOrderIM": "100", "totalPositionIM": "50.5"}]}]}  # fmt: skip
    assert parse_wallet(usdt, "USDT").available == Decimal("850.0")
    coin = usdt["list"][0]["coin"][0]
    losing = {"list": [{"coin": [dict(coin, equity="900.5")]}]}
    assert parse_wallet(losing, "USDT").available == Decimal("750.0")  # losses count
    winning = {"list": [{"coin": [dict(coin, equity="2000")]}]}
    assert parse_wallet(winning, "USDT").available == Decimal("850.0")  # gains do not
    assert parse_wallet({"list": [{"coin": []}]}, "USDT").available == Decimal("0")  # coin not listed
    assert parse_wallet({"list": []}, "USDT").available == Decimal("0")


def test_execution_list_item() -> None:
    """The item fields of bybit.md §1.7 (values shaped like the paper venue's)."""
    item = {"symbol": "BTCUSDT", "orderId": "o-1", "orderLinkId": "om-1", "side": "Buy", "orderPrice": "0",
            "orderQty": "0.006", "leavesQty": "0.003", "orderType": "Market", "execFee": "0.0825",
            "execId": "e-1", "execPrice": "50001.3", "execQty": "0.003", "execType": "Trade",
            "execValue": "150.0039", "execTime": "1795484112614", "feeCurrency": "USDT", "isMaker": False,
            "feeRate": "0.00055", "seq": 7}  # fmt: skip
    execution = parse_execution(item)
    assert (execution.exec_id, execution.order_id, execution.qty, execution.price, execution.value,
            execution.fee, execution.time_ms) == ("e-1", "o-1", Decimal("0.003"), Decimal("50001.3"),
                                                  Decimal("150.0039"), Decimal("0.0825"), 1795484112614)  # fmt: skip
