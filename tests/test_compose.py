"""docker-compose.yml against the quickstart (no Docker here, and no compose v2 in CI): parsed,
interpolated from env.example as `cp env.example .env` would, and checked against the service
names, commands and variables the quickstart uses."""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from ordermgr.config import environment_with_dotenv, load_config, load_postgres_config, read_dotenv
from ordermgr.paper.__main__ import parse_args

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
DOTENV = read_dotenv(ROOT / "env.example")  # what `cp env.example .env` gives the quickstart

# The quickstart's docker commands, verbatim (seed/quickstart.md, "Quick Setup" and after).
QUICKSTART_COMMANDS = [
    "docker compose up -d postgres rabbitmq ws-gateway",
    "docker compose logs -f postgres rabbitmq ws-gateway",
    "docker compose exec ws-gateway python -m migrations.run",
    "docker compose up -d order-manager",
    "docker compose restart order-manager",
    "docker compose logs -f order-manager",
    "docker compose exec rabbitmq rabbitmqadmin publish routing_key=model-service.trading_signals payload='{}'",
    "docker compose exec rabbitmq rabbitmqctl list_queues name messages",
    'docker compose exec postgres psql -U ytrader -d ytrader -c "SELECT 1;"',
]
# The variables of the quickstart's .env (step 2).
QUICKSTART_VARIABLES = [
    "ORDER_MANAGER_PORT", "ORDER_MANAGER_API_KEY", "ORDER_MANAGER_LOG_LEVEL", "ORDER_MANAGER_SERVICE_NAME",
    "BYBIT_API_KEY", "BYBIT_API_SECRET", "BYBIT_ENVIRONMENT", "POSTGRES_HOST", "POSTGRES_PORT", "POSTGRES_DB",
    "POSTGRES_USER", "POSTGRES_PASSWORD", "RABBITMQ_HOST", "RABBITMQ_PORT", "RABBITMQ_USER", "RABBITMQ_PASSWORD",
    "WS_GATEWAY_HOST", "WS_GATEWAY_PORT", "WS_GATEWAY_API_KEY", "ORDERMANAGER_ENABLE_DRY_RUN",
    "ORDERMANAGER_MAX_SINGLE_ORDER_SIZE", "ORDERMANAGER_ENABLE_ORDER_SPLITTING", "ORDERMANAGER_ORDER_EXECUTION_TIMEOUT",
    "ORDERMANAGER_MAX_POSITION_SIZE", "ORDERMANAGER_MAX_EXPOSURE", "ORDERMANAGER_MAX_ORDER_SIZE_RATIO",
    "ORDERMANAGER_BYBIT_API_RETRY_MAX_ATTEMPTS", "ORDERMANAGER_BYBIT_API_RETRY_BASE_DELAY",
    "ORDERMANAGER_BYBIT_API_RETRY_MAX_DELAY", "ORDERMANAGER_BYBIT_API_RETRY_MULTIPLIER",
    "ORDERMANAGER_MARKET_ORDER_CONFIDENCE_THRESHOLD", "ORDERMANAGER_MARKET_ORDER_SPREAD_THRESHOLD",
    "ORDERMANAGER_LIMIT_ORDER_PRICE_OFFSET_RATIO", "ORDERMANAGER_POSITION_SNAPSHOT_INTERVAL",
    "ORDERMANAGER_POSITION_VALIDATION_INTERVAL",
]  # fmt: skip
_REFERENCE = re.compile(r"\$\{([A-Z0-9_]+)(?::-([^}]*))?\}")


def interpolate(value: Any, env: Mapping[str, str]) -> Any:
    """Compose's ``${VAR:-default}`` (and ``$$`` for a literal ``$``), recursively."""
    if isinstance(value, str):
        return _REFERENCE.sub(lambda m: env.get(m.group(1)) or (m.group(2) or ""), value).replace("$$", "$")
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    return value


SERVICES = interpolate(COMPOSE["services"], DOTENV)


def container_env(service: str) -> dict[str, str]:
    """The environment a container of ``service`` starts with: its env_file, then ``environment``."""
    spec = SERVICES[service]
    env = dict(DOTENV) if spec.get("env_file") == ".env" else {}
    env.update({key: str(value) for key, value in (spec.get("environment") or {}).items()})
    return env


