"""Real Bybit v5 answers (tests/data/bybit-v5; SOURCES.md says which are live captures, which are
documentation examples and which were edited by the project they come from) through our parsers
and our adapter, and the paper venue's answers held against them (contract §16).

Three parts: every file is read by the parser of its kind without error; the values a person
reads off each file come out of the parsers (and out of ``BybitExchange``, served the file over
HTTP through pybit); and each endpoint of the paper venue answers with the real answers' keys
and value types (only fields the current documentation lists may come on top).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from pybit.unified_trading import HTTP

from ordermgr.bybit.exchange import BybitExchange
from ordermgr.bybit.wire import (
    parse_execution,
    parse_instrument,
    parse_order,
    parse_position,
    parse_ticker,
    parse_wallet,
)
from ordermgr.domain.model import Accepted, OrderRequest, OrderType, RetryPolicy, Side
from ordermgr.paper import PaperVenue
from ordermgr.paper.gateway import TickerStream
from tests.bybit.conftest import SleepLog
from tests.paper.helpers import call, make_session, place, running_venue

pytestmark = pytest.mark.anyio

FIXTURES = Path(__file__).resolve().parents[1] / "data" / "bybit-v5"
H, N = "hirokisan_bybit", "nautilus_trader"
D = Decimal


def load(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def result(name: str) -> Any:
    """The ``result`` of a REST answer: nautilus keeps the envelope, hirokisan only the result,
    and hirokisan's market lists sit under a "LinearInverse" key of their own."""
    body = load(name)
    body = body.get("result", body)
    return body.get("LinearInverse", body)


def rest_items(name: str) -> list[dict[str, Any]]:
    return result(name)["list"]  # type: ignore[no-any-return]


def ws_items(name: str) -> list[dict[str, Any]]:
    body = load(name)
    data = body.get("data", body)  # one nautilus file is a bare item
    return data if isinstance(data, list) else [data]


# --- 1. every file is read by its parser ---------------------------------------------------------

Reader = Callable[[str], Iterable[object]]


def _orders(items: Callable[[str], list[dict[str, Any]]]) -> Reader:
    return lambda name: [parse_order(item) for item in items(name)]


READERS: dict[str, Reader] = {
    f"{H}/v5-create-order.json": lambda name: [load(name)["orderId"]],
    f"{H}/v5-cancel-order.json": lambda name: [load(name)["orderId"]],
    f"{H}/v5-amend-order.json": lambda name: [load(name)["orderId"]],
    f"{H}/v5-get-open-orders.json": _orders(rest_items),
    f"{H}/v5-get-history-orders.json": _orders(rest_items),
    f"{H}/v5-execution-get-execution-list.json": lambda name: map(parse_execution, rest_items(name)),
    f"{H}/v5-position-get-position-info.json": lambda name: map(parse_position, rest_items(name)),
    f"{H}/v5-account-get-wallet-balance.json": lambda name: [parse_wallet(result(name), "USDT")],
    f"{H}/v5-market-get-instruments-info-inverse.json": lambda name: map(parse_instrument, rest_items(name)),
    f"{H}/v5-market-get-tickers-inverse.json": lambda name: map(parse_ticker, rest_items(name)),
    f"{H}/private-v5-execution.json": lambda name: map(parse_execution, ws_items(name)),
    f"{H}/private-v5-position.json": lambda name: map(parse_position, ws_items(name)),
    f"{H}/private-v5-wallet.json": lambda name: [parse_wallet({"list": ws_items(name)}, "USDT")],
    f"{N}/http_get_executions.json": lambda name: map(parse_execution, rest_items(name)),
    f"{N}/http_get_instruments_linear.json": lambda name: map(parse_instrument, rest_items(name)),
    f"{N}/http_get_order_partially_filled_rejected.json": _orders(rest_items),
    f"{N}/http_get_orders_history.json": _orders(rest_items),
    f"{N}/http_get_orders_history_with_duplicate.json": _orders(rest_items),
    f"{N}/http_get_orders_realtime.json": _orders(rest_items),
    f"{N}/http_get_orders_realtime_tp_sl.json": _orders(rest_items),
    f"{N}/http_get_positions.json": lambda name: map(parse_position, rest_items(name)),
    f"{N}/http_get_positions_with_open_time.json": lambda name: map(parse_position, rest_items(name)),
    f"{N}/http_get_wallet_balance.json": lambda name: [parse_wallet(result(name), "USDT")],
    f"{N}/ws_account_position.json": lambda name: map(parse_position, ws_items(name)),
    f"{N}/ws_account_position_short.json": lambda name: map(parse_position, ws_items(name)),
    f"{N}/ws_account_position_with_open_time.json": lambda name: map(parse_position, ws_items(name)),
    f"{N}/ws_ticker_linear.json": lambda name: map(parse_ticker, ws_items(name)),
    **{f"{N}/{path.name}": (lambda name: map(parse_execution, ws_items(name)))
       for path in (FIXTURES / N).glob("ws_account_execution*.json")},
    **{f"{N}/{path.name}": _orders(ws_items) for path in (FIXTURES / N).glob("ws_account_order*.json")},
}  # fmt: skip
# The WebSocket trade API's answer: ordermgr places orders over REST only.
NOT_READ = {f"{N}/ws_order_response.json"}


