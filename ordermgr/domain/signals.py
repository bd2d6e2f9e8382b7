"""Decoding and validation of model-service trading signals (contract §3.1).

``decode_signal`` turns one message body into either a ``Signal`` or an ``InvalidSignal``
that carries every reason the message was refused (one ``Problem`` per bad field), the raw
body and enough identity (signal id, trace id, asset) to store, log and answer it. Pure and
synchronous: no I/O, no clock (``now`` is given, to refuse timestamps from the future), no
exceptions for bad input. A signal's age is not a rule of its body: the symbol actor refuses one
that has grown too old (``stale_signal``, contract §15), whether it got old before it arrived or
while it waited here.
"""

from __future__ import annotations

import collections
import hashlib
import json
import re
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Final, NoReturn, TypeVar

import attrs

from ordermgr.domain.model import MarketSnapshot, Side, Signal

__all__ = ["MAX_BODY_BYTES", "MAX_CLOCK_SKEW", "MAX_DEPTH", "InvalidSignal", "Problem", "decode_signal",
           "reused_signal_id"]

MAX_BODY_BYTES: Final = 64 * 1024

_MAX_ID_CHARS: Final = 100
# Numbers must fit a PostgreSQL NUMERIC column and Decimal arithmetic comfortably.
_MAX_MAGNITUDE: Final = Decimal("1e30")
_MAX_PLACES: Final = 30
_SHOW_CHARS: Final = 60
# How far a signal's timestamp may be ahead of our clock: clocks differ a little, a signal from
# the future does not exist (and would pass any age limit).
MAX_CLOCK_SKEW: Final = timedelta(seconds=5)
# Nesting beyond this is refused (naming the field): far more than any signal needs, and far
# below where Python's JSON parser and encoder run out of stack.
MAX_DEPTH: Final = 32

_NUMERIC = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", re.ASCII)
_SYMBOL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,49}", re.ASCII)
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")  # NUL and lone surrogates: not storable as text/jsonb
_UNSTORABLE_RULE: Final = "must not contain NUL characters or unpaired surrogates"


class _Missing:
    """Marks a field that is absent from the body (as opposed to ``null``)."""


_MISSING: Final = _Missing()
_T = TypeVar("_T")


@attrs.frozen
class Problem:
    """One bad field: where (``field``), which rule (machine code) and a plain sentence."""

    field: str
    rule: str
    message: str


@attrs.frozen
class InvalidSignal:
    """A message that is not a usable signal; stored, logged, answered and acked."""

    signal_id: str
    code: str  # "invalid_json" | "not_object" | "too_large" | "validation_failed"
    problems: tuple[Problem, ...]
    raw_text: str
    body_size: int
    payload: Mapping[str, object] | None
    trace_id: str
    asset: str | None = None

    @property
    def message(self) -> str:
        return "; ".join(problem.message for problem in self.problems)


def reused_signal_id(signal_id: str, body: bytes) -> str:
    """Where a second, different signal under a known ``signal_id`` is filed. The same body
    always gets the same id, so its redeliveries are counted, not answered again."""
    digest = hashlib.sha256(signal_id.encode("utf-8", "surrogatepass") + b"\0" + body).hexdigest()
    return f"reused:{digest[:32]}"


def _new_id() -> str:
    return uuid.uuid4().hex


def decode_signal(
    body: bytes,
    *,
    headers: Mapping[str, object] | None,
    is_known_symbol: Callable[[str], bool],
    now: datetime,
    new_id: Callable[[], str] = _new_id,
) -> Signal | InvalidSignal:
    """Decode one message body. ``now`` (timezone-aware) bounds how far ahead a timestamp may be."""
    header_trace = _header_trace_id(headers)
    if len(body) > MAX_BODY_BYTES:
        problem = Problem(
            "body", "too_large", f"body is {len(body)} bytes, over the limit of {MAX_BODY_BYTES} bytes"
        )
        return _unparsed(body, "too_large", problem, header_trace, new_id)
    parsed = _parse_json(body)
    if isinstance(parsed, Problem):
        return _unparsed(body, "invalid_json", parsed, header_trace, new_id)
    obj = parsed.value
    if not isinstance(obj, dict):
        problem = Problem("body", "not_object", f"body must be a JSON object (got {_show(obj)})")
        return _unparsed(body, "not_object", problem, header_trace, new_id)
    context = _Context(is_known_symbol, now)
    trace_id = header_trace or _usable_id(obj.get("trace_id")) or new_id()
    return _validate(obj, parsed.cut_too_deep, body, trace_id, context, new_id)


