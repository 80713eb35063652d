"""``--processes N``: one supervisor, N worker processes sharing a real PostgreSQL queue.

The supervisor and its children are real processes running ``python -m sqla_jobs.worker``; the
tests read their JSON log lines to learn the children's pids and what the supervisor did.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from sqla_jobs.cli import main, worker_main
from sqla_jobs.models import Job
from tests.helpers import TestDatabase, wait_until

REPO = Path(__file__).resolve().parent.parent
# The same names as tests/tasks_for_processes.py, which only the child processes import, so its
# Task stays out of this process's registry.
TASK_MODULE = "tests.tasks_for_processes"
TASK_NAME = "tests.record_pid"
QUEUE = "supervisor_test"
LEDGER_URL_ENV_VAR = "SUPERVISOR_TEST_LEDGER_URL"
# Generous: it bounds a failing test, not a passing one, which returns as soon as it can.
TIMEOUT = 20.0
# Starting a child (a Python process importing sqla_jobs, its preflight, its lease) took more
# than 20 s under `-n 3` on a loaded machine: a bound on waiting, not a promise under test.
STARTUP_TIMEOUT = 60.0


@dataclass
class SupervisorRun:
    """A running ``python -m sqla_jobs.worker`` supervisor and its JSON log file."""

    process: subprocess.Popen[bytes]
    log_path: Path

    def records(self, message: str) -> list[dict[str, Any]]:
        """Return the loguru records with `message`, from the supervisor and its children."""
        found = []
        for line in self.log_path.read_text().splitlines():
            try:
                record: dict[str, Any] = json.loads(line)["record"]
            except (ValueError, KeyError, TypeError):
                continue  # a line that is not loguru's JSON: a traceback, a partial write
            if record["message"] == message:
                found.append(record)
        return found

    def child_pids(self) -> list[int]:
        """Return the pids of the children the supervisor started, in order."""
        return [record["extra"]["pid"] for record in self.records("worker process started")]

    def ready_pids(self) -> set[int]:
        """Return the pids of the processes whose worker started serving."""
        return {record["process"]["id"] for record in self.records("worker started")}

    async def wait_for_exit(self) -> int:
        """Wait for the supervisor to exit and return its exit code."""

        async def exited() -> bool:
            return self.process.poll() is not None

        await wait_until(exited, TIMEOUT)
        return self.process.returncode


@pytest.fixture
async def pg_engine(pg_database: TestDatabase) -> AsyncIterator[AsyncEngine]:
    """An `AsyncEngine` on the test's PostgreSQL database, with the ledger table created."""
    engine = create_async_engine(pg_database.url)
    async with engine.begin() as connection:
        await connection.execute(
            text("CREATE TABLE supervisor_test_ledger (number integer NOT NULL, pid integer)")
        )
        await connection.execute(
            text("CREATE TABLE supervisor_test_events (key text, event text, pid integer)")
        )
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
def start_supervisor(
    pg_database: TestDatabase, tmp_path: Path
) -> Iterator[Callable[..., SupervisorRun]]:
    """Start ``python -m sqla_jobs.worker`` with extra flags; leave no process behind."""
    runs: list[SupervisorRun] = []

    def start(
        *flags: str, env: dict[str, str] | None = None, own_group: bool = False
    ) -> SupervisorRun:
        log_path = tmp_path / f"supervisor_{len(runs)}.log"
        environment = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
            "SQLA_JOBS_POLL_INTERVAL": "0.05",
            "SQLA_JOBS_SHUTDOWN_TIMEOUT": "5",
            LEDGER_URL_ENV_VAR: pg_database.url,
            **(env or {}),
        }
        command = [
            *(sys.executable, "-m", "sqla_jobs.worker", "--import", TASK_MODULE),
            *("--queues", QUEUE, "--database-url", pg_database.url, "--log-json", *flags),
        ]
        # Append mode: the supervisor and its children share the file without overwriting.
        # `own_group` gives it a process group apart from pytest's, as a shell gives each job,
        # so that a test can signal the group as a terminal's Ctrl-C does.
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                command,
                cwd=REPO,
                env=environment,
                stdout=log,
                stderr=log,
                process_group=0 if own_group else None,
            )
        runs.append(SupervisorRun(process, log_path))
        return runs[-1]

    yield start
    for run in runs:
        if run.process.poll() is None:
            # A failed test: kill the children by pid, whichever process group they are in.
            for pid in run.child_pids():
                _kill(pid)
            run.process.kill()
            run.process.wait()
        print(run.log_path.read_text())  # shown by pytest when the test failed