def test_every_fixture_has_a_reader() -> None:
    files = {str(path.relative_to(FIXTURES)) for path in FIXTURES.rglob("*.json")}
    assert files == set(READERS) | NOT_READ
    assert (FIXTURES / "SOURCES.md").is_file()


@pytest.mark.parametrize("name", sorted(READERS))
def test_every_fixture_is_read_without_error(name: str) -> None:
    assert list(READERS[name](name))


# --- 2. what a person reads off the files ---------------------------------------------------------


def test_captured_open_order() -> None:
    (order,) = [parse_order(item) for item in rest_items(f"{H}/v5-get-open-orders.json")]
    assert (order.order_id, order.order_link_id, order.symbol) == ("1368933863545500672", "1677925633310702", "BTCUSDT")
    assert (order.side, order.order_type, order.status) == (Side.BUY, "Limit", "New")
    assert (order.qty, order.price, order.leaves_qty) == (D("0.010000"), D("10000.00"), D("0.010000"))
    assert (order.cum_exec_qty, order.cum_exec_value, order.cum_exec_fee, order.avg_price) == (0, 0, 0, None)
    assert (order.reduce_only, order.reject_reason, order.created_ms) == (False, "EC_NoError", 1677925633316)


def test_edited_orders_with_nulls_and_conditional_fields() -> None:
    tp, sl = [parse_order(item) for item in rest_items(f"{N}/http_get_orders_realtime_tp_sl.json")]
    assert (tp.status, tp.order_type, tp.price, tp.qty) == ("Untriggered", "Market", None, D("0.5"))
    assert tp.reduce_only is True
    assert (sl.price, sl.leaves_qty, sl.avg_price) == (D("47500.00"), D("0.500"), None)  # avgPrice: null
    (rejected,) = map(parse_order, rest_items(f"{N}/http_get_order_partially_filled_rejected.json"))
    assert (rejected.status, rejected.cum_exec_qty, rejected.leaves_qty) == ("Rejected", D("0.005"), D("0.005"))
    assert (rejected.avg_price, rejected.cum_exec_fee, rejected.cum_exec_value) == (D("30000"), D("0.0825"), D("150"))
    cancelled = parse_order(rest_items(f"{N}/http_get_orders_history.json")[0])
    assert (cancelled.status, cancelled.reject_reason, cancelled.updated_ms) == ("Cancelled", "", 1700000005000)


