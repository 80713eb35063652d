"""An application's own Alembic beside sqla_jobs: the README's recipes, run for real.

Each test builds a small application in a temporary directory (`alembic init`, a models module
with one table, the README's edits word for word) and runs its ``alembic`` commands as
subprocesses against a fresh database, the way a user types them.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import pytest
from loguru import logger
from sqlalchemy import Connection, create_engine, inspect, text

from sqla_jobs import migrate
from sqla_jobs.models import Base
from tests.helpers import TestDatabase

REPO = Path(__file__).resolve().parent.parent
OUR_VERSIONS = REPO / "sqla_jobs" / "_alembic" / "versions"
OUR_TABLES = {"sqla_jobs_job", "sqla_jobs_dead_letter_job", "sqla_jobs_worker"}
OLDER_REVISION = "d5e6f7a8b9c0"
"""A revision of ours before the newest, for the create-then-upgrade recipe."""

# The README's recipe, word for word (test_readme_shows_the_recipe_the_tests_run pins it).
INI_VERSION_LOCATIONS = """\
version_locations =
    %(here)s/migrations/versions
    sqla_jobs:_alembic/versions
path_separator = newline"""
ENV_METADATA = """\
from myapp.models import Base
from sqla_jobs import migrate as sqla_jobs_migrate
from sqla_jobs.models import Base as SqlaJobsBase

target_metadata = [Base.metadata, SqlaJobsBase.metadata]
sqla_jobs_migrate.check_version_locations(context.script)"""
ENV_FILTERS = """\
    include_name=sqla_jobs_migrate.include_name,
    include_object=sqla_jobs_migrate.include_object,"""
FIRST_REVISION = (
    "alembic revision --autogenerate -m 'create customer' "
    "--head=base --branch-label=app --version-path=migrations/versions"
)
NEXT_REVISION = "alembic revision --autogenerate -m 'add phone' --head=app@head"
# The Oban way: the application's own revisions create sqla_jobs' schema at pinned versions.
OBAN_FIRST = """\
def upgrade() -> None:
    sqla_jobs_migrate.create_schema(op, version="d5e6f7a8b9c0")


def downgrade() -> None:
    sqla_jobs_migrate.drop_schema(op)"""
OBAN_LATER = """\
def upgrade() -> None:
    sqla_jobs_migrate.create_schema(op, version="d1e2f3a4b5c6")


