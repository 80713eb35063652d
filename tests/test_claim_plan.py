"""The claim and next-due read an index in order and stop after LIMIT rows, whatever the backlog.

Each scenario puts 1 000 000 jobs in the job table that the claim must not pay for (scheduled
an hour ahead, waiting in retry backoff, or spread over the queues a worker serves and one it
does not), then EXPLAIN (ANALYZE, BUFFERS) pins the plans: the partial index read in order, no
sequential scan, no sort of the backlog, and a bounded number of rows and buffers touched. Both
the plan for the statement's own values and the generic plan a prepared statement switches to
(asyncpg prepares every statement) are checked. On SQLite, EXPLAIN QUERY PLAN shows the same
reads.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, create_engine, insert, literal, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ClauseElement

from sqla_jobs import JobContext, Task, Worker, enqueue_many
from sqla_jobs.dialects.postgresql import PostgreSQLStatements
from sqla_jobs.dialects.sqlite import SQLiteStatements
from sqla_jobs.models import QueueLimit
from tests.conftest import PostgresServer
from tests.helpers import TestDatabase, wait_until

BACKLOG = 1_000_000
DUE = 1_000
LIMIT = 10
CLAIM_INDEX = "ix_sqla_jobs_job_waiting_claim"
NEXT_DUE_INDEX = "ix_sqla_jobs_job_deferred_run_at"
ASYNCPG = make_url("postgresql+asyncpg://").get_dialect()()
"""The worker's driver: statements compiled for it have $1, $2, ... placeholders."""
MAX_BUFFERS = 400
"""Buffers a whole claim may touch (its UPDATE included). Reading the backlog's index entries
alone would take thousands: 1 000 000 entries fill some 5 000 leaf pages."""

# Test data only: constant SQL, nothing formatted in. Ids count up (n as a UUID) so that the
# primary key is appended to rather than split at random, which halves the load's time.
INSERT_JOBS = (
    "INSERT INTO sqla_jobs_job (id, name, payload, queue, priority, context, created_at, "
    "error_count, last_error_message, last_failed_at, run_at) "
    "SELECT lpad(to_hex(n), 32, '0')::uuid, 'tests.plan', '{{}}'::jsonb, {queue}, {priority}, "
    "'', now(), {error_count}, {last_error_message}, {last_failed_at}, {run_at} "
    "FROM generate_series(1, :backlog + :due) AS n"
)
BACKLOG_ROW = "n <= :backlog"
SCENARIOS: dict[str, tuple[list[str], str]] = {
    # 1 000 000 jobs scheduled an hour ahead, then 1 000 due.
    "scheduled": (
        ["default"],
        INSERT_JOBS.format(
            queue="'default'",
            priority="0",
            error_count="0",
            last_error_message="NULL",
            last_failed_at="NULL",
            run_at=f"CASE WHEN {BACKLOG_ROW} THEN now() + interval '1 hour' + n * interval '1 ms'"
            " ELSE now() - n * interval '1 ms' END",
        ),
    ),
    # 1 000 000 jobs waiting in retry backoff (2^(errors+1) s), then 1 000 retries now due.
    "retrying": (
        ["default"],
        INSERT_JOBS.format(
            queue="'default'",
            priority="0",
            error_count="1 + n % 12",
            last_error_message="'boom'",
            last_failed_at="now()",
            run_at=f"CASE WHEN {BACKLOG_ROW}"
            " THEN now() + power(2, 2 + n % 12) * interval '1 second' + n * interval '1 ms'"
            " ELSE now() - n * interval '1 ms' END",
        ),
    ),
    # A worker serving q1, q2 and q3, each with 250 000 jobs of three priorities, half due and
    # half in the future, and 250 000 more in a queue it does not serve.
    "three queues": (
        ["q1", "q2", "q3"],
        INSERT_JOBS.format(
            queue="(ARRAY['q1', 'q2', 'q3', 'other'])[n % 4 + 1]",
            priority="n % 3",
            error_count="0",
            last_error_message="NULL",
            last_failed_at="NULL",
            run_at="CASE WHEN (n / 4) % 2 = 0 THEN now() - n * interval '1 ms'"
            " ELSE now() + n * interval '1 ms' END",
        ),
    ),
}


HIGHER_PRIORITY_FUTURE = INSERT_JOBS.format(
    queue="'default'",
    priority=f"CASE WHEN {BACKLOG_ROW} THEN 9 ELSE 0 END",
    error_count="0",
    last_error_message="NULL",
    last_failed_at="NULL",
    run_at=f"CASE WHEN {BACKLOG_ROW} THEN now() + interval '1 hour' ELSE now() END",
)


