"""Missing schema files are a packaging fault that stops the start, not an outage to wait out."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from ordermgr.db import migrate
from ordermgr.db.migrate import MigrationsMissing, apply_migrations


@pytest.mark.parametrize("make_dir", [lambda tmp: tmp / "absent", lambda tmp: tmp])
async def test_missing_migrations_fail_at_once_instead_of_waiting_for_the_database(
    make_dir: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, test_database: str
) -> None:
    monkeypatch.setattr(migrate, "migrations_dir", lambda: make_dir(tmp_path))  # type: ignore[operator]
    with anyio.fail_after(5), pytest.raises(MigrationsMissing, match="migration"):
        await apply_migrations(test_database)
