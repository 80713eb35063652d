"""Poison jobs against a supervised pool of real worker processes on the private PostgreSQL.

A job that raises `SystemExit` or a `KeyboardInterrupt` of its own is a failed attempt like any
other; one that kills its worker process (``os._exit``) is counted by the heartbeat rescue of
the surviving workers ("worker lost"), and the supervisor restarts the dead process. Either way
the job ends in the dead-letter table after its retries, and the pool keeps serving other jobs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections.abc import Awaitable, Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from sqla_jobs import DeadLetterJob, Job, Task, enqueue, enqueue_many
from tests.cli_tasks import Note, ledger
from tests.faults.conftest import SpawnWorker
from tests.faults.pg import PrivatePostgres
from tests.faults.poison_tasks import (
    ExitsProcess,
    RaisesInterrupt,
    RaisesInterruptInThread,
    RaisesSystemExit,
    RaisesSystemExitInThread,
)
from tests.helpers import wait_until
from tests.processes import WorkerProcess

FAST_RESCUE = {
    "SQLA_JOBS_HEARTBEAT_INTERVAL": "0.2",
    "SQLA_JOBS_HEARTBEAT_TIMEOUT": "1",
    "SQLA_JOBS_POLL_INTERVAL": "0.05",
}
RESTARTED = "worker process exited unexpectedly; restarting"
STARTED = "worker process started"


def log_records(process: WorkerProcess) -> list[dict[str, Any]]:
    """Return the JSON log records of the supervisor and its children (they share one file)."""
    return [
        json.loads(line)["record"] for line in process.output.splitlines() if line.startswith("{")
    ]


def restarts(process: WorkerProcess) -> list[dict[str, Any]]:
    """Return the bound data of each "restarting" line the supervisor logged."""
    return [r["extra"] for r in log_records(process) if r["message"] == RESTARTED]


def children_ready(process: WorkerProcess) -> Callable[[], Awaitable[bool]]:
    """Tell whether the latest child of each slot has started its worker (installed handlers)."""

    async def predicate() -> bool:
        records = log_records(process)
        latest = {
            r["extra"]["process"]: r["extra"]["pid"] for r in records if r["message"] == STARTED
        }
        ready = {r["process"]["id"] for r in records if r["message"] == "worker started"}
        return len(latest) == 2 and set(latest.values()) <= ready

    return predicate


def child_pids(pid: int) -> list[int]:
    """Return the pids of the live children of process `pid`, from /proc."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue  # it exited meanwhile
        if int(fields[1]) == pid:
            children.append(int(stat.parent.name))
    return children


@pytest.fixture
def supervised(spawn_worker: SpawnWorker) -> Iterator[Callable[[], WorkerProcess]]:
    """Start ``--processes 2`` supervisors; afterwards kill any left, children first listed."""
    started: list[WorkerProcess] = []

    def start() -> WorkerProcess:
        process = spawn_worker(
            "--processes", "2", "--import", "tests.faults.poison_tasks", "--log-json", **FAST_RESCUE
        )
        started.append(process)
        return process

    yield start
    for process in started:
        if process.process.poll() is None:
            # Children run in process groups of their own: kill the supervisor first, so it
            # cannot restart them, then the children it had.
            children = child_pids(process.process.pid)
            process.kill()
            for pid in children:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


async def add_all(engine: AsyncEngine, tasks: Iterable[Task]) -> None:
    async with AsyncSession(engine) as session:
        session.add_all(enqueue(task) for task in tasks)
        await session.commit()


async def add_notes(engine: AsyncEngine, keys: range) -> None:
    async with AsyncSession(engine) as session:
        for statement in enqueue_many(Note(key=f"note-{k}") for k in keys):
            await session.execute(statement)
        await session.commit()


async def count(engine: AsyncEngine, table: Any) -> int:
    async with AsyncSession(engine) as session:
        return (await session.scalar(select(func.count()).select_from(table))) or 0


def table_has(engine: AsyncEngine, table: Any, n: int) -> Callable[[], Awaitable[bool]]:
    async def predicate() -> bool:
        return await count(engine, table) == n

    return predicate


async def dead_letters(engine: AsyncEngine) -> dict[str, DeadLetterJob]:
    async with AsyncSession(engine) as session:
        rows = (await session.scalars(select(DeadLetterJob))).all()
    return {row.payload["key"]: row for row in rows}


async def events_per_key(engine: AsyncEngine, event: str) -> dict[str, int]:
    async with AsyncSession(engine) as session:
        query = select(ledger.c.key, func.count()).where(ledger.c.event == event)
        rows = await session.execute(query.group_by(ledger.c.key))
        return {key: n for key, n in rows}


