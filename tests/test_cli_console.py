"""The ``sqla-jobs`` console script and ``python -m sqla_jobs``, as real processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from tests.admin_rows import add_dead_letter, add_worker
from tests.helpers import TestDatabase

REPO = Path(__file__).resolve().parent.parent
CONSOLE_SCRIPT = Path(sys.executable).parent / "sqla-jobs"


def run(
    *args: str, cwd: Path, stdin: str = "", module: bool = False
) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SQLA_JOBS_")}
    command = [sys.executable, "-m", "sqla_jobs"] if module else [str(CONSOLE_SCRIPT)]
    return subprocess.run(
        [*command, *args],
        env=environment | {"PYTHONPATH": str(REPO)},
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
async def pg_engine(pg_database: TestDatabase) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(pg_database.url)
    yield engine
    await engine.dispose()


@pytest.fixture(autouse=True)
def _console_script_installed() -> None:
    if not CONSOLE_SCRIPT.exists():
        pytest.fail(f"{CONSOLE_SCRIPT} is missing: install the package (pip install -e .)")


async def test_check_is_a_health_probe(
    pg_database: TestDatabase, pg_engine: AsyncEngine, tmp_path: Path
) -> None:
    unhealthy = run("check", "--database-url", pg_database.url, cwd=tmp_path)
    assert unhealthy.returncode == 1, unhealthy.stderr
    assert unhealthy.stdout.splitlines()[2] == "FAIL workers: no worker is registered"
    await add_worker(pg_engine, "worker-1", heartbeat_ago=1)
    healthy = run("check", "--database-url", pg_database.url, cwd=tmp_path)
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    assert "Traceback" not in healthy.stderr


def test_enqueue_then_list_and_show_from_the_shell(
    pg_database: TestDatabase, tmp_path: Path
) -> None:
    url = ("--database-url", pg_database.url)
    enqueued = run(
        "enqueue",
        "tests.cli.note",
        "--payload",
        '{"key": "k"}',
        "--import",
        "tests.cli_tasks",
        *url,
        cwd=tmp_path,
    )
    assert enqueued.returncode == 0, enqueued.stderr
    job_id = enqueued.stdout.strip()
    listed = json.loads(run("list", "--json", *url, cwd=tmp_path).stdout)
    assert [job["id"] for job in listed] == [job_id]
    shown = run("show", job_id, *url, cwd=tmp_path, module=True)
    assert shown.returncode == 0, shown.stderr
    assert '"key": "k"' in shown.stdout


async def test_purge_without_yes_and_without_a_terminal_deletes_nothing(
    pg_database: TestDatabase, pg_engine: AsyncEngine, tmp_path: Path
) -> None:
    await add_dead_letter(pg_engine, failed_ago=8 * 86400)
    url = ("--database-url", pg_database.url)
    refused = run("purge", "--older-than", "7d", *url, cwd=tmp_path)
    assert refused.returncode == 1
    assert "Traceback" not in refused.stderr
    purged = run("purge", "--older-than", "7d", "--yes", *url, cwd=tmp_path)
    assert (purged.returncode, purged.stdout) == (0, "deleted 1 dead letter(s)\n")


def test_errors_are_one_sentence_with_the_documented_exit_codes(tmp_path: Path) -> None:
    down = run("stats", "--database-url", "postgresql://app@127.0.0.1:9/app", cwd=tmp_path)
    assert down.returncode == 1
    assert down.stderr.strip().startswith("Error: cannot use the database postgresql://app@")
    assert "Traceback" not in down.stderr
    usage = run("list", "--state", "lost", cwd=tmp_path)
    assert usage.returncode == 2
    assert "Invalid value for '--state'" in usage.stderr
    assert run("--help", cwd=tmp_path, module=True).returncode == 0
