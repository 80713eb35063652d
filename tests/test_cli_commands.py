"""The operators' commands of ``sqla-jobs``, driven through click's CliRunner on both backends."""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from loguru import logger
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from sqla_jobs import DeadLetterJob, Job, migrate
from sqla_jobs.cli import cli
from tests.admin_rows import add_dead_letter, add_job, add_worker
from tests.helpers import TestDatabase


@pytest.fixture(autouse=True)
def restore_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The commands configure loguru as entry points do; put it back as the tests expect."""
    for name in ("SQLA_JOBS_DATABASE_URL", "SQLA_JOBS_IMPORTS"):
        monkeypatch.delenv(name, raising=False)
    yield
    logger.remove()
    logger.add(sys.stderr)
    logger.disable("sqla_jobs")


async def invoke(database: TestDatabase | None, *args: str, input: str | None = None) -> Result:
    """Run ``sqla-jobs ARGS`` on `database` in a thread (the commands run their own loop)."""
    url = ["--database-url", database.url] if database is not None else []
    runner = CliRunner()
    return await asyncio.to_thread(
        runner.invoke, cli, [*args, *url], input=input, catch_exceptions=False
    )


def assert_one_sentence(result: Result, code: int, text: str) -> None:
    assert result.exit_code == code, result.output
    assert text in result.output, result.output
    assert "Traceback" not in result.output, result.output


async def count(engine: AsyncEngine, model: type[Job] | type[DeadLetterJob]) -> int:
    async with AsyncSession(engine) as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def test_list_shows_jobs_and_dead_letters_with_filters(
    database: TestDatabase, engine: AsyncEngine
) -> None:
    due = await add_job(engine, queue="mail")
    await add_job(engine, queue="mail", due_in=600, error_count=1, error="boom\nKeyError: 'k'")
    dead = await add_dead_letter(engine)
    result = await invoke(database, "list")
    assert result.exit_code == 0, result.output
    assert str(due) in result.stdout
    assert "KeyError: 'k'" in result.stdout
    assert "2 of 2 jobs" in result.stdout
    retrying = json.loads((await invoke(database, "list", "--state", "retrying", "--json")).stdout)
    assert [(job["state"], job["attempts"]) for job in retrying] == [("retrying", 1)]
    dead_letters = await invoke(database, "list", "--dead", "--limit", "1")
    assert str(dead) in dead_letters.stdout
    assert "1 of 1 dead letters" in dead_letters.stdout
    assert "0 of 0 jobs" in (await invoke(database, "list", "--queue", "nobody")).stdout
    both = await invoke(database, "list", "--dead", "--state", "due")
    assert_one_sentence(both, 2, "--dead lists dead letters: it cannot take --state due")


async def test_show_prints_a_job_in_full_and_names_an_unknown_id(
    database: TestDatabase, engine: AsyncEngine
) -> None:
    dead = await add_dead_letter(engine, payload={"to": "ada@example.com"})
    result = await invoke(database, "show", str(dead))
    assert result.exit_code == 0, result.output
    assert '"to": "ada@example.com"' in result.stdout
    assert "ValueError: it failed" in result.stdout
    assert (
        json.loads((await invoke(database, "show", str(dead), "--json")).stdout)["state"] == "dead"
    )
    unknown = uuid.uuid4()
    assert_one_sentence(
        await invoke(database, "show", str(unknown)),
        1,
        f"no job or dead letter has the id {unknown}",
    )
    assert (await invoke(database, "show", "not-a-uuid")).exit_code == 2


async def test_enqueue_validates_the_payload_against_the_task(
    database: TestDatabase, engine: AsyncEngine
) -> None:
    imports = ("--import", "tests.cli_tasks")
    result = await invoke(
        database, "enqueue", "tests.cli.note", "--payload", '{"key": "k"}', *imports
    )
    assert result.exit_code == 0, result.output
    job_id = uuid.UUID(result.stdout.strip())
    async with AsyncSession(engine) as session:
        job = await session.get(Job, job_id)
        assert job is not None
        assert job.payload == {"key": "k"}
    bad = [
        (("--payload", '{"key": '), 1, "the payload is not valid JSON"),
        (("--payload", "{}"), 1, "invalid payload for task 'tests.cli.note': key: Field required"),
        (("--payload", '{"key": "k"}', "--priority", "x"), 2, "'x' is not a valid integer"),
    ]
    for args, code, text in bad:
        assert_one_sentence(
            await invoke(database, "enqueue", "tests.cli.note", *args, *imports), code, text
        )
    assert_one_sentence(
        await invoke(database, "enqueue", "tests.cli.nobody", *imports),
        1,
        "no task is registered under the name 'tests.cli.nobody'",
    )
    assert_one_sentence(
        await invoke(database, "enqueue", "tests.cli.note", "--import", "tests.no_such_module"),
        2,
        "cannot import 'tests.no_such_module'",
    )
    assert await count(engine, Job) == 1


async def test_enqueue_at_a_time_or_after_a_delay(
    database: TestDatabase, engine: AsyncEngine
) -> None:
    imports = ("--import", "tests.cli_tasks", "--payload", '{"key": "k"}')
    later = await invoke(database, "enqueue", "tests.cli.note", "--delay", "1h", *imports)
    assert later.exit_code == 0, later.output
    listed = json.loads((await invoke(database, "list", "--state", "scheduled", "--json")).stdout)
    assert [job["id"] for job in listed] == [later.stdout.strip()]
    both = await invoke(
        database, "enqueue", "tests.cli.note", "--delay", "1h", "--run-at", "2030-01-01T00:00:00"
    )
    assert_one_sentence(both, 2, "give --run-at or --delay, not both")


async def test_stats_counts_queues_and_workers(database: TestDatabase, engine: AsyncEngine) -> None:
    await add_job(engine, queue="mail")
    await add_dead_letter(engine, queue="mail")
    await add_worker(engine, "worker-1", heartbeat_ago=1)
    result = await invoke(database, "stats")
    assert result.exit_code == 0, result.output
    [mail] = [line.split() for line in result.stdout.splitlines() if line.startswith("mail")]
    assert mail[:7] == ["mail", "1", "0", "0", "0", "0", "1"]
    assert "1 live worker(s) of 1 registered" in result.stdout
    stats = json.loads((await invoke(database, "stats", "--json")).stdout)
    assert stats["queues"][0]["due"] == 1
    assert stats["workers"][0]["id"] == "worker-1"


async def test_retry_moves_dead_letters_by_filter_and_by_id(
    database: TestDatabase, engine: AsyncEngine
) -> None:
    for _ in range(5):
        await add_dead_letter(engine, queue="mail")
    other = await add_dead_letter(engine, queue="other")
    result = await invoke(database, "retry", "--queue", "mail", "--batch-size", "2")
    assert result.exit_code == 0, result.output
    assert "retried 5 dead letter(s)" in result.stdout
    assert "retried 1 dead letter(s)" in (await invoke(database, "retry", str(other))).stdout
    assert (await count(engine, Job), await count(engine, DeadLetterJob)) == (6, 0)
    assert_one_sentence(await invoke(database, "retry"), 2, "say which dead letters to retry")
    assert "retried 0 dead letter(s)" in (await invoke(database, "retry", "--all")).stdout


async def test_purge_asks_unless_yes(database: TestDatabase, engine: AsyncEngine) -> None:
    for n in range(3):
        await add_dead_letter(engine, failed_ago=8 * 86400 + n)
    recent = await add_dead_letter(engine, failed_ago=60)
    refused = await invoke(database, "purge", "--older-than", "7d", input="n\n")
    assert refused.exit_code == 1
    assert "Delete 3 dead letter(s) for good?" in refused.output
    assert await count(engine, DeadLetterJob) == 4
    accepted = await invoke(database, "purge", "--older-than", "7d", input="y\n")
    assert "deleted 3 dead letter(s)" in accepted.stdout
    assert (
        "deleted 1 dead letter(s)" in (await invoke(database, "purge", str(recent), "--yes")).stdout
    )
    assert await count(engine, DeadLetterJob) == 0
    assert_one_sentence(
        await invoke(database, "purge", "--older-than", "soon"), 2, "is not a duration such as"
    )


async def test_older_than_zero_is_a_filter_that_matches_every_dead_letter(
    database: TestDatabase, engine: AsyncEngine
) -> None:
    for n in range(2):
        await add_dead_letter(engine, failed_ago=1 + n)
    result = await invoke(database, "purge", "--older-than", "0s", "--yes")
    assert result.exit_code == 0, result.output
    assert "deleted 2 dead letter(s)" in result.stdout
    assert await count(engine, DeadLetterJob) == 0
    await add_dead_letter(engine, failed_ago=1)
    retried = await invoke(database, "retry", "--older-than", "0s")
    assert "retried 1 dead letter(s)" in retried.stdout, retried.output
    assert await count(engine, Job) == 1


async def test_cancel_reports_what_it_cancelled(
    database: TestDatabase, engine: AsyncEngine
) -> None:
    job = await add_job(engine)
    result = await invoke(database, "cancel", str(job), str(uuid.uuid4()), "--reason", "not needed")
    assert result.exit_code == 0, result.output
    assert "cancelled 1 of 2 job(s)" in result.stdout
    shown = json.loads((await invoke(database, "show", str(job), "--json")).stdout)
    assert (shown["state"], shown["cancel_reason"]) == ("cancelled", "not needed")
    assert_one_sentence(
        await invoke(database, "cancel", str(uuid.uuid4())), 1, "no job was cancelled"
    )


async def test_check_passes_only_with_a_live_worker(
    database: TestDatabase, engine: AsyncEngine
) -> None:
    unhealthy = await invoke(database, "check")
    assert unhealthy.exit_code == 1
    assert unhealthy.stdout.splitlines()[2] == "FAIL workers: no worker is registered"
    await add_worker(engine, "worker-1", heartbeat_ago=1)
    healthy = await invoke(database, "check")
    assert healthy.exit_code == 0, healthy.output
    assert [line.split()[0] for line in healthy.stdout.splitlines()] == ["ok", "ok", "ok"]


async def test_check_of_an_unmigrated_database_fails_at_the_schema(
    empty_database: TestDatabase,
) -> None:
    if empty_database.dialect == "sqlite":
        Path(empty_database.url.removeprefix("sqlite+aiosqlite:///")).touch()
    result = await invoke(empty_database, "check")
    assert result.exit_code == 1
    assert "FAIL schema:" in result.stdout
    assert "has no sqla_jobs schema" in result.stdout


async def test_an_unmigrated_database_is_named_with_a_hint(empty_pg_database: TestDatabase) -> None:
    result = await invoke(empty_pg_database, "list")
    assert_one_sentence(result, 1, "(run `sqla-jobs migrate` first)")


def test_database_trouble_is_one_sentence(tmp_path: Path) -> None:
    missing = f"sqlite+aiosqlite:///{tmp_path}/nowhere.db"
    assert_one_sentence(
        CliRunner().invoke(cli, ["stats", "--database-url", missing]),
        1,
        f"the SQLite database {tmp_path}/nowhere.db does not exist",
    )
    assert not (tmp_path / "nowhere.db").exists()
    down = "postgresql://app:secret@127.0.0.1:9/app"  # the discard port: nothing listens
    result = CliRunner().invoke(cli, ["list", "--database-url", down])
    assert_one_sentence(result, 1, "cannot use the database postgresql://app:***@127.0.0.1:9/app: ")
    assert "secret" not in result.output
    assert_one_sentence(
        CliRunner().invoke(cli, ["list", "--database-url", "mysql://app@db/app"]),
        2,
        "sqla_jobs runs on PostgreSQL and SQLite, not mysql",
    )
    result = CliRunner().invoke(cli, ["check", "--database-url", down])
    assert result.exit_code == 1
    assert result.stdout.startswith("FAIL database: cannot query")


def test_the_sqlite_default_is_announced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["stats"])
    assert_one_sentence(result, 1, "the SQLite database sqla_jobs.db does not exist")
    assert "no database configured" in result.stderr


async def test_migrate_upgrades_reports_and_downgrades(empty_database: TestDatabase) -> None:
    heads = migrate.head_revisions()
    assert (await invoke(empty_database, "migrate")).exit_code == 0
    current = await invoke(empty_database, "migrate", "current")
    assert current.stdout.splitlines() == [f"{head} (head)" for head in heads]
    assert (await invoke(empty_database, "migrate", "downgrade", "base")).exit_code == 0
    assert (await invoke(empty_database, "migrate", "current")).stdout == "no sqla_jobs schema\n"
    assert (await invoke(empty_database, "migrate", "upgrade")).exit_code == 0
    checked = await invoke(empty_database, "check")
    assert checked.stdout.splitlines()[1].startswith("ok   schema: at head")
    missing_revision = await invoke(empty_database, "migrate", "downgrade")
    assert missing_revision.exit_code == 2


@pytest.mark.parametrize(("dialect", "text"), [("postgresql", "JSONB"), ("sqlite", "JSON")])
def test_migrate_sql_prints_the_ddl_without_a_database(dialect: str, text: str) -> None:
    result = CliRunner().invoke(cli, ["migrate", "sql", "--dialect", dialect])
    assert result.exit_code == 0, result.output
    assert "CREATE TABLE sqla_jobs_job" in result.stdout
    assert text in result.stdout
    assert f"version_num='{migrate.head_revisions()[0]}'" in result.stdout
    unknown = CliRunner().invoke(cli, ["migrate", "sql", "nope", "--dialect", dialect])
    assert_one_sentence(unknown, 1, "Can't locate revision identified by 'nope'")
