"""Shared fixtures: one migrated template database per run, a fresh clone of it per test.

PostgreSQL comes from ``SQLA_JOBS_TEST_DATABASE_URL`` (an admin URL: its user creates and drops
databases), default ``postgresql://postgres@127.0.0.1:5432/postgres``. When it is unreachable,
the PostgreSQL tests are skipped, or fail when ``CI=true`` so CI never passes by skipping them.

Fixtures for test modules:

- ``database``: a `TestDatabase`, parametrised ``postgresql`` and ``sqlite``;
- ``pg_database`` / ``sqlite_database``: the same on one backend;
- ``engine`` (`AsyncEngine`) and ``sync_engine`` (`Engine`) on ``database``;
- ``empty_database``, ``empty_pg_database``, ``empty_sqlite_database``: not migrated.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from loguru import logger
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from sqla_jobs import migrate
from sqla_jobs.urls import display_url, to_async_url, to_sync_url
from tests.helpers import TestDatabase

PG_URL_ENV_VAR = "SQLA_JOBS_TEST_DATABASE_URL"
DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"

BACKENDS = [
    pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgresql),
    pytest.param("sqlite", id="sqlite", marks=pytest.mark.sqlite),
]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "postgresql: runs on the PostgreSQL test server")
    config.addinivalue_line("markers", "sqlite: runs on a SQLite file")
    config.addinivalue_line("markers", "wheel: builds the wheel and runs from it (a few seconds)")


DOC_BLOCK_NODE = re.compile(r"^tests/test_docs\.py::test_doc_block\[(?P<file>[^:\]]+):\d+\]$")


def xdist_scope(nodeid: str) -> str:
    """Return the pytest-xdist work unit of a test: the Markdown file of a docs block, or the
    test itself.

    The blocks of one docs/*.md file share a process and a database, and each block first runs
    the blocks before it: spread over several workers, a file's blocks would run twice or more.
    """
    match = DOC_BLOCK_NODE.match(nodeid)
    return match["file"] if match else nodeid


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Under ``--dist loadgroup`` (pyproject), schedule as loadgroup does, and each docs file's
    blocks as one group.

    pytest-xdist groups by a ``@group`` suffix it writes to ``item._nodeid``, which pytest 9.2
    no longer reads (nodes keep their id in ``_id``): ``xdist_group`` marks do not group there.
    Grouping by node id here works with either.
    """
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadGroupScheduling

    class DocFileScheduling(LoadGroupScheduling):
        def _split_scope(self, nodeid: str) -> str:
            scope = super()._split_scope(nodeid)
            return xdist_scope(scope) if scope == nodeid else scope

    return DocFileScheduling(config, log)


def _render(url: URL) -> str:
    return url.render_as_string(hide_password=False)


def _unique_name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


class PostgresServer:
    """The PostgreSQL test server: creates, clones and drops whole databases."""

    def __init__(self, admin_url: URL) -> None:
        self.admin_url = admin_url
        # AUTOCOMMIT: CREATE/DROP DATABASE cannot run inside a transaction block.
        self._engine = create_engine(
            to_sync_url(admin_url),
            isolation_level="AUTOCOMMIT",
            connect_args={"connect_timeout": 5},
        )

    def check_reachable(self) -> None:
        """Connect once, so an absent server is one clear skip instead of one error per test."""
        with self._engine.connect():
            pass

    def database_url(self, name: str) -> URL:
        """Return the admin URL pointed at database `name`."""
        return self.admin_url.set(database=name)

    def describe(self, name: str) -> TestDatabase:
        """Describe database `name` for a test."""
        url = self.database_url(name)
        return TestDatabase(
            dialect="postgresql",
            url=_render(to_async_url(url)),
            sync_url=_render(to_sync_url(url)),
        )

    def create(self, name: str, *, template: str | None = None) -> None:
        """Create database `name`, empty or as a copy of `template`."""
        sql = f"CREATE DATABASE {self._quote(name)}"
        if template is not None:
            sql += f" TEMPLATE {self._quote(template)}"
        self._execute(sql)

    def forbid_connections(self, name: str) -> None:
        """Refuse new connections to `name`.

        A clone fails while anyone is connected to its template; this makes a stray connection
        (a test pointed at the template by mistake, autovacuum) impossible instead of flaky.
        """
        self._execute(f"ALTER DATABASE {self._quote(name)} WITH ALLOW_CONNECTIONS false")

    def drop(self, name: str) -> None:
        """Drop database `name`, disconnecting whoever still uses it."""
        self._execute(f"DROP DATABASE IF EXISTS {self._quote(name)} WITH (FORCE)")

    def dispose(self) -> None:
        """Close the admin connections."""
        self._engine.dispose()

    def _quote(self, name: str) -> str:
        return self._engine.dialect.identifier_preparer.quote_identifier(name)

    def _execute(self, sql: str) -> None:
        # Only names generated by these fixtures are formatted into this DDL.
        with self._engine.connect() as connection:
            connection.execute(text(sql))


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    """The PostgreSQL test server, or a skip (a failure when CI=true) if it is unreachable."""
    admin_url = make_url(os.environ.get(PG_URL_ENV_VAR, DEFAULT_PG_URL))
    server = PostgresServer(admin_url)
    unreachable: str | None = None
    try:
        server.check_reachable()
    except OperationalError as exc:
        server.dispose()
        detail = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
        unreachable = f"PostgreSQL not reachable at {display_url(admin_url)} ({detail})"
    # Outside the except block, so the report is this one line rather than a chained traceback.
    if unreachable is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{unreachable}; CI=true requires it", pytrace=False)
        pytest.skip(unreachable)
    yield server
    server.dispose()


@pytest.fixture(scope="session")
def pg_template(pg_server: PostgresServer) -> Iterator[str]:
    """Name of this run's migrated PostgreSQL template database."""
    name = f"sqla_jobs_tpl_{uuid.uuid4().hex[:8]}"
    pg_server.create(name)
    try:
        # migrate.upgrade connects through a NullPool engine and disposes it, so no connection
        # to the template outlives this call.
        migrate.upgrade(pg_server.database_url(name))
        pg_server.forbid_connections(name)
        yield name
    finally:
        pg_server.drop(name)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Path of this run's migrated SQLite template file."""
    path = tmp_path_factory.mktemp("sqlite_template") / "template.db"
    migrate.upgrade(f"sqlite+aiosqlite:///{path}")
    return path


@pytest.fixture
def pg_database(pg_server: PostgresServer, pg_template: str) -> Iterator[TestDatabase]:
    """A migrated PostgreSQL database of this test's own, dropped afterwards."""
    name = _unique_name("sqla_jobs_t")
    pg_server.create(name, template=pg_template)
    try:
        yield pg_server.describe(name)
    finally:
        pg_server.drop(name)


@pytest.fixture
def sqlite_database(sqlite_template: Path, tmp_path: Path) -> TestDatabase:
    """A migrated SQLite file of this test's own."""
    path = tmp_path / "sqla_jobs_test.db"
    shutil.copyfile(sqlite_template, path)
    return _sqlite_test_database(path)


@pytest.fixture(params=BACKENDS)
def database(request: pytest.FixtureRequest) -> TestDatabase:
    """A migrated database of this test's own, on each backend in turn."""
    fixture = "pg_database" if request.param == "postgresql" else "sqlite_database"
    result: TestDatabase = request.getfixturevalue(fixture)
    return result


@pytest.fixture
def empty_pg_database(pg_server: PostgresServer) -> Iterator[TestDatabase]:
    """An empty (not migrated) PostgreSQL database of this test's own, dropped afterwards."""
    name = _unique_name("sqla_jobs_t")
    pg_server.create(name)
    try:
        yield pg_server.describe(name)
    finally:
        pg_server.drop(name)


@pytest.fixture
def empty_sqlite_database(tmp_path: Path) -> TestDatabase:
    """A path for a SQLite database of this test's own; the file does not exist yet."""
    return _sqlite_test_database(tmp_path / "sqla_jobs_empty.db")


@pytest.fixture(params=BACKENDS)
def empty_database(request: pytest.FixtureRequest) -> TestDatabase:
    """An empty (not migrated) database of this test's own, on each backend in turn."""
    fixture = "empty_pg_database" if request.param == "postgresql" else "empty_sqlite_database"
    result: TestDatabase = request.getfixturevalue(fixture)
    return result


@pytest.fixture
async def engine(database: TestDatabase) -> AsyncIterator[AsyncEngine]:
    """An `AsyncEngine` on `database`, disposed after the test."""
    async_engine = create_async_engine(database.url)
    try:
        yield async_engine
    finally:
        await async_engine.dispose()


@pytest.fixture
def sync_engine(database: TestDatabase) -> Iterator[Engine]:
    """A sync `Engine` on `database`, disposed after the test."""
    engine = create_engine(database.sync_url)
    try:
        yield engine
    finally:
        engine.dispose()


def _sqlite_test_database(path: Path) -> TestDatabase:
    return TestDatabase(
        dialect="sqlite", url=f"sqlite+aiosqlite:///{path}", sync_url=f"sqlite:///{path}"
    )


@pytest.fixture
def log_records() -> Iterator[list[Any]]:
    """Collect the records sqla_jobs logs during the test (DEBUG and up)."""
    records: list[Any] = []
    sink = logger.add(lambda message: records.append(message.record), level="DEBUG")
    logger.enable("sqla_jobs")
    try:
        yield records
    finally:
        logger.disable("sqla_jobs")
        logger.remove(sink)
