"""The shipped migration history: it round-trips, matches the models, and ships in the wheel."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, inspect, text

from sqla_jobs import migrate
from sqla_jobs.models import Base
from tests.helpers import TestDatabase

REPO = Path(__file__).resolve().parent.parent
JOB_TABLES = {"sqla_jobs_job", "sqla_jobs_dead_letter_job"}


@contextmanager
def _connect(sync_url: str) -> Iterator[Connection]:
    engine = create_engine(sync_url)
    try:
        with engine.connect() as connection:
            yield connection
    finally:
        engine.dispose()


def _table_names(sync_url: str) -> set[str]:
    with _connect(sync_url) as connection:
        return set(inspect(connection).get_table_names())


def _version_rows(sync_url: str) -> list[str]:
    with _connect(sync_url) as connection:
        if not inspect(connection).has_table(migrate.VERSION_TABLE):
            return []
        rows = connection.execute(text(f"SELECT version_num FROM {migrate.VERSION_TABLE}"))
        return [row.version_num for row in rows]


def _exclude_version_table(name: str | None, type_: str, parent_names: Mapping[str, str]) -> bool:
    return not (type_ == "table" and name == migrate.VERSION_TABLE)


def test_upgrade_downgrade_upgrade_round_trips(empty_database: TestDatabase) -> None:
    migrate.upgrade(empty_database.url)
    assert _table_names(empty_database.sync_url) >= JOB_TABLES
    assert migrate.current(empty_database.url) == migrate.head_revisions()

    migrate.downgrade(empty_database.url)
    assert not {t for t in _table_names(empty_database.sync_url) if t != migrate.VERSION_TABLE}
    assert _version_rows(empty_database.sync_url) == []
    assert migrate.current(empty_database.url) == ()

    migrate.upgrade(empty_database.url)
    assert _table_names(empty_database.sync_url) >= JOB_TABLES
    assert _version_rows(empty_database.sync_url) == list(migrate.head_revisions())


def test_migrated_schema_matches_models(database: TestDatabase, sync_engine: Engine) -> None:
    with sync_engine.connect() as connection:
        context = MigrationContext.configure(
            connection,
            opts={
                "compare_type": True,
                # SQLite reflects a '' default as a different expression than the model's, so
                # only PostgreSQL can compare server defaults without false positives.
                "compare_server_default": database.dialect == "postgresql",
                "include_name": _exclude_version_table,
            },
        )
        diff = compare_metadata(context, Base.metadata)
    assert diff == []


# Test queries only: constant SQL over the catalogs, nothing formatted in.
PG_SCHEMA_QUERIES = {
    "columns": "SELECT table_name, column_name, ordinal_position, data_type, "
    "character_maximum_length, is_nullable, column_default FROM information_schema.columns "
    "WHERE table_schema = 'public' AND table_name LIKE 'sqla_jobs%'",
    "constraints": "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) "
    "FROM pg_constraint WHERE connamespace = 'public'::regnamespace",
    "indexes": "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'",
    "triggers": "SELECT tgrelid::regclass::text, tgname, tgenabled, pg_get_triggerdef(oid) "
    "FROM pg_trigger WHERE NOT tgisinternal",
    "functions": "SELECT proname, pg_get_functiondef(oid) FROM pg_proc "
    "WHERE pronamespace = 'public'::regnamespace",
    "table options": "SELECT relname, relkind, reloptions::text FROM pg_class "
    "WHERE relnamespace = 'public'::regnamespace AND relkind IN ('r', 'p')",
}


def _schema(sync_url: str) -> dict[str, set[tuple[object, ...]]]:
    """Everything either way of building the schema makes, sqla_jobs' version table aside."""
    with _connect(sync_url) as connection:
        if connection.dialect.name == "postgresql":
            snapshot = {
                part: {tuple(row) for row in connection.execute(text(query))}
                for part, query in PG_SCHEMA_QUERIES.items()
            }
        else:
            tables = inspect(connection).get_table_names()
            snapshot = {
                "columns": {
                    (table, *column)
                    for table in tables
                    for column in connection.execute(
                        text("SELECT * FROM pragma_table_info(:t)"), {"t": table}
                    )
                },
                "indexes": set(
                    connection.execute(
                        text("SELECT tbl_name, name, sql FROM sqlite_master WHERE type = 'index'")
                    ).all()
                ),
                "triggers": set(
                    connection.execute(
                        text("SELECT tbl_name, name, sql FROM sqlite_master WHERE type = 'trigger'")
                    ).all()
                ),
            }
    return {
        part: {row for row in rows if not any(migrate.VERSION_TABLE in str(v) for v in row)}
        for part, rows in snapshot.items()
    }


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_create_all_builds_the_schema_the_migrations_build(
    backend: str, request: pytest.FixtureRequest
) -> None:
    """Triggers, trigger functions, table options and partial indexes included, which
    autogenerate does not compare."""
    prefix = "pg_" if backend == "postgresql" else "sqlite_"
    migrated: TestDatabase = request.getfixturevalue(f"{prefix}database")
    created: TestDatabase = request.getfixturevalue(f"empty_{prefix}database")
    engine = create_engine(created.sync_url)
    try:
        Base.metadata.create_all(engine)
    finally:
        engine.dispose()

    expected, actual = _schema(migrated.sync_url), _schema(created.sync_url)

    assert expected["triggers"] or backend == "sqlite"
    for part, rows in expected.items():
        assert actual[part] == rows, part