# --- body level ----------------------------------------------------------------------------


@attrs.frozen
class _Parsed:
    """A decoded body, and the top-level keys whose too-deep values were left out to read it."""

    value: object
    cut_too_deep: tuple[str, ...] = ()


@attrs.frozen
class _NotANumber:
    """A number literal JSON does not have (NaN, Infinity) or one beyond what Decimal holds:
    kept in place so the field that holds it can be named."""

    text: str


class _Object(dict[str, object]):
    """A JSON object that gave some keys more than once (the last value is kept)."""

    duplicates: tuple[str, ...] = ()


def _parse_json(body: bytes) -> _Parsed | Problem:
    """The decoded JSON value, or the ``not_json`` problem explaining why there is none."""
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return Problem("body", "not_json", f"body is not valid UTF-8 ({exc.reason} at byte {exc.start})")
    try:
        return _Parsed(_loads(text))
    except json.JSONDecodeError as exc:
        where = f"at line {exc.lineno} column {exc.colno}"
        return Problem("body", "not_json", f"body is not valid JSON ({exc.msg} {where})")
    except RecursionError:
        return _parse_without_deep_values(text)


def _loads(text: str) -> object:
    return _DECODER.decode(text)


def _parse_float(text: str) -> Decimal | _NotANumber:
    try:
        return Decimal(text)
    except InvalidOperation:  # an exponent beyond what Decimal can hold
        return _NotANumber(text)


def _parse_int(text: str) -> int | Decimal:
    # Python refuses to turn more than 4300 digits into an int; Decimal takes any length, and the
    # field's range rule then names the field.
    return int(text) if len(text) <= 1000 else Decimal(text)


def _object(pairs: list[tuple[str, object]]) -> dict[str, object]:
    obj = dict(pairs)
    if len(obj) == len(pairs):
        return obj
    counts = collections.Counter(key for key, _ in pairs)
    repeated = _Object(obj)
    repeated.duplicates = tuple(key for key, count in counts.items() if count > 1)
    return repeated


# Built once: ``json.loads`` with options builds a decoder per call.
_DECODER = json.JSONDecoder(parse_float=_parse_float, parse_int=_parse_int, parse_constant=_NotANumber,
                            object_pairs_hook=_object)  # fmt: skip


def _parse_without_deep_values(text: str) -> _Parsed | Problem:
    """A body too deep for the parser: its top-level values nested beyond MAX_DEPTH are cut
    (and named), so the rest (the signal id above all) can still be read and answered."""
    spans = _deep_top_level_values(text)
    for key, start, end in reversed(spans):
        text = text[:start] + "null" + text[end:]
    try:
        if spans:
            return _Parsed(_loads(text), tuple(key for key, _, _ in spans))
    except (ValueError, RecursionError):
        pass
    return Problem("body", "too_deep", f"body is nested more than {MAX_DEPTH} levels deep")


def _deep_top_level_values(text: str) -> list[tuple[str, int, int]]:
    """(key, start, end) of each value of a top-level object nested more than MAX_DEPTH deep.
    A plain character scan: it runs only for bodies the JSON parser could not descend."""
    spans: list[tuple[str, int, int]] = []
    depth = deepest = start = 0
    in_string = escaped = False
    string_at, last_string, key = 0, "", ""
    for i, char in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string, last_string = False, text[string_at : i + 1]
        elif char == '"':
            in_string, string_at = True, i
        elif char == ":" and depth == 1:
            key = _key_text(last_string)
        elif char in "[{":
            depth += 1
            if depth == 2:
                start, deepest = i, 2
            deepest = max(deepest, depth)
        elif char in "]}":
            if depth == 2 and deepest > MAX_DEPTH:
                spans.append((key, start, i + 1))
            depth -= 1
    return spans


