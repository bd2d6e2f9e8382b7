"""Fixtures: a venue per test and a pybit session pointed at it (helpers in helpers.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import pytest
from pybit.unified_trading import HTTP

from ordermgr.paper import PaperVenue
from tests.paper.helpers import make_session, running_venue


@pytest.fixture
async def venue() -> AsyncIterator[PaperVenue]:
    async with running_venue() as venue:
        yield venue


@pytest.fixture
async def session(venue: PaperVenue) -> AsyncIterator[HTTP]:
    assert venue.base_url is not None
    session = make_session(venue.base_url)
    yield session
    await anyio.to_thread.run_sync(session.client.close)