def test_drop_all_leaves_no_trigger_function_behind(empty_pg_database: TestDatabase) -> None:
    engine = create_engine(empty_pg_database.sync_url)
    try:
        Base.metadata.create_all(engine)
        Base.metadata.drop_all(engine)
    finally:
        engine.dispose()
    assert _schema(empty_pg_database.sync_url)["functions"] == set()


def test_revisions_are_recorded_in_sqla_jobs_own_version_table(database: TestDatabase) -> None:
    tables = _table_names(database.sync_url)
    assert migrate.VERSION_TABLE in tables
    assert "alembic_version" not in tables
    assert migrate.current(database.url) == migrate.head_revisions()


def test_upgrade_leaves_application_alembic_version_alone(empty_database: TestDatabase) -> None:
    with _connect(empty_database.sync_url) as connection:
        connection.execute(text("CREATE TABLE alembic_version (version_num VARCHAR(32))"))
        connection.execute(text("INSERT INTO alembic_version VALUES ('app_rev_1')"))
        connection.commit()

    migrate.upgrade(empty_database.url)

    with _connect(empty_database.sync_url) as connection:
        rows = connection.execute(text("SELECT version_num FROM alembic_version")).all()
    assert [row.version_num for row in rows] == ["app_rev_1"]


def test_history_has_one_head_and_a_labelled_root() -> None:
    scripts = ScriptDirectory.from_config(migrate.alembic_config())
    assert len(scripts.get_heads()) == 1
    (base,) = scripts.get_bases()
    root = scripts.get_revision(base)
    assert root is not None
    assert migrate.BRANCH_LABEL in root.branch_labels


def test_source_checkout_uses_the_repository_history() -> None:
    assert migrate.script_location() == REPO / "sqla_jobs" / "_alembic"


@pytest.mark.parametrize(
    "url", ["postgresql://u:secret@db/app", "sqlite+aiosqlite:///app.db"], ids=["pg", "sqlite"]
)
def test_offline_mode_emits_the_schema_as_sql(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    command.upgrade(migrate.alembic_config(url), "heads", sql=True)
    sql = capsys.readouterr().out
    assert "CREATE TABLE sqla_jobs_job" in sql
    assert "CREATE TABLE sqla_jobs_dead_letter_job" in sql
    assert migrate.VERSION_TABLE in sql


def _run(args: list[str], *, cwd: Path, env: Mapping[str, str]) -> str:
    result = subprocess.run(
        args, cwd=cwd, env=dict(env), capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, f"{args} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.mark.wheel
def test_wheel_ships_the_history_and_migrates_from_it(tmp_path: Path) -> None:
    """Build the wheel, unzip it, and run `python -m sqla_jobs migrate` from the unzipped copy."""
    wheel_dir, unpacked, workdir = tmp_path / "dist", tmp_path / "site", tmp_path / "cwd"
    workdir.mkdir()
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--disable-pip-version-check",
            "-q",
            "-w",
            str(wheel_dir),
            str(REPO),
        ],
        cwd=tmp_path,
        env=os.environ,
    )
    (wheel,) = wheel_dir.glob("sqla_jobs-*.whl")
    revisions = {
        f"sqla_jobs/_alembic/versions/{path.name}"
        for path in (REPO / "sqla_jobs" / "_alembic" / "versions").glob("*.py")
    }
    assert revisions
    with zipfile.ZipFile(wheel) as archive:
        shipped = set(archive.namelist())
        archive.extractall(unpacked)
    expected = {"sqla_jobs/_alembic/env.py", "sqla_jobs/py.typed", "sqla_jobs/migrate/__init__.py"}
    assert expected | revisions <= shipped

    database = tmp_path / "x.db"
    # Only the unzipped wheel on the path: the checkout must not leak in through PYTHONPATH.
    env = {
        **os.environ,
        "PYTHONPATH": str(unpacked),
        "SQLA_JOBS_DATABASE_URL": f"sqlite+aiosqlite:///{database}",
    }
    _run([sys.executable, "-m", "sqla_jobs", "migrate"], cwd=workdir, env=env)
    assert _table_names(f"sqlite:///{database}") >= JOB_TABLES

    imported = _run(
        [
            sys.executable,
            "-c",
            "import sqla_jobs, sqla_jobs.migrate as m; print(sqla_jobs.__file__ or '');"
            " print(m.__file__); print(m.script_location())",
        ],
        cwd=workdir,
        env=env,
    ).splitlines()
    assert Path(imported[1]) == unpacked / "sqla_jobs" / "migrate" / "__init__.py"
    assert Path(imported[2]) == unpacked / "sqla_jobs" / "_alembic"
