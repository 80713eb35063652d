"""Settings: SQLA_JOBS_* environment variables, a .env file, secrets kept secret."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from sqla_jobs import Settings
from sqla_jobs.urls import display_url, to_async_url


def test_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    settings = Settings()
    assert settings.database_url.get_secret_value() == "sqlite+aiosqlite:///sqla_jobs.db"
    assert settings.queues == ()
    assert settings.concurrency == 10
    assert settings.poll_interval == timedelta(seconds=1)
    assert settings.max_retries == 20
    assert settings.heartbeat_timeout == timedelta(seconds=30)
    assert settings.log_level == "INFO"
    assert settings.log_json is False


def test_environment_variables_with_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SQLA_JOBS_DATABASE_URL", "postgresql://app:pw@db/app")
    monkeypatch.setenv("SQLA_JOBS_QUEUES", "mail, reports")
    monkeypatch.setenv("SQLA_JOBS_IMPORTS", "myapp.tasks,myapp.more")
    monkeypatch.setenv("SQLA_JOBS_CONCURRENCY", "4")
    monkeypatch.setenv("SQLA_JOBS_POLL_INTERVAL", "0.25")
    monkeypatch.setenv("SQLA_JOBS_HEARTBEAT_TIMEOUT", "PT1M")
    monkeypatch.setenv("SQLA_JOBS_LOG_LEVEL", "debug")
    monkeypatch.setenv("SQLA_JOBS_LOG_JSON", "true")
    settings = Settings()
    assert settings.queues == ("mail", "reports")
    assert settings.imports == ["myapp.tasks", "myapp.more"]
    assert settings.concurrency == 4
    assert settings.poll_interval == timedelta(seconds=0.25)
    assert settings.heartbeat_timeout == timedelta(minutes=1)
    assert settings.log_level == "DEBUG"
    assert settings.log_json is True


def test_dotenv_file_is_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("SQLA_JOBS_CONCURRENCY=3\nOTHER_APP_SETTING=ignored\n")
    assert Settings().concurrency == 3


def test_password_is_not_in_repr_or_str(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SQLA_JOBS_DATABASE_URL", "postgresql://app:hunter2-secret@db/app")
    settings = Settings()
    assert "hunter2-secret" not in repr(settings)
    assert "hunter2-secret" not in str(settings)
    assert "hunter2-secret" not in display_url(settings.database_url.get_secret_value())


def test_plain_postgresql_url_runs_on_asyncpg() -> None:
    url = Settings(database_url="postgresql://app@db/app").database_url.get_secret_value()
    assert to_async_url(url).drivername == "postgresql+asyncpg"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("concurrency", "0"),
        ("max_retries", "-1"),
        ("poll_interval", "0"),
        ("heartbeat_timeout", "-5"),
        ("queues", " ,bad\tname"),
        ("log_level", "chatty"),
    ],
)
def test_bad_values_are_refused(monkeypatch: pytest.MonkeyPatch, field: str, value: str) -> None:
    monkeypatch.setenv(f"SQLA_JOBS_{field.upper()}", value)
    with pytest.raises(ValidationError, match=field):
        Settings()
