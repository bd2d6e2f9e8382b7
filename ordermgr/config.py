"""Configuration from the environment (and a local ``.env``), checked all at once.

``load_config(env)`` is pure: tests pass a dict. Every bad variable yields one line
naming the variable, the value given and what is expected; secrets are never echoed.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from urllib.parse import quote

import attrs

from ordermgr.domain.model import RetryPolicy

ENVIRONMENTS = ("testnet", "mainnet", "paper")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
REST_URLS = {"mainnet": "https://api.bybit.com", "testnet": "https://api-testnet.bybit.com"}
PAPER_KEY, PAPER_SECRET = "paper-key", "paper-secret"


class ConfigError(Exception):
    """One or more variables are invalid; ``problems`` has one line per variable."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@attrs.frozen
class PostgresConfig:
    host: str
    port: int
    db: str
    user: str
    password: str = attrs.field(repr=False)

    @property
    def conninfo(self) -> str:
        return f"host={self.host} port={self.port} dbname={self.db} user={self.user} password={self.password}"


@attrs.frozen
class RabbitConfig:
    host: str
    port: int
    user: str
    password: str = attrs.field(repr=False)
    vhost: str = "/"

    @property
    def url(self) -> str:
        credentials = f"{quote(self.user, safe='')}:{quote(self.password, safe='')}"
        return f"amqp://{credentials}@{self.host}:{self.port}/{quote(self.vhost, safe='')}"


@attrs.frozen
class Config:
    port: int
    api_key: str = attrs.field(repr=False)
    log_level: str
    service_name: str
    bybit_api_key: str = attrs.field(repr=False)
    bybit_api_secret: str = attrs.field(repr=False)
    bybit_environment: str
    bybit_rest_url: str | None
    postgres: PostgresConfig
    rabbitmq: RabbitConfig
    ws_gateway_host: str
    ws_gateway_port: int
    ws_gateway_api_key: str = attrs.field(repr=False)
    dry_run: bool = False
    max_single_order_size: Decimal = Decimal("10000")
    enable_order_splitting: bool = False
    order_execution_timeout_s: float = 30.0
    max_position_size: Decimal = Decimal("1.0")
    max_exposure: Decimal = Decimal("50000")
    max_order_size_ratio: Decimal = Decimal("0.1")
    retry: RetryPolicy = RetryPolicy()
    market_order_confidence_threshold: Decimal = Decimal("0.9")
    market_order_spread_threshold: Decimal = Decimal("0.1")
    limit_order_price_offset_ratio: Decimal = Decimal("0.5")
    position_snapshot_interval_s: float = 300.0
    position_validation_interval_s: float = 3600.0
    signal_max_age_s: float = 0.0
    price_max_age_ms: int = 1000  # the ticker stream's last price serves this long; 0 = REST only
    sync_interval_s: float = 30.0
    limit_order_ttl_s: float = 3600.0
    resubmit_window_s: float = 300.0
    metrics_interval_s: float = 60.0
    prefetch: int = 100
    drain_timeout_s: float = 10.0
    paper_seed: int = 0
    leader_lease_s: float = 5.0
    max_daily_loss: Decimal = Decimal(0)
    halt_after_venue_errors: int = 20
    halt_after_rejections: int = 10

    @property
    def is_paper(self) -> bool:
        return self.bybit_environment == "paper"

    @property
    def rest_url(self) -> str | None:
        """The venue's base URL; None in paper mode until the in-process venue has a port."""
        return self.bybit_rest_url or REST_URLS.get(self.bybit_environment)

    @property
    def ws_gateway_url(self) -> str:
        return f"http://{self.ws_gateway_host}:{self.ws_gateway_port}"


# --- parsers: each returns the value or raises ValueError("what is expected") -------------


def _text(value: str) -> str:
    if not value.strip():
        raise ValueError("a non-empty string")
    return value


def _int_between(low: int, high: int) -> Callable[[str], int]:
    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise ValueError(f"an integer from {low} to {high}") from None
        if not low <= number <= high:
            raise ValueError(f"an integer from {low} to {high}")
        return number

    return parse


def _decimal(low: Decimal, high: Decimal | None = None, *, low_open: bool = False) -> Callable[[str], Decimal]:
    above = f"greater than {low}" if low_open else f"at least {low}"
    expected = f"a number {above}" + (f" and at most {high}" if high is not None else "")

    def parse(value: str) -> Decimal:
        try:
            number = Decimal(value.strip())
        except InvalidOperation:
            raise ValueError(expected) from None
        if not number.is_finite() or number < low or (low_open and number == low):
            raise ValueError(expected)
        if high is not None and number > high:
            raise ValueError(expected)
        return number

    return parse