def test_ws_orders() -> None:
    (filled,) = [parse_order(item) for item in ws_items(f"{N}/ws_account_order_filled.json")]
    assert (filled.status, filled.cum_exec_qty, filled.cum_exec_value) == ("Filled", D("0.100"), D("3000.05"))
    assert (filled.avg_price, filled.cum_exec_fee, filled.leaves_qty) == (D("30000.50"), D("1.650028"), 0)
    (spot,) = map(parse_order, ws_items(f"{N}/ws_account_order_partially_filled_rejected.json"))
    assert (spot.symbol, spot.status) == ("APEXUSDT", "Rejected")
    assert (spot.cum_exec_qty, spot.leaves_qty) == (D("50.0"), D("50.0"))


def test_captured_executions() -> None:
    (linear,) = [parse_execution(item) for item in rest_items(f"{H}/v5-execution-get-execution-list.json")]
    assert linear.exec_id == "63efa380-bdb4-5b1c-83d3-937ca3938000"
    assert linear.order_id == "7babd487-21bb-4148-9cb2-3921134cb52b"
    assert (linear.qty, linear.price, linear.value) == (D("0.01"), D("26816.8"), D("268.168"))
    assert (linear.fee, linear.time_ms) == (D("0.1609008"), 1684314652233)
    (ws,) = [parse_execution(item) for item in ws_items(f"{N}/ws_account_execution.json")]
    assert (ws.qty, ws.price, ws.value, ws.fee) == (D("0.5"), D("95900.1"), D("47950.05"), D("26.3725275"))
    (fast,) = [parse_execution(item) for item in ws_items(f"{N}/ws_account_execution_fast.json")]
    assert (fast.qty, fast.price, fast.fee) == (D("3000"), D("12.015"), 0)  # execution.fast carries no fee


def test_captured_flat_position_and_ws_position() -> None:
    (flat,) = [parse_position(item) for item in rest_items(f"{H}/v5-position-get-position-info.json")]
    assert (flat.symbol, flat.size, flat.avg_price) == ("BTCUSDT", 0, 0)
    assert (flat.realized_pnl, flat.unrealized_pnl, flat.mark_price) == (D("-1618.71655122"), 0, D("43577.97"))
    (ws,) = [parse_position(item) for item in ws_items(f"{H}/private-v5-position.json")]
    # The private stream calls the entry price entryPrice (REST: avgPrice).
    assert (ws.size, ws.avg_price, ws.realized_pnl) == (D("0.1"), D("23032.9"), D("-1621.316321"))
    (short,) = [parse_position(item) for item in ws_items(f"{N}/ws_account_position_short.json")]
    assert (short.size, short.avg_price, short.unrealized_pnl) == (D("-0.01"), D("3641.075"), D("-0.00255"))


def test_edited_position_list_signs_sizes() -> None:
    positions = {p.symbol: p for p in map(parse_position, rest_items(f"{N}/http_get_positions.json"))}
    assert {s: p.size for s, p in positions.items()} == {"BTCUSDT": D("0.5"), "ETHUSDT": D("-5.0"), "SOLUSDT": 0}
    assert (positions["ETHUSDT"].avg_price, positions["ETHUSDT"].realized_pnl) == (D("3000.00"), D("200.00"))


def test_wallets() -> None:
    captured = parse_wallet(result(f"{H}/v5-account-get-wallet-balance.json"), "USDT")
    assert (captured.available, captured.wallet_balance) == (D("78429.79924861"), D("1439.61537267"))
    edited = parse_wallet(result(f"{N}/http_get_wallet_balance.json"), "USDT")
    assert (edited.available, edited.wallet_balance, edited.equity) == (D("3.00326056"), D("1000.50"), D("1000.50"))


