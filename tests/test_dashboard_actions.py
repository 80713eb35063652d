"""The dashboard's changes: retry and delete dead letters (one, many, capped), cancel a job."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session
from starlette.testclient import TestClient

from sqla_jobs.dashboard import create_app
from sqla_jobs.models import DeadLetterJob, Job
from tests.dashboard_support import add_dead_letter, add_dead_letters, add_job
from tests.helpers import TestDatabase

CAP = 3


@pytest.fixture
def dashboard(database: TestDatabase) -> Iterator[TestClient]:
    with TestClient(create_app(database.url, auth=None, max_batch=CAP)) as client:
        yield client


def post(client: TestClient, path: str, **fields: object) -> tuple[int, str]:
    """POST `fields` with the CSRF token a page gave; return the status and the redirect."""
    client.get("/schedules")  # any page sets the CSRF cookie; its forms carry the same token
    data = {"csrf_token": client.cookies["sqla_jobs_csrf"], **fields}
    response = client.post(path, data=data, follow_redirects=False)
    return response.status_code, response.headers.get("location", response.text)


def dead_ids(engine: Engine) -> set[object]:
    with Session(engine) as session:
        return set(session.scalars(select(DeadLetterJob.id)))


def job_ids(engine: Engine) -> set[object]:
    with Session(engine) as session:
        return set(session.scalars(select(Job.id)))


def test_retry_one_dead_letter(dashboard: TestClient, sync_engine: Engine) -> None:
    dead_id = add_dead_letter(sync_engine, queue="mail")
    status, location = post(dashboard, "/dead-letters/retry", ids=str(dead_id))
    assert status == 303
    assert "retried=1" in location
    assert dead_ids(sync_engine) == set()
    assert job_ids(sync_engine) == {dead_id}


def test_retry_the_selected_dead_letters_only(dashboard: TestClient, sync_engine: Engine) -> None:
    ids = add_dead_letters(sync_engine, 5)
    status, _ = post(dashboard, "/dead-letters/retry", ids=[str(i) for i in ids[:2]])
    assert status == 303
    assert job_ids(sync_engine) == set(ids[:2])
    assert dead_ids(sync_engine) == set(ids[2:])


def test_a_selection_past_the_cap_is_refused_whole(
    dashboard: TestClient, sync_engine: Engine
) -> None:
    ids = add_dead_letters(sync_engine, CAP + 1)
    for action in ("/dead-letters/retry", "/dead-letters/delete"):
        status, text = post(dashboard, action, ids=[str(i) for i in ids])
        assert status == 400
        assert f"At most {CAP} dead letters" in text
    assert dead_ids(sync_engine) == set(ids)
    assert job_ids(sync_engine) == set()


def test_an_empty_selection_changes_nothing(dashboard: TestClient, sync_engine: Engine) -> None:
    ids = add_dead_letters(sync_engine, 2)
    for action in ("/dead-letters/retry", "/dead-letters/delete"):
        status, text = post(dashboard, action)
        assert status == 400
        assert "Select at least one" in text
    assert dead_ids(sync_engine) == set(ids)


def test_retry_all_matching_stops_at_the_cap(dashboard: TestClient, sync_engine: Engine) -> None:
    mail = add_dead_letters(sync_engine, CAP + 2, queue="mail")
    other = add_dead_letters(sync_engine, 2, queue="payments")
    status, location = post(dashboard, "/dead-letters/retry", scope="matching", queue="mail")
    assert status == 303
    assert f"retried={CAP}" in location
    assert "queue=mail" in location  # back to the same filtered list
    assert len(job_ids(sync_engine)) == CAP
    assert job_ids(sync_engine) <= set(mail)
    assert set(other) <= dead_ids(sync_engine)


def test_delete_one_and_all_matching(dashboard: TestClient, sync_engine: Engine) -> None:
    one = add_dead_letter(sync_engine, queue="payments")
    mail = add_dead_letters(sync_engine, CAP + 1, queue="mail")
    status, location = post(dashboard, "/dead-letters/delete", ids=str(one))
    assert (status, "deleted=1" in location) == (303, True)
    assert dead_ids(sync_engine) == set(mail)
    status, location = post(dashboard, "/dead-letters/delete", scope="matching", queue="mail")
    assert f"deleted={CAP}" in location
    assert len(dead_ids(sync_engine)) == 1
    assert job_ids(sync_engine) == set()


def test_cancel_a_waiting_job(dashboard: TestClient, sync_engine: Engine) -> None:
    job_id = add_job(sync_engine, state="scheduled")
    status, location = post(dashboard, f"/jobs/{job_id}/cancel")
    assert status == 303
    assert location == f"/jobs/{job_id}?cancelled=1"
    with Session(sync_engine) as session:
        job = session.get(Job, job_id)
        assert job is not None
        assert job.cancel_reason
    assert "Cancellation requested for 1 job(s)." in dashboard.get(location).text
