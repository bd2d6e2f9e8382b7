"""``python -m ordermgr`` runs the service; ``python -m ordermgr migrate`` applies the schema alone.

Exit codes: 0 after a clean stop, 2 for a bad configuration, 1 when a bug ended the process.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import anyio

from ordermgr import app
from ordermgr.config import Config, ConfigError, environment_with_dotenv, load_config
from ordermgr.db.migrate import apply_migrations
from ordermgr.logs import configure_logging

log = logging.getLogger("ordermgr")


def _load() -> Config:
    try:
        return load_config(environment_with_dotenv(os.environ, Path(".env")))
    except ConfigError as exc:
        print("ordermgr: invalid configuration", file=sys.stderr)
        for line in exc.problems:
            print(f"  {line}", file=sys.stderr)
        sys.exit(2)


def main(argv: list[str]) -> int:
    config = _load()
    configure_logging(config.log_level, config.service_name)
    command = argv[0] if argv else "run"
    try:
        if command == "migrate":
            applied = anyio.run(apply_migrations, config.postgres.conninfo, backend="asyncio")
            log.info("migrations done", extra={"applied": applied})
        elif command == "run":
            # uvloop: the same asyncio, with its machinery in C; the event loop is where the
            # daemon spends its CPU (README, "Performance").
            anyio.run(app.run, config, backend="asyncio", backend_options={"use_uvloop": True})
        else:
            print(f"ordermgr: unknown command {command!r} (expected: run, migrate)", file=sys.stderr)
            return 2
    except Exception:
        log.exception("ordermgr stopped by an unexpected error")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