def test_captured_instruments_of_2023_without_the_newer_lot_fields() -> None:
    items = rest_items(f"{H}/v5-market-get-instruments-info-inverse.json")
    instruments = {i.symbol: i for i in map(parse_instrument, items)}
    assert len(instruments) == 214 and all(i.is_trading for i in instruments.values())
    btc = instruments["BTCUSDT"]
    assert (btc.tick_size, btc.min_price, btc.max_price) == (D("0.10"), D("0.10"), D("199999.80"))
    assert (btc.qty_step, btc.min_qty, btc.max_qty) == (D("0.001"), D("0.001"), D("100.000"))
    # No maxMktOrderQty and no minNotionalValue in 2023: the limit-order maximum and no minimum.
    assert (btc.max_mkt_qty, btc.min_notional) == (D("100.000"), 0)
    eth = parse_instrument(rest_items(f"{N}/http_get_instruments_linear.json")[1])
    assert (eth.tick_size, eth.qty_step, eth.max_mkt_qty, eth.min_notional) == (D("0.05"), D("0.01"), D("500.0"), D(5))


def test_captured_tickers_and_the_ws_ticker() -> None:
    tickers = {t.symbol: t for t in map(parse_ticker, rest_items(f"{H}/v5-market-get-tickers-inverse.json"))}
    assert len(tickers) == 218
    btc = tickers["BTCUSDT"]
    assert (btc.last_price, btc.bid_price, btc.ask_price, btc.mark_price) == (
        D("22379.70"), D("22379.70"), D("22420.90"), D("22421.12"))
    (ws,) = [parse_ticker(item) for item in ws_items(f"{N}/ws_ticker_linear.json")]
    assert (ws.last_price, ws.bid_price, ws.ask_price, ws.mark_price) == (
        D("17216.00"), D("17215.50"), D("17216.00"), D("17217.33"))


# --- the adapter, served the files over HTTP ---------------------------------------------------


class FixtureVenue:
    """Answers each path with a fixture's ``result``. A request that follows a cursor gets the
    empty page Bybit gives after its last page."""

    def __init__(self, answers: Mapping[str, Any]) -> None:
        self.answers = answers

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", self._answer)
        return app

    async def _answer(self, request: web.Request) -> web.Response:
        path = request.path
        if path == "/v5/market/time":
            body: Any = {"timeSecond": "1700000000", "timeNano": "1700000000000000000"}
        elif "cursor" in request.query:
            body = {"category": "linear", "list": [], "nextPageCursor": ""}
        else:
            body = self.answers[path]
        return web.json_response({"retCode": 0, "retMsg": "OK", "result": body, "retExtInfo": {}, "time": 1})


@pytest.fixture
async def served() -> AsyncIterator[BybitExchange]:
    answers = {
        "/v5/account/wallet-balance": result(f"{H}/v5-account-get-wallet-balance.json"),
        "/v5/order/realtime": result(f"{H}/v5-get-open-orders.json"),
        "/v5/order/history": result(f"{N}/http_get_orders_history_with_duplicate.json"),
        "/v5/execution/list": result(f"{N}/http_get_executions.json"),
        "/v5/position/list": result(f"{N}/http_get_positions.json"),
        "/v5/market/instruments-info": result(f"{H}/v5-market-get-instruments-info-inverse.json"),
        "/v5/market/tickers": result(f"{H}/v5-market-get-tickers-inverse.json"),
        "/v5/order/create": load(f"{H}/v5-create-order.json"),
        "/v5/order/cancel": load(f"{H}/v5-cancel-order.json"),
    }
    async with TestServer(FixtureVenue(answers).app(), host="127.0.0.1") as server:
        exchange = BybitExchange(api_key="k", api_secret="s", base_url=str(server.make_url("")), timeout_s=5.0,
                                 retry=RetryPolicy(max_attempts=1), sleep=SleepLog())  # fmt: skip
        yield exchange
        await exchange.aclose()


