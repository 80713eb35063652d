"""End-to-end: the dashboard served by uvicorn, driven in a real headless Chromium.

Chromium is the system's (Debian's ``chromium`` package, which `.ci/run` installs), driven by
Playwright for Python; ``playwright install`` is never run. Without /usr/bin/chromium these
tests are skipped, or fail when ``CI=true`` so CI never passes by skipping them.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import uvicorn
from playwright.sync_api import Browser, Dialog, Page, sync_playwright
from sqlalchemy import Engine, create_engine, select
from sqlalchemy.orm import Session

from sqla_jobs.dashboard import BasicAuth, create_app
from sqla_jobs.models import DeadLetterJob, Job
from tests.dashboard_support import (
    add_dead_letter,
    add_job,
    add_minute_count,
    add_slot,
    add_worker,
    count_rows,
    now,
)
from tests.helpers import TestDatabase

CHROMIUM = Path("/usr/bin/chromium")
USER, PASSWORD = "ops", "e2e-pa55word"

if not CHROMIUM.exists():
    if os.environ.get("CI") == "true":
        raise RuntimeError(f"{CHROMIUM} is missing: .ci/run installs Debian's chromium package")
    pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)", allow_module_level=True)


@pytest.fixture
def pg_sync_engine(pg_database: TestDatabase) -> Iterator[Engine]:
    engine = create_engine(pg_database.sync_url)
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def dashboard_url(pg_database: TestDatabase) -> Iterator[str]:
    """Serve the dashboard with uvicorn on a free loopback port, in a thread; yield its URL."""
    app = create_app(pg_database.url, auth=BasicAuth(USER, PASSWORD))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start within 10 s"
        assert thread.is_alive(), "uvicorn stopped while starting"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        # --no-sandbox: CI runs as root, where Chromium's sandbox cannot start.
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def browser_errors() -> list[str]:
    """What went wrong in the page: script errors, and console errors (failed loads, CSP)."""
    return []


@pytest.fixture
def page(browser: Browser, dashboard_url: str, browser_errors: list[str]) -> Iterator[Page]:
    context = browser.new_context(
        base_url=dashboard_url,
        http_credentials={"username": USER, "password": PASSWORD},
        viewport={"width": 1280, "height": 900},
    )
    try:
        browser_page = context.new_page()
        errors = browser_errors
        browser_page.on("pageerror", lambda error: errors.append(str(error)))
        # Console errors include what the Content-Security-Policy blocks.
        browser_page.on(
            "console", lambda message: message.type == "error" and errors.append(message.text)
        )
        yield browser_page
        assert errors == [], f"errors in the browser: {errors}"
    finally:
        context.close()


def test_every_page_loads_and_a_dead_letter_is_retried_by_a_click(
    page: Page, pg_sync_engine: Engine, tmp_path: Path
) -> None:

    job_id = add_job(pg_sync_engine, state="retrying", queue="mail")
    add_job(pg_sync_engine, state="due")
    add_job(pg_sync_engine, state="running")
    keep = add_dead_letter(pg_sync_engine, name="charge_card", queue="payments")
    retry = add_dead_letter(pg_sync_engine, name="send_email", queue="mail")
    add_worker(pg_sync_engine, silent_for=timedelta(seconds=2))
    add_slot(pg_sync_engine, "nightly_report", now() - timedelta(hours=3))
    for minutes_ago in range(1, 50, 3):
        add_minute_count(
            pg_sync_engine, minutes_ago=minutes_ago, queue="mail", outcome="success", count=20
        )
    add_minute_count(pg_sync_engine, minutes_ago=7, queue="mail", outcome="retry", count=6)

    pages = {
        "/": "Overview",
        "/jobs": "Jobs",
        f"/jobs/{job_id}": "Job",
        "/dead-letters": "Dead letters",
        "/workers": "Workers",
        "/schedules": "Periodic schedules",
    }
    for number, (path, heading) in enumerate(pages.items()):
        response = page.goto(path)
        assert response.status == 200, path
        assert page.locator("h1").inner_text().startswith(heading), path
        assert page.evaluate("typeof window.htmx") == "object", "htmx did not load"
        page.screenshot(path=tmp_path / f"{number}-{heading.replace(' ', '-')}.png", full_page=True)

    page.goto("/dead-letters")
    page.check(f'input[name="ids"][value="{retry}"]')
    page.click("text=Retry selected")
    page.wait_for_url("**/dead-letters?retried=1*")
    assert "1 dead letter(s) put back in the queue." in page.inner_text(".notice")
    page.screenshot(path=tmp_path / "retried.png", full_page=True)
    with Session(pg_sync_engine) as session:
        assert session.get(Job, retry) is not None
        assert session.scalars(select(DeadLetterJob.id)).all() == [keep]


def test_a_post_without_a_csrf_token_is_refused_in_the_browser(
    page: Page, pg_sync_engine: Engine, browser_errors: list[str]
) -> None:
    dead_id = add_dead_letter(pg_sync_engine)

    page.goto("/dead-letters")
    # The browser sends its credentials and its CSRF cookie, as it would for a forged form.
    status = page.evaluate(
        """async (id) => {
            const body = new URLSearchParams({ids: id});
            const response = await fetch("dead-letters/delete", {method: "POST", body});
            return response.status;
        }""",
        str(dead_id),
    )
    assert status == 403
    assert browser_errors
    assert all("403 (Forbidden)" in error for error in browser_errors)
    browser_errors.clear()
    assert count_rows(pg_sync_engine, DeadLetterJob) == 1
    # Deleting asks first; declined, nothing is sent.
    questions: list[str] = []

    def decline(dialog: Dialog) -> None:
        questions.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", decline)
    page.check(f'input[name="ids"][value="{dead_id}"]')
    page.click("text=Delete selected")
    assert questions == ["Delete the selected dead letters for good?"]
    assert count_rows(pg_sync_engine, DeadLetterJob) == 1
