"""Worker processes started as ``python -m sqla_jobs.worker``, with real signals, on PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Protocol

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine

from sqla_jobs import Job, enqueue
from tests.cli_tasks import HangOnce, Note, Slow, ledger, ledger_metadata
from tests.helpers import TestDatabase, wait_until

REPO = Path(__file__).resolve().parent.parent


class WorkerProcess:
    """A worker process whose output goes to a file (a pipe could fill up and block it)."""

    def __init__(self, database_url: str, log_path: Path, *args: str, **env: str) -> None:
        self.log_path = log_path
        environment = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
            "SQLA_JOBS_DATABASE_URL": database_url,
            "SQLA_JOBS_POLL_INTERVAL": "0.05",
            **env,
        }
        with log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "sqla_jobs.worker", "--import", "tests.cli_tasks", *args],
                env=environment,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=log_path.parent,
            )

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    async def exit_code(self, timeout: float = 30) -> int:
        return await asyncio.to_thread(self.process.wait, timeout)

    @property
    def output(self) -> str:
        return self.log_path.read_text()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


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


async def count_where(engine: AsyncEngine, *conditions: object, table: object = ledger) -> int:
    async with AsyncSession(engine) as session:
        query = select(func.count()).select_from(table).where(*conditions)  # type: ignore[arg-type]
        return (await session.scalar(query)) or 0


def predicate(engine: AsyncEngine, *conditions: object, equals: int, table: object = ledger):  # type: ignore[no-untyped-def]
    async def check() -> bool:
        return await count_where(engine, *conditions, table=table) == equals

    return check


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


async def test_sigterm_lets_the_running_job_finish_and_exits_0(
    engine: AsyncEngine, spawn: Spawn
) -> None:
    worker = spawn()
    async with AsyncSession(engine) as session:
        session.add(enqueue(Slow(key="slow", seconds=1.0)))
        await session.commit()
    await wait_until(predicate(engine, ledger.c.event == "started", equals=1))
    worker.signal(signal.SIGTERM)
    assert await worker.exit_code() == 0
    assert await count_where(engine, ledger.c.event == "finished") == 1
    assert await count_where(engine, table=Job) == 0
    assert "signal received; shutting down gracefully" in worker.output


async def test_sigterm_past_the_shutdown_timeout_releases_the_lock(
    engine: AsyncEngine, spawn: Spawn
) -> None:
    worker = spawn(SQLA_JOBS_SHUTDOWN_TIMEOUT="0.2")
    async with AsyncSession(engine) as session:
        session.add(enqueue(Slow(key="slow", seconds=60)))
        await session.commit()
    await wait_until(predicate(engine, ledger.c.event == "started", equals=1))
    worker.signal(signal.SIGTERM)
    assert await worker.exit_code() == 0
    assert await count_where(engine, Job.locked_by.is_not(None), table=Job) == 0
    assert await count_where(engine, table=Job) == 1


async def test_a_second_signal_exits_at_once(engine: AsyncEngine, spawn: Spawn) -> None:
    worker = spawn(SQLA_JOBS_SHUTDOWN_TIMEOUT="600")
    async with AsyncSession(engine) as session:
        session.add(enqueue(Slow(key="slow", seconds=600)))
        await session.commit()
    await wait_until(predicate(engine, ledger.c.event == "started", equals=1))
    worker.signal(signal.SIGTERM)
    await wait_until(lambda: _contains(worker, "waiting for running jobs"))
    worker.signal(signal.SIGINT)
    assert await worker.exit_code(timeout=15) == 1
    assert await count_where(engine, Job.locked_by.is_not(None), table=Job) == 0


async def test_a_job_of_a_killed_worker_runs_again_after_the_lock_timeout(
    engine: AsyncEngine, spawn: Spawn
) -> None:
    first = spawn()
    async with AsyncSession(engine) as session:
        session.add(enqueue(HangOnce(key="hang")))
        await session.commit()
    await wait_until(predicate(engine, ledger.c.event == "started", equals=1))
    first.signal(signal.SIGKILL)
    assert await first.exit_code() == -signal.SIGKILL
    assert await count_where(engine, Job.locked_by.is_not(None), table=Job) == 1

    second = spawn(SQLA_JOBS_LOCK_TIMEOUT="1")
    await wait_until(predicate(engine, ledger.c.event == "finished", equals=1), timeout=30)
    await wait_until(predicate(engine, equals=0, table=Job))
    assert await count_where(engine, ledger.c.event == "started") == 2
    second.signal(signal.SIGTERM)
    assert await second.exit_code() == 0


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


async def test_a_killed_workers_job_is_rescued_by_heartbeat_before_the_lock_timeout(
    engine: AsyncEngine, spawn: Spawn
) -> None:
    fast_heartbeat = {"SQLA_JOBS_HEARTBEAT_INTERVAL": "0.2", "SQLA_JOBS_HEARTBEAT_TIMEOUT": "1.5"}
    first = spawn(**fast_heartbeat)
    async with AsyncSession(engine) as session:
        session.add(enqueue(HangOnce(key="hang")))
        await session.commit()
    await wait_until(predicate(engine, ledger.c.event == "started", equals=1))
    first.signal(signal.SIGKILL)
    assert await first.exit_code() == -signal.SIGKILL

    # The lock timeout stays at its 2 h default: only the dead worker's silence frees the job.
    second = spawn(**fast_heartbeat)
    await wait_until(predicate(engine, ledger.c.event == "finished", equals=1), timeout=30)
    await wait_until(predicate(engine, equals=0, table=Job))
    assert await count_where(engine, ledger.c.event == "started") == 2
    second.signal(signal.SIGTERM)
    assert await second.exit_code() == 0
    assert "rescued jobs of dead workers" in second.output