@pytest.mark.parametrize("command", QUICKSTART_COMMANDS)
def test_every_service_the_quickstart_names_is_defined(command: str) -> None:
    words = shlex.split(command)[2:]  # after "docker compose"
    verb, rest = words[0], [w for w in words[1:] if not w.startswith("-")]
    named = rest[:1] if verb == "exec" else rest
    assert named and set(named) <= set(SERVICES), named


def test_every_quickstart_variable_is_in_env_example() -> None:
    assert set(QUICKSTART_VARIABLES) <= set(DOTENV)


def test_every_interpolated_variable_is_one_of_ours() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    referenced = {m.group(1) for m in _REFERENCE.finditer(text)}
    assert referenced and referenced <= set(DOTENV), referenced - set(DOTENV)


def test_the_order_manager_is_configured_for_the_services_of_the_stack() -> None:
    config = load_config(container_env("order-manager"))
    assert (config.postgres.host, config.rabbitmq.host, config.ws_gateway_host) == ("postgres", "rabbitmq",
                                                                                   "ws-gateway")  # fmt: skip
    assert config.ws_gateway_port == 4400 and "4400:4400" in SERVICES["ws-gateway"]["ports"]
    assert f"{config.port}:{config.port}" in SERVICES["order-manager"]["ports"]
    postgres = SERVICES["postgres"]["environment"]
    assert (postgres["POSTGRES_DB"], postgres["POSTGRES_USER"]) == (config.postgres.db, config.postgres.user)
    assert postgres["POSTGRES_PASSWORD"] == config.postgres.password
    assert set(SERVICES["order-manager"]["depends_on"]) == {"postgres", "rabbitmq", "ws-gateway"}


def test_the_ws_gateway_stand_in_is_our_image_running_the_paper_venue_as_ws_gateway() -> None:
    spec = SERVICES["ws-gateway"]
    assert spec["build"] == "." == SERVICES["order-manager"]["build"]
    assert spec["image"] == SERVICES["order-manager"]["image"]
    python, dash_m, module, *args = spec["command"]
    assert (python, dash_m, module) == ("python", "-m", "ordermgr.paper")
    env = container_env("ws-gateway")
    paper, _ = parse_args(args, environ=env)  # the arguments the paper CLI really takes
    assert (paper.host, paper.port, paper.ws_gateway) == ("0.0.0.0", 4400, True)
    om = load_config(container_env("order-manager"))
    assert (paper.api_key, paper.api_secret) == (om.bybit_api_key, om.bybit_api_secret)  # signs with the same pair
    assert paper.gateway_api_key == om.ws_gateway_api_key
    assert paper.amqp_url == "amqp://guest:guest@rabbitmq:5672/%2F" and om.rabbitmq.url == paper.amqp_url
    assert "4400" in " ".join(spec["healthcheck"]["test"])


def test_migrations_run_in_the_ws_gateway_container_reach_the_stacks_postgres() -> None:
    postgres = load_postgres_config(container_env("ws-gateway"))
    om = load_config(container_env("order-manager")).postgres
    assert postgres == om and postgres.host == "postgres"
    # `python -m migrations.run` runs in the image's working directory, which holds the package.
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "WORKDIR /app" in dockerfile and re.search(r"^COPY migrations \./migrations$", dockerfile, re.M)
    assert (ROOT / "migrations" / "__init__.py").is_file() and (ROOT / "migrations" / "run.py").is_file()


def test_the_quickstart_rabbitmqadmin_commands_have_the_management_image() -> None:
    assert SERVICES["rabbitmq"]["image"].endswith("-management")


def test_the_stand_in_can_be_the_venue_with_the_documented_settings() -> None:
    """README: BYBIT_ENVIRONMENT=paper and BYBIT_REST_URL=http://ws-gateway:4400 trade on the stand-in."""
    env = {**container_env("order-manager"), "BYBIT_ENVIRONMENT": "paper", "BYBIT_REST_URL": "http://ws-gateway:4400"}
    config = load_config(environment_with_dotenv(env, ROOT / "no-such.env"))
    assert config.is_paper and config.rest_url == "http://ws-gateway:4400"