def _key_text(quoted: str) -> str:
    try:
        key = json.loads(quoted)
    except ValueError:
        return quoted
    return key if isinstance(key, str) else quoted


def _unparsed(
    body: bytes, code: str, problem: Problem, header_trace: str | None, new_id: Callable[[], str]
) -> InvalidSignal:
    return InvalidSignal(
        signal_id=f"invalid:{new_id()}",
        code=code,
        problems=(problem,),
        raw_text=_raw_text(body),
        body_size=len(body),
        payload=None,
        trace_id=header_trace or new_id(),
    )


def _raw_text(body: bytes) -> str:
    # NUL cannot be stored in a PostgreSQL text column; replace it like any undecodable byte.
    return body[:MAX_BODY_BYTES].decode("utf-8", errors="replace").replace("\x00", "\ufffd")


def _header_trace_id(headers: Mapping[str, object] | None) -> str | None:
    value = (headers or {}).get("trace_id")
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            return None
    return _usable_id(value)


def _usable_id(value: object) -> str | None:
    """``value`` when it is a storable string of 1–100 characters."""
    if isinstance(value, str) and 0 < len(value) <= _MAX_ID_CHARS and not _UNSTORABLE.search(value):
        return value
    return None


# --- field level ---------------------------------------------------------------------------


@attrs.frozen
class _Context:
    is_known_symbol: Callable[[str], bool]
    now: datetime


@attrs.define
class _Problems:
    """Collects the problems of one body while its fields are read."""

    items: list[Problem] = attrs.field(factory=list)

    def take(self, result: _T | Problem | None) -> _T | None:
        if isinstance(result, Problem):
            self.items.append(result)
            return None
        return result


@attrs.frozen
class _Fields:
    """The fields read from one body; a field is None when absent or bad."""

    problems: tuple[Problem, ...]
    signal_id: str | None
    side: Side | None
    asset: str | None
    amount: Decimal | None
    confidence: Decimal | None
    timestamp: datetime | None
    strategy_id: str | None
    model_version: str | None
    is_warmup: bool
    market: MarketSnapshot | None
    urgent: bool


def _validate(
    obj: dict[str, object], cut_too_deep: tuple[str, ...], body: bytes, trace_id: str, context: _Context,
    new_id: Callable[[], str],
) -> Signal | InvalidSignal:  # fmt: skip
    found = _inspect(obj, cut_too_deep)
    fields = _read_fields(obj, context, found.unstorable)
    problems = fields.problems + _body_problems(found, {problem.field for problem in fields.problems})
    if not problems:
        return _signal(fields, obj, trace_id)
    # A repeated signal_id leaves the id in doubt: it is not used to file the message.
    signal_id = None if "signal_id" in found.duplicates else fields.signal_id
    return InvalidSignal(
        signal_id=signal_id or f"invalid:{new_id()}",
        code="validation_failed",
        problems=problems,
        raw_text=_raw_text(body),
        body_size=len(body),
        # Only a body that jsonb holds as it was sent is kept as an object; otherwise its text.
        payload=None if found.keeps_raw_text_only else obj,
        trace_id=trace_id,
        asset=fields.asset,
    )


