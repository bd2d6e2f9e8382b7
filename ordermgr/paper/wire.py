"""Bybit v5 wire shapes: every number a string except the few Bybit sends as JSON
numbers or booleans (bybit.md §1.0)."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal
from typing import Final

from ordermgr.paper.instruments import LAUNCH_TIME_MS, Listing
from ordermgr.paper.ledger import Account, unrealised_pnl
from ordermgr.paper.records import ZERO, Execution, Order, Position

Json = dict[str, object]
AVG_QUANTUM: Final = Decimal("0.00000001")
RATE_QUANTUM: Final = Decimal("0.0001")


def fmt(value: Decimal) -> str:
    """Plain decimal text without exponent or trailing zeros ("0" for zero)."""
    if value == 0:
        return "0"
    text = format(value.normalize(), "f")
    return text


def fmt_to(value: Decimal, quantum: Decimal) -> str:
    """Text with exactly the quantum's decimals, as Bybit prints prices and sizes."""
    return format(value.quantize(quantum, rounding=ROUND_HALF_EVEN), "f")


def order_rest(order: Order, listing: Listing) -> Json:
    """An item of ``/v5/order/realtime`` and ``/v5/order/history`` (bybit.md §1.5-1.6)."""
    inst = listing.instrument
    avg = order.avg_price
    return {
        "orderId": order.order_id,
        "orderLinkId": order.order_link_id,
        "parentOrderLinkId": "",
        "blockTradeId": "",
        "symbol": order.symbol,
        "price": fmt_to(order.price, inst.tick_size),
        "qty": fmt_to(order.qty, inst.qty_step),
        "side": order.side.value,
        "isLeverage": "",
        "positionIdx": 0,
        "orderStatus": order.status,
        "createType": "CreateByUser",
        "cancelType": order.cancel_type,
        "rejectReason": order.reject_reason,
        "avgPrice": fmt(avg.quantize(AVG_QUANTUM)) if avg is not None else "0",
        "leavesQty": fmt_to(order.leaves_qty, inst.qty_step),
        "leavesValue": fmt(order.leaves_qty * order.price),
        "cumExecQty": fmt_to(order.cum_exec_qty, inst.qty_step),
        "cumExecValue": fmt(order.cum_exec_value),
        "cumExecFee": fmt(order.cum_exec_fee),
        "timeInForce": order.time_in_force,
        "orderType": order.order_type.value,
        "stopOrderType": "UNKNOWN",
        "orderIv": "",
        "marketUnit": "",
        "triggerPrice": "0",
        "takeProfit": "0",
        "stopLoss": "0",
        "tpslMode": "",
        "ocoTriggerBy": "",
        "tpLimitPrice": "0",
        "slLimitPrice": "0",
        "tpTriggerBy": "",
        "slTriggerBy": "",
        "triggerDirection": 0,
        "triggerBy": "UNKNOWN",
        "lastPriceOnCreated": fmt_to(order.last_price_on_created, inst.tick_size),
        "reduceOnly": order.reduce_only,
        "closeOnTrigger": False,
        "placeType": "",
        "smpType": "None",
        "smpGroup": 0,
        "smpOrderId": "",
        "createdTime": str(order.created_ms),
        "updatedTime": str(order.updated_ms),
        "cumFeeDetail": {"USDT": fmt(order.cum_exec_fee)} if order.cum_exec_fee else {},
    }


def order_history(order: Order, listing: Listing) -> Json:
    return order_rest(order, listing) | {
        "slippageToleranceType": "UNKNOWN",
        "slippageTolerance": "",
        "extraFees": "",
        "rpiTakerAccess": False,
        "rpiMatchedQty": "0",
    }


def order_ws(order: Order, listing: Listing) -> Json:
    """An item of the private ``order`` topic (bybit.md §6), as ws-gateway forwards it."""
    return order_rest(order, listing) | {
        "category": "linear",
        "brokerOrderPrice": "",
        "closedPnl": fmt(order.closed_pnl),
        "feeCurrency": "",
        "slippageToleranceType": "UNKNOWN",
        "slippageTolerance": "",
        "rpiTakerAccess": False,
        "rpiMatchedQty": "0",
    }


