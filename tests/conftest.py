from __future__ import annotations

from collections.abc import Iterator

import pytest
from blockbuster import BlockBuster, blockbuster_ctx

from tests import support


@pytest.fixture(autouse=True)
def blockbuster() -> Iterator[BlockBuster]:
    """Any blocking call (file or socket I/O, time.sleep) made by ordermgr code on the event
    loop thread fails the test: pybit and other blocking work must run in worker threads."""
    with blockbuster_ctx("ordermgr") as bb:
        yield bb


@pytest.fixture
def anyio_backend() -> str:
    # psycopg's async pool, aiormq and aiohttp are asyncio-native.
    return "asyncio"


@pytest.fixture(scope="session", autouse=True)
def rabbitmq_vhost() -> Iterator[str]:
    support.ensure_vhost(support.AMQP_VHOST)
    yield support.AMQP_VHOST
    support.delete_vhost(support.AMQP_VHOST)


@pytest.fixture(scope="session")
def test_database() -> Iterator[str]:
    """A fresh database for this test session; returns its conninfo. Schema is applied by
    whoever starts the service (or explicitly by a test)."""
    support.recreate_database(support.TEST_DB)
    yield support.admin_conninfo(support.TEST_DB)
    support.drop_database(support.TEST_DB)


@pytest.fixture
def clean_database(test_database: str) -> str:
    """The session database with every table emptied (schema kept)."""
    support.truncate_all(test_database)
    return test_database