def _read_fields(obj: dict[str, object], context: _Context, unstorable: bool) -> _Fields:
    found = _Problems()
    fields = _Fields(
        problems=(),
        signal_id=found.take(_signal_id(_get(obj, "signal_id"))),
        side=found.take(_side(_get(obj, "signal_type"))),
        asset=found.take(_asset(_get(obj, "asset"), context.is_known_symbol)),
        amount=found.take(_amount(_get(obj, "amount"))),
        confidence=found.take(_confidence(_get(obj, "confidence"))),
        timestamp=found.take(_timestamp(_get(obj, "timestamp"), context)),
        strategy_id=found.take(_optional_text("strategy_id", _get(obj, "strategy_id"), _MAX_ID_CHARS)),
        model_version=found.take(_optional_text("model_version", _get(obj, "model_version"), None)),
        is_warmup=found.take(_optional_bool("is_warmup", _get(obj, "is_warmup"))) or False,
        market=_snapshot(_get(obj, "market_data_snapshot"), found),
        urgent=_urgent(found.take(_optional_object("metadata", _get(obj, "metadata")))),
    )
    found.take(_optional_text("trace_id", _get(obj, "trace_id"), _MAX_ID_CHARS))
    if unstorable and not any(_UNSTORABLE_RULE in problem.message for problem in found.items):
        # The text is in a field without rules of its own (metadata, unknown fields, ...).
        message = f"body {_UNSTORABLE_RULE} in any string (cannot be stored)"
        found.items.append(Problem("body", "format", message))
    return attrs.evolve(fields, problems=tuple(found.items))


def _signal(fields: _Fields, obj: dict[str, object], trace_id: str) -> Signal:
    return Signal(
        signal_id=_present(fields.signal_id),
        side=_present(fields.side),
        asset=_present(fields.asset),
        amount=_present(fields.amount),
        confidence=_present(fields.confidence),
        timestamp=_present(fields.timestamp),
        trace_id=trace_id,
        strategy_id=fields.strategy_id,
        model_version=fields.model_version,
        is_warmup=fields.is_warmup,
        market=fields.market,
        urgent=fields.urgent,
        payload=obj,
    )


def _urgent(metadata: dict[str, object] | None) -> bool:
    return metadata is not None and metadata.get("urgency") is True


def _get(obj: Mapping[str, object], name: str) -> object:
    return obj.get(name, _MISSING)


def _present(value: _T | None) -> _T:
    assert value is not None  # guaranteed: a required field that produced no problem
    return value


def _signal_id(value: object) -> str | Problem:
    if isinstance(value, str) and 0 < len(value) <= _MAX_ID_CHARS:
        if _UNSTORABLE.search(value):
            return _unstorable_text("signal_id")
        return value
    return _problem("signal_id", value, f"a string of 1–{_MAX_ID_CHARS} characters", string_rule="length")


def _side(value: object) -> Side | Problem:
    sides = {"buy": Side.BUY, "sell": Side.SELL}
    if isinstance(value, str) and value.lower() in sides:
        return sides[value.lower()]
    return _problem("signal_type", value, '"buy" or "sell"', string_rule="format")


def _asset(value: object, is_known_symbol: Callable[[str], bool]) -> str | Problem:
    if not (isinstance(value, str) and _SYMBOL.fullmatch(value)):
        wanted = "a symbol of letters and digits, such as BTCUSDT"
        return _problem("asset", value, wanted, string_rule="format")
    symbol = value.upper()
    if not is_known_symbol(symbol):
        message = f"asset must be a symbol the venue lists as trading (got {_show(symbol)})"
        return Problem("asset", "unknown_symbol", message)
    return symbol


def _amount(value: object) -> Decimal | Problem:
    wanted = "a number or numeric string greater than 0"
    return _number("amount", value, wanted, minimum=Decimal(0), strict=True, strings=True)


def _confidence(value: object) -> Decimal | Problem:
    return _number("confidence", value, "a number from 0 to 1", minimum=Decimal(0), maximum=Decimal(1))


def _timestamp(value: object, context: _Context) -> datetime | Problem:
    wanted = "an ISO 8601 date-time with 'Z' or a UTC offset"
    if not isinstance(value, str):
        return _problem("timestamp", value, wanted)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return Problem("timestamp", "format", f"timestamp must be {wanted} (got {_show(value)})")
    if parsed.utcoffset() is None:
        message = f"timestamp must include 'Z' or a UTC offset (got {_show(value)})"
        return Problem("timestamp", "format", message)
    return _not_in_future(parsed, value, context)


