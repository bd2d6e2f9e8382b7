#!/usr/bin/env bash
# `make run`: a working local configuration on first use (.env for localhost services and the
# built-in paper venue, with a generated development API key), the database, the schema, the daemon.
set -euo pipefail
PY=.venv/bin/python

if [ ! -f .env ]; then
  key="dev-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  cat > .env <<ENV
# Written by 'make run' for local development; edit freely (the environment wins over this file).
ORDER_MANAGER_PORT=4600
ORDER_MANAGER_API_KEY=${key}
ORDER_MANAGER_LOG_LEVEL=INFO
BYBIT_ENVIRONMENT=paper
POSTGRES_HOST=127.0.0.1
POSTGRES_PORT=5432
POSTGRES_DB=ordermgr
POSTGRES_USER=postgres
POSTGRES_PASSWORD=
RABBITMQ_HOST=127.0.0.1
RABBITMQ_PORT=5672
RABBITMQ_USER=guest
RABBITMQ_PASSWORD=guest
WS_GATEWAY_HOST=127.0.0.1
ORDERMANAGER_ENABLE_DRY_RUN=false
ENV
  echo "make run: wrote .env for local development (paper venue, localhost services)"
fi

# The database named in .env, created when missing (local servers trust the postgres user).
$PY - <<'PYCODE'
import os, pathlib
import psycopg
from ordermgr.config import environment_with_dotenv, load_config
config = load_config(environment_with_dotenv(os.environ, pathlib.Path(".env")))
pg = config.postgres
admin = f"host={pg.host} port={pg.port} dbname=postgres user={pg.user} password={pg.password}"
with psycopg.connect(admin, autocommit=True) as conn:
    if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (pg.db,)).fetchone():
        conn.execute(f'CREATE DATABASE "{pg.db}"')
        print(f"make run: created database {pg.db}")
print(f"make run: API key for /api/*: X-API-Key: {config.api_key}")
print(f"make run: http://127.0.0.1:{config.port}/health  /ready  (venue: {config.bybit_environment})")
PYCODE

$PY -m ordermgr migrate
exec $PY -m ordermgr
