"""The pytest plugin of sqla_jobs, loaded through the ``pytest11`` entry point ``sqla_jobs``.

Its fixtures work on the database named by ``--sqla-jobs-database-url``, else the environment
variable ``SQLA_JOBS_PYTEST_DATABASE_URL``, else the ``sqla_jobs_database_url`` ini option; or
override the `sqla_jobs_database_url` fixture in a conftest.py to take it from the
application's own configuration. The database must already hold the sqla_jobs tables.

- `sqla_jobs_clean`: every job and dead-lettered job is deleted before and after the test;
- `sqla_jobs_drain`: `sqla_jobs.testing.drain` bound to that database;
- `sqla_jobs_engine`: a sync `Engine` on it, for the session of the whole run.

>>> def test_signup_sends_email(sqla_jobs_clean, sqla_jobs_drain):
...     client.post("/signup", json={"email": "a@example.com"})
...     assert sqla_jobs_drain(raise_failures=True).succeeded == 1
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Protocol

import pytest
from sqlalchemy import Engine, delete

from sqla_jobs.engine import create_sync_engine
from sqla_jobs.models import DeadLetterJob, Job
from sqla_jobs.tasks import Task
from sqla_jobs.testing import DrainSummary, drain

DATABASE_URL_OPTION = "sqla_jobs_database_url"
DATABASE_URL_ENV_VAR = "SQLA_JOBS_PYTEST_DATABASE_URL"


class Drain(Protocol):
    """The type of the `sqla_jobs_drain` fixture: `drain()` without its first argument."""

    def __call__(
        self,
        *,
        tasks: Iterable[type[Task]] | None = None,
        queues: Sequence[str] | None = None,
        state: Any = None,
        raise_failures: bool = False,
    ) -> DrainSummary: ...


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("sqla_jobs")
    group.addoption(
        "--sqla-jobs-database-url",
        dest=DATABASE_URL_OPTION,
        default=None,
        help=f"database of the sqla_jobs fixtures (overrides ${DATABASE_URL_ENV_VAR} and ini)",
    )
    parser.addini(DATABASE_URL_OPTION, "database of the sqla_jobs fixtures", default="")


@pytest.fixture(scope="session")
def sqla_jobs_database_url(pytestconfig: pytest.Config) -> str:
    """Return the URL of the database the sqla_jobs fixtures work on."""
    url = (
        pytestconfig.getoption(DATABASE_URL_OPTION)
        or os.environ.get(DATABASE_URL_ENV_VAR)
        or pytestconfig.getini(DATABASE_URL_OPTION)
    )
    if not url:
        pytest.fail(
            "the sqla_jobs fixtures need a database: pass --sqla-jobs-database-url, set "
            f"${DATABASE_URL_ENV_VAR} or the {DATABASE_URL_OPTION} ini option, or override the "
            "sqla_jobs_database_url fixture",
            pytrace=False,
        )
    return str(url)


@pytest.fixture(scope="session")
def sqla_jobs_engine(sqla_jobs_database_url: str) -> Iterator[Engine]:
    """Yield a sync `Engine` on the sqla_jobs database, disposed at the end of the run."""
    engine = create_sync_engine(sqla_jobs_database_url)
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def sqla_jobs_clean(sqla_jobs_engine: Engine) -> Iterator[None]:
    """Delete every job and dead-lettered job before the test, and again after it."""
    _delete_jobs(sqla_jobs_engine)
    yield
    _delete_jobs(sqla_jobs_engine)


@pytest.fixture
def sqla_jobs_drain(sqla_jobs_engine: Engine) -> Drain:
    """Return `sqla_jobs.testing.drain` bound to the sqla_jobs database."""

    def drain_jobs(
        *,
        tasks: Iterable[type[Task]] | None = None,
        queues: Sequence[str] | None = None,
        state: Any = None,
        raise_failures: bool = False,
    ) -> DrainSummary:
        return drain(
            sqla_jobs_engine,
            tasks=tasks,
            queues=queues,
            state=state,
            raise_failures=raise_failures,
        )

    return drain_jobs


def _delete_jobs(engine: Engine) -> None:
    with engine.begin() as connection:
        connection.execute(delete(Job))
        connection.execute(delete(DeadLetterJob))
