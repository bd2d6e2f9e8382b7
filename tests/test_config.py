from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from ordermgr.config import ConfigError, environment_with_dotenv, load_config, read_dotenv

BASE = {"ORDER_MANAGER_API_KEY": "k", "BYBIT_API_KEY": "bk", "BYBIT_API_SECRET": "bs"}


def test_defaults_follow_the_contract() -> None:
    config = load_config(BASE)
    assert (config.port, config.log_level, config.service_name) == (4600, "INFO", "order-manager")
    assert (config.bybit_environment, config.rest_url) == ("testnet", "https://api-testnet.bybit.com")
    assert (config.postgres.host, config.postgres.port, config.postgres.db, config.postgres.user) == (
        "postgres", 5432, "ytrader", "ytrader")  # fmt: skip
    assert (config.rabbitmq.host, config.rabbitmq.port, config.rabbitmq.user) == ("rabbitmq", 5672, "guest")
    assert (config.ws_gateway_host, config.ws_gateway_port) == ("ws-gateway", 4400)
    assert config.dry_run is False and config.enable_order_splitting is False
    assert config.max_single_order_size == Decimal("10000.0")
    assert config.max_position_size == Decimal("1.0") and config.max_exposure == Decimal("50000.0")
    assert config.max_order_size_ratio == Decimal("0.1")
    assert (config.retry.max_attempts, config.retry.base_delay_s, config.retry.max_delay_s, config.retry.multiplier) == (
        3, 1.0, 30.0, 2.0)  # fmt: skip
    assert config.market_order_confidence_threshold == Decimal("0.9")
    assert config.market_order_spread_threshold == Decimal("0.1")
    assert config.limit_order_price_offset_ratio == Decimal("0.5")
    assert (config.position_snapshot_interval_s, config.position_validation_interval_s) == (300.0, 3600.0)
    assert config.order_execution_timeout_s == 30.0 and config.signal_max_age_s == 0.0
    assert config.price_max_age_ms == 1000  # contract §14.1