def _seconds(low_open: bool = True) -> Callable[[str], float]:
    parse_decimal = _decimal(Decimal(0), low_open=low_open)

    def parse(value: str) -> float:
        try:
            return float(parse_decimal(value))
        except ValueError:
            raise ValueError(f"a number of seconds {'greater than 0' if low_open else 'of 0 or more'}") from None

    return parse


def _bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise ValueError("true or false")


def _choice(*choices: str, fold: Callable[[str], str] = str.lower) -> Callable[[str], str]:
    def parse(value: str) -> str:
        folded = fold(value.strip())
        if folded not in choices:
            raise ValueError("one of " + ", ".join(choices))
        return folded

    return parse


def _url(value: str) -> str:
    if not re.fullmatch(r"https?://[^\s/]+(/\S*)?", value.strip()):
        raise ValueError("an http:// or https:// URL")
    return value.strip().rstrip("/")


_PORT = _int_between(1, 65535)


@attrs.frozen
class _Var:
    name: str
    default: str | None  # None = required (unless a rule below supplies one)
    parse: Callable[[str], Any]
    secret: bool = False


_VARS: tuple[_Var, ...] = (
    _Var("ORDER_MANAGER_PORT", "4600", _PORT),
    _Var("ORDER_MANAGER_API_KEY", None, _text, secret=True),
    _Var("ORDER_MANAGER_LOG_LEVEL", "INFO", _choice(*LOG_LEVELS, fold=str.upper)),
    _Var("ORDER_MANAGER_SERVICE_NAME", "order-manager", _text),
    _Var("BYBIT_API_KEY", "", str, secret=True),
    _Var("BYBIT_API_SECRET", "", str, secret=True),
    _Var("BYBIT_ENVIRONMENT", "testnet", _choice(*ENVIRONMENTS)),
    _Var("BYBIT_REST_URL", "", lambda v: _url(v) if v.strip() else None),
    _Var("POSTGRES_HOST", "postgres", _text),
    _Var("POSTGRES_PORT", "5432", _PORT),
    _Var("POSTGRES_DB", "ytrader", _text),
    _Var("POSTGRES_USER", "ytrader", _text),
    _Var("POSTGRES_PASSWORD", "", str, secret=True),
    _Var("RABBITMQ_HOST", "rabbitmq", _text),
    _Var("RABBITMQ_PORT", "5672", _PORT),
    _Var("RABBITMQ_USER", "guest", _text),
    _Var("RABBITMQ_PASSWORD", "guest", str, secret=True),
    _Var("RABBITMQ_VHOST", "/", _text),
    _Var("WS_GATEWAY_HOST", "ws-gateway", _text),
    _Var("WS_GATEWAY_PORT", "4400", _PORT),
    _Var("WS_GATEWAY_API_KEY", "", str, secret=True),
    _Var("ORDERMANAGER_ENABLE_DRY_RUN", "false", _bool),
    _Var("ORDERMANAGER_MAX_SINGLE_ORDER_SIZE", "10000.0", _decimal(Decimal(0), low_open=True)),
    _Var("ORDERMANAGER_ENABLE_ORDER_SPLITTING", "false", _bool),
    _Var("ORDERMANAGER_ORDER_EXECUTION_TIMEOUT", "30", _seconds()),
    _Var("ORDERMANAGER_MAX_POSITION_SIZE", "1.0", _decimal(Decimal(0), low_open=True)),
    _Var("ORDERMANAGER_MAX_EXPOSURE", "50000.0", _decimal(Decimal(0), low_open=True)),
    _Var("ORDERMANAGER_MAX_ORDER_SIZE_RATIO", "0.1", _decimal(Decimal(0), Decimal(1), low_open=True)),
    _Var("ORDERMANAGER_BYBIT_API_RETRY_MAX_ATTEMPTS", "3", _int_between(1, 100)),
    _Var("ORDERMANAGER_BYBIT_API_RETRY_BASE_DELAY", "1.0", _seconds(low_open=False)),
    _Var("ORDERMANAGER_BYBIT_API_RETRY_MAX_DELAY", "30.0", _seconds(low_open=False)),
    _Var("ORDERMANAGER_BYBIT_API_RETRY_MULTIPLIER", "2.0", _decimal(Decimal(1))),
    _Var("ORDERMANAGER_MARKET_ORDER_CONFIDENCE_THRESHOLD", "0.9", _decimal(Decimal(0), Decimal(1))),
    _Var("ORDERMANAGER_MARKET_ORDER_SPREAD_THRESHOLD", "0.1", _decimal(Decimal(0))),
    _Var("ORDERMANAGER_LIMIT_ORDER_PRICE_OFFSET_RATIO", "0.5", _decimal(Decimal(0))),
    _Var("ORDERMANAGER_POSITION_SNAPSHOT_INTERVAL", "300", _seconds()),
    _Var("ORDERMANAGER_POSITION_VALIDATION_INTERVAL", "3600", _seconds()),
    _Var("ORDERMANAGER_SIGNAL_MAX_AGE_SECONDS", "0", _seconds(low_open=False)),
    _Var("ORDERMANAGER_PRICE_MAX_AGE_MS", "1000", _int_between(0, 60_000)),
    _Var("ORDERMANAGER_SYNC_INTERVAL", "30", _seconds()),
    _Var("ORDERMANAGER_LIMIT_ORDER_TTL", "3600", _seconds(low_open=False)),
    _Var("ORDERMANAGER_RESUBMIT_WINDOW", "300", _seconds(low_open=False)),
    _Var("ORDERMANAGER_METRICS_INTERVAL", "60", _seconds()),
    _Var("ORDERMANAGER_PREFETCH", "100", _int_between(1, 10000)),
    _Var("ORDERMANAGER_DRAIN_TIMEOUT", "10", _seconds()),
    _Var("ORDERMANAGER_PAPER_SEED", "0", _int_between(0, 2**31 - 1)),
    _Var("ORDERMANAGER_LEADER_LEASE_SECONDS", "5", _decimal(Decimal(1), Decimal(60))),
    _Var("ORDERMANAGER_MAX_DAILY_LOSS", "0", _decimal(Decimal(0))),
    _Var("ORDERMANAGER_HALT_AFTER_VENUE_ERRORS", "20", _int_between(0, 1_000_000)),
    _Var("ORDERMANAGER_HALT_AFTER_REJECTIONS", "10", _int_between(0, 1_000_000)),
)


