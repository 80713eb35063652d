"""The dashboard is never open by accident: credentials, CSRF tokens, read-only mode."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, create_engine
from starlette.testclient import TestClient

from sqla_jobs.dashboard import BasicAuth, BearerToken, DashboardSettings, create_app
from sqla_jobs.dashboard.command import checked_auth, is_loopback
from sqla_jobs.errors import ConfigurationError
from sqla_jobs.models import DeadLetterJob
from tests.dashboard_support import add_dead_letter, add_job, count_rows, csrf_token
from tests.helpers import TestDatabase

TOKEN = "t0ken-of-sixteen-chars-or-more"


def basic(user: str, password: str) -> dict[str, str]:
    encoded = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {encoded}"}


@pytest.fixture
def sqlite_url(sqlite_database: TestDatabase) -> str:
    return sqlite_database.url


@pytest.fixture
def sync_engine(sqlite_database: TestDatabase) -> Iterator[Engine]:
    """A sync engine on this test's SQLite file: these checks do not depend on the database."""
    engine = create_engine(sqlite_database.sync_url)
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def basic_client(sqlite_url: str) -> Iterator[TestClient]:
    with TestClient(create_app(sqlite_url, auth=BasicAuth("ops", "pa55word"))) as client:
        yield client


@pytest.mark.parametrize(
    "headers",
    [
        {},
        basic("ops", "wrong"),
        basic("other", "pa55word"),
        basic("ops", ""),
        {"Authorization": "Basic !!not-base64!!"},
        {"Authorization": "Bearer pa55word"},
    ],
)
def test_requests_without_the_right_credentials_are_refused(
    basic_client: TestClient, headers: dict[str, str]
) -> None:
    for path in ("/", "/jobs", "/dead-letters", "/schedules", "/static/style.css"):
        response = basic_client.get(path, headers=headers)
        assert response.status_code == 401, path
        assert response.headers["WWW-Authenticate"].startswith("Basic ")
    response = basic_client.post("/dead-letters/delete", headers=headers, data={"scope": "x"})
    assert response.status_code == 401


def test_basic_credentials_let_in(basic_client: TestClient) -> None:
    response = basic_client.get("/schedules", headers=basic("ops", "pa55word"))
    assert response.status_code == 200
    assert "Periodic schedules" in response.text


def test_a_token_is_accepted_as_bearer_or_as_a_basic_password(sqlite_url: str) -> None:
    with TestClient(create_app(sqlite_url, auth=BearerToken(TOKEN))) as client:
        assert client.get("/schedules").status_code == 401
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        assert client.get("/schedules", headers=bearer).status_code == 200
        assert client.get("/schedules", headers=basic("anyone", TOKEN)).status_code == 200
        assert client.get("/schedules", headers=basic("anyone", TOKEN[:-1])).status_code == 401


