"""Results of the read endpoints: filters, sort order and cursor pagination as Bybit does."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from typing import Final, TypeVar
from urllib.parse import unquote

from ordermgr.paper import wire
from ordermgr.paper.engine import Engine
from ordermgr.paper.errors import VenueError, param_error
from ordermgr.paper.records import Execution, Order
from ordermgr.paper.rules import Params, check_category, text

T = TypeVar("T")
CURSOR_PATTERN: Final = re.compile(r"page_token=(\d+)")
CLOSED_KEPT_IN_REALTIME: Final = 500  # openOnly=1 shows this many recent closed orders
MISSING_SCOPE: Final = "Missing some parameters that must be filled in, symbol or settleCoin or baseCoin"


def paginate(
    items: Sequence[T], params: Params, *, default: int, maximum: int, cursor_on_last_page: bool = True
) -> tuple[Sequence[T], str]:
    """One page and the cursor of the next. Live Bybit's order, execution and position lists
    carry a cursor on their last page too (captured in tests/data/bybit-v5), and following it
    gives an empty page with ``""``; its instrument list ends with ``""``."""
    limit = _int(params, "limit", default)
    if not 1 <= limit <= maximum:
        raise param_error(f"params error: limit must be in [1, {maximum}]")
    offset = _cursor(text(params, "cursor"))
    page = items[offset : offset + limit]
    end = offset + len(page)
    more = end < len(items) or (cursor_on_last_page and len(page) > 0)
    # Shaped like Bybit's own cursors ("page_token%3D39380%26"), opaque to clients.
    return page, f"page_token%3D{end}%26" if more else ""


def realtime(engine: Engine, params: Params) -> dict[str, object]:
    check_category(params)
    _require_scope(params)  # linear needs symbol, baseCoin or settleCoin, even by id
    order_id, link_id = text(params, "orderId"), text(params, "orderLinkId")
    if order_id or link_id:
        # By id Bybit ignores openOnly and also returns recently closed orders.
        found = engine.find_order(order_id, link_id)
        orders = [found] if found is not None and _symbol_ok(engine, found.symbol, params) else []
    else:
        scoped = [o for o in engine.orders.values() if _symbol_ok(engine, o.symbol, params)]
        orders = [o for o in scoped if o.is_open]
        if _int(params, "openOnly", 0) == 1:
            closed = _newest_first([o for o in scoped if not o.is_open])[:CLOSED_KEPT_IN_REALTIME]
            orders += closed
    page, cursor = paginate(_newest_first(orders), params, default=20, maximum=50)
    return _listed(cursor, [wire.order_rest(o, engine.listings[o.symbol]) for o in page])


def history(engine: Engine, params: Params) -> dict[str, object]:
    check_category(params)
    status, wanted = text(params, "orderStatus"), _asked_for(engine, params)
    start, end = _window(params)
    orders = [
        o
        for o in engine.orders.values()
        if wanted(o) and (not status or o.status == status) and start <= o.created_ms <= end
    ]
    page, cursor = paginate(_newest_first(orders), params, default=20, maximum=50)
    return _listed(cursor, [wire.order_history(o, engine.listings[o.symbol]) for o in page])


def executions(engine: Engine, params: Params) -> dict[str, object]:
    check_category(params)
    exec_type, wanted = text(params, "execType"), _asked_for(engine, params)
    start, end = _window(params)
    items = [
        e
        for e in engine.executions
        if wanted(e) and exec_type in ("", "Trade") and start <= e.exec_ms <= end
    ]
    page, cursor = paginate(_newest_executions(items), params, default=50, maximum=100)
    return _listed(cursor, [wire.execution(e, engine.listings[e.symbol]) for e in page])


def positions(engine: Engine, params: Params) -> dict[str, object]:
    check_category(params)
    symbol, settle = text(params, "symbol"), text(params, "settleCoin")
    if symbol:
        if symbol not in engine.listings:
            raise param_error("params error: symbol invalid")
        rows = [engine.positions[symbol]]  # a symbol query shows the row even when flat
    elif settle:
        rows = [p for p in engine.positions.values() if p.size and settle == "USDT"]
    else:
        raise param_error("Missing some parameters that must be filled in, symbol or settleCoin")
    page, cursor = paginate(rows, params, default=20, maximum=200)
    s = engine.settings
    return _listed(cursor, [
        wire.position(p, engine.listings[p.symbol], engine.prices[p.symbol], s.leverage, s.maintenance_margin_rate)
        for p in page
    ])  # fmt: skip


def wallet_balance(engine: Engine, params: Params) -> dict[str, object]:
    if text(params, "accountType") != "UNIFIED":
        raise param_error("accountType only support UNIFIED")
    account = wire.wallet(engine.account())
    coins = [c for c in text(params, "coin").split(",") if c]
    if coins and "USDT" not in coins:
        account["coin"] = []
    return {"list": [account]}


def _listed(cursor: str, rows: list[wire.Json]) -> dict[str, object]:
    """One page of a linear list endpoint."""
    return {"category": "linear", "nextPageCursor": cursor, "list": rows}


def _asked_for(engine: Engine, params: Params) -> Callable[[Order | Execution], bool]:
    """Whether an order or execution is in the symbol / baseCoin / settleCoin scope and has the
    orderId / orderLinkId asked for."""
    order_id, link_id = text(params, "orderId"), text(params, "orderLinkId")

    def wanted(item: Order | Execution) -> bool:
        return (
            _symbol_ok(engine, item.symbol, params)
            and (not order_id or item.order_id == order_id)
            and (not link_id or item.order_link_id == link_id)
        )

    return wanted


def _symbol_ok(engine: Engine, symbol: str, params: Params) -> bool:
    wanted, base, settle = text(params, "symbol"), text(params, "baseCoin"), text(params, "settleCoin")
    instrument = engine.listings[symbol].instrument
    return (
        (not wanted or symbol == wanted)
        and (not base or instrument.base_coin == base)
        and (not settle or instrument.quote_coin == settle)
    )


def _require_scope(params: Params) -> None:
    if not (text(params, "symbol") or text(params, "baseCoin") or text(params, "settleCoin")):
        raise param_error(MISSING_SCOPE)


def _newest_first(orders: list[Order]) -> list[Order]:
    return sorted(orders, key=lambda o: (o.created_ms, o.seq), reverse=True)


def _newest_executions(items: list[Execution]) -> list[Execution]:
    return sorted(items, key=lambda e: (e.exec_ms, e.seq), reverse=True)


def _window(params: Params) -> tuple[int, int]:
    """startTime/endTime in ms; by default Bybit shows the last 7 days."""
    now = int(time.time() * 1000)
    end = _int(params, "endTime", now + 60_000)
    start = _int(params, "startTime", end - 7 * 24 * 3600 * 1000)
    return start, end


def _int(params: Params, name: str, default: int) -> int:
    raw = text(params, name)
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise param_error(f"params error: {name} invalid") from None


def _cursor(raw: str) -> int:
    if not raw:
        return 0
    match = CURSOR_PATTERN.search(unquote(raw))
    if match is None:
        raise VenueError(10001, "params error: cursor invalid")
    return int(match.group(1))