class Scenario:
    """A database loaded with one scenario's jobs, and the queues its worker serves."""

    def __init__(self, name: str, engine: Engine, queues: list[str]) -> None:
        self.name = name
        self.engine = engine
        self.queues = queues


@pytest.fixture(scope="module")
def million_engine(pg_server: PostgresServer, pg_template: str) -> Iterator[Engine]:
    """A migrated database of this module's own, shared by the scenarios in turn."""
    name = f"sqla_jobs_plan_{uuid.uuid4().hex[:8]}"
    pg_server.create(name, template=pg_template)
    engine = create_engine(pg_server.describe(name).sync_url)
    with engine.begin() as connection:
        # Halves the loads' time, and no plan depends on it: no WAL for a scratch table, and
        # no million-row transition table for the insert trigger's one notification.
        connection.execute(text("ALTER TABLE sqla_jobs_job SET UNLOGGED"))
        connection.execute(
            text("ALTER TABLE sqla_jobs_job DISABLE TRIGGER sqla_jobs_job_notify_insert")
        )
    try:
        yield engine
    finally:
        engine.dispose()
        pg_server.drop(name)


@pytest.fixture(scope="module", params=list(SCENARIOS))
def scenario(request: pytest.FixtureRequest, million_engine: Engine) -> Scenario:
    queues, insert = SCENARIOS[request.param]
    with million_engine.begin() as connection:
        connection.execute(text("TRUNCATE sqla_jobs_job"))
        connection.execute(text(insert), {"backlog": BACKLOG, "due": DUE})
    with million_engine.begin() as connection:
        # Committed: statistics gathered in a rolled-back transaction are rolled back too.
        connection.execute(text("ANALYZE sqla_jobs_job"))
    return Scenario(request.param, million_engine, queues)


