"""admin.check: database reachable, schema at head, a live worker; never raises for a down one."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine

from sqla_jobs import migrate
from sqla_jobs.admin import check
from tests.admin_rows import add_worker
from tests.helpers import TestDatabase


async def test_a_live_worker_on_a_migrated_database_is_healthy(engine: AsyncEngine) -> None:
    await add_worker(engine, "w1", heartbeat_ago=1)
    async with AsyncSession(engine) as session:
        report = await check(session)
    assert report.ok, report
    assert [result.name for result in report.results] == ["database", "schema", "workers"]
    assert report.results[1].detail == f"at head {', '.join(migrate.head_revisions())}"
    assert report.results[2].detail.startswith("1 live worker(s)")


async def test_no_worker_or_only_a_silent_one_is_unhealthy(engine: AsyncEngine) -> None:
    async with AsyncSession(engine) as session:
        report = await check(session)
        assert not report.ok
        assert report.results[2].detail == "no worker is registered"
    await add_worker(engine, "w1", heartbeat_ago=300)
    async with AsyncSession(engine) as session:
        report = await check(session)
    assert [result.ok for result in report.results] == [True, True, False]
    assert report.results[2].detail.startswith("no live worker: 1 registered")


async def test_an_unmigrated_database_says_to_run_migrate(empty_database: TestDatabase) -> None:
    engine = create_async_engine(empty_database.url)
    try:
        async with AsyncSession(engine) as session:
            report = await check(session)
    finally:
        await engine.dispose()
    assert [result.ok for result in report.results] == [True, False, False]
    assert "has no sqla_jobs schema: run `python -m sqla_jobs migrate`" in report.results[1].detail
    assert report.results[2].detail == "not checked: schema failed"


async def test_an_unreachable_database_is_a_failed_result() -> None:
    # The discard port: nothing listens.
    engine = create_async_engine("postgresql+asyncpg://app:secret@127.0.0.1:9/app")
    try:
        async with AsyncSession(engine) as session:
            report = await check(session)
    finally:
        await engine.dispose()
    assert [result.ok for result in report.results] == [False, False, False]
    database = report.results[0].detail
    assert database.startswith("cannot query postgresql+asyncpg://app:***@127.0.0.1:9/app: ")
    assert "secret" not in database