def downgrade() -> None:
    sqla_jobs_migrate.drop_schema(op, version="d5e6f7a8b9c0")"""

CREATE_CUSTOMER = """
    op.create_table(
        "customer",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("email", sa.String(length=255), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_customer_email", "customer", ["email"])"""

MODELS = """\
from sqlalchemy import String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Customer(Base):
    __tablename__ = "customer"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(255), index=True)
"""


class App:
    """A small application with its own Alembic environment, in a directory of its own."""

    def __init__(self, root: Path, sync_url: str, *, env: Mapping[str, str] | None = None) -> None:
        self.root = root
        self.env = dict(env if env is not None else os.environ)
        root.mkdir(parents=True, exist_ok=True)
        (root / "myapp").mkdir()
        (root / "myapp" / "__init__.py").write_text("")
        (root / "myapp" / "models.py").write_text(MODELS)
        self.alembic("init", "migrations")
        self._edit("alembic.ini", r"^sqlalchemy\.url = .*$", f"sqlalchemy.url = {sync_url}")

    @property
    def versions(self) -> Path:
        return self.root / "migrations" / "versions"

    def follow_recipe(self) -> None:
        """Make the README's edits to alembic.ini and env.py, for our revisions in its history."""
        self._edit("alembic.ini", r"^# version_locations = .*\n", "")
        self._edit("alembic.ini", r"^path_separator = os$", INI_VERSION_LOCATIONS)
        self._edit_env(ENV_METADATA)

    def follow_oban_recipe(self) -> None:
        """Make the README's edits to env.py for the Oban way (alembic.ini stays as it is)."""
        self._edit_env(ENV_METADATA.rsplit("\n", 1)[0])

    def alembic(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``alembic <args>`` in the application's directory."""
        result = subprocess.run(
            [sys.executable, "-m", "alembic", *args],
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if ok:
            assert result.returncode == 0, f"alembic {args}:\n{result.stdout}\n{result.stderr}"
        return result

    def shell(self, command_line: str) -> subprocess.CompletedProcess[str]:
        """Run an ``alembic ...`` line from the README."""
        words = re.findall(r"'[^']*'|\S+", command_line)
        assert words[0] == "alembic"
        return self.alembic(*(word.strip("'") for word in words[1:]))

    def write_revision(self, revision: str, down: str | None, body: str) -> None:
        """Write a hand-made revision of the application (the Oban way)."""
        header = f'''\
            """{revision}"""
            from alembic import op
            import sqlalchemy as sa

            from sqla_jobs import migrate as sqla_jobs_migrate

            revision = {revision!r}
            down_revision = {down!r}
            branch_labels = None
            depends_on = None


        '''
        (self.versions / f"{revision}.py").write_text(textwrap.dedent(header) + body + "\n")

    def _edit_env(self, metadata: str) -> None:
        self._edit("migrations/env.py", r"^target_metadata = None$", metadata)
        self._edit(
            "migrations/env.py",
            r"target_metadata=target_metadata,?\n",
            "target_metadata=target_metadata,\n" + ENV_FILTERS + "\n",
            count=2,
        )

    def _edit(self, name: str, pattern: str, replacement: str, count: int = 1) -> None:
        path = self.root / name
        edited, found = re.subn(
            pattern, lambda _: replacement, path.read_text(), count=count, flags=re.M
        )
        assert found == count, f"{pattern!r} not in {name}"
        path.write_text(edited)


@contextmanager
def _connect(sync_url: str) -> Iterator[Connection]:
    engine = create_engine(sync_url)
    try:
        with engine.connect() as connection:
            yield connection
    finally:
        engine.dispose()


def _tables(database: TestDatabase) -> set[str]:
    with _connect(database.sync_url) as connection:
        return set(inspect(connection).get_table_names())


def _app_versions(database: TestDatabase) -> set[str]:
    with _connect(database.sync_url) as connection:
        rows = connection.execute(text("SELECT version_num FROM alembic_version"))
        return {row.version_num for row in rows}


def _our_files() -> set[str]:
    return {path.name for path in OUR_VERSIONS.iterdir()}


def test_readme_shows_the_recipe_the_tests_run() -> None:
    readme = (REPO / "README.md").read_text()
    for snippet in (
        INI_VERSION_LOCATIONS,
        ENV_METADATA,
        ENV_FILTERS,
        FIRST_REVISION,
        NEXT_REVISION,
        OBAN_FIRST,
        OBAN_LATER,
    ):
        assert snippet in readme, snippet
    (head,) = migrate.head_revisions()
    assert f'version="{head}"' in OBAN_LATER, "the README's Oban example pins the newest revision"


def test_app_alembic_manages_its_tables_and_ours_apart(
    empty_database: TestDatabase, tmp_path: Path
) -> None:
    ours_before = _our_files()
    app = App(tmp_path / "app", empty_database.sync_url)
    app.follow_recipe()
    (head,) = migrate.head_revisions()

    app.alembic("upgrade", "heads")
    assert _tables(empty_database) >= OUR_TABLES
    assert _app_versions(empty_database) == {head}
    assert migrate.current(empty_database.url) == (head,)

    app.shell(FIRST_REVISION)
    (first,) = app.versions.glob("*.py")
    source = first.read_text()
    assert "create_table('customer'" in source
    assert "sqla_jobs" not in source

    app.alembic("upgrade", "heads")
    assert _tables(empty_database) >= OUR_TABLES | {"customer"}
    assert "No new upgrade operations detected" in app.alembic("check").stdout

    (app.root / "myapp" / "models.py").write_text(
        MODELS + "    phone: Mapped[str | None] = mapped_column(String(32))\n"
    )
    app.shell(NEXT_REVISION)
    (second,) = set(app.versions.glob("*.py")) - {first}
    assert "add_column('customer'" in second.read_text()
    assert "sqla_jobs" not in second.read_text()

    app.alembic("upgrade", "heads")
    app.alembic("downgrade", "app@base")
    tables = _tables(empty_database)
    assert "customer" not in tables
    assert tables >= OUR_TABLES
    assert _app_versions(empty_database) == {head}
    assert _our_files() == ours_before

    with pytest.raises(migrate.MigrationError, match="your application's own Alembic history"):
        migrate.upgrade(empty_database.url)


def test_app_alembic_refuses_tables_made_by_sqla_jobs_migrate_until_handed_over(
    empty_database: TestDatabase, tmp_path: Path
) -> None:
    migrate.upgrade(empty_database.url)
    app = App(tmp_path / "app", empty_database.sync_url)
    app.follow_recipe()

    result = app.alembic("upgrade", "heads", ok=False)

    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "FAILED: sqla_jobs' tables already exist, created by `python -m sqla_jobs migrate`" in (
        output
    )
    assert "Traceback" not in output
    assert migrate.current(empty_database.url) == migrate.head_revisions()

    # The README's hand-over: record our revision in the app's history, drop our version table.
    (applied,) = migrate.current(empty_database.url)
    app.alembic("stamp", applied)
    with _connect(empty_database.sync_url) as connection:
        connection.execute(text(f"DROP TABLE {migrate.VERSION_TABLE}"))
        connection.commit()
    app.alembic("upgrade", "heads")
    assert _app_versions(empty_database) == {applied}
    with pytest.raises(migrate.MigrationError, match="your application's own Alembic history"):
        migrate.upgrade(empty_database.url)


def test_version_locations_split_at_the_colon_fail_in_one_line(
    empty_sqlite_database: TestDatabase, tmp_path: Path
) -> None:
    app = App(tmp_path / "app", empty_sqlite_database.sync_url)
    app._edit(
        "alembic.ini",
        r"^# version_locations = .*$",
        "version_locations = %(here)s/migrations/versions:sqla_jobs:_alembic/versions",
    )
    app._edit_env(ENV_METADATA)

    result = app.alembic("upgrade", "heads", ok=False)

    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "FAILED: this Alembic history does not include sqla_jobs' revisions" in output
    assert "(these locations do not exist: sqla_jobs, _alembic/versions)" in output
    assert "Traceback" not in output


def test_app_revisions_create_and_drop_our_schema_the_oban_way(
    empty_database: TestDatabase, tmp_path: Path
) -> None:
    app = App(tmp_path / "app", empty_database.sync_url)
    app.follow_oban_recipe()
    # The application's own operations run after ours: the nested migration leaves `op` working.
    first = OBAN_FIRST.replace("\n\n\ndef downgrade", CREATE_CUSTOMER + "\n\ndef downgrade")
    app.write_revision("a1", None, first + "\n    op.drop_table('customer')")
    app.write_revision("a2", "a1", OBAN_LATER)
    (head,) = migrate.head_revisions()

    app.alembic("upgrade", "a1")
    assert migrate.current(empty_database.url) == (OLDER_REVISION,)
    assert _tables(empty_database) >= OUR_TABLES | {"customer"}
    assert _app_versions(empty_database) == {"a1"}

    app.alembic("upgrade", "head")
    assert migrate.current(empty_database.url) == (head,)
    assert "No new upgrade operations detected" in app.alembic("check").stdout

    app.alembic("downgrade", "a1")
    assert migrate.current(empty_database.url) == (OLDER_REVISION,)

    app.alembic("downgrade", "base")
    assert _tables(empty_database) == {"alembic_version"}

    # With `sqla_jobs migrate` between the two revisions: one version table, so no conflict.
    app.alembic("upgrade", "a1")
    migrate.upgrade(empty_database.url)
    app.alembic("upgrade", "head")
    assert migrate.current(empty_database.url) == (head,)


def test_migrate_reports_an_unusable_database_in_one_line(
    pg_server: object, tmp_path: Path
) -> None:
    lines: list[str] = []
    sink = logger.add(
        lambda message: lines.append(str(message)), level="INFO", format="{message} {extra}"
    )
    logger.enable("sqla_jobs")
    try:
        cases = {
            "postgresql://postgres@127.0.0.1:5432/sqla_jobs_no_such_db": (
                'database "sqla_jobs_no_such_db" does not exist'
            ),
            "postgresql://postgres@127.0.0.1:1/app": "cannot connect to postgresql+asyncpg",
            f"sqlite:///{tmp_path}/no/such/dir/app.db": "no/such/dir does not exist",
            "not a url": "the database URL cannot be parsed",
            "nosuchdb://h/app": "sqla_jobs runs on PostgreSQL and SQLite, not nosuchdb",
        }
        for url, expected in cases.items():
            lines.clear()
            assert migrate.run_migrate_command(url) == 1
            (error,) = [line for line in lines if line.startswith("migration failed")]
            assert expected in error
            assert "\n" not in error.strip()
    finally:
        logger.remove(sink)
        logger.disable("sqla_jobs")


def _run(args: list[str], *, cwd: Path, env: Mapping[str, str]) -> str:
    result = subprocess.run(
        args, cwd=cwd, env=dict(env), capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, f"{args} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.mark.wheel
def test_app_alembic_finds_our_revisions_in_the_wheel(
    empty_sqlite_database: TestDatabase, tmp_path: Path
) -> None:
    wheel_dir, unpacked = tmp_path / "dist", tmp_path / "site"
    _run(
        [
            *(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"),
            *("--no-index", "--disable-pip-version-check", "-q", "-w", str(wheel_dir), str(REPO)),
        ],
        cwd=tmp_path,
        env=os.environ,
    )
    (wheel,) = wheel_dir.glob("sqla_jobs-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(unpacked)
    # Only the unzipped wheel on the path: the checkout must not leak in through PYTHONPATH.
    env = {**os.environ, "PYTHONPATH": str(unpacked)}
    app = App(tmp_path / "app", empty_sqlite_database.sync_url, env=env)
    app.follow_recipe()

    app.alembic("upgrade", "heads")
    app.shell(FIRST_REVISION)
    history = app.alembic("history", "--verbose").stdout

    assert str(unpacked / "sqla_jobs" / "_alembic" / "versions") in history
    assert str(REPO) not in history
    assert len(list(app.versions.glob("*.py"))) == 1
    assert _tables(empty_sqlite_database) >= OUR_TABLES


def test_migrate_refuses_tables_that_no_history_records(empty_database: TestDatabase) -> None:
    engine = create_engine(empty_database.sync_url)
    try:
        Base.metadata.create_all(engine)
    finally:
        engine.dispose()

    with pytest.raises(migrate.MigrationError, match=r"metadata\.create_all\(\)"):
        migrate.upgrade(empty_database.url)
    assert migrate.current(empty_database.url) == ()