async def _wait_until_ready(run: SupervisorRun, count: int) -> None:
    async def ready() -> bool:
        return len(run.ready_pids()) >= count

    await wait_until(ready, STARTUP_TIMEOUT)


async def _enqueue(engine: AsyncEngine, numbers: range) -> None:
    rows = [
        {"id": uuid.uuid4(), "name": TASK_NAME, "payload": {"number": n}, "queue": QUEUE}
        for n in numbers
    ]
    async with engine.begin() as connection:
        await connection.execute(insert(Job).values(rows))


async def _ledger(engine: AsyncEngine) -> list[tuple[int, int]]:
    async with engine.connect() as connection:
        result = await connection.execute(text("SELECT number, pid FROM supervisor_test_ledger"))
        return [(number, pid) for number, pid in result]


async def _job_count(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        return int(await connection.scalar(select(func.count()).select_from(Job)) or 0)


def _is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


async def test_two_processes_share_the_jobs_and_stop_cleanly(
    start_supervisor: Callable[..., SupervisorRun], pg_engine: AsyncEngine
) -> None:
    run = start_supervisor("--processes", "2", "--concurrency", "4")
    # Enqueue once both serve, so the first to start cannot drain the queue alone.
    await _wait_until_ready(run, 2)
    await _enqueue(pg_engine, range(400))

    async def all_done() -> bool:
        return len(await _ledger(pg_engine)) >= 400 and await _job_count(pg_engine) == 0

    await wait_until(all_done, TIMEOUT)
    ledger = await _ledger(pg_engine)
    assert sorted(number for number, _ in ledger) == list(range(400))  # each ran exactly once
    pids = {pid for _, pid in ledger}
    assert len(pids) >= 2
    assert pids <= set(run.child_pids())

    run.process.send_signal(signal.SIGTERM)
    assert await run.wait_for_exit() == 0
    assert not [pid for pid in run.child_pids() if _is_alive(pid)]
    assert [r["extra"]["exit_code"] for r in run.records("worker process stopped")] == [0, 0]
    async with pg_engine.connect() as connection:
        locked = await connection.scalar(
            select(func.count()).select_from(Job).where(Job.locked_by.is_not(None))
        )
    assert locked == 0


async def test_killed_process_is_restarted(
    start_supervisor: Callable[..., SupervisorRun], pg_engine: AsyncEngine
) -> None:
    # From the environment this time: the children must not each become a supervisor.
    run = start_supervisor(env={"SQLA_JOBS_PROCESSES": "2"})
    await _wait_until_ready(run, 2)
    killed = run.child_pids()[0]
    os.kill(killed, signal.SIGKILL)

    async def restarted() -> bool:
        exits = run.records("worker process exited unexpectedly; restarting")
        return any(r["extra"]["pid"] == killed for r in exits) and len(run.ready_pids()) >= 3

    await wait_until(restarted, STARTUP_TIMEOUT)  # a new child starts
    [exit_record] = run.records("worker process exited unexpectedly; restarting")
    assert exit_record["extra"]["exit_code"] == -signal.SIGKILL
    assert len(run.child_pids()) == 3
    assert len(run.records("supervisor started")) == 1

    await _enqueue(pg_engine, range(1))

    async def job_ran() -> bool:
        return len(await _ledger(pg_engine)) == 1

    await wait_until(job_ran, TIMEOUT)
    [(_, pid)] = await _ledger(pg_engine)
    assert pid in run.child_pids()
    assert pid != killed

    run.process.send_signal(signal.SIGTERM)
    assert await run.wait_for_exit() == 0
    assert not [pid for pid in run.child_pids() if _is_alive(pid)]


def test_processes_flag_must_be_a_positive_integer(capsys: pytest.CaptureFixture[str]) -> None:
    for entry_point in (worker_main, lambda args: main(["worker", *args])):
        assert entry_point(["--processes", "0"]) == 2
        assert "processes: Input should be greater than or equal to 1" in capsys.readouterr().err
        assert entry_point(["--processes", "two"]) == 2
        assert "Invalid value for '--processes': 'two' is not a valid integer" in (
            capsys.readouterr().err
        )


def test_processes_setting_must_be_at_least_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)  # no stray .env file
    monkeypatch.setenv("SQLA_JOBS_PROCESSES", "0")
    assert worker_main([]) == 2
    assert "invalid settings: processes: Input should be greater than or equal to 1" in (
        capsys.readouterr().err
    )