def _not_in_future(parsed: datetime, text: str, context: _Context) -> datetime | Problem:
    ahead = parsed - context.now
    if ahead > MAX_CLOCK_SKEW:
        return Problem(
            "timestamp",
            "timestamp_in_future",
            f"timestamp must not be more than {MAX_CLOCK_SKEW.total_seconds():g} s ahead of the service's clock "
            f"(got {_show(text)}, {ahead.total_seconds():.0f} s ahead)",
        )
    return parsed


def _optional_text(field: str, value: object, max_chars: int | None) -> str | None | Problem:
    if value is _MISSING or value is None:
        return None
    wanted = "a string" if max_chars is None else f"a string of at most {max_chars} characters"
    if not isinstance(value, str) or (max_chars is not None and len(value) > max_chars):
        return _problem(field, value, wanted, string_rule="length")
    if _UNSTORABLE.search(value):
        return _unstorable_text(field)
    return value


def _optional_bool(field: str, value: object) -> bool | None | Problem:
    if value is _MISSING or value is None or isinstance(value, bool):
        return value if isinstance(value, bool) else None
    return _problem(field, value, "true or false")


def _optional_object(field: str, value: object) -> dict[str, object] | None | Problem:
    if value is _MISSING or value is None:
        return None
    if isinstance(value, dict):
        return value
    return _problem(field, value, "an object")


def _snapshot(value: object, found: _Problems) -> MarketSnapshot | None:
    snapshot = found.take(_optional_object("market_data_snapshot", value))
    if snapshot is None:
        return None
    zero = Decimal(0)

    def number(name: str, wanted: str, *, strict: bool) -> Decimal | None:
        item = snapshot.get(name, _MISSING)
        if item is _MISSING or item is None:
            return None
        return found.take(_number(f"market_data_snapshot.{name}", item, wanted, minimum=zero, strict=strict))

    return MarketSnapshot(
        price=number("price", "a number greater than 0", strict=True),
        spread=number("spread", "a number greater than or equal to 0", strict=False),
        volume_24h=number("volume_24h", "a number greater than or equal to 0", strict=False),
        volatility=number("volatility", "a number greater than or equal to 0", strict=False),
    )


def _number(
    field: str,
    value: object,
    wanted: str,
    *,
    minimum: Decimal,
    maximum: Decimal | None = None,
    strict: bool = False,
    strings: bool = False,
) -> Decimal | Problem:
    """``value`` as a Decimal within [minimum, maximum] (``strict``: above minimum)."""
    number = _to_decimal(value, strings=strings)
    if number is None:
        return _problem(field, value, wanted)
    below = number <= minimum if strict else number < minimum
    if below or (maximum is not None and number > maximum):
        return Problem(field, "range", f"{field} must be {wanted} (got {_show(value)})")
    if abs(number) >= _MAX_MAGNITUDE or _places(number) > _MAX_PLACES:
        limits = f"below {_MAX_MAGNITUDE:.0E} with at most {_MAX_PLACES} decimal places"
        return Problem(field, "range", f"{field} must be {limits} (got {_show(value)})")
    return number


def _to_decimal(value: object, *, strings: bool) -> Decimal | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, Decimal)):
        number = Decimal(value)
        return number if number.is_finite() else None
    if strings and isinstance(value, str) and _NUMERIC.fullmatch(value):
        try:
            return Decimal(value)
        except InvalidOperation:  # an exponent beyond what Decimal can hold
            return None
    return None


def _places(number: Decimal) -> int:
    exponent = number.as_tuple().exponent
    return -exponent if isinstance(exponent, int) and exponent < 0 else 0


# --- messages ------------------------------------------------------------------------------


def _problem(field: str, value: object, wanted: str, *, string_rule: str = "type") -> Problem:
    """The problem for a value that is missing, null, of the wrong type, or a string of the
    wrong shape (then the rule is ``string_rule``: "format" or "length")."""
    if value is _MISSING:
        return Problem(field, "required", f"{field} is required (missing)")
    if value is None:
        return Problem(field, "required", f"{field} is required (got null)")
    if isinstance(value, str) and string_rule == "length":
        got = f"{len(value)} characters: {_show(value)}"
        return Problem(field, "length", f"{field} must be {wanted} (got {got})")
    rule = string_rule if isinstance(value, str) else "type"
    return Problem(field, rule, f"{field} must be {wanted} (got {_show(value)})")