def _shown(var: _Var, raw: str) -> str:
    return "(hidden)" if var.secret else repr(raw)


def _parse_all(env: Mapping[str, str], variables: tuple[_Var, ...] = _VARS) -> tuple[dict[str, Any], list[str]]:
    values: dict[str, Any] = {}
    problems: list[str] = []
    for var in variables:
        raw = env.get(var.name, var.default)
        if raw is None:
            problems.append(f"{var.name} is required but not set")
            continue
        try:
            values[var.name] = var.parse(raw)
        except ValueError as exc:
            problems.append(f"{var.name}={_shown(var, raw)} is invalid: expected {exc}")
    return values, problems


def _check_credentials(values: dict[str, Any], problems: list[str]) -> None:
    """Real venues need real keys; the paper venue accepts the built-in development pair."""
    environment = values.get("BYBIT_ENVIRONMENT")
    if environment == "paper":
        values["BYBIT_API_KEY"] = values.get("BYBIT_API_KEY") or PAPER_KEY
        values["BYBIT_API_SECRET"] = values.get("BYBIT_API_SECRET") or PAPER_SECRET
        return
    if environment is None or values.get("ORDERMANAGER_ENABLE_DRY_RUN"):
        return  # dry-run makes no private venue call
    for name in ("BYBIT_API_KEY", "BYBIT_API_SECRET"):
        if name in values and not values[name].strip():
            problems.append(f"{name} is required when BYBIT_ENVIRONMENT={environment} (or use paper / dry-run)")