PAUSE = "tests.pause"
PAUSE_IN_THREAD = "tests.pause_in_thread"
# Settings of the stop tests: running jobs get far longer than they need, so only a forced stop
# (never the shutdown timeout) can cut them short. The tests run two children with
# `--concurrency 1`, so each child holds one of the two jobs.
STOP_TEST_ENV = {"SQLA_JOBS_SHUTDOWN_TIMEOUT": "60"}


async def _start_paused_jobs(
    run: SupervisorRun, engine: AsyncEngine, *, seconds: float, workers: int = 2
) -> list[uuid.UUID]:
    """Enqueue an async job and a ``def run`` job of `seconds` each; wait until both run."""
    await _wait_until_ready(run, workers)
    ids = [uuid.uuid4(), uuid.uuid4()]
    rows = [
        {"id": job_id, "name": name, "payload": {"key": name, "seconds": seconds}, "queue": QUEUE}
        for job_id, name in zip(ids, (PAUSE, PAUSE_IN_THREAD), strict=True)
    ]
    async with engine.begin() as connection:
        await connection.execute(insert(Job).values(rows))

    async def both_started() -> bool:
        return len(await _events(engine, "started")) == 2

    await wait_until(both_started, TIMEOUT)
    return ids


async def _events(engine: AsyncEngine, event: str) -> list[str]:
    async with engine.connect() as connection:
        result = await connection.execute(
            text("SELECT key FROM supervisor_test_events WHERE event = :event"), {"event": event}
        )
        return sorted(key for (key,) in result)


async def _locked_ids(engine: AsyncEngine) -> set[uuid.UUID]:
    async with engine.connect() as connection:
        result = await connection.scalars(select(Job.id).where(Job.locked_by.is_not(None)))
        return set(result)


async def _assert_stopped_gracefully(run: SupervisorRun, engine: AsyncEngine) -> None:
    """Both paused jobs ran to the end and were recorded; every process exited 0."""
    assert await run.wait_for_exit() == 0
    assert not [pid for pid in run.child_pids() if _is_alive(pid)]
    assert [r["extra"]["exit_code"] for r in run.records("worker process stopped")] == [0, 0]
    assert await _events(engine, "finished") == [PAUSE, PAUSE_IN_THREAD]
    assert await _job_count(engine) == 0  # both recorded as completed, none left locked
    assert not run.records("job cancelled by shutdown")
    assert not run.records("second signal; cancelling running jobs")


async def test_sigterm_to_every_process_of_the_unit_lets_running_jobs_finish(
    start_supervisor: Callable[..., SupervisorRun], pg_engine: AsyncEngine
) -> None:
    # Regression: systemd's default KillMode=control-group signals every process of the unit,
    # so each child got SIGTERM from systemd and again from the supervisor, and took the second
    # one as "stop at once", cancelling its async job and leaving its `def run` job locked.
    run = start_supervisor("--processes", "2", "--concurrency", "1", env=STOP_TEST_ENV)
    await _start_paused_jobs(run, pg_engine, seconds=2)
    for pid in (run.process.pid, *run.child_pids()):
        os.kill(pid, signal.SIGTERM)
    await _assert_stopped_gracefully(run, pg_engine)
    # Each child did get a second SIGTERM, and let it pass.
    assert len(run.records("signal received while already stopping; ignored")) >= 2


