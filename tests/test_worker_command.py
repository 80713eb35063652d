"""`python -m sqla_jobs.worker` says what is wrong in one sentence, and runs the README's task."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine

from sqla_jobs import enqueue
from tests.cli_tasks import ledger, ledger_metadata
from tests.command_app.mail import SendEmail
from tests.helpers import TestDatabase, wait_until
from tests.processes import WorkerProcess, predicate

REPO = Path(__file__).resolve().parent.parent


def run_command(
    *args: str, cwd: Path, timeout: float = 60, **env: str
) -> subprocess.CompletedProcess[str]:
    environment = {
        key: value for key, value in os.environ.items() if not key.startswith("SQLA_JOBS_")
    }
    environment |= {"PYTHONPATH": str(REPO), **env}
    return subprocess.run(
        [sys.executable, "-m", "sqla_jobs.worker", *args],
        env=environment,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def assert_one_sentence(result: subprocess.CompletedProcess[str], code: int, text: str) -> None:
    output = result.stdout + result.stderr
    assert result.returncode == code, output
    assert text in output, output
    assert "Traceback" not in output, output


@pytest.mark.parametrize(
    ("url", "text"),
    [
        ("mysql://app@db/app", "sqla_jobs runs on PostgreSQL and SQLite, not mysql"),
        ("postgresql://app@db:five/app", "the database URL cannot be parsed"),
    ],
)
def test_an_unusable_url_is_one_sentence(tmp_path: Path, url: str, text: str) -> None:
    result = run_command("--import", "tests.cli_tasks", "--database-url", url, cwd=tmp_path)
    assert_one_sentence(result, 2, text)


def test_an_unmigrated_database_says_to_run_migrate(
    empty_pg_database: TestDatabase, tmp_path: Path
) -> None:
    result = run_command(
        "--import", "tests.cli_tasks", "--database-url", empty_pg_database.url, cwd=tmp_path
    )
    assert_one_sentence(result, 1, "has no sqla_jobs schema: run `python -m sqla_jobs migrate`")


def test_an_unreachable_database_is_waited_for_then_named(tmp_path: Path) -> None:
    url = "postgresql://app@127.0.0.1:9/app"  # the discard port: nothing listens
    result = run_command(
        "--import",
        "tests.cli_tasks",
        "--database-url",
        url,
        cwd=tmp_path,
        SQLA_JOBS_STARTUP_TIMEOUT="1",
    )
    assert_one_sentence(result, 1, "cannot connect to postgresql://app@127.0.0.1:9/app after 1 s")
    assert "database not reachable yet; waiting" in result.stderr


def test_a_missing_database_is_named_at_once(pg_database: TestDatabase, tmp_path: Path) -> None:
    url = make_url(pg_database.url).set(database="sqla_jobs_no_such_database")
    result = run_command(
        "--import",
        "tests.cli_tasks",
        "--database-url",
        url.render_as_string(hide_password=False),
        cwd=tmp_path,
        SQLA_JOBS_STARTUP_TIMEOUT="60",
    )
    assert_one_sentence(result, 1, 'database "sqla_jobs_no_such_database" does not exist')


def test_the_sqlite_default_is_announced(tmp_path: Path) -> None:
    result = run_command("--import", "tests.cli_tasks", cwd=tmp_path)
    assert_one_sentence(result, 1, "has no sqla_jobs schema")
    assert "no database configured" in result.stderr
    assert str(tmp_path / "sqla_jobs.db") in result.stderr


def test_a_file_path_import_suggests_the_module_name(tmp_path: Path) -> None:
    result = run_command("--import", "tests/cli_tasks.py", cwd=tmp_path)
    assert_one_sentence(result, 2, "try --import tests.cli_tasks")


def test_a_task_without_run_is_named(tmp_path: Path) -> None:
    result = run_command("--import", "tests.command_app.abstract", cwd=tmp_path)
    assert_one_sentence(
        result, 2, "tests.command_app.abstract.Forgetful do(es) not implement run()"
    )


@pytest.fixture
async def engine(pg_database: TestDatabase) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(pg_database.url)
    async with engine.begin() as connection:
        await connection.run_sync(ledger_metadata.create_all)
    yield engine
    await engine.dispose()


async def test_the_readme_task_runs_with_state_from_a_factory(
    pg_database: TestDatabase, engine: AsyncEngine, tmp_path: Path
) -> None:
    worker = WorkerProcess(
        pg_database.url,
        tmp_path / "worker.log",
        "--import",
        "tests.command_app.mail",
        "--state",
        "tests.command_app.mail:worker_state",
        "--queues",
        "mail,nobody_uses_this",
    )
    try:
        async with AsyncSession(engine) as session:
            session.add(enqueue(SendEmail(to="ada@example.com")))
            await session.commit()
        await wait_until(predicate(engine, ledger.c.event == "mailed", equals=1), timeout=30)
        worker.signal(signal.SIGTERM)
        assert await worker.exit_code() == 0, worker.output
    finally:
        worker.kill()
    assert await predicate(engine, ledger.c.key == "state", equals=2)()  # opened, closed
    assert "no imported task uses this queue" in worker.output
    assert "nobody_uses_this" in worker.output


def test_migrate_against_a_missing_database_is_one_sentence(
    pg_database: TestDatabase, tmp_path: Path
) -> None:
    url = make_url(pg_database.url).set(database="sqla_jobs_no_such_database")
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SQLA_JOBS_")}
    command = [sys.executable, "-m", "sqla_jobs", "migrate", "--database-url"]
    result = subprocess.run(
        [*command, url.render_as_string(hide_password=False)],
        env=environment | {"PYTHONPATH": str(REPO)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert_one_sentence(result, 1, "sqla_jobs_no_such_database")
    assert "migration failed" in result.stderr


def test_a_metrics_port_with_several_processes_is_refused(tmp_path: Path) -> None:
    result = run_command(
        "--import", "tests.cli_tasks", "--metrics-port", "9100", "--processes", "2", cwd=tmp_path
    )
    assert_one_sentence(result, 2, "metrics_port serves one process")


def test_a_taken_metrics_port_is_one_sentence(pg_database: TestDatabase, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        result = run_command(
            "--import", "tests.cli_tasks", "--database-url", pg_database.url,
            "--metrics-port", port, cwd=tmp_path,
        )  # fmt: skip
    assert_one_sentence(result, 1, f"cannot serve metrics on port {port}")
