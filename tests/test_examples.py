"""The examples run as their READMEs say: one command each, with a real worker process.

The sign-up examples run ``python -m examples.<name>`` (a real web server, and the worker as
``python -m sqla_jobs.worker`` with the README's flags) on an empty database of their own; the
SQLite quickstart runs ``python examples/quickstart.py`` in an empty directory.
"""

from __future__ import annotations

import importlib
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import column, func, select, table
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from sqla_jobs.models import DeadLetterJob, Job
from tests.helpers import TestDatabase, wait_until

REPO = Path(__file__).resolve().parent.parent
SIGNUP_EXAMPLES = ["fastapi_signup", "flask_signup"]


def environment(**variables: str) -> dict[str, str]:
    """This process's environment without sqla_jobs settings, plus `variables`."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("SQLA_JOBS_")}
    return {**inherited, **variables}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Launched:
    """``python -m examples.<name>`` running from the repository's root, output to a file."""

    def __init__(self, name: str, database_url: str, tmp_path: Path) -> None:
        self.user_table = f"{name}_user"
        self.port = free_port()
        self.outbox = tmp_path / "outbox.txt"
        self.log_path = tmp_path / "example.log"
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", f"examples.{name}", "--port", str(self.port)],
                cwd=REPO,
                env=environment(SQLA_JOBS_DATABASE_URL=database_url, OUTBOX_PATH=str(self.outbox)),
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    @property
    def output(self) -> str:
        return self.log_path.read_text()

    def sent(self) -> list[str]:
        return self.outbox.read_text().splitlines() if self.outbox.exists() else []

    def stop(self) -> int:
        """SIGTERM the launcher (which stops the web server, then the worker); its exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise


@pytest.fixture
async def example_engine(empty_pg_database: TestDatabase) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(empty_pg_database.url)
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture(params=SIGNUP_EXAMPLES)
def launched(
    request: pytest.FixtureRequest, empty_pg_database: TestDatabase, tmp_path: Path
) -> Iterator[Launched]:
    # A plain postgresql:// URL, as a user sets it: the app and the worker pick their drivers.
    url = make_url(empty_pg_database.url).set(drivername="postgresql")
    example = Launched(request.param, url.render_as_string(hide_password=False), tmp_path)
    try:
        yield example
    finally:
        example.stop()


async def count(engine: AsyncEngine, model: type[Job] | type[DeadLetterJob]) -> int:
    async with engine.connect() as connection:
        return (await connection.scalar(select(func.count()).select_from(model))) or 0


async def emails(engine: AsyncEngine, user_table: str) -> list[str]:
    users = table(user_table, column("email"))
    async with engine.connect() as connection:
        return list((await connection.scalars(select(users.c.email))).all())


@pytest.mark.postgresql
async def test_signup_example_sends_the_welcome_email_and_a_failed_signup_leaves_nothing(
    launched: Launched, example_engine: AsyncEngine
) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{launched.port}") as client:

        async def is_serving() -> bool:
            assert launched.process.poll() is None, f"the example exited:\n{launched.output}"
            try:
                await client.get("/")
            except httpx.TransportError:
                return False
            return True

        await wait_until(is_serving, timeout=60, interval=0.1)
        ada = {"email": "ada@example.com", "name": "Ada"}
        created = await client.post("/signup", json=ada)
        assert created.status_code == 201, created.text

        async def welcomed() -> bool:
            return launched.sent() == ["to=ada@example.com subject=Welcome, Ada!"]

        await wait_until(welcomed, timeout=30)

        duplicate = await client.post("/signup", json=ada)
        assert duplicate.status_code == 409, duplicate.text
        # The referrer lookup flushes first, so this request's user and job rows were
        # inserted before it failed.
        bob = {"email": "bob@example.com", "name": "Bob", "referred_by": "nobody@example.com"}
        unknown_referrer = await client.post("/signup", json=bob)
        assert unknown_referrer.status_code == 422, unknown_referrer.text

    async def no_job_left() -> bool:
        return await count(example_engine, Job) == 0

    # A job leaked by a failed request is either still in the table, or ran (and wrote to
    # the outbox) before it was deleted: the table first, then the outbox, misses neither.
    await wait_until(no_job_left, timeout=30)
    assert launched.sent() == ["to=ada@example.com subject=Welcome, Ada!"]
    assert await count(example_engine, DeadLetterJob) == 0
    assert await emails(example_engine, launched.user_table) == ["ada@example.com"]

    assert launched.stop() == 0, launched.output
    assert "Traceback" not in launched.output
    assert "welcome e-mail sent" in launched.output
    assert "worker stopped" in launched.output


@pytest.mark.parametrize("name", SIGNUP_EXAMPLES)
def test_signup_readme_shows_the_commands_the_example_runs(name: str) -> None:
    launcher = importlib.import_module(f"examples.{name}.__main__")
    readme = (REPO / "examples" / name / "README.md").read_text()
    assert f"python -m examples.{name}\n" in readme
    for command in (launcher.MIGRATE, launcher.WORKER):
        assert f"{' '.join(command)}\n" in readme, command


@pytest.mark.parametrize("name", SIGNUP_EXAMPLES)
def test_signup_example_without_a_postgresql_url_says_so_in_one_line(name: str) -> None:
    for variables in ({}, {"SQLA_JOBS_DATABASE_URL": "sqlite:///app.db"}):
        result = subprocess.run(
            [sys.executable, "-m", f"examples.{name}"],
            cwd=REPO,
            env=environment(**variables),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 1
        assert result.stderr.splitlines() == [
            "this example runs on PostgreSQL: set SQLA_JOBS_DATABASE_URL, for example "
            "export SQLA_JOBS_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres"
        ]


def test_signup_example_without_its_web_framework_says_which_extra_to_install() -> None:
    from examples import launch

    with pytest.raises(SystemExit) as exited:
        launch.require("json", "no_such_framework", "also_missing")
    assert exited.value.code == (
        "this example needs no_such_framework, also_missing: install the examples extra, "
        "pip install -e '.[examples]'"
    )


def test_quickstart_runs_on_the_sqlite_default_in_an_empty_directory(tmp_path: Path) -> None:
    (tmp_path / "examples").mkdir()
    shutil.copy(REPO / "examples" / "quickstart.py", tmp_path / "examples")
    for _ in range(2):  # and again on the database the first run left
        result = subprocess.run(
            [sys.executable, "examples/quickstart.py"],
            cwd=tmp_path,
            env=environment(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        assert lines[:3] == [
            "committed: ada@example.com and 2 jobs",
            "rolled back: bob@example.com, so no jobs for bob",
            "running a worker until no job is due:",
        ]
        # The two jobs run at once, so either may print first.
        assert sorted(lines[3:5]) == [
            "  rebuilt the signup report (new user ada@example.com), enqueued because: signup",
            "  sent the welcome email to ada@example.com (attempt 1)",
        ]
        assert lines[5:] == ["done: 2 jobs ran"]
    assert (tmp_path / "sqla_jobs.db").exists()