def execution(item: Execution, listing: Listing) -> Json:
    """An item of ``/v5/execution/list`` (bybit.md §1.7)."""
    inst = listing.instrument
    return {
        "symbol": item.symbol,
        "orderId": item.order_id,
        "orderLinkId": item.order_link_id,
        "side": item.side.value,
        "orderPrice": fmt_to(item.order_price, inst.tick_size),
        "orderQty": fmt_to(item.order_qty, inst.qty_step),
        "leavesQty": fmt_to(item.leaves_qty, inst.qty_step),
        "createType": "CreateByUser",
        "orderType": item.order_type.value,
        "stopOrderType": "UNKNOWN",
        "execFee": fmt(item.exec_fee),
        "execFeeV2": "",
        "execId": item.exec_id,
        "execPrice": fmt_to(item.exec_price, inst.tick_size),
        "execQty": fmt_to(item.exec_qty, inst.qty_step),
        "execType": "Trade",
        "execValue": fmt(item.exec_value),
        "execTime": str(item.exec_ms),
        "feeCurrency": "USDT",
        "isMaker": item.is_maker,
        "feeRate": fmt(item.fee_rate),
        "tradeIv": "",
        "markIv": "",
        "markPrice": fmt_to(item.mark_price, inst.tick_size),
        "indexPrice": "",
        "underlyingPrice": "",
        "blockTradeId": "",
        "closedSize": fmt_to(item.closed_size, inst.qty_step),
        "seq": item.seq,
        "extraFees": "",
    }


def position(item: Position, listing: Listing, mark: Decimal, leverage: Decimal, mm_rate: Decimal) -> Json:
    """An item of ``/v5/position/list`` (bybit.md §1.8); flat rows keep side ""."""
    inst = listing.instrument
    size = abs(item.size)
    value = size * item.avg_price
    side = "" if item.size == 0 else ("Buy" if item.size > 0 else "Sell")
    im, mm = value / leverage, size * mark * mm_rate
    return {
        "positionIdx": 0,
        "riskId": 1,
        "riskLimitValue": "2000000",
        "symbol": item.symbol,
        "side": side,
        "size": fmt_to(size, inst.qty_step),
        "avgPrice": fmt(item.avg_price),
        "positionValue": fmt(value),
        "tradeMode": 0,
        "positionStatus": "Normal",
        "autoAddMargin": 0,
        "adlRankIndicator": 2 if size else 0,
        "leverage": fmt(leverage),
        "breakEvenPrice": fmt(item.avg_price),
        "positionBalance": fmt(im),
        "markPrice": fmt_to(mark, inst.tick_size),
        "liqPrice": "",
        "bustPrice": "",
        "positionIM": fmt(im),
        "positionIMByMp": fmt(size * mark / leverage),
        "positionMM": fmt(mm),
        "positionMMByMp": fmt(mm),
        "tpslMode": "Full",
        "takeProfit": "0",
        "stopLoss": "0",
        "trailingStop": "0",
        "sessionAvgPrice": "",
        "delta": "",
        "gamma": "",
        "vega": "",
        "theta": "",
        "unrealisedPnl": fmt(unrealised_pnl(item, mark)),
        "curRealisedPnl": fmt(item.cur_realised_pnl),
        "cumRealisedPnl": fmt(item.cum_realised_pnl),
        "seq": item.seq,
        "isReduceOnly": False,
        "mmrSysUpdatedTime": "",
        "leverageSysUpdatedTime": "",
        "createdTime": str(item.created_ms),
        "updatedTime": str(item.updated_ms),
        "openTime": item.created_ms if size else 0,
    }


def wallet(account: Account) -> Json:
    """``/v5/account/wallet-balance`` ``list[0]`` for a USDT-only UNIFIED account."""
    equity, margin = account.equity, account.equity
    im, mm = account.initial_margin, account.position_mm
    return {
        "accountType": "UNIFIED",
        "accountIMRate": _rate(im, margin),
        "accountMMRate": _rate(mm, margin),
        "accountIMRateByMp": _rate(im, margin),
        "accountMMRateByMp": _rate(mm, margin),
        "accountLTV": "0",
        "totalEquity": fmt(equity),
        "totalWalletBalance": fmt(account.wallet_balance),
        "totalMarginBalance": fmt(margin),
        "totalAvailableBalance": fmt(account.available),
        "totalPerpUPL": fmt(account.unrealised_pnl),
        "totalInitialMargin": fmt(im),
        "totalInitialMarginByMp": fmt(im),
        "totalMaintenanceMargin": fmt(mm),
        "totalMaintenanceMarginByMp": fmt(mm),
        "coin": [usdt_coin(account)],
    }


def usdt_coin(account: Account) -> Json:
    return {
        "coin": "USDT",
        "equity": fmt(account.equity),
        "usdValue": fmt(account.equity),
        "walletBalance": fmt(account.wallet_balance),
        "locked": "0",
        "spotHedgingQty": "0",
        "borrowAmount": "0",
        "accruedInterest": "0",
        "totalOrderIM": fmt(account.order_im),
        "totalPositionIM": fmt(account.position_im),
        "totalPositionMM": fmt(account.position_mm),
        "unrealisedPnl": fmt(account.unrealised_pnl),
        "cumRealisedPnl": fmt(account.cum_realised_pnl),
        "bonus": "0",
        "marginCollateral": True,
        "collateralSwitch": True,
        "colRes": "",
        "spotBorrow": "0",
        "free": "",
        "availableToWithdraw": "",
        "availableToBorrow": "",
    }