def test_weak_credentials_are_refused_at_once() -> None:
    with pytest.raises(ValueError, match="16 characters"):
        BearerToken("short")
    with pytest.raises(ValueError, match="non-empty"):
        BasicAuth("ops", "")


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.10", False),
        ("example.com", False),
    ],
)
def test_loopback_addresses_are_told_apart(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_the_command_refuses_to_serve_without_credentials() -> None:
    none = DashboardSettings(_env_file=None)
    with pytest.raises(ConfigurationError, match="needs credentials"):
        checked_auth(none, host="127.0.0.1", insecure_no_auth=False)
    with pytest.raises(ConfigurationError, match="only allowed on a loopback"):
        checked_auth(none, host="0.0.0.0", insecure_no_auth=True)
    assert checked_auth(none, host="127.0.0.1", insecure_no_auth=True) is None


def test_the_command_reads_credentials_from_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SQLA_JOBS_DASHBOARD_USER", "ops")
    monkeypatch.setenv("SQLA_JOBS_DASHBOARD_PASSWORD", "pa55word")
    settings = DashboardSettings(_env_file=None)
    auth = checked_auth(settings, host="0.0.0.0", insecure_no_auth=False)
    assert auth == BasicAuth("ops", "pa55word")
    with pytest.raises(ConfigurationError, match="drop one of them"):
        checked_auth(settings, host="127.0.0.1", insecure_no_auth=True)
    monkeypatch.setenv("SQLA_JOBS_DASHBOARD_TOKEN", TOKEN)
    with pytest.raises(ConfigurationError, match="not both"):
        DashboardSettings(_env_file=None).auth()


def _delete_form(client: TestClient, sync_engine: Engine) -> dict[str, str]:
    dead_id = add_dead_letter(sync_engine)
    page = client.get(f"/jobs/{dead_id}")
    assert page.status_code == 200
    return {"csrf_token": csrf_token(page.text), "ids": str(dead_id)}


def test_a_post_without_a_valid_csrf_token_is_refused(
    sqlite_database: TestDatabase, sync_engine: Engine
) -> None:
    app = create_app(sqlite_database.url, auth=None)
    with TestClient(app) as client:
        form = _delete_form(client, sync_engine)
        forged = [
            {"ids": form["ids"]},
            {**form, "csrf_token": ""},
            {**form, "csrf_token": form["csrf_token"][:-2] + "xx"},
        ]
        for data in forged:
            response = client.post("/dead-letters/delete", data=data)
            assert response.status_code == 403
            assert "CSRF token" in response.text
        # The right token in the form, but no cookie: what another site's form would send.
        cookieless = TestClient(app)
        assert cookieless.post("/dead-letters/delete", data=form).status_code == 403
        assert count_rows(sync_engine, DeadLetterJob) == 1
        response = client.post("/dead-letters/delete", data=form, follow_redirects=False)
        assert response.status_code == 303
        assert count_rows(sync_engine, DeadLetterJob) == 0


def test_a_token_signed_by_another_app_is_refused(
    sqlite_database: TestDatabase, sync_engine: Engine
) -> None:
    other = create_app(sqlite_database.url, auth=None)
    with TestClient(other) as other_client:
        form = _delete_form(other_client, sync_engine)
    with TestClient(create_app(sqlite_database.url, auth=None)) as client:
        client.cookies.set("sqla_jobs_csrf", form["csrf_token"])
        assert client.post("/dead-letters/delete", data=form).status_code == 403
    assert count_rows(sync_engine, DeadLetterJob) == 1


def test_read_only_hides_every_button_and_refuses_every_post(
    sqlite_database: TestDatabase, sync_engine: Engine
) -> None:
    dead_id = add_dead_letter(sync_engine)
    with TestClient(create_app(sqlite_database.url, auth=None, read_only=True)) as client:
        for path in ("/dead-letters", f"/jobs/{dead_id}"):
            page = client.get(path)
            assert page.status_code == 200
            assert '<form method="post"' not in page.text
            assert "read-only" in page.text
        # The cookie's token is a valid one: read-only refuses even a well-formed change.
        token = client.cookies["sqla_jobs_csrf"]
        for action in ("/dead-letters/retry", "/dead-letters/delete", f"/jobs/{dead_id}/cancel"):
            response = client.post(action, data={"ids": str(dead_id), "csrf_token": token})
            assert response.status_code == 403
            assert "read-only" in response.text
    assert count_rows(sync_engine, DeadLetterJob) == 1


def test_pages_cannot_be_framed_nor_run_foreign_scripts(sqlite_url: str) -> None:
    with TestClient(create_app(sqlite_url, auth=None)) as client:
        response = client.get("/schedules")
    policy = response.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in policy
    assert "script-src 'self';" in policy
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Cache-Control"] == "no-store"
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie or "SameSite=Strict" in cookie


def test_metrics_are_served_behind_the_same_credentials(
    sqlite_url: str, sync_engine: Engine
) -> None:
    add_job(sync_engine, queue="mail")
    with TestClient(create_app(sqlite_url, auth=BearerToken(TOKEN))) as client:
        assert client.get("/metrics").status_code == 401
        response = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert 'sqla_jobs_queue_depth{queue="mail",task="send_email"} 1.0' in response.text