async def test_the_adapter_reads_the_captured_answers(served: BybitExchange) -> None:
    with anyio.fail_after(20):
        assert await served.available_balance() == D("78429.79924861")
        wallet = await served.wallet()
        assert (wallet.wallet_balance, wallet.equity) == (D("1439.61537267"), D("1439.61537267"))
        (order,) = await served.open_orders("BTCUSDT")  # its cursor on the last page is followed
        history = await served.order_history("BTCUSDT")
        positions = {p.symbol: p.size for p in await served.positions()}
        executions = await served.executions("BTCUSDT", "8c065341-7b52-4ca9-ac2c-37e31ac55c94")
        btc = await served.instrument("BTCUSDT")
        ticker = await served.ticker("BTCUSDT")
    assert (order.order_id, order.qty, order.price) == ("1368933863545500672", D("0.010000"), D("10000.00"))
    assert [o.status for o in history] == ["New", "Cancelled"]
    assert positions == {"BTCUSDT": D("0.5"), "ETHUSDT": D("-5.0")}  # the flat SOLUSDT row left out
    assert [e.exec_id for e in executions] == ["f1dce92e-1g29-6977-a526-dg420c6ecb4c",
                                               "e0cbe81d-0f18-5866-9415-cf319b5dab3b"]  # oldest first
    assert btc is not None and btc.tick_size == D("0.10")
    assert ticker.last_price == D("22379.70")


async def test_the_adapter_reads_the_captured_write_answers(served: BybitExchange) -> None:
    request = OrderRequest(symbol="BTCUSDT", side=Side.BUY, order_type=OrderType.LIMIT, qty=D("0.001"),
                           price=D("20000"), order_link_id="1676725721103693")  # fmt: skip
    with anyio.fail_after(20):
        placed = await served.place_order(request)
        cancelled = await served.cancel_order("BTCUSDT", "1677646476275746")
    assert placed == Accepted("1358868270414852352", "1676725721103693")
    assert cancelled == Accepted("1366592124616832000", "1677646476275746")


# --- 3. the paper venue answers like the real one ----------------------------------------------

JSON_TYPES = {type(None): "null", bool: "boolean", int: "number", float: "number", str: "string", list: "array",
              dict: "object"}  # fmt: skip


def shape_differences(real: Mapping[str, Any], paper: Mapping[str, Any], where: str = "") -> list[str]:
    """Keys of ``real`` that ``paper`` lacks, and values of another JSON type (a real null says
    nothing about the type: the edited fixtures null fields Bybit sends as strings)."""
    found = []
    for key, value in real.items():
        if key not in paper:
            found.append(f"{where}{key}: missing")
        elif value is not None and JSON_TYPES[type(value)] != JSON_TYPES[type(paper[key])]:
            found.append(f"{where}{key}: real {JSON_TYPES[type(value)]}, paper {JSON_TYPES[type(paper[key])]}")
        elif isinstance(value, dict) and isinstance(paper[key], dict):
            found += shape_differences(value, paper[key], f"{where}{key}.")
    return found


# Fields the current documentation lists (bybit.md §1) that the captures predate: the paper venue
# may send them on top of the real answers' keys, and only these.
NEWER_FIELDS = {
    "order": {"blockTradeId", "createType", "cumFeeDetail", "marketUnit", "ocoTriggerBy", "parentOrderLinkId",
              "placeType", "slLimitPrice", "smpGroup", "smpOrderId", "smpType", "tpLimitPrice", "tpslMode"},
    "history": {"extraFees", "rpiMatchedQty", "rpiTakerAccess", "slippageTolerance", "slippageToleranceType"},
    "execution": {"createType", "execFeeV2", "extraFees", "feeCurrency", "seq"},
    "position": {"breakEvenPrice", "curRealisedPnl", "delta", "gamma", "openTime", "positionIMByMp",
                 "positionMMByMp", "sessionAvgPrice", "theta", "vega"},
    "account": {"accountIMRateByMp", "accountMMRateByMp", "totalInitialMarginByMp", "totalMaintenanceMarginByMp"},
    "coin": {"colRes", "spotBorrow"},
    "instrument": {"copyTrading", "displayName", "forbidUplWithdrawal", "isPreListing", "lowerFundingRate",
                   "preListingInfo", "riskParameters", "symbolId", "symbolType", "upperFundingRate"},
    "ticker": {"basis", "basisRateYear", "curPreListingPhase", "fundingCap", "fundingIntervalHour", "preOpenPrice",
               "preQty"},
}  # fmt: skip


