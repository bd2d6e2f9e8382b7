"""Decoding of trading signals (contract §3.1): valid payloads, and every way a body is refused."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from ordermgr.domain.model import MarketSnapshot, Side, Signal
from ordermgr.domain.signals import MAX_BODY_BYTES, InvalidSignal, Problem, decode_signal

# The example from seed/quickstart.md, verbatim.
QUICKSTART = b"""
{
  "signal_id": "test-signal-001",
  "signal_type": "buy",
  "asset": "BTCUSDT",
  "amount": 1000.0,
  "confidence": 0.85,
  "timestamp": "2025-01-27T10:00:00Z",
  "strategy_id": "test-strategy",
  "model_version": null,
  "is_warmup": true,
  "market_data_snapshot": {
    "price": 50000.0,
    "spread": 1.5,
    "volume_24h": 1000000.0,
    "volatility": 0.02,
    "orderbook_depth": {
      "bid_depth": 100.0,
      "ask_depth": 120.0
    },
    "technical_indicators": null
  },
  "metadata": {
    "reasoning": "Test signal",
    "risk_score": 0.3
  },
  "trace_id": "test-trace-001"
}"""

UTC = timezone.utc
NOW = datetime(2025, 1, 27, 10, 5, tzinfo=UTC)
A_UUID = "5f0c8b1e-7c1d-4c47-9e43-1b9a2f0d3c11"
KNOWN = frozenset({"BTCUSDT", "ETHUSDT"})
MINIMAL: dict[str, object] = {
    "signal_id": "sig-1",
    "signal_type": "sell",
    "asset": "ETHUSDT",
    "amount": 250,
    "confidence": 0.5,
    "timestamp": "2025-01-27T10:00:00Z",
}
_DROP = object()


def counter_ids() -> Callable[[], str]:
    numbers = itertools.count(1)
    return lambda: f"id{next(numbers)}"


def decode(body: bytes, *, headers: Mapping[str, object] | None = None) -> Signal | InvalidSignal:
    return decode_signal(body, headers=headers, is_known_symbol=KNOWN.__contains__, now=NOW, new_id=counter_ids())


def body_with(**changes: object) -> bytes:
    """MINIMAL with fields replaced (``_DROP`` removes one), as JSON bytes."""
    fields = {**MINIMAL, **changes}
    return json.dumps({k: v for k, v in fields.items() if v is not _DROP}).encode()


def valid(body: bytes, **kwargs: object) -> Signal:
    result = decode(body, **kwargs)  # type: ignore[arg-type]
    assert isinstance(result, Signal), getattr(result, "message", result)
    return result


def invalid(body: bytes, **kwargs: object) -> InvalidSignal:
    result = decode(body, **kwargs)  # type: ignore[arg-type]
    assert isinstance(result, InvalidSignal), result
    return result


# --- valid signals -------------------------------------------------------------------------


def test_quickstart_example_decodes() -> None:
    signal = valid(QUICKSTART)
    assert signal == Signal(
        signal_id="test-signal-001",
        side=Side.BUY,
        asset="BTCUSDT",
        amount=Decimal("1000.0"),
        confidence=Decimal("0.85"),
        timestamp=datetime(2025, 1, 27, 10, 0, tzinfo=timezone.utc),
        trace_id="test-trace-001",
        strategy_id="test-strategy",
        model_version=None,
        is_warmup=True,
        market=MarketSnapshot(
            price=Decimal("50000.0"),
            spread=Decimal("1.5"),
            volume_24h=Decimal("1000000.0"),
            volatility=Decimal("0.02"),
        ),
        urgent=False,
    )
    assert str(signal.amount) == "1000.0"  # exact, never through float
    assert signal.payload == json.loads(QUICKSTART, parse_float=Decimal)


def test_an_old_timestamp_is_no_reason_to_refuse_a_body() -> None:
    # Age is the symbol actor's rule (stale_signal, contract §15), not the body's.
    much_later = datetime(2030, 1, 1, tzinfo=timezone.utc)
    result = decode_signal(QUICKSTART, headers=None, is_known_symbol=KNOWN.__contains__, now=much_later)
    assert isinstance(result, Signal)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"trace_id": "from-header"}, "from-header"),
        ({"trace_id": b"from-bytes-header"}, "from-bytes-header"),
        ({"trace_id": ""}, "test-trace-001"),  # unusable header: the body's
        ({"trace_id": "h" * 101}, "test-trace-001"),
        ({"trace_id": 42}, "test-trace-001"),
        ({"trace_id": b"\xff"}, "test-trace-001"),
        ({"other": "x"}, "test-trace-001"),
        (None, "test-trace-001"),
    ],
)
def test_trace_id_header_wins_over_body(headers: Mapping[str, object] | None, expected: str) -> None:
    assert valid(QUICKSTART, headers=headers).trace_id == expected


@pytest.mark.parametrize("body_trace", [_DROP, None, ""])
def test_trace_id_generated_when_absent(body_trace: object) -> None:
    assert valid(body_with(trace_id=body_trace)).trace_id == "id1"


@pytest.mark.parametrize(
    ("changes", "attribute", "expected"),
    [
        ({"amount": "250.50"}, "amount", Decimal("250.50")),
        ({"amount": "1e3"}, "amount", Decimal("1000")),
        ({"amount": 1000}, "amount", Decimal(1000)),
        ({"amount": 0.0001}, "amount", Decimal("0.0001")),
        ({"signal_type": "BUY"}, "side", Side.BUY),
        ({"signal_type": "Sell"}, "side", Side.SELL),
        ({"signal_type": "sElL"}, "side", Side.SELL),
        ({"asset": "btcusdt"}, "asset", "BTCUSDT"),
        ({"asset": "EthUsdt"}, "asset", "ETHUSDT"),
        ({"confidence": 0}, "confidence", Decimal(0)),
        ({"confidence": 1}, "confidence", Decimal(1)),
        ({"confidence": 1.0}, "confidence", Decimal("1.0")),
        ({"timestamp": "2025-01-27T12:00:00+02:00"}, "timestamp", datetime(2025, 1, 27, 10, tzinfo=UTC)),
        ({"timestamp": "2025-01-27T10:00:00.123Z"}, "timestamp", datetime(2025, 1, 27, 10, 0, 0, 123000, UTC)),
        ({"signal_id": "a" * 100}, "signal_id", "a" * 100),
        ({"signal_id": A_UUID}, "signal_id", A_UUID),
        ({"signal_id": "сигнал №1"}, "signal_id", "сигнал №1"),
        ({"strategy_id": "s" * 100}, "strategy_id", "s" * 100),
        ({"strategy_id": None}, "strategy_id", None),
        ({"model_version": "v2.1"}, "model_version", "v2.1"),
        ({"is_warmup": False}, "is_warmup", False),
        ({"is_warmup": None}, "is_warmup", False),
        ({}, "is_warmup", False),
        ({}, "market", None),
        ({"market_data_snapshot": None}, "market", None),
        ({"market_data_snapshot": {}}, "market", MarketSnapshot()),
        ({"market_data_snapshot": {"spread": 0, "price": None}}, "market", MarketSnapshot(spread=Decimal(0))),
        ({"metadata": {"urgency": True}}, "urgent", True),
        ({"metadata": {"urgency": "true"}}, "urgent", False),
        ({"metadata": {"urgency": 1}}, "urgent", False),
        ({"metadata": None}, "urgent", False),
        ({}, "urgent", False),
    ],
)
def test_valid_field_values(changes: dict[str, object], attribute: str, expected: object) -> None:
    assert getattr(valid(body_with(**changes)), attribute) == expected


def test_timestamp_is_aware() -> None:
    timestamp = valid(body_with(timestamp="2025-01-27T05:00:00-05:00")).timestamp
    assert timestamp.utcoffset() == timedelta(hours=-5)


def test_unknown_fields_are_kept_in_payload() -> None:
    signal = valid(body_with(extra={"anything": [1, 2.5]}))
    assert signal.payload["extra"] == {"anything": [1, Decimal("2.5")]}


def test_byte_order_mark_is_tolerated() -> None:
    assert valid(b"\xef\xbb\xbf" + body_with()).signal_id == "sig-1"


# --- refused bodies ------------------------------------------------------------------------

REQUIRED = ["signal_id", "signal_type", "asset", "amount", "confidence", "timestamp"]
SIGNAL_ID = "signal_id must be a string of 1–100 characters"
SIGNAL_TYPE = 'signal_type must be "buy" or "sell"'
ASSET = "asset must be a symbol of letters and digits, such as BTCUSDT"
AMOUNT = "amount must be a number or numeric string greater than 0"
LIMITS = "must be below 1E+30 with at most 30 decimal places"
CONFIDENCE = "confidence must be a number from 0 to 1"
ISO = "timestamp must be an ISO 8601 date-time with 'Z' or a UTC offset"
NAIVE = "timestamp must include 'Z' or a UTC offset"
TEXT_100 = "must be a string of at most 100 characters"
SNAPSHOT = "market_data_snapshot"
NON_NEGATIVE = "must be a number greater than or equal to 0"


def case(name: str, changes: dict[str, object], field: str, rule: str, message: str) -> object:
    return pytest.param(changes, Problem(field, rule, message), id=name)


BAD_FIELDS = [
    *[case(f"{f} missing", {f: _DROP}, f, "required", f"{f} is required (missing)") for f in REQUIRED],
    *[case(f"{f} null", {f: None}, f, "required", f"{f} is required (got null)") for f in REQUIRED],
    case("signal_id too long", {"signal_id": "x" * 101}, "signal_id", "length",
         f'{SIGNAL_ID} (got 101 characters: "{"x" * 58}…)'),
    case("signal_id empty", {"signal_id": ""}, "signal_id", "length", f'{SIGNAL_ID} (got 0 characters: "")'),
    case("signal_id number", {"signal_id": 123}, "signal_id", "type", f"{SIGNAL_ID} (got 123)"),
    case("signal_id NUL", {"signal_id": "a\x00b"}, "signal_id", "format",
         "signal_id must not contain NUL characters or unpaired surrogates"),
    case("signal_type hold", {"signal_type": "hold"}, "signal_type", "format", f'{SIGNAL_TYPE} (got "hold")'),
    case("signal_type padded", {"signal_type": " buy"}, "signal_type", "format", f'{SIGNAL_TYPE} (got " buy")'),
    case("signal_type number", {"signal_type": 1}, "signal_type", "type", f"{SIGNAL_TYPE} (got 1)"),
    case("asset unknown", {"asset": "dogeusdt"}, "asset", "unknown_symbol",
         'asset must be a symbol the venue lists as trading (got "DOGEUSDT")'),
    case("asset with space", {"asset": "BTC USDT"}, "asset", "format", f'{ASSET} (got "BTC USDT")'),
    # A long s upper-cases to S: refused rather than silently mapped onto BTCUSDT.
    case("asset non-ascii", {"asset": "btcuſdt"}, "asset", "format", f'{ASSET} (got "btcuſdt")'),
    case("asset list", {"asset": ["BTCUSDT"]}, "asset", "type", f"{ASSET} (got an array of 1 items)"),
    case("amount abc", {"amount": "abc"}, "amount", "type", f'{AMOUNT} (got "abc")'),
    case("amount true", {"amount": True}, "amount", "type", f"{AMOUNT} (got true)"),
    case("amount object", {"amount": {"v": 1}}, "amount", "type", f"{AMOUNT} (got an object)"),
    case("amount NaN string", {"amount": "NaN"}, "amount", "type", f'{AMOUNT} (got "NaN")'),
    case("amount Infinity string", {"amount": "Infinity"}, "amount", "type", f'{AMOUNT} (got "Infinity")'),
    case("amount underscores", {"amount": "1_000"}, "amount", "type", f'{AMOUNT} (got "1_000")'),
    case("amount padded", {"amount": " 5"}, "amount", "type", f'{AMOUNT} (got " 5")'),
    case("amount negative", {"amount": -5}, "amount", "range", f"{AMOUNT} (got -5)"),
    case("amount zero", {"amount": 0}, "amount", "range", f"{AMOUNT} (got 0)"),
    case("amount zero string", {"amount": "0.00"}, "amount", "range", f'{AMOUNT} (got "0.00")'),
    case("amount negative string", {"amount": "-1.5"}, "amount", "range", f'{AMOUNT} (got "-1.5")'),
    case("amount huge", {"amount": "1e40"}, "amount", "range", f'amount {LIMITS} (got "1e40")'),
    case("amount huge exponent", {"amount": "1e9999999999999999999"}, "amount", "type",
         f'{AMOUNT} (got "1e9999999999999999999")'),
    case("amount too precise", {"amount": "0." + "0" * 30 + "1"}, "amount", "range",
         f'amount {LIMITS} (got "0.{"0" * 30}1")'),
    case("confidence high", {"confidence": "high"}, "confidence", "type", f'{CONFIDENCE} (got "high")'),
    case("confidence string", {"confidence": "0.5"}, "confidence", "type", f'{CONFIDENCE} (got "0.5")'),
    case("confidence 1.5", {"confidence": 1.5}, "confidence", "range", f"{CONFIDENCE} (got 1.5)"),
    case("confidence -0.1", {"confidence": -0.1}, "confidence", "range", f"{CONFIDENCE} (got -0.1)"),
    case("confidence false", {"confidence": False}, "confidence", "type", f"{CONFIDENCE} (got false)"),
    case("timestamp naive", {"timestamp": "2025-01-27T10:00:00"}, "timestamp", "format",
         f'{NAIVE} (got "2025-01-27T10:00:00")'),
    case("timestamp date only", {"timestamp": "2025-01-27"}, "timestamp", "format", f'{NAIVE} (got "2025-01-27")'),
    case("timestamp garbage", {"timestamp": "yesterday"}, "timestamp", "format", f'{ISO} (got "yesterday")'),
    case("timestamp bad date", {"timestamp": "2025-02-30T10:00:00Z"}, "timestamp", "format",
         f'{ISO} (got "2025-02-30T10:00:00Z")'),
    case("timestamp epoch number", {"timestamp": 1737972000}, "timestamp", "type", f"{ISO} (got 1737972000)"),
    case("strategy_id too long", {"strategy_id": "s" * 101}, "strategy_id", "length",
         f'strategy_id {TEXT_100} (got 101 characters: "{"s" * 58}…)'),
    case("strategy_id number", {"strategy_id": 7}, "strategy_id", "type", f"strategy_id {TEXT_100} (got 7)"),
    case("model_version number", {"model_version": 2}, "model_version", "type",
         "model_version must be a string (got 2)"),
    case("is_warmup string", {"is_warmup": "yes"}, "is_warmup", "type",
         'is_warmup must be true or false (got "yes")'),
    case("is_warmup number", {"is_warmup": 1}, "is_warmup", "type", "is_warmup must be true or false (got 1)"),
    case("snapshot not object", {SNAPSHOT: "x"}, SNAPSHOT, "type", f'{SNAPSHOT} must be an object (got "x")'),
    case("snapshot price 0", {SNAPSHOT: {"price": 0}}, f"{SNAPSHOT}.price", "range",
         f"{SNAPSHOT}.price must be a number greater than 0 (got 0)"),
    case("snapshot price string", {SNAPSHOT: {"price": "50000"}}, f"{SNAPSHOT}.price", "type",
         f'{SNAPSHOT}.price must be a number greater than 0 (got "50000")'),
    case("snapshot spread -1", {SNAPSHOT: {"price": 50000, "spread": -1}}, f"{SNAPSHOT}.spread", "range",
         f"{SNAPSHOT}.spread {NON_NEGATIVE} (got -1)"),
    case("snapshot volume negative", {SNAPSHOT: {"volume_24h": -0.5}}, f"{SNAPSHOT}.volume_24h", "range",
         f"{SNAPSHOT}.volume_24h {NON_NEGATIVE} (got -0.5)"),
    case("snapshot volatility bool", {SNAPSHOT: {"volatility": True}}, f"{SNAPSHOT}.volatility", "type",
         f"{SNAPSHOT}.volatility {NON_NEGATIVE} (got true)"),
    case("metadata list", {"metadata": []}, "metadata", "type",
         "metadata must be an object (got an array of 0 items)"),
    case("trace_id too long", {"trace_id": "t" * 101}, "trace_id", "length",
         f'trace_id {TEXT_100} (got 101 characters: "{"t" * 58}…)'),
    case("trace_id number", {"trace_id": 9}, "trace_id", "type", f"trace_id {TEXT_100} (got 9)"),
]


@pytest.mark.parametrize(("changes", "problem"), BAD_FIELDS)
def test_bad_field(changes: dict[str, object], problem: Problem) -> None:
    result = invalid(body_with(**changes))
    assert result.code == "validation_failed"
    assert result.problems == (problem,)
    assert result.message == problem.message
    assert len(problem.message) < 200


NOT_JSON = "body is not valid JSON"
BAD_BODIES = [
    pytest.param(b"not json", "invalid_json", f"{NOT_JSON} (Expecting value at line 1 column 1)", id="not json"),
    pytest.param(b"", "invalid_json", f"{NOT_JSON} (Expecting value at line 1 column 1)", id="empty"),
    pytest.param(b'{"signal_id": "a"', "invalid_json", f"{NOT_JSON} (Expecting ',' delimiter at line 1 column 18)",
                 id="truncated"),
    pytest.param(b'{"a": "\xff"}', "invalid_json", "body is not valid UTF-8 (invalid start byte at byte 7)",
                 id="not utf-8"),
    pytest.param(b"[1, 2]", "not_object", "body must be a JSON object (got an array of 2 items)", id="JSON array"),
    pytest.param(b'"buy BTCUSDT"', "not_object", 'body must be a JSON object (got "buy BTCUSDT")', id="JSON string"),
    pytest.param(b"42", "not_object", "body must be a JSON object (got 42)", id="JSON number"),
    pytest.param(b"null", "not_object", "body must be a JSON object (got null)", id="JSON null"),
]


@pytest.mark.parametrize(("body", "code", "message"), BAD_BODIES)
def test_bad_body(body: bytes, code: str, message: str) -> None:
    result = invalid(body)
    expected_rule = "not_json" if code == "invalid_json" else code
    assert (result.code, result.problems) == (code, (Problem("body", expected_rule, message),))
    assert result.signal_id == "invalid:id1"
    assert result.trace_id == "id2"
    assert result.payload is None
    assert result.asset is None
    assert result.body_size == len(body)


def test_deeply_nested_body_is_refused_not_a_crash() -> None:
    result = invalid(b"[" * 50_000)
    assert result.code == "invalid_json"
    assert result.problems == (Problem("body", "too_deep", "body is nested more than 32 levels deep"),)


# --- hardening: what a fuzzer and a careless producer sent (issue 12) ---------------------


def with_raw(field: str, literal: str) -> bytes:
    """MINIMAL with ``field`` set to a raw JSON literal (json.dumps cannot write most of them)."""
    return body_with(**{field: "@@"}).replace(b'"@@"', literal.encode())


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_a_non_json_number_literal_names_its_field(literal: str) -> None:
    result = invalid(with_raw("amount", literal))
    assert result.problems == (Problem("amount", "type", f"{AMOUNT} (got {literal}, which is not a JSON number)"),)
    assert result.signal_id == "sig-1" and result.payload is None  # jsonb cannot hold it: the text is kept
    assert literal in result.raw_text


def test_a_non_json_number_in_a_field_without_rules_is_named_by_its_path() -> None:
    result = invalid(with_raw("metadata", '{"scores": [0.5, NaN]}'))
    assert result.problems == (
        Problem("metadata.scores[1]", "type", "metadata.scores[1] must be a JSON number (got NaN, which is not a "
                                              "JSON number)"),
    )  # fmt: skip


def test_an_exponent_beyond_decimal_names_its_field() -> None:
    result = invalid(with_raw("amount", "1.0e9999999999999999999"))
    assert result.problems == (
        Problem("amount", "type", f"{AMOUNT} (got 1.0e9999999999999999999, beyond any number we can hold)"),
    )


@pytest.mark.parametrize("digits", [4301, 5000])
def test_an_amount_of_thousands_of_digits_names_its_field(digits: int) -> None:
    result = invalid(with_raw("amount", "1" * digits))
    assert result.problems == (Problem("amount", "range", f'amount {LIMITS} (got {"1" * 59}…)'),)


@pytest.mark.parametrize("depth", [33, 1000, 5000])
def test_deep_nesting_names_the_field_and_keeps_the_signal_id(depth: int) -> None:
    result = invalid(with_raw("features", "[" * depth + "]" * depth))  # an unknown field, kept as sent
    assert result.problems == (Problem("features", "too_deep", "features is nested more than 32 levels deep"),)
    assert (result.signal_id, result.asset, result.payload) == ("sig-1", "ETHUSDT", None)


def test_nesting_up_to_the_limit_is_accepted() -> None:
    depth = 31  # the body itself is the first level
    assert valid(with_raw("features", "[" * depth + "]" * depth)).payload["features"] is not None


def test_a_key_given_twice_is_refused_naming_it() -> None:
    twice = b'"signal_type": "sell", "signal_type": "buy"'
    body = body_with(signal_type="sell").replace(b'"signal_type": "sell"', twice)
    result = invalid(body)
    assert result.problems == (
        Problem("signal_type", "duplicate_key", "signal_type is given more than once; each field may appear once"),
    )
    assert result.signal_id == "sig-1" and result.payload is None  # the raw text keeps both values
    assert b'"signal_type": "buy"' in result.raw_text.encode()


def test_a_nested_key_given_twice_is_named_by_its_path() -> None:
    result = invalid(with_raw(SNAPSHOT, '{"price": 50000, "price": 5}'))
    assert [(p.field, p.rule) for p in result.problems] == [(f"{SNAPSHOT}.price", "duplicate_key")]


def test_a_signal_id_given_twice_files_the_message_under_a_new_id() -> None:
    body = body_with().replace(b'"signal_id": "sig-1"', b'"signal_id": "sig-1", "signal_id": "sig-2"')
    result = invalid(body)
    assert result.signal_id.startswith("invalid:") and result.problems[0].field == "signal_id"


def test_a_timestamp_from_the_future_is_refused() -> None:
    result = invalid(body_with(timestamp="9999-12-31T23:59:59Z"))
    (problem,) = result.problems
    assert (problem.field, problem.rule) == ("timestamp", "timestamp_in_future")
    assert problem.message.startswith(
        'timestamp must not be more than 5 s ahead of the service\'s clock (got "9999-12-31T23:59:59Z", ')


def test_a_timestamp_a_few_seconds_ahead_is_clock_skew_and_passes() -> None:
    assert valid(body_with(timestamp="2025-01-27T10:05:05Z")).signal_id == "sig-1"
    assert invalid(body_with(timestamp="2025-01-27T10:05:06Z")).problems[0].rule == "timestamp_in_future"


def test_one_megabyte_body_is_too_large_without_parsing() -> None:
    body = b'{"signal_id": "big", "pad": "' + b"x" * (1024 * 1024) + b'"}'
    result = invalid(body, headers={"trace_id": "t-big"})
    assert result.code == "too_large"
    assert result.problems == (
        Problem("body", "too_large", f"body is {len(body)} bytes, over the limit of 65536 bytes"),
    )
    assert len(result.raw_text) == MAX_BODY_BYTES == 65536
    assert result.raw_text == body[:65536].decode()
    assert result.body_size == len(body)
    assert result.signal_id == "invalid:id1"  # not parsed, so its signal_id is not used
    assert result.trace_id == "t-big"
    assert result.payload is None


def test_body_of_exactly_the_limit_is_parsed() -> None:
    body = body_with(pad="")
    body = body_with(pad="x" * (MAX_BODY_BYTES - len(body)))
    assert len(body) == MAX_BODY_BYTES
    assert isinstance(valid(body), Signal)


def test_several_bad_fields_are_all_reported_in_order() -> None:
    body = body_with(
        signal_type="hold",
        asset=_DROP,
        amount=-1,
        confidence=1.5,
        timestamp="2025-01-27T10:00:00",
        market_data_snapshot={"price": 0, "spread": -1},
    )
    result = invalid(body)
    assert result.code == "validation_failed"
    assert [(p.field, p.rule) for p in result.problems] == [
        ("signal_type", "format"),
        ("asset", "required"),
        ("amount", "range"),
        ("confidence", "range"),
        ("timestamp", "format"),
        ("market_data_snapshot.price", "range"),
        ("market_data_snapshot.spread", "range"),
    ]
    assert result.message == "; ".join(p.message for p in result.problems)
    assert result.signal_id == "sig-1"  # usable, so kept
    assert result.payload == json.loads(body, parse_float=Decimal)
    assert result.raw_text == body.decode()
    assert result.body_size == len(body)


def test_empty_object_reports_every_required_field() -> None:
    result = invalid(b"{}")
    assert result.problems == tuple(Problem(f, "required", f"{f} is required (missing)") for f in REQUIRED)
    assert (result.code, result.signal_id, result.payload) == ("validation_failed", "invalid:id2", {})


@pytest.mark.parametrize(
    ("signal_id", "expected"),
    [
        ("sig-1", "sig-1"),
        (_DROP, "invalid:id2"),  # id1 went to the trace id
        ("", "invalid:id2"),
        ("x" * 101, "invalid:id2"),
        (17, "invalid:id2"),
        ("a\x00b", "invalid:id2"),
    ],
)
def test_invalid_signal_id_gets_generated_when_unusable(signal_id: object, expected: str) -> None:
    assert invalid(body_with(signal_id=signal_id, amount=0)).signal_id == expected


@pytest.mark.parametrize(("asset", "expected"), [("ethusdt", "ETHUSDT"), ("DOGEUSDT", None), (5, None)])
def test_invalid_signal_carries_asset_when_known(asset: object, expected: str | None) -> None:
    assert invalid(body_with(asset=asset, amount=0)).asset == expected


@pytest.mark.parametrize(
    ("headers", "body_trace", "expected"),
    [
        ({"trace_id": b"hdr"}, "body-trace", "hdr"),
        (None, "body-trace", "body-trace"),
        (None, "t" * 101, "id1"),
        (None, _DROP, "id1"),
    ],
)
def test_invalid_signal_trace_id(headers: Mapping[str, object] | None, body_trace: object, expected: str) -> None:
    assert invalid(body_with(trace_id=body_trace, amount=0), headers=headers).trace_id == expected


def test_unstorable_text_anywhere_is_refused_and_payload_dropped() -> None:
    result = invalid(body_with(metadata={"note\u0000": "x"}))
    assert result.problems == (
        Problem("body", "format",
                "body must not contain NUL characters or unpaired surrogates in any string (cannot be stored)"),
    )
    assert result.payload is None  # cannot go into jsonb; raw_text keeps the escaped form
    assert "\\u0000" in result.raw_text


def test_lone_surrogate_is_escaped_in_messages() -> None:
    result = invalid(body_with(signal_type="\ud800"))
    assert [(p.field, p.rule) for p in result.problems] == [("signal_type", "format"), ("body", "format")]
    assert result.problems[0].message == 'signal_type must be "buy" or "sell" (got "\\ud800")'
    result.message.encode("utf-8")  # loggable


def test_unstorable_text_in_a_checked_field_is_reported_once() -> None:
    result = invalid(body_with(strategy_id="a\x00b"))
    assert result.problems == (
        Problem("strategy_id", "format", "strategy_id must not contain NUL characters or unpaired surrogates"),
    )
    assert result.payload is None


def test_raw_text_replaces_bad_bytes_and_nul() -> None:
    result = invalid(b"\xff{\x00}")
    assert result.raw_text == "\ufffd{\ufffd}"
    assert result.body_size == 4


def test_long_values_are_cut_in_messages() -> None:
    result = invalid(body_with(asset="Z" * 500))
    (problem,) = result.problems
    assert problem.message.endswith('(got "' + "Z" * 58 + "…)")
