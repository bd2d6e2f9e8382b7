"""``python -m migrations.run``: apply ordermgr's schema and exit, as ws-gateway's migration runner
does. The quickstart runs it in the ws-gateway container (``docker compose exec ws-gateway python
-m migrations.run``); in the standalone stack that container is built from our image, whose working
directory holds this package. Only POSTGRES_* are read (and a ``.env`` in the working directory);
the service applies the same files at startup, so running it twice changes nothing.

Exit codes: 0 applied (or nothing to apply), 2 a bad POSTGRES_* variable, 1 the database refused.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import anyio
import psycopg

from ordermgr.config import ConfigError, environment_with_dotenv, load_postgres_config
from ordermgr.db.migrate import apply_migrations
from ordermgr.logs import configure_logging

log = logging.getLogger("ordermgr.migrations")


def main() -> int:
    configure_logging(os.environ.get("ORDER_MANAGER_LOG_LEVEL", "INFO").upper(), "ordermgr-migrations")
    try:
        postgres = load_postgres_config(environment_with_dotenv(os.environ, Path(".env")))
    except ConfigError as exc:
        print("migrations: invalid configuration", *(f"  {line}" for line in exc.problems), sep="\n", file=sys.stderr)
        return 2
    try:
        applied = anyio.run(apply_migrations, postgres.conninfo, backend="asyncio")
    except (psycopg.Error, OSError) as exc:
        log.error("migrations failed", extra={"error": str(exc), "host": postgres.host, "database": postgres.db})
        return 1
    log.info("migrations done", extra={"applied": applied, "database": postgres.db})
    return 0


if __name__ == "__main__":
    sys.exit(main())