@pytest.fixture
async def paper_answers() -> AsyncIterator[dict[str, Any]]:
    """The paper venue's answer on each endpoint, with a resting order, a filled one and a position."""
    async with running_venue(initial_prices={"BTCUSDT": D("50000")}) as venue:
        assert venue.base_url is not None
        session = make_session(venue.base_url)
        yield await _answers(venue, session)
        await anyio.to_thread.run_sync(session.client.close)


async def _answers(venue: PaperVenue, session: HTTP) -> dict[str, Any]:
    def sent(reply: Any) -> Any:
        assert reply["retCode"] == 0, reply
        return reply

    linear = {"category": "linear", "symbol": "BTCUSDT"}
    created = sent(await call(session.place_order, **linear, side="Buy", orderType="Limit", price="49000",
                              qty="0.01", orderLinkId="rest"))  # fmt: skip
    await place(session, side="Buy", orderType="Market", qty="0.01", orderLinkId="taken")
    amended = sent(await call(session.amend_order, **linear, orderLinkId="rest", price="49100"))
    return {
        "create": created, "amend": amended,
        "realtime": sent(await call(session.get_open_orders, **linear)),
        "history": sent(await call(session.get_order_history, **linear)),
        "executions": sent(await call(session.get_executions, **linear)),
        "positions": sent(await call(session.get_positions, **linear)),
        "wallet": sent(await call(session.get_wallet_balance, accountType="UNIFIED", coin="USDT")),
        "instruments": sent(await call(session.get_instruments_info, category="linear")),
        "tickers": sent(await call(session.get_tickers, **linear)),
        "cancel": sent(await call(session.cancel_order, **linear, orderLinkId="rest")),
        "order_ws": _order_event(venue),
    }  # fmt: skip


def _order_event(venue: PaperVenue) -> dict[str, Any]:
    """What the venue publishes to ws-gateway.order for its last order change."""
    from ordermgr.paper import wire

    order = max(venue.engine.orders.values(), key=lambda o: o.updated_ms)
    return wire.order_ws(order, venue.listings[order.symbol])


# (paper endpoint, the fixtures it answers like, which NEWER_FIELDS apply)
REST_LISTS = [
    ("realtime", [f"{H}/v5-get-open-orders.json", f"{N}/http_get_orders_realtime.json",
                  f"{N}/http_get_orders_realtime_tp_sl.json"], ("order",)),
    ("history", [f"{H}/v5-get-history-orders.json", f"{N}/http_get_orders_history.json",
                 f"{N}/http_get_order_partially_filled_rejected.json"], ("order", "history")),
    ("executions", [f"{H}/v5-execution-get-execution-list.json", f"{N}/http_get_executions.json"], ("execution",)),
    ("positions", [f"{H}/v5-position-get-position-info.json", f"{N}/http_get_positions.json",
                   f"{N}/http_get_positions_with_open_time.json"], ("position",)),
    ("instruments", [f"{H}/v5-market-get-instruments-info-inverse.json", f"{N}/http_get_instruments_linear.json"],
     ("instrument",)),
    ("tickers", [f"{H}/v5-market-get-tickers-inverse.json"], ("ticker",)),
]  # fmt: skip