def explain(connection: Connection, statement: ClauseElement, *, generic: bool) -> dict[str, Any]:
    """Run `statement` under EXPLAIN (ANALYZE, BUFFERS) and return its plan's top node.

    With `generic`, the plan is the one a prepared statement uses once PostgreSQL stops
    planning for each execution's values. The caller rolls the transaction back.
    """
    if generic:
        # Compiled for asyncpg, as the worker runs it: $1, $2, ... placeholders.
        compiled = statement.compile(dialect=ASYNCPG, compile_kwargs={"render_postcompile": True})
        assert isinstance(compiled, SQLCompiler)
        values = [
            str(
                literal(compiled.params[name], compiled.binds[name].type).compile(
                    dialect=connection.dialect, compile_kwargs={"literal_binds": True}
                )
            )
            for name in compiled.positiontup or ()
        ]
        # A name of its own: a prepared statement outlives the transaction on this connection.
        name = f"plan_{uuid.uuid4().hex}"
        connection.exec_driver_sql("SET LOCAL plan_cache_mode = force_generic_plan")
        connection.exec_driver_sql(f"PREPARE {name} AS {compiled}")
        sql = f"EXECUTE {name}({', '.join(values)})"
    else:
        # EXPLAIN of a statement with its values: rendered inline (test-chosen constants).
        literal_binds = {"literal_binds": True}
        sql = str(statement.compile(dialect=connection.dialect, compile_kwargs=literal_binds))
    [[document]] = connection.exec_driver_sql(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {sql}")
    plan: dict[str, Any] = (document if isinstance(document, list) else json.loads(document))[0]
    top: dict[str, Any] = plan["Plan"]
    return top


def nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", ()):
        yield from nodes(child)


def describe(node: dict[str, Any], depth: int = 0) -> str:
    """Render a plan tree compactly, for assertion messages."""
    line = (
        f"{'  ' * depth}{node['Node Type']} {node.get('Index Name', '')}"
        f" rows={node['Actual Rows']} loops={node['Actual Loops']}"
        f" buffers={node['Shared Hit Blocks'] + node['Shared Read Blocks']}"
    )
    return "\n".join([line, *(describe(child, depth + 1) for child in node.get("Plans", ()))])


def assert_reads_in_order(top: dict[str, Any], *, index: str, scans: int, rows: int) -> None:
    """Assert the plan reads `index` `scans` times, never scans or sorts more than `rows` rows."""
    plan = describe(top)
    all_nodes = list(nodes(top))
    reads = [n for n in all_nodes if n.get("Index Name") == index]
    assert len(reads) == scans, plan
    assert all(n["Node Type"] in {"Index Scan", "Index Only Scan"} for n in reads), plan
    for node in all_nodes:
        assert node["Node Type"] not in {"Seq Scan", "Bitmap Heap Scan"}, plan
        assert node["Actual Rows"] * node["Actual Loops"] <= rows, plan
        assert node.get("Rows Removed by Filter", 0) <= rows, plan
        if node["Node Type"] == "Sort":
            # A sort of the candidates each queue's read returned, never of the backlog.
            assert all(child["Actual Rows"] <= rows for child in node["Plans"]), plan
    assert top["Shared Hit Blocks"] + top["Shared Read Blocks"] <= MAX_BUFFERS, plan


@pytest.mark.parametrize("generic", [False, True], ids=["custom_plan", "generic_plan"])
def test_the_claim_reads_its_partial_index_in_order_and_stops_after_limit(
    scenario: Scenario, generic: bool
) -> None:
    statement = PostgreSQLStatements().claim_jobs(
        worker_id="w", queues=scenario.queues, limit=LIMIT
    )
    with scenario.engine.connect() as connection:
        top = explain(connection, statement, generic=generic)
        connection.rollback()
    assert top["Actual Rows"] == LIMIT, describe(top)
    assert_reads_in_order(
        top, index=CLAIM_INDEX, scans=len(scenario.queues), rows=len(scenario.queues) * LIMIT
    )


@pytest.mark.parametrize("generic", [False, True], ids=["custom_plan", "generic_plan"])
def test_a_claim_with_per_queue_limits_reads_each_queue_up_to_its_own_limit(
    scenario: Scenario, generic: bool
) -> None:
    """Per-queue slots: each queue's read stops at its own limit (0: it reads nothing)."""
    limits = {queue: [3, 0, 5][n % 3] for n, queue in enumerate(scenario.queues)}
    statement = PostgreSQLStatements().claim_jobs(
        worker_id="w", queues=scenario.queues, limit=LIMIT, limits=limits
    )
    with scenario.engine.connect() as connection:
        top = explain(connection, statement, generic=generic)
        connection.rollback()
    assert top["Actual Rows"] == sum(limits.values()), describe(top)
    assert_reads_in_order(
        top, index=CLAIM_INDEX, scans=len(scenario.queues), rows=sum(limits.values())
    )


@pytest.mark.parametrize("generic", [False, True], ids=["custom_plan", "generic_plan"])
def test_a_limited_queues_claim_counts_only_running_jobs_and_reads_its_index_in_order(
    scenario: Scenario, generic: bool
) -> None:
    """The claim of a queue with a cluster-wide limit: lock its row, count, claim."""
    statements = PostgreSQLStatements()
    queue = scenario.queues[0]
    with scenario.engine.connect() as connection:
        connection.execute(insert(QueueLimit).values(queue=queue, max_running=LIMIT))
        connection.execute(statements.lock_queue_limit(queue=queue))
        count = explain(connection, statements.running_jobs(queue=queue), generic=generic)
        claim = explain(
            connection,
            statements.claim_limited_jobs(worker_id="w", queue=queue, limit=LIMIT),
            generic=generic,
        )
        connection.rollback()
    # The count reads the index of running jobs only: the backlog costs it nothing.
    assert any(n.get("Index Name") == "ix_sqla_jobs_job_locked_by" for n in nodes(count))
    assert all(n["Node Type"] != "Seq Scan" for n in nodes(count)), describe(count)
    assert count["Shared Hit Blocks"] + count["Shared Read Blocks"] <= 20, describe(count)
    assert claim["Actual Rows"] == LIMIT, describe(claim)
    assert_reads_in_order(claim, index=CLAIM_INDEX, scans=1, rows=LIMIT)


@pytest.mark.parametrize("generic", [False, True], ids=["custom_plan", "generic_plan"])
def test_next_due_probes_its_partial_index_once_per_queue(
    scenario: Scenario, generic: bool
) -> None:
    statement = PostgreSQLStatements().next_due(queues=scenario.queues)
    with scenario.engine.connect() as connection:
        top = explain(connection, statement, generic=generic)
        earliest, now = connection.execute(statement).one()
        connection.rollback()
    assert_reads_in_order(
        top, index=NEXT_DUE_INDEX, scans=len(scenario.queues), rows=len(scenario.queues)
    )
    assert top["Shared Hit Blocks"] + top["Shared Read Blocks"] <= 10 * len(scenario.queues)
    assert earliest is not None
    assert earliest > now


def test_the_heartbeats_search_for_cancelled_jobs_reads_only_the_cancelled(
    scenario: Scenario,
) -> None:
    with scenario.engine.connect() as connection:
        top = explain(
            connection, PostgreSQLStatements().cancelled_queued_jobs(limit=100), generic=False
        )
        connection.rollback()
    assert any(n.get("Index Name") == "ix_sqla_jobs_job_cancel_requested" for n in nodes(top))
    assert all(n["Node Type"] != "Seq Scan" for n in nodes(top)), describe(top)


@pytest.mark.parametrize(
    "statement",
    [
        PostgreSQLStatements().release_locks(worker_id="w"),
        PostgreSQLStatements().cancel_requests(worker_id="w"),
        PostgreSQLStatements().lost_jobs(grace=timedelta(seconds=30), limit=100),
    ],
    ids=["release_locks", "cancel_requests", "lost_jobs"],
)
def test_a_workers_jobs_are_found_without_reading_the_waiting_ones(
    scenario: Scenario, statement: ClauseElement
) -> None:
    with scenario.engine.connect() as connection:
        top = explain(connection, statement, generic=True)
        connection.rollback()
    plan = describe(top)
    # Both indexes hold only a handful of rows: running jobs, cancelled jobs.
    small = {"ix_sqla_jobs_job_locked_by", "ix_sqla_jobs_job_cancel_requested"}
    assert any(n.get("Index Name") in small for n in nodes(top)), plan
    jobs = [n for n in nodes(top) if n.get("Relation Name") == "sqla_jobs_job"]
    assert all(n["Node Type"] != "Seq Scan" for n in jobs), plan
    assert top["Shared Hit Blocks"] + top["Shared Read Blocks"] <= 20, plan


def test_future_jobs_of_a_higher_priority_are_passed_over_on_the_index_alone(
    pg_database: TestDatabase,
) -> None:
    """The one case where the claim walks entries: they sit before the due jobs in the index."""
    engine = create_engine(pg_database.sync_url)
    try:
        with engine.begin() as connection:
            # 100 000 jobs of priority 9 an hour ahead, 1 000 of priority 0 due.
            connection.execute(text(HIGHER_PRIORITY_FUTURE), {"backlog": 100_000, "due": DUE})
        with engine.begin() as connection:
            connection.execute(text("ANALYZE sqla_jobs_job"))
        with engine.connect() as connection:
            index_pages = connection.scalar(
                text("SELECT pg_relation_size(:index) / current_setting('block_size')::int"),
                {"index": CLAIM_INDEX},
            )
            claim = PostgreSQLStatements().claim_jobs(
                worker_id="w", queues=["default"], limit=LIMIT
            )
            top = explain(connection, claim, generic=False)
            connection.rollback()
    finally:
        engine.dispose()
    [scan] = [n for n in nodes(top) if n.get("Index Name") == CLAIM_INDEX]
    plan = describe(top)
    assert scan["Actual Rows"] == LIMIT, plan
    # Rejected by the index condition on run_at, never fetched and filtered out.
    assert scan.get("Rows Removed by Filter", 0) == 0, plan
    assert scan["Shared Hit Blocks"] + scan["Shared Read Blocks"] <= index_pages + LIMIT, plan


class Backlog(Task, name="tests.claim_plan.backlog", queue="backlog"):
    async def run(self, ctx: JobContext) -> None:
        return None


async def test_a_worker_refreshes_statistics_the_job_table_outgrew(
    pg_database: TestDatabase,
) -> None:
    engine = create_async_engine(pg_database.url)
    try:
        # A bulk load into a table analyzed while empty: the planner would sort the backlog.
        async with AsyncSession(engine) as session:
            for statement in enqueue_many(Backlog() for _ in range(20_000)):
                await session.execute(statement)
            await session.commit()
        worker = Worker(
            pg_database.url,
            tasks=[Backlog],
            queues=["elsewhere"],  # serve nothing: only the heartbeat touches the backlog
            heartbeat_interval=timedelta(milliseconds=100),
            heartbeat_timeout=timedelta(seconds=2),
            handle_signals=False,
        )
        running = asyncio.create_task(worker.run())

        async def analyzed() -> bool:
            async with engine.connect() as connection:
                tuples = await connection.scalar(
                    text("SELECT reltuples FROM pg_class WHERE oid = 'sqla_jobs_job'::regclass")
                )
            return bool(tuples and tuples >= 10_000)

        await wait_until(analyzed, timeout=20)
        worker.stop()
        await asyncio.wait_for(running, timeout=10)
    finally:
        await engine.dispose()
    sync_engine = create_engine(pg_database.sync_url)
    try:
        with sync_engine.connect() as connection:
            claim = PostgreSQLStatements().claim_jobs(worker_id="w", queues=["backlog"], limit=100)
            top = explain(connection, claim, generic=False)
            connection.rollback()
    finally:
        sync_engine.dispose()
    assert any(n.get("Index Name") == CLAIM_INDEX for n in nodes(top)), describe(top)
    assert all(n["Node Type"] != "Sort" for n in nodes(top)), describe(top)


@pytest.mark.parametrize("queues", [["q1"], ["q1", "q2", "q3"]], ids=["one_queue", "three_queues"])
def test_sqlite_reads_the_same_indexes_in_order(
    sqlite_database: TestDatabase, queues: list[str]
) -> None:
    statements = SQLiteStatements()
    engine = create_engine(sqlite_database.sync_url)
    try:
        with engine.connect() as connection:

            def plan(statement: ClauseElement) -> list[str]:
                literal_binds = {"literal_binds": True}
                sql = statement.compile(dialect=connection.dialect, compile_kwargs=literal_binds)
                rows = connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}")
                return [row.detail for row in rows]

            claim = plan(statements.claim_jobs(worker_id="w", queues=queues, limit=LIMIT))
            next_due = plan(statements.next_due(queues=queues))
    finally:
        engine.dispose()
    reads = f"SEARCH sqla_jobs_job USING INDEX {CLAIM_INDEX} (queue=?)"
    assert claim.count(reads) == len(queues), claim
    # Sorted: at most the candidates of several queues' reads, never a queue's jobs.
    assert sum("TEMP B-TREE" in line for line in claim) == (len(queues) > 1), claim
    assert not any(line.startswith("SCAN sqla_jobs_job") for line in claim + next_due)
    # Each queue's limit: a primary-key probe of its limit row, and a count of its running
    # jobs (read through the index of running jobs only) that runs only if it has one.
    limit_probe = (
        "SEARCH sqla_jobs_queue_limit USING INDEX sqlite_autoindex_sqla_jobs_queue_limit_1"
    )
    assert sum(line.startswith(limit_probe) for line in claim) == len(queues), claim
    count = "SEARCH running USING INDEX ix_sqla_jobs_job_locked_by"
    assert sum(line.startswith(count) for line in claim) == len(queues), claim
    assert not any(line.startswith("SCAN running") for line in claim), claim
    probe = f"SEARCH sqla_jobs_job USING INDEX {NEXT_DUE_INDEX} (queue=? AND run_at>?)"
    assert next_due.count(probe) == len(queues), next_due