@pytest.mark.parametrize(
    ("name", "value", "line"),
    [
        ("ORDER_MANAGER_PORT", "http", "ORDER_MANAGER_PORT='http' is invalid: expected an integer from 1 to 65535"),
        ("ORDER_MANAGER_PORT", "70000", "ORDER_MANAGER_PORT='70000' is invalid: expected an integer from 1 to 65535"),
        ("ORDER_MANAGER_API_KEY", " ", "ORDER_MANAGER_API_KEY=(hidden) is invalid: expected a non-empty string"),
        ("ORDER_MANAGER_LOG_LEVEL", "LOUD",
         "ORDER_MANAGER_LOG_LEVEL='LOUD' is invalid: expected one of DEBUG, INFO, WARNING, ERROR, CRITICAL"),
        ("BYBIT_ENVIRONMENT", "prod", "BYBIT_ENVIRONMENT='prod' is invalid: expected one of testnet, mainnet, paper"),
        ("BYBIT_REST_URL", "ftp://x", "BYBIT_REST_URL='ftp://x' is invalid: expected an http:// or https:// URL"),
        ("POSTGRES_PORT", "-1", "POSTGRES_PORT='-1' is invalid: expected an integer from 1 to 65535"),
        ("POSTGRES_HOST", "", "POSTGRES_HOST='' is invalid: expected a non-empty string"),
        ("RABBITMQ_PORT", "x", "RABBITMQ_PORT='x' is invalid: expected an integer from 1 to 65535"),
        ("WS_GATEWAY_PORT", "0", "WS_GATEWAY_PORT='0' is invalid: expected an integer from 1 to 65535"),
        ("ORDERMANAGER_ENABLE_DRY_RUN", "maybe", "ORDERMANAGER_ENABLE_DRY_RUN='maybe' is invalid: expected true or false"),
        ("ORDERMANAGER_ENABLE_ORDER_SPLITTING", "2",
         "ORDERMANAGER_ENABLE_ORDER_SPLITTING='2' is invalid: expected true or false"),
        ("ORDERMANAGER_MAX_SINGLE_ORDER_SIZE", "0",
         "ORDERMANAGER_MAX_SINGLE_ORDER_SIZE='0' is invalid: expected a number greater than 0"),
        ("ORDERMANAGER_ORDER_EXECUTION_TIMEOUT", "soon",
         "ORDERMANAGER_ORDER_EXECUTION_TIMEOUT='soon' is invalid: expected a number of seconds greater than 0"),
        ("ORDERMANAGER_MAX_POSITION_SIZE", "-1",
         "ORDERMANAGER_MAX_POSITION_SIZE='-1' is invalid: expected a number greater than 0"),
        ("ORDERMANAGER_MAX_EXPOSURE", "NaN", "ORDERMANAGER_MAX_EXPOSURE='NaN' is invalid: expected a number greater than 0"),
        ("ORDERMANAGER_MAX_ORDER_SIZE_RATIO", "1.5",
         "ORDERMANAGER_MAX_ORDER_SIZE_RATIO='1.5' is invalid: expected a number greater than 0 and at most 1"),
        ("ORDERMANAGER_BYBIT_API_RETRY_MAX_ATTEMPTS", "0",
         "ORDERMANAGER_BYBIT_API_RETRY_MAX_ATTEMPTS='0' is invalid: expected an integer from 1 to 100"),
        ("ORDERMANAGER_BYBIT_API_RETRY_BASE_DELAY", "-1",
         "ORDERMANAGER_BYBIT_API_RETRY_BASE_DELAY='-1' is invalid: expected a number of seconds of 0 or more"),
        ("ORDERMANAGER_BYBIT_API_RETRY_MAX_DELAY", "x",
         "ORDERMANAGER_BYBIT_API_RETRY_MAX_DELAY='x' is invalid: expected a number of seconds of 0 or more"),
        ("ORDERMANAGER_BYBIT_API_RETRY_MULTIPLIER", "0.5",
         "ORDERMANAGER_BYBIT_API_RETRY_MULTIPLIER='0.5' is invalid: expected a number at least 1"),
        ("ORDERMANAGER_MARKET_ORDER_CONFIDENCE_THRESHOLD", "1.2",
         "ORDERMANAGER_MARKET_ORDER_CONFIDENCE_THRESHOLD='1.2' is invalid: expected a number at least 0 and at most 1"),
        ("ORDERMANAGER_MARKET_ORDER_SPREAD_THRESHOLD", "-0.1",
         "ORDERMANAGER_MARKET_ORDER_SPREAD_THRESHOLD='-0.1' is invalid: expected a number at least 0"),
        ("ORDERMANAGER_LIMIT_ORDER_PRICE_OFFSET_RATIO", "x",
         "ORDERMANAGER_LIMIT_ORDER_PRICE_OFFSET_RATIO='x' is invalid: expected a number at least 0"),
        ("ORDERMANAGER_POSITION_SNAPSHOT_INTERVAL", "0",
         "ORDERMANAGER_POSITION_SNAPSHOT_INTERVAL='0' is invalid: expected a number of seconds greater than 0"),
        ("ORDERMANAGER_POSITION_VALIDATION_INTERVAL", "1h",
         "ORDERMANAGER_POSITION_VALIDATION_INTERVAL='1h' is invalid: expected a number of seconds greater than 0"),
        ("ORDERMANAGER_SIGNAL_MAX_AGE_SECONDS", "-5",
         "ORDERMANAGER_SIGNAL_MAX_AGE_SECONDS='-5' is invalid: expected a number of seconds of 0 or more"),
        ("ORDERMANAGER_PRICE_MAX_AGE_MS", "1.5",
         "ORDERMANAGER_PRICE_MAX_AGE_MS='1.5' is invalid: expected an integer from 0 to 60000"),
        ("ORDERMANAGER_SYNC_INTERVAL", "0", "ORDERMANAGER_SYNC_INTERVAL='0' is invalid: expected a number of seconds greater than 0"),
        ("ORDERMANAGER_PREFETCH", "0", "ORDERMANAGER_PREFETCH='0' is invalid: expected an integer from 1 to 10000"),
    ],
    ids=lambda v: v if isinstance(v, str) and v.isupper() else None,
)
def test_each_bad_value_is_one_exact_line(name: str, value: str, line: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config({**BASE, name: value})
    assert caught.value.problems == [line]


def test_every_problem_is_reported_at_once_and_secrets_are_hidden() -> None:
    env = {"ORDER_MANAGER_PORT": "x", "POSTGRES_PASSWORD": "s3cret", "RABBITMQ_PORT": "y", "BYBIT_API_KEY": "bk"}
    with pytest.raises(ConfigError) as caught:
        load_config(env)
    assert caught.value.problems == [
        "ORDER_MANAGER_PORT='x' is invalid: expected an integer from 1 to 65535",
        "ORDER_MANAGER_API_KEY is required but not set",
        "RABBITMQ_PORT='y' is invalid: expected an integer from 1 to 65535",
        "BYBIT_API_SECRET is required when BYBIT_ENVIRONMENT=testnet (or use paper / dry-run)",
    ]
    assert "s3cret" not in str(caught.value) and "s3cret" not in repr(load_config({**BASE, "POSTGRES_PASSWORD": "s3cret"}))


@pytest.mark.parametrize(
    ("env", "key", "secret"),
    [
        ({"BYBIT_ENVIRONMENT": "paper"}, "paper-key", "paper-secret"),
        ({"BYBIT_ENVIRONMENT": "mainnet", "ORDERMANAGER_ENABLE_DRY_RUN": "true"}, "", ""),
        ({"BYBIT_ENVIRONMENT": "mainnet", "BYBIT_API_KEY": "a", "BYBIT_API_SECRET": "b"}, "a", "b"),
    ],
    ids=["paper-uses-dev-keys", "dry-run-needs-no-keys", "mainnet-with-keys"],
)
def test_venue_credentials(env: dict[str, str], key: str, secret: str) -> None:
    config = load_config({"ORDER_MANAGER_API_KEY": "k", **env})
    assert (config.bybit_api_key, config.bybit_api_secret) == (key, secret)


def test_rest_url_override_and_case_folding() -> None:
    config = load_config({**BASE, "BYBIT_REST_URL": "http://127.0.0.1:8600/", "ORDER_MANAGER_LOG_LEVEL": "debug",
                          "BYBIT_ENVIRONMENT": "MAINNET"})  # fmt: skip
    assert (config.rest_url, config.log_level, config.bybit_environment) == ("http://127.0.0.1:8600", "DEBUG", "mainnet")


def test_dotenv_is_read_with_quickstart_comments_and_the_environment_wins(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text(
        "# Order Manager\n"
        "ORDER_MANAGER_PORT=4600\n"
        "ORDERMANAGER_ENABLE_DRY_RUN=false  # Set to 'true' for testing without real orders\n"
        "ORDER_MANAGER_API_KEY='quoted # not a comment'\n"
        'export POSTGRES_DB="ytrader"\n'
    )
    assert read_dotenv(dotenv) == {
        "ORDER_MANAGER_PORT": "4600",
        "ORDERMANAGER_ENABLE_DRY_RUN": "false",
        "ORDER_MANAGER_API_KEY": "quoted # not a comment",
        "POSTGRES_DB": "ytrader",
    }
    merged = environment_with_dotenv({"ORDER_MANAGER_PORT": "4700"}, dotenv)
    assert merged["ORDER_MANAGER_PORT"] == "4700" and merged["POSTGRES_DB"] == "ytrader"
    assert read_dotenv(tmp_path / "missing.env") == {}