def _unstorable_text(field: str) -> Problem:
    return Problem(field, "format", f"{field} {_UNSTORABLE_RULE}")


def _show(value: object) -> str:
    """A short JSON-like rendering of an offending value, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, Decimal)):
        return _cut(str(value))
    if isinstance(value, str):
        # Control characters come out escaped; unpaired surrogates are escaped by hand.
        quoted = json.dumps(value, ensure_ascii=False).encode("utf-8", "backslashreplace")
        return _cut(quoted.decode("utf-8"))
    if isinstance(value, _NotANumber):
        if value.text.lstrip("-") in ("NaN", "Infinity"):
            return f"{value.text}, which is not a JSON number"
        return f"{_cut(value.text)}, beyond any number we can hold"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return f"an array of {len(value)} items"
    return _cut(type(value).__name__)


def _cut(text: str) -> str:
    return text if len(text) <= _SHOW_CHARS else text[: _SHOW_CHARS - 1] + "…"


@attrs.frozen
class _Findings:
    """What a walk over the whole body found, wherever it is (fields with rules or not)."""

    unstorable: bool  # a NUL or an unpaired surrogate in a key or string
    not_numbers: tuple[tuple[str, _NotANumber], ...]  # (path, literal)
    duplicates: tuple[str, ...]  # paths of keys given more than once
    too_deep: tuple[str, ...]  # top-level keys whose value nests beyond MAX_DEPTH

    @property
    def keeps_raw_text_only(self) -> bool:
        return self.unstorable or bool(self.not_numbers or self.duplicates or self.too_deep)


def _inspect(obj: dict[str, object], cut_too_deep: tuple[str, ...]) -> _Findings:
    """One iterative walk (no recursion, whatever the depth) over every key and value."""
    unstorable = False
    not_numbers: list[tuple[str, _NotANumber]] = []
    duplicates: list[str] = []
    too_deep = dict.fromkeys(cut_too_deep)
    pending: list[tuple[object, str, int, str]] = [(obj, "", 1, "")]  # (item, path, depth, top-level key)
    while pending:
        item, path, depth, top = pending.pop()
        if isinstance(item, str):
            unstorable = unstorable or bool(_UNSTORABLE.search(item))
        elif isinstance(item, _NotANumber):
            not_numbers.append((path or "body", item))
        elif isinstance(item, dict | list):
            if depth > MAX_DEPTH:
                too_deep[top or "body"] = None
                continue
            if isinstance(item, _Object):
                duplicates.extend(f"{path}.{key}" if path else key for key in item.duplicates)
            children = item.items() if isinstance(item, dict) else ((f"[{i}]", v) for i, v in enumerate(item))
            for key, value in children:
                unstorable = unstorable or bool(_UNSTORABLE.search(key))
                child = f"{path}{key}" if key.startswith("[") else f"{path}.{key}" if path else key
                pending.append((value, child, depth + 1, top or key))
    return _Findings(unstorable, tuple(reversed(not_numbers)), tuple(duplicates), tuple(too_deep))


def _body_problems(found: _Findings, named: set[str]) -> tuple[Problem, ...]:
    """Problems of the body that the field rules did not already name."""
    problems = [Problem(path, "type", f"{path} must be a JSON number (got {_show(literal)})")
                for path, literal in found.not_numbers if path not in named]  # fmt: skip
    problems += [Problem(path, "duplicate_key", f"{path} is given more than once; each field may appear once")
                 for path in found.duplicates]  # fmt: skip
    problems += [Problem(key, "too_deep", f"{key} is nested more than {MAX_DEPTH} levels deep")
                 for key in found.too_deep]  # fmt: skip
    return tuple(problems)