async def test_ctrl_c_in_a_terminal_lets_running_jobs_finish(
    start_supervisor: Callable[..., SupervisorRun], pg_engine: AsyncEngine
) -> None:
    # A terminal sends SIGINT to its whole foreground process group: the supervisor and the
    # children it started in its group.
    run = start_supervisor(
        "--processes", "2", "--concurrency", "1", env=STOP_TEST_ENV, own_group=True
    )
    await _start_paused_jobs(run, pg_engine, seconds=2)
    os.killpg(run.process.pid, signal.SIGINT)
    await _assert_stopped_gracefully(run, pg_engine)
    assert len(run.records("signal received while already stopping; ignored")) >= 2


async def test_a_second_signal_to_the_supervisor_stops_its_children_at_once(
    start_supervisor: Callable[..., SupervisorRun], pg_engine: AsyncEngine
) -> None:
    run = start_supervisor("--processes", "2", "--concurrency", "1", env=STOP_TEST_ENV)
    async_id, thread_id = await _start_paused_jobs(run, pg_engine, seconds=300)
    run.process.send_signal(signal.SIGTERM)

    async def both_waiting() -> bool:
        return len(run.records("waiting for running jobs")) == 2

    await wait_until(both_waiting, TIMEOUT)
    run.process.send_signal(signal.SIGTERM)
    assert await run.wait_for_exit() == 1
    assert not [pid for pid in run.child_pids() if _is_alive(pid)]
    assert [r["extra"]["exit_code"] for r in run.records("worker process stopped")] == [1, 1]
    assert len(run.records("stop at once requested; cancelling running jobs")) == 2
    # The force path as for a lone worker: the async job is cancelled and released for another
    # worker; the thread cannot be stopped, so its job stays locked until it is rescued.
    assert await _events(pg_engine, "finished") == []
    assert await _locked_ids(pg_engine) == {thread_id}
    async with pg_engine.connect() as connection:
        assert await connection.scalar(select(func.count()).where(Job.id == async_id)) == 1


async def test_a_lone_workers_second_sigterm_still_stops_it_at_once(
    start_supervisor: Callable[..., SupervisorRun], pg_engine: AsyncEngine
) -> None:
    # --processes 1: no supervisor, the command is the worker itself, as before.
    run = start_supervisor("--processes", "1", "--concurrency", "2", env=STOP_TEST_ENV)
    async_id, thread_id = await _start_paused_jobs(run, pg_engine, seconds=300, workers=1)
    assert run.ready_pids() == {run.process.pid}
    run.process.send_signal(signal.SIGTERM)

    async def waiting() -> bool:
        return len(run.records("waiting for running jobs")) == 1

    await wait_until(waiting, TIMEOUT)
    run.process.send_signal(signal.SIGTERM)
    assert await run.wait_for_exit() == 1
    assert len(run.records("second signal; cancelling running jobs")) == 1
    assert await _locked_ids(pg_engine) == {thread_id}
    assert await _events(pg_engine, "finished") == []
    async with pg_engine.connect() as connection:
        assert await connection.scalar(select(func.count()).where(Job.id == async_id)) == 1


async def test_children_of_a_killed_supervisor_finish_their_jobs_and_exit(
    start_supervisor: Callable[..., SupervisorRun], pg_engine: AsyncEngine
) -> None:
    run = start_supervisor("--processes", "2", "--concurrency", "1", env=STOP_TEST_ENV)
    await _start_paused_jobs(run, pg_engine, seconds=2)
    run.process.kill()
    assert await run.wait_for_exit() == -signal.SIGKILL

    # Orphans: init, not this test, reaps them, so their own last log lines tell their end.
    async def children_stopped() -> bool:
        return len(run.records("worker stopped")) == 2

    await wait_until(children_stopped, TIMEOUT)
    assert [r["extra"]["exit_code"] for r in run.records("worker stopped")] == [0, 0]
    assert len(run.records("supervisor gone; shutting down gracefully")) == 2
    assert await _events(pg_engine, "finished") == [PAUSE, PAUSE_IN_THREAD]
    assert await _job_count(pg_engine) == 0
