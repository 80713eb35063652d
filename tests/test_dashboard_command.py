"""``sqla-jobs dashboard``: refuses unsafe settings with one line, serves when they are safe."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import httpx2
import pytest

from sqla_jobs.cli import main
from tests.helpers import TestDatabase


def clean_environment(**extra: str) -> dict[str, str]:
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("SQLA_JOBS_DASHBOARD_")
    }
    return {**environment, **extra}


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ([], "the dashboard needs credentials"),
        (["--host", "0.0.0.0", "--insecure-no-auth"], "only allowed on a loopback address"),
        (["--port", "0", "--insecure-no-auth"], "--port must be between 1 and 65535"),
        (["--insecure-no-auth", "--import", "no_such_module_x"], "cannot import"),
    ],
)
def test_unsafe_or_bad_flags_exit_2_with_one_line(
    flags: list[str],
    message: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    sqlite_database: TestDatabase,
) -> None:
    for key in list(os.environ):
        if key.startswith("SQLA_JOBS_DASHBOARD_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(os.path.dirname(sqlite_database.url.removeprefix("sqlite+aiosqlite:///")))
    assert main(["dashboard", "--database-url", sqlite_database.url, *flags]) == 2
    error = capsys.readouterr().err
    assert message in error
    assert "Traceback" not in error
    assert len(error.strip().splitlines()) == 1


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_the_command_serves_with_credentials(sqlite_database: TestDatabase) -> None:
    port = free_port()
    environment = clean_environment(
        SQLA_JOBS_DASHBOARD_USER="ops", SQLA_JOBS_DASHBOARD_PASSWORD="cmd-pa55word"
    )
    command = [sys.executable, "-m", "sqla_jobs", "dashboard", "--port", str(port)]
    server = subprocess.Popen(
        [*command, "--database-url", sqlite_database.url, "--read-only"],
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        url = f"http://127.0.0.1:{port}/dead-letters"
        deadline = time.monotonic() + 30
        while True:
            assert server.poll() is None, server.stderr.read() if server.stderr else ""
            try:
                refused = httpx2.get(url)
                break
            except httpx2.TransportError:
                assert time.monotonic() < deadline, "the dashboard did not answer within 30 s"
                time.sleep(0.1)
        assert refused.status_code == 401
        page = httpx2.get(url, auth=("ops", "cmd-pa55word"))
        assert page.status_code == 200
        assert "read-only" in page.text
        server.terminate()
        # Stopped by a signal, it shuts down and exits cleanly, as the worker does.
        assert server.wait(timeout=10) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        if server.stderr:
            server.stderr.close()


def test_a_database_without_the_schema_is_said_before_serving(
    empty_pg_database: TestDatabase,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("SQLA_JOBS_DASHBOARD_TOKEN", "a-token-long-enough-for-this")
    assert main(["dashboard", "--database-url", empty_pg_database.url]) == 1
    error = capsys.readouterr().err
    assert "run `sqla-jobs migrate` first" in error
    assert "Traceback" not in error