def load_config(env: Mapping[str, str]) -> Config:
    """Build the configuration from ``env``; raise ConfigError listing every bad variable."""
    values, problems = _parse_all(env)
    _check_credentials(values, problems)
    if problems:
        raise ConfigError(problems)
    v = values
    return Config(
        port=v["ORDER_MANAGER_PORT"],
        api_key=v["ORDER_MANAGER_API_KEY"],
        log_level=v["ORDER_MANAGER_LOG_LEVEL"],
        service_name=v["ORDER_MANAGER_SERVICE_NAME"],
        bybit_api_key=v["BYBIT_API_KEY"],
        bybit_api_secret=v["BYBIT_API_SECRET"],
        bybit_environment=v["BYBIT_ENVIRONMENT"],
        bybit_rest_url=v["BYBIT_REST_URL"],
        postgres=PostgresConfig(
            v["POSTGRES_HOST"], v["POSTGRES_PORT"], v["POSTGRES_DB"], v["POSTGRES_USER"], v["POSTGRES_PASSWORD"]
        ),
        rabbitmq=RabbitConfig(
            v["RABBITMQ_HOST"], v["RABBITMQ_PORT"], v["RABBITMQ_USER"], v["RABBITMQ_PASSWORD"], v["RABBITMQ_VHOST"]
        ),
        ws_gateway_host=v["WS_GATEWAY_HOST"],
        ws_gateway_port=v["WS_GATEWAY_PORT"],
        ws_gateway_api_key=v["WS_GATEWAY_API_KEY"],
        dry_run=v["ORDERMANAGER_ENABLE_DRY_RUN"],
        max_single_order_size=v["ORDERMANAGER_MAX_SINGLE_ORDER_SIZE"],
        enable_order_splitting=v["ORDERMANAGER_ENABLE_ORDER_SPLITTING"],
        order_execution_timeout_s=v["ORDERMANAGER_ORDER_EXECUTION_TIMEOUT"],
        max_position_size=v["ORDERMANAGER_MAX_POSITION_SIZE"],
        max_exposure=v["ORDERMANAGER_MAX_EXPOSURE"],
        max_order_size_ratio=v["ORDERMANAGER_MAX_ORDER_SIZE_RATIO"],
        retry=RetryPolicy(
            max_attempts=v["ORDERMANAGER_BYBIT_API_RETRY_MAX_ATTEMPTS"],
            base_delay_s=v["ORDERMANAGER_BYBIT_API_RETRY_BASE_DELAY"],
            max_delay_s=v["ORDERMANAGER_BYBIT_API_RETRY_MAX_DELAY"],
            multiplier=float(v["ORDERMANAGER_BYBIT_API_RETRY_MULTIPLIER"]),
        ),
        market_order_confidence_threshold=v["ORDERMANAGER_MARKET_ORDER_CONFIDENCE_THRESHOLD"],
        market_order_spread_threshold=v["ORDERMANAGER_MARKET_ORDER_SPREAD_THRESHOLD"],
        limit_order_price_offset_ratio=v["ORDERMANAGER_LIMIT_ORDER_PRICE_OFFSET_RATIO"],
        position_snapshot_interval_s=v["ORDERMANAGER_POSITION_SNAPSHOT_INTERVAL"],
        position_validation_interval_s=v["ORDERMANAGER_POSITION_VALIDATION_INTERVAL"],
        signal_max_age_s=v["ORDERMANAGER_SIGNAL_MAX_AGE_SECONDS"],
        price_max_age_ms=v["ORDERMANAGER_PRICE_MAX_AGE_MS"],
        sync_interval_s=v["ORDERMANAGER_SYNC_INTERVAL"],
        limit_order_ttl_s=v["ORDERMANAGER_LIMIT_ORDER_TTL"],
        resubmit_window_s=v["ORDERMANAGER_RESUBMIT_WINDOW"],
        metrics_interval_s=v["ORDERMANAGER_METRICS_INTERVAL"],
        prefetch=v["ORDERMANAGER_PREFETCH"],
        drain_timeout_s=v["ORDERMANAGER_DRAIN_TIMEOUT"],
        paper_seed=v["ORDERMANAGER_PAPER_SEED"],
        leader_lease_s=float(v["ORDERMANAGER_LEADER_LEASE_SECONDS"]),
        max_daily_loss=v["ORDERMANAGER_MAX_DAILY_LOSS"],
        halt_after_venue_errors=v["ORDERMANAGER_HALT_AFTER_VENUE_ERRORS"],
        halt_after_rejections=v["ORDERMANAGER_HALT_AFTER_REJECTIONS"],
    )


def load_postgres_config(env: Mapping[str, str]) -> PostgresConfig:
    """Only the POSTGRES_* variables, with the service's defaults and rules: what applying the
    schema from another container (``python -m migrations.run``) needs. Raises ConfigError."""
    values, problems = _parse_all(env, tuple(var for var in _VARS if var.name.startswith("POSTGRES_")))
    if problems:
        raise ConfigError(problems)
    return PostgresConfig(values["POSTGRES_HOST"], values["POSTGRES_PORT"], values["POSTGRES_DB"],
                          values["POSTGRES_USER"], values["POSTGRES_PASSWORD"])  # fmt: skip


def read_dotenv(path: Path) -> dict[str, str]:
    """Parse a ``.env`` file: ``KEY=VALUE`` lines, ``#`` comments (also after an unquoted
    value, as the quickstart writes them), optional single or double quotes."""
    if not path.is_file():
        return {}
    values: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        key = key.removeprefix("export ").strip()
        value = value.strip()
        if value[:1] in ("'", '"') and value.count(value[0]) >= 2:
            value = value[1 : value.index(value[0], 1)]
        else:
            value = re.split(r"\s+#", value, maxsplit=1)[0].strip()
        values[key] = value
    return values


def environment_with_dotenv(environ: Mapping[str, str], dotenv: Path) -> dict[str, str]:
    """The process environment over the ``.env`` file: the environment wins."""
    return {**read_dotenv(dotenv), **environ}
