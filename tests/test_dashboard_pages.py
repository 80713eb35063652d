"""Each dashboard page renders the database's rows, on PostgreSQL and SQLite."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.testclient import TestClient

from sqla_jobs import Task, periodic
from sqla_jobs.dashboard import create_app
from sqla_jobs.dashboard.state import format_age
from sqla_jobs.periodic import unregister
from tests.dashboard_support import (
    SECRET_PAYLOAD,
    TRACEBACK,
    add_dead_letter,
    add_job,
    add_minute_count,
    add_slot,
    add_worker,
    csrf_token,
    now,
    row_of,
    table_rows,
)
from tests.helpers import TestDatabase

MakeClient = Callable[..., TestClient]


class NightlyReport(Task, name="tests.dashboard.nightly_report"):
    async def run(self, ctx: Any) -> None:
        raise AssertionError("never run")


@pytest.fixture
def client(database: TestDatabase) -> Iterator[MakeClient]:
    """Return a function making a TestClient on a dashboard app (no auth) over `database`."""
    clients: list[TestClient] = []

    def make(**options: Any) -> TestClient:
        test_client = TestClient(create_app(database.url, auth=None, **options))
        clients.append(test_client.__enter__())
        return test_client

    try:
        yield make
    finally:
        for test_client in clients:
            test_client.__exit__(None, None, None)


def job_rows(html: str) -> list[list[str]]:
    return [row for row in table_rows(html)[1:] if row]


def test_overview_counts_each_queue_by_state(client: MakeClient, sync_engine: Engine) -> None:
    for _ in range(3):
        add_job(sync_engine, queue="mail", age=timedelta(minutes=10))
    add_job(sync_engine, queue="mail", state="scheduled")
    add_job(sync_engine, queue="mail", state="retrying")
    add_job(sync_engine, queue="mail", state="running")
    add_dead_letter(sync_engine, queue="mail")
    add_dead_letter(sync_engine, queue="payments")
    add_worker(sync_engine, silent_for=timedelta(seconds=1))
    add_worker(sync_engine, "worker-dead", silent_for=timedelta(hours=2))

    html = client().get("/").text
    # queue, due, scheduled, running, retrying, dead, oldest due age, succeeded, failure rate
    mail = row_of(html, "mail")
    assert mail[1:6] == ["3", "1", "1", "1", "1"]
    assert mail[6].startswith("10m") or mail[6].startswith("9m")
    assert row_of(html, "payments")[1:6] == ["0", "0", "0", "0", "1"]
    assert card(html, "live workers") == "1"


def card(html: str, label: str) -> str:
    match = re.search(rf'<span class="number">([^<]*)</span><span class="label">{label}', html)
    assert match, f"no card {label!r}"
    return match.group(1)


def test_overview_shows_the_last_hours_throughput_and_failure_rate(
    client: MakeClient, sync_engine: Engine
) -> None:
    add_minute_count(sync_engine, minutes_ago=3, queue="mail", outcome="success", count=30)
    add_minute_count(sync_engine, minutes_ago=3, queue="mail", outcome="retry", count=10)
    add_minute_count(sync_engine, minutes_ago=10, queue="reports", outcome="success", count=40)
    add_minute_count(sync_engine, minutes_ago=10, queue="reports", outcome="dead", count=1)
    # Outside the hour: not counted.
    add_minute_count(sync_engine, minutes_ago=90, queue="mail", outcome="success", count=500)
    html = client().get("/").text
    assert card(html, "succeeded in the last hour") == "70"
    assert card(html, "failed attempts") == "11"
    assert card(html, "failure rate") == "13.6%"
    assert card(html, "dead-lettered") == "1"
    # No job is left in either queue, yet both are listed with their hour.
    assert row_of(html, "mail")[7:9] == ["30", "25.0%"]
    assert row_of(html, "reports")[7:9] == ["40", "2.4%"]
    # One bar per minute; the busiest one's tooltip gives its exact counts.
    assert html.count('<rect class="ok"') == 60
    assert "30 succeeded, 10 failed</title>" in html
    assert "peak 41/min" in html


def test_jobs_page_filters_by_queue_task_state_and_age(
    client: MakeClient, sync_engine: Engine
) -> None:
    old_mail = add_job(sync_engine, queue="mail", name="send_email", age=timedelta(hours=2))
    new_mail = add_job(sync_engine, queue="mail", name="send_email")
    other_task = add_job(sync_engine, queue="mail", name="resize_image")
    retrying = add_job(sync_engine, queue="default", state="retrying")
    running = add_job(sync_engine, queue="default", state="running")
    dashboard = client()

    def ids(query: str) -> set[str]:
        response = dashboard.get(f"/jobs?{query}")
        assert response.status_code == 200
        return {row[0] for row in job_rows(response.text)}

    def short(*job_ids: object) -> set[str]:
        return {str(job_id)[-8:] for job_id in job_ids}

    assert ids("") == short(old_mail, new_mail, other_task, retrying, running)
    assert ids("queue=mail") == short(old_mail, new_mail, other_task)
    assert ids("queue=mail&name=send_email") == short(old_mail, new_mail)
    assert ids("state=retrying") == short(retrying)
    assert ids("state=running") == short(running)
    assert ids("queue=mail&older_than=1h") == short(old_mail)
    assert ids("queue=nowhere") == set()


def test_jobs_page_turns_pages(client: MakeClient, sync_engine: Engine) -> None:
    for _ in range(55):
        add_job(sync_engine)
    dashboard = client()
    first = dashboard.get("/jobs").text
    assert len(job_rows(first)) == 50
    assert "1-50 of 55" in first
    assert 'href="/jobs?page=2"' in first
    second = dashboard.get("/jobs?page=2").text
    assert len(job_rows(second)) == 5
    assert "51-55 of 55" in second
    assert {row[0] for row in job_rows(first)}.isdisjoint(row[0] for row in job_rows(second))
    assert 'rel="next"' not in second


@pytest.mark.parametrize(
    "query", ["state=exploded", "older_than=3y", "page=0", "page=two", "queue=" + "q" * 300]
)
def test_a_bad_filter_gets_one_sentence(client: MakeClient, query: str) -> None:
    response = client().get(f"/jobs?{query}")
    assert response.status_code == 400
    assert "Traceback" not in response.text
    assert 'class="error"' in response.text


def test_job_page_shows_payload_error_and_attempts(client: MakeClient, sync_engine: Engine) -> None:
    job_id = add_job(sync_engine, state="retrying", queue="mail")
    html = client().get(f"/jobs/{job_id}").text
    assert SECRET_PAYLOAD in html
    assert "ConnectionError: smtp down" in html
    assert "raise ConnectionError(&#39;smtp down&#39;)" in html  # escaped, whole traceback
    assert "retrying" in html
    assert "<dt>Failed attempts</dt><dd>2" in html
    assert 'action="/jobs/' in html  # the cancel button


def test_dead_letter_page_offers_retry_and_delete(client: MakeClient, sync_engine: Engine) -> None:
    dead_id = add_dead_letter(sync_engine)
    html = client().get(f"/jobs/{dead_id}").text
    assert "Dead letter" in html
    assert TRACEBACK.splitlines()[-1] in html
    assert 'action="/dead-letters/retry"' in html
    assert 'action="/dead-letters/delete"' in html


def test_unknown_job_is_not_found(client: MakeClient) -> None:
    dashboard = client()
    assert dashboard.get("/jobs/0b5e0a44-6a9f-4d35-9d6b-1c1a9c2c8a11").status_code == 404
    assert dashboard.get("/jobs/not-a-uuid").status_code == 404


def test_hidden_payloads_never_reach_a_page(client: MakeClient, sync_engine: Engine) -> None:
    job_id = add_job(sync_engine)
    dead_id = add_dead_letter(sync_engine)
    dashboard = client(hide_payloads=True)
    for path in ("/", "/jobs", f"/jobs/{job_id}", "/dead-letters", f"/jobs/{dead_id}"):
        html = dashboard.get(path).text
        assert SECRET_PAYLOAD not in html, path
    assert "Payloads are hidden" in dashboard.get(f"/jobs/{job_id}").text


def test_dead_letters_page_filters_and_lists(client: MakeClient, sync_engine: Engine) -> None:
    old = add_dead_letter(sync_engine, queue="mail", failed_ago=timedelta(days=2))
    add_dead_letter(sync_engine, queue="mail")
    add_dead_letter(sync_engine, queue="payments", name="charge_card")
    dashboard = client()
    html = dashboard.get("/dead-letters").text
    assert len(job_rows(html)) == 3
    assert "ConnectionError: smtp down" in html
    assert len(job_rows(dashboard.get("/dead-letters?queue=mail").text)) == 2
    assert len(job_rows(dashboard.get("/dead-letters?name=charge_card").text)) == 1
    aged = job_rows(dashboard.get("/dead-letters?older_than=1d").text)
    assert [row[1] for row in aged] == [str(old)[-8:]]


def test_workers_page_shows_heartbeat_age_and_running_jobs(
    client: MakeClient, sync_engine: Engine
) -> None:
    add_worker(sync_engine, silent_for=timedelta(seconds=3))
    add_job(sync_engine, state="running")  # locked by worker-1
    html = client().get("/workers").text
    worker = row_of(html, "worker-1")
    assert worker[1] == "host-a"
    assert worker[3] == "default, mail"
    assert worker[5].endswith("s ago")
    assert worker[6] == "1"


def test_schedules_page_shows_declared_and_recorded_schedules(
    client: MakeClient, sync_engine: Engine
) -> None:
    periodic(NightlyReport(), cron="0 3 * * *", name="tests.dashboard.nightly")
    try:
        add_slot(sync_engine, "tests.dashboard.nightly", now() - timedelta(hours=5))
        add_slot(sync_engine, "tests.dashboard.gone", now() - timedelta(days=1))
        html = client().get("/schedules").text
    finally:
        unregister("tests.dashboard.nightly")
    nightly = row_of(html, "tests.dashboard.nightly")
    assert nightly[1] == "tests.dashboard.nightly_report"
    assert nightly[2] == "cron 0 3 * * *"
    assert nightly[4] != "—"
    assert nightly[5].count("T03:00:00") == 3
    gone = row_of(html, "tests.dashboard.gone")
    assert gone[2] == "not declared in this process"


def test_mounted_under_a_prefix_every_link_and_cookie_follows_it(
    database: TestDatabase, sync_engine: Engine
) -> None:
    dead_id = add_dead_letter(sync_engine)
    host = Starlette(routes=[Mount("/ops/jobs", create_app(database.url, auth=None))])
    with TestClient(host) as dashboard:
        overview = dashboard.get("/ops/jobs/")
        assert "Path=/ops/jobs" in overview.headers["set-cookie"]
        html = overview.text
        assert 'href="/ops/jobs/static/style.css"' in html
        assert 'href="/ops/jobs/dead-letters"' in html
        assert 'href="/jobs' not in html
        assert dashboard.get("/ops/jobs/static/htmx.min.js").status_code == 200
        page = dashboard.get(f"/ops/jobs/jobs/{dead_id}")
        assert 'action="/ops/jobs/dead-letters/retry"' in page.text
        response = dashboard.post(
            "/ops/jobs/dead-letters/retry",
            data={"csrf_token": csrf_token(page.text), "ids": str(dead_id)},
            follow_redirects=False,
        )
        assert response.status_code == 303
        assert response.headers["location"].startswith("/ops/jobs/dead-letters?")


def test_the_dashboard_exports_are_pinned() -> None:
    import sqla_jobs.dashboard

    assert sorted(sqla_jobs.dashboard.__all__) == [
        "BasicAuth",
        "BearerToken",
        "DashboardSettings",
        "create_app",
    ]


def test_a_page_past_the_end_is_empty(client: MakeClient, sync_engine: Engine) -> None:
    add_job(sync_engine)
    add_dead_letter(sync_engine)
    dashboard = client()
    for path in ("/jobs?page=999999999", "/dead-letters?page=999999999"):
        response = dashboard.get(path)
        assert response.status_code == 200, path
        assert job_rows(response.text) == []
        assert 'rel="prev"' in response.text


@pytest.mark.parametrize(
    ("age", "shown"),
    [
        (0, "0s"),
        (59.9, "59s"),
        (timedelta(minutes=3, seconds=12), "3m 12s"),
        (timedelta(hours=2, minutes=5), "2h 5m"),
        (timedelta(days=3, hours=4, minutes=59), "3d 4h"),
        (-90, "in 1m 30s"),
        (None, "—"),
    ],
)
def test_ages_are_shown_briefly(age: timedelta | float | None, shown: str) -> None:
    assert format_age(age) == shown
