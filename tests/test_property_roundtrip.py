"""Property: any text (but NUL) survives enqueue → commit → worker → `Task.run` unchanged.

Arbitrary strings go where a job carries text: payload values and keys, the queue name and the
context. Task names are class options, so they would need a class per example; they are not
generated here.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, create_engine, delete, select
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import Session

from sqla_jobs import Job, JobContext, PayloadError, Task, Worker, enqueue
from sqla_jobs.options import check_queue
from sqla_jobs.tasks import MAX_NAME_LENGTH
from tests.helpers import TestDatabase


@dataclass(frozen=True)
class Seen:
    text: str
    items: list[str]
    mapping: dict[str, str]
    queue: str
    context: str


seen: list[Seen] = []


class Echo(Task, name="tests.property_roundtrip.echo"):
    text: str
    items: list[str]
    mapping: dict[str, str]

    async def run(self, ctx: JobContext) -> None:
        seen.append(Seen(self.text, self.items, self.mapping, ctx.queue, ctx.context))


# Every character UTF-8 can carry (so no lone surrogates) except NUL, which PostgreSQL refuses.
CHARACTERS = st.characters(codec="utf-8", exclude_characters="\x00")
# Fragments that break naive quoting, escaping or encoding, mixed into random text.
TRICKY = st.sampled_from(
    [
        "'",
        '"',
        "\\",
        "\\u0000",
        "\\'",
        "%s",
        "%(x)s",
        "$1",
        ":name",
        "'; DROP TABLE sqla_jobs_job; --",
        "SELECT * FROM pg_catalog.pg_user",
        "NULL",
        "null",
        "\r\n",
        "\t",
        "\u2028",
        "\ufeff",
        "😀",
        "𝄞",
        "\U0010ffff",
    ]
)


def _is_queue_name(text: str) -> bool:
    try:
        check_queue(text)
    except ValueError:
        return False
    return True


TEXT = st.one_of(
    st.text(CHARACTERS, max_size=50),
    st.lists(st.one_of(TRICKY, st.text(CHARACTERS, max_size=8)), max_size=10).map("".join),
)
# Queue names are printable and without whitespace (sqla_jobs.options.check_queue).
QUEUE_CHARACTERS = st.characters(
    codec="utf-8", exclude_categories=("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Zs")
)
QUEUE = st.one_of(
    st.text(QUEUE_CHARACTERS, min_size=1, max_size=MAX_NAME_LENGTH),
    TEXT.map(lambda text: text[:MAX_NAME_LENGTH]).filter(_is_queue_name),
)


@settings(
    max_examples=50,
    # A loaded 2-core machine makes example timings meaningless; the work is I/O anyway.
    deadline=None,
    # One database for the whole test: each example deletes what it left behind.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    text=TEXT,
    items=st.lists(TEXT, max_size=4),
    mapping=st.dictionaries(TEXT, TEXT, max_size=4),
    queue=QUEUE,
    context=TEXT,
)
def test_any_text_round_trips_through_a_worker_unchanged(
    pg_database: TestDatabase,
    text: str,
    items: list[str],
    mapping: dict[str, str],
    queue: str,
    context: str,
) -> None:
    seen.clear()
    processed = asyncio.run(
        _enqueue_and_run(
            pg_database.url, Echo(text=text, items=items, mapping=mapping), queue, context
        )
    )
    assert processed == 1
    assert seen == [Seen(text, items, mapping, queue, context)]


async def _enqueue_and_run(url: str, task: Echo, queue: str, context: str) -> int:
    engine = create_async_engine(url)
    try:
        async with AsyncSession(engine) as session:
            # A failed (or shrunk) earlier example may have left its job behind.
            await session.execute(delete(Job))
            session.add(enqueue(task, queue=queue, context=context))
            await session.commit()
        worker = Worker(engine, tasks=[Echo], queues=[queue], concurrency=1, handle_signals=False)
        return await worker.run_until_idle()
    finally:
        await engine.dispose()


# --- any value pydantic accepts: enqueue() refuses it, or it commits and round-trips ----------


class Anything(Task, name="tests.property_roundtrip.anything"):
    value: Any
    number: float = 0.0
    data: bytes = b""

    async def run(self, ctx: JobContext) -> None:
        return None


# Everything Python can hold, NUL and lone surrogates included: enqueue() must sort it out.
ANY_TEXT = st.text(st.characters(), max_size=12)
LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),  # NaN and infinities included
    ANY_TEXT,
    TRICKY,
    st.binary(max_size=8),
)
VALUES = st.recursive(
    LEAVES,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.tuples(children, children),
        st.dictionaries(ANY_TEXT, children, max_size=4),
    ),
    max_leaves=12,
)


def same_json(a: object, b: object) -> bool:
    """Equal as JSON: numbers by value (JSONB may give 1e300 back as an integer), no types."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return Decimal(repr(a)) == Decimal(repr(b))
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_json(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_json(a[k], b[k]) for k in a)
    return a == b


@pytest.fixture
def both_engines(
    pg_database: TestDatabase, sqlite_database: TestDatabase
) -> Iterator[list[Engine]]:
    engines = [create_engine(pg_database.sync_url), create_engine(sqlite_database.sync_url)]
    yield engines
    for engine in engines:
        engine.dispose()


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(value=VALUES, number=st.floats(), data=st.binary(max_size=8))
def test_what_enqueue_accepts_commits_and_round_trips(
    both_engines: list[Engine], value: Any, number: float, data: bytes
) -> None:
    task = Anything(value=value, number=number, data=data)
    try:
        job = enqueue(task)
    except PayloadError:
        return  # refused at the door: nothing reached any transaction
    expected = json.loads(task.model_dump_json())
    for engine in both_engines:
        with Session(engine) as session:
            session.execute(delete(Job))
            session.add(enqueue(task))
            session.commit()
        with Session(engine) as session:
            stored = session.scalars(select(Job.payload)).one()
        assert same_json(stored, expected), (engine.dialect.name, stored, expected)
        assert same_json(job.payload, expected)
        # The worker validates the stored payload back into the task.
        Anything.model_validate(stored)


def test_same_json_compares_numbers_by_value() -> None:
    assert same_json({"a": [1e300, -0.0, 2]}, {"a": [10**300, 0, 2.0]})
    assert not same_json(True, 1)
    assert not same_json([1.5], [1.25])