@pytest.mark.parametrize(("endpoint", "names", "newer"), REST_LISTS, ids=[e for e, *_ in REST_LISTS])
async def test_paper_list_answers_have_the_real_keys_and_types(
    paper_answers: dict[str, Any], endpoint: str, names: list[str], newer: tuple[str, ...]
) -> None:
    answer = paper_answers[endpoint]["result"]
    item = answer["list"][0]
    real_keys: set[str] = set()
    for name in names:
        real = result(name)
        assert shape_differences({k: v for k, v in real.items() if k != "list"}, answer) == [], name
        for real_item in real["list"]:
            assert shape_differences(real_item, item) == [], name
            real_keys |= set(real_item)
    allowed = set().union(*(NEWER_FIELDS[group] for group in newer))
    assert set(item) - real_keys <= allowed


async def test_paper_wallet_has_the_real_keys_and_types(paper_answers: dict[str, Any]) -> None:
    (account,) = paper_answers["wallet"]["result"]["list"]
    coin = account["coin"][0]
    for name in (f"{H}/v5-account-get-wallet-balance.json", f"{N}/http_get_wallet_balance.json"):
        (real,) = result(name)["list"]
        assert shape_differences({k: v for k, v in real.items() if k != "coin"}, account) == [], name
        for real_coin in real["coin"]:
            assert shape_differences(real_coin, coin) == [], name
    (captured,) = result(f"{H}/v5-account-get-wallet-balance.json")["list"]
    assert set(account) - set(captured) <= NEWER_FIELDS["account"]
    assert set(coin) - set(captured["coin"][1]) <= NEWER_FIELDS["coin"]


@pytest.mark.parametrize("write", ["create", "amend", "cancel"])
async def test_paper_write_answers_have_the_real_keys_and_types(paper_answers: dict[str, Any], write: str) -> None:
    real = load(f"{H}/v5-{write}-order.json")
    answer = paper_answers[write]["result"]
    assert shape_differences(real, answer) == [] and set(answer) == set(real)


async def test_paper_envelope_is_the_real_envelope(paper_answers: dict[str, Any]) -> None:
    real = load(f"{N}/http_get_orders_realtime.json")
    for answer in paper_answers.values():
        if "retCode" in answer:
            assert set(answer) == set(real) and shape_differences({k: v for k, v in real.items() if k != "result"},
                                                                  answer) == []  # fmt: skip


async def test_paper_order_events_have_the_real_ws_keys_and_types(paper_answers: dict[str, Any]) -> None:
    item = paper_answers["order_ws"]
    real_keys: set[str] = set()
    for path in sorted((FIXTURES / N).glob("ws_account_order*.json")):
        for real in ws_items(f"{N}/{path.name}"):
            assert shape_differences(real, item) == [], path.name
            real_keys |= set(real)
    # The private stream's own fields beyond the REST ones (bybit.md §6).
    ws_only = {"brokerOrderPrice", "closedPnl", "isLeverage", "rpiMatchedQty", "rpiTakerAccess", "slippageTolerance",
               "slippageToleranceType"}  # fmt: skip
    assert set(item) - real_keys <= NEWER_FIELDS["order"] | ws_only


async def test_paper_ticker_events_have_the_real_ws_ticker_keys_and_types() -> None:
    """The ws-gateway stand-in's ticker payload against a real stream item (contract §14.1)."""
    published: list[dict[str, Any]] = []
    async with running_venue(initial_prices={"BTCUSDT": D("17216")}) as venue:
        item = venue.ticker_item("BTCUSDT")
        assert item is not None
        TickerStream(published.append).snapshot(item, 1673272861686)
    (payload,) = published
    message = load(f"{N}/ws_ticker_linear.json")
    (real,) = ws_items(f"{N}/ws_ticker_linear.json")
    assert shape_differences(real, payload) == []
    assert shape_differences({"type": message["type"], "ts": message["ts"]}, payload) == []
    rest_keys = set(rest_items(f"{H}/v5-market-get-tickers-inverse.json")[0])
    assert set(payload) - set(real) - {"type", "ts"} <= rest_keys | NEWER_FIELDS["ticker"]  # all Bybit's own fields
