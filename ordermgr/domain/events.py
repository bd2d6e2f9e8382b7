"""Order events for ``order-manager.order_events`` (contract §4), built as plain dicts with
decimals as strings. Pure: the caller writes them to the outbox in the same transaction as
the state change they describe."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import attrs

from ordermgr.domain.model import OrderRecord, Signal


@attrs.frozen
class OrderEvent:
    event_id: uuid.UUID
    event_type: str
    signal_id: str | None
    order_uuid: uuid.UUID | None
    trace_id: str | None
    body: Mapping[str, Any]

    def to_json(self) -> bytes:
        return dumps(self.body)


def iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def text(value: Decimal | None) -> str | None:
    return None if value is None else format(value, "f")


def _json_default(value: object) -> object:
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


# Built once: ``json.dumps`` with options builds an encoder per call.
_ENCODER = json.JSONEncoder(default=_json_default, separators=(",", ":"))


def dumps(value: object) -> bytes:
    """JSON with Decimals as strings and datetimes as ISO 8601 UTC."""
    return _ENCODER.encode(value).encode()


def order_body(order: OrderRecord) -> dict[str, Any]:
    return {
        "id": str(order.id),
        "order_id": order.order_id,
        "order_link_id": order.order_link_id,
        "signal_id": order.signal_id,
        "asset": order.asset,
        "side": order.side,
        "order_type": order.order_type,
        "status": order.status,
        "quantity": text(order.quantity),
        "price": text(order.price),
        "filled_quantity": text(order.filled_quantity),
        "average_price": text(order.average_price),
        "fees": text(order.fees),
        "created_at": iso(order.created_at),
        "updated_at": iso(order.updated_at),
        "executed_at": iso(order.executed_at),
        "is_dry_run": order.is_dry_run,
    }


def execution_details(order: OrderRecord) -> dict[str, Any]:
    executed = order.executed_at or order.updated_at
    fill = order.filled_quantity / order.quantity * 100 if order.quantity else Decimal(0)
    return {
        "execution_latency_seconds": round((executed - order.created_at).total_seconds(), 3),
        "fill_percentage": text(fill.quantize(Decimal("0.01"))),
        "remaining_quantity": text(order.quantity - order.filled_quantity),
    }


def signal_body(signal: Signal | Mapping[str, Any]) -> dict[str, Any]:
    """The signal as the event echoes it; from a decoded Signal or a stored payload."""
    if isinstance(signal, Signal):
        payload = signal.payload
        return {
            "signal_id": signal.signal_id,
            "signal_type": signal.side.value.lower(),
            "asset": signal.asset,
            "amount": text(signal.amount),
            "confidence": text(signal.confidence),
            "strategy_id": signal.strategy_id,
            "model_version": signal.model_version,
            "is_warmup": signal.is_warmup,
            "timestamp": iso(signal.timestamp),
            "market_data_snapshot": payload.get("market_data_snapshot"),
        }
    keys = ("signal_id", "signal_type", "asset", "amount", "confidence", "strategy_id", "model_version",
            "is_warmup", "timestamp", "market_data_snapshot")  # fmt: skip
    return {key: signal.get(key) for key in keys}


def market_conditions(signal: Signal | None, last_price: Decimal | None, now: datetime) -> dict[str, Any]:
    snapshot = signal.market if signal is not None else None
    return {
        "price": text(last_price if last_price is not None else (snapshot.price if snapshot else None)),
        "spread": text(snapshot.spread) if snapshot else None,
        "volume_24h": text(snapshot.volume_24h) if snapshot else None,
        "volatility": text(snapshot.volatility) if snapshot else None,
        "timestamp": iso(now),
    }


def order_event(
    event_type: str,
    *,
    order: OrderRecord | None,
    signal: Signal | Mapping[str, Any] | None,
    signal_id: str,
    trace_id: str | None,
    now: datetime,
    last_price: Decimal | None = None,
    rejection: tuple[str, str] | None = None,
) -> OrderEvent:
    """One event. ``rejection`` is (code, message) and only goes with ``rejected``; a rejected
    signal that produced no order carries ``"order": null``."""
    event_id = uuid.uuid4()
    body: dict[str, Any] = {
        "event_id": str(event_id),
        "event_type": event_type,
        "timestamp": iso(now),
        "trace_id": trace_id,
        "order": order_body(order) if order else None,
        "execution_details": execution_details(order) if order else None,
        "signal": signal_body(signal) if signal is not None else None,
        "market_conditions": market_conditions(signal if isinstance(signal, Signal) else None, last_price, now),
    }
    if rejection is not None:
        body["rejection_reason"] = {"code": rejection[0], "message": rejection[1]}
    return OrderEvent(event_id, event_type, signal_id, order.id if order else None, trace_id, body)