async def test_poison_jobs_end_dead_lettered_while_the_pool_keeps_serving(
    fault_engine: AsyncEngine, supervised: Callable[[], WorkerProcess]
) -> None:
    supervisor = supervised()
    raising: list[Task] = [
        RaisesSystemExit(key="system-exit"),
        RaisesSystemExitInThread(key="system-exit-in-thread"),
        RaisesInterrupt(key="interrupt"),
        RaisesInterruptInThread(key="interrupt-in-thread"),
    ]
    # Raised BaseExceptions first, alone with ordinary jobs: no process may die of them, and
    # an os._exit meanwhile would turn one of their attempts into "worker lost".
    await add_all(fault_engine, raising)
    await add_notes(fault_engine, range(50))
    await wait_until(table_has(fault_engine, Job, 0), timeout=30, interval=0.1)
    assert restarts(supervisor) == [], supervisor.output

    await add_all(fault_engine, [ExitsProcess(key="os-exit")])
    await add_notes(fault_engine, range(50, 100))

    async def a_worker_died() -> bool:
        return len(restarts(supervisor)) >= 1

    await wait_until(a_worker_died, timeout=30, interval=0.1)
    # Enqueued while a process is dead or restarting: the pool still serves them.
    await add_notes(fault_engine, range(100, 150))
    await wait_until(table_has(fault_engine, DeadLetterJob, 5), timeout=60, interval=0.1)
    await wait_until(table_has(fault_engine, Job, 0), timeout=60, interval=0.1)

    letters = await dead_letters(fault_engine)
    assert set(letters) == {*(task.model_dump()["key"] for task in raising), "os-exit"}
    messages = {key: letter.last_error_message or "" for key, letter in letters.items()}
    counts = {key: letter.error_count for key, letter in letters.items()}
    assert counts == dict.fromkeys(letters, 2)  # the first attempt and its one retry
    for key in ("system-exit", "system-exit-in-thread"):
        assert messages[key].strip().endswith("SystemExit: 3"), messages[key]
    for key in ("interrupt", "interrupt-in-thread"):
        assert messages[key].strip().endswith("Interrupt: raised by the job"), messages[key]
    assert messages["os-exit"].startswith("worker lost"), messages["os-exit"]

    attempts = await events_per_key(fault_engine, "attempt")
    assert attempts == dict.fromkeys(letters, 2)
    ran = await events_per_key(fault_engine, "ran")
    assert set(ran) == {f"note-{k}" for k in range(150)}, "an ordinary job was lost"

    # Exactly the two attempts of the os._exit job killed a process, and each was restarted.
    assert [r["exit_code"] for r in restarts(supervisor)] == [1, 1], supervisor.output
    assert "job processing crashed" not in supervisor.output
    assert supervisor.process.poll() is None, supervisor.output
    # A child still starting when the signal comes dies of it (exit -15) and the supervisor
    # exits 1: a bug of its own, pinned below; here the restarted child is let start first.
    await wait_until(children_ready(supervisor), timeout=30, interval=0.1)
    supervisor.signal(signal.SIGTERM)
    code = await supervisor.exit_code()
    assert code == 0, supervisor.output
    stopped = [
        r["extra"] for r in log_records(supervisor) if r["message"] == "worker process stopped"
    ]
    assert [s["exit_code"] for s in stopped] == [0, 0]


async def test_sigterm_while_waiting_for_the_database_at_start_exits_0(
    private_pg: PrivatePostgres, supervised: Callable[[], WorkerProcess]
) -> None:
    # The supervisor checks the database before it starts any child, and waits while it is down.
    await asyncio.to_thread(private_pg.stop)
    try:
        supervisor = supervised()

        async def waits_for_the_database() -> bool:
            return any(
                r["message"] == "database not reachable yet; waiting"
                for r in log_records(supervisor)
            )

        await wait_until(waits_for_the_database, timeout=30, interval=0.05)
        supervisor.signal(signal.SIGTERM)
        code = await supervisor.exit_code()
    finally:
        await asyncio.to_thread(private_pg.start)
    assert code == 0, supervisor.output
    assert not [r for r in log_records(supervisor) if r["message"] == STARTED]


async def test_sigterm_while_the_children_are_starting_exits_0(
    supervised: Callable[[], WorkerProcess],
) -> None:
    # A child still starting (no signal handler yet) dies of the forwarded signal itself; one
    # a little further along stops gracefully. Either way it held no job: a clean stop.
    supervisor = supervised()

    async def both_children_started() -> bool:
        return (
            len({r["extra"]["pid"] for r in log_records(supervisor) if r["message"] == STARTED})
            == 2
        )

    await wait_until(both_children_started, timeout=30, interval=0.01)
    supervisor.signal(signal.SIGTERM)
    code = await supervisor.exit_code()
    stopped = [
        r["extra"] for r in log_records(supervisor) if r["message"] == "worker process stopped"
    ]
    assert code == 0, stopped
