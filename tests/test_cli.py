"""Worker processes started as ``python -m sqla_jobs.worker``, with real signals, on PostgreSQL."""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Protocol

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine

from sqla_jobs import Job, enqueue
from tests.cli_tasks import Note, ledger, ledger_metadata
from tests.helpers import TestDatabase, wait_until
from tests.processes import WorkerProcess, predicate

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
async def engine(pg_database: TestDatabase) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(pg_database.url)
    async with engine.begin() as connection:
        await connection.run_sync(ledger_metadata.create_all)
    yield engine
    await engine.dispose()


class Spawn(Protocol):
    def __call__(self, *args: str, url: str | None = None, **env: str) -> WorkerProcess: ...


@pytest.fixture
def spawn(pg_database: TestDatabase, tmp_path: Path) -> Iterator[Spawn]:
    """Start worker processes on the test's database; kill leftovers after the test."""
    started: list[WorkerProcess] = []

    def start(*args: str, url: str | None = None, **env: str) -> WorkerProcess:
        log_path = tmp_path / f"worker-{len(started)}.log"
        worker = WorkerProcess(url or pg_database.url, log_path, *args, **env)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.kill()


async def test_three_worker_processes_run_each_of_3000_jobs_exactly_once(
    engine: AsyncEngine, spawn: Spawn
) -> None:
    async with AsyncSession(engine) as session:
        session.add_all(enqueue(Note(key=str(n))) for n in range(3000))
        await session.commit()
    workers = [spawn("--concurrency", "10") for _ in range(3)]
    await wait_until(predicate(engine, equals=0, table=Job), timeout=120, interval=0.2)
    for worker in workers:
        worker.signal(signal.SIGTERM)
    assert [await w.exit_code() for w in workers] == [0, 0, 0]
    async with AsyncSession(engine) as session:
        per_key = (
            await session.execute(select(ledger.c.key, func.count()).group_by(ledger.c.key))
        ).all()
        pids = set((await session.scalars(select(ledger.c.pid).distinct())).all())
    assert len(per_key) == 3000
    assert {n for _, n in per_key} == {1}
    assert pids <= {w.process.pid for w in workers}


@pytest.mark.parametrize("log_json", [False, True], ids=["text", "json"])
async def test_the_database_password_never_reaches_the_logs(
    pg_database: TestDatabase, engine: AsyncEngine, spawn: Spawn, log_json: bool
) -> None:
    # Trust authentication ignores the password, so a made-up one still connects.
    url = make_url(pg_database.url).set(password="Sup3r-S3cret-pw")
    flags = ["--log-level", "DEBUG", *(["--log-json"] if log_json else [])]
    worker = spawn(*flags, url=url.render_as_string(hide_password=False))
    async with AsyncSession(engine) as session:
        session.add(enqueue(Note(key="k")))
        await session.commit()
    await wait_until(predicate(engine, equals=1))
    worker.signal(signal.SIGTERM)
    assert await worker.exit_code() == 0
    assert "worker started" in worker.output
    assert "***" in worker.output
    assert "Sup3r-S3cret-pw" not in worker.output


async def test_an_unimportable_module_is_a_clear_error(
    spawn: Spawn,
) -> None:
    worker = spawn("--import", "tests.no_such_module")
    assert await worker.exit_code() == 2
    assert "cannot import 'tests.no_such_module'" in worker.output


async def _contains(worker: WorkerProcess, text: str) -> bool:
    return text in worker.output