def instrument(listing: Listing) -> Json:
    """An item of ``/v5/market/instruments-info`` for category linear (bybit.md §1.11)."""
    inst = listing.instrument
    step = inst.qty_step
    return {
        "symbol": inst.symbol,
        "symbolId": listing.symbol_id,
        "contractType": "LinearPerpetual",
        "status": inst.status,
        "baseCoin": inst.base_coin,
        "quoteCoin": inst.quote_coin,
        "symbolType": "",
        "launchTime": str(LAUNCH_TIME_MS),
        "deliveryTime": "0",
        "deliveryFeeRate": "",
        "priceScale": str(listing.price_scale),
        "leverageFilter": {
            "minLeverage": "1",
            "maxLeverage": fmt_to(listing.max_leverage, Decimal("0.01")),
            "leverageStep": "0.01",
        },
        "priceFilter": {
            "minPrice": fmt_to(inst.min_price, inst.tick_size),
            "maxPrice": fmt_to(inst.max_price, inst.tick_size),
            "tickSize": fmt_to(inst.tick_size, inst.tick_size),
        },
        "lotSizeFilter": {
            "maxOrderQty": fmt_to(inst.max_qty, step),
            "minOrderQty": fmt_to(inst.min_qty, step),
            "qtyStep": fmt_to(step, step),
            "postOnlyMaxOrderQty": fmt_to(inst.max_qty, step),
            "maxMktOrderQty": fmt_to(inst.max_mkt_qty, step),
            "minNotionalValue": fmt(inst.min_notional),
        },
        "unifiedMarginTrade": True,
        "fundingInterval": 480,
        "settleCoin": inst.quote_coin,
        "copyTrading": "both",
        "upperFundingRate": "0.005",
        "lowerFundingRate": "-0.005",
        "displayName": "",
        "forbidUplWithdrawal": False,
        "riskParameters": {
            "priceLimitRatioX": fmt(inst.price_limit_ratio or ZERO),
            "priceLimitRatioY": fmt(listing.price_limit_ratio_y),
        },
        "isPreListing": False,
        "preListingInfo": None,
    }


def next_funding_ms(now_ms: int) -> int:
    """Funding every 8 h, on the hour (00:00, 08:00, 16:00 UTC)."""
    return (now_ms // 28_800_000 + 1) * 28_800_000


def ticker(listing: Listing, last: Decimal, next_funding_ms: int) -> Json:
    """An item of ``/v5/market/tickers`` for category linear (bybit.md §1.10)."""
    inst = listing.instrument
    tick = inst.tick_size
    price = fmt_to(last, tick)
    return {
        "symbol": inst.symbol,
        "lastPrice": price,
        "indexPrice": price,
        "markPrice": price,
        "prevPrice24h": price,
        "price24hPcnt": "0",
        "highPrice24h": price,
        "lowPrice24h": price,
        "prevPrice1h": price,
        "openInterest": "0",
        "openInterestValue": "0",
        "turnover24h": "0",
        "volume24h": "0",
        "fundingRate": "0.0001",
        "nextFundingTime": str(next_funding_ms),
        "predictedDeliveryPrice": "",
        "basisRate": "",
        "basis": "",
        "deliveryFeeRate": "",
        "deliveryTime": "0",
        "ask1Size": fmt_to(inst.min_qty * 100, inst.qty_step),
        "bid1Price": fmt_to(max(last - tick, tick), tick),
        "ask1Price": fmt_to(last + tick, tick),
        "bid1Size": fmt_to(inst.min_qty * 100, inst.qty_step),
        "preOpenPrice": "",
        "preQty": "",
        "curPreListingPhase": "",
        "fundingIntervalHour": "8",
        "fundingCap": "0.005",
        "basisRateYear": "",
    }


def orderbook(listing: Listing, last: Decimal, depth: int, now_ms: int, update_id: int) -> Json:
    """A synthetic book: one tick either side of the last price, sizes growing outwards."""
    inst = listing.instrument
    tick, lot = inst.tick_size, inst.min_qty
    asks = [[fmt_to(last + tick * (i + 1), tick), fmt_to(lot * (10 + 5 * i), inst.qty_step)] for i in range(depth)]
    bids = [
        [fmt_to(last - tick * (i + 1), tick), fmt_to(lot * (10 + 5 * i), inst.qty_step)]
        for i in range(depth)
        if last - tick * (i + 1) >= tick
    ]
    return {"s": inst.symbol, "a": asks, "b": bids, "ts": now_ms, "u": update_id, "seq": update_id, "cts": now_ms}


def _rate(part: Decimal, whole: Decimal) -> str:
    return fmt((part / whole).quantize(RATE_QUANTUM)) if whole > 0 else "0"