@pytest.mark.parametrize("generic", [False, True], ids=["custom_plan", "generic_plan"])
def test_the_claim_reads_its_index_when_statistics_predate_the_due_jobs(
    million_engine: Engine, generic: bool
) -> None:
    # A bulk of scheduled jobs, analyzed; then due jobs that no statistics know of. Compared
    # with now() itself the planner saw no due row and scanned and sorted the whole table.
    future_only = INSERT_JOBS.format(
        queue="'default'",
        priority="0",
        error_count="0",
        last_error_message="NULL",
        last_failed_at="NULL",
        run_at="now() + interval '1 hour'",
    )
    with million_engine.begin() as connection:
        connection.execute(text("TRUNCATE sqla_jobs_job"))
        connection.execute(text(future_only), {"backlog": BACKLOG, "due": 0})
    with million_engine.begin() as connection:
        connection.execute(text("ANALYZE sqla_jobs_job"))
    with million_engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO sqla_jobs_job (id, name, payload, queue, priority, context, "
                "created_at, error_count, run_at) SELECT gen_random_uuid(), 'tests.plan', "
                "'{}'::jsonb, 'default', 0, '', now(), 0, now() - n * interval '1 ms' "
                "FROM generate_series(1, :due) AS n"
            ),
            {"due": DUE},
        )
    statement = PostgreSQLStatements().claim_jobs(worker_id="w", queues=["default"], limit=LIMIT)
    with million_engine.connect() as connection:
        top = explain(connection, statement, generic=generic)
        connection.rollback()
    assert top["Actual Rows"] == LIMIT, describe(top)
    assert_reads_in_order(top, index=CLAIM_INDEX, scans=1, rows=LIMIT)
