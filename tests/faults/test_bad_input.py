"""Bad input at the door: oversized and NUL payloads are refused by `enqueue`, before any I/O."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic_core import to_json
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from sqla_jobs import (
    ConfigurationError,
    EnqueueError,
    Job,
    JobContext,
    PayloadError,
    Task,
    Worker,
    enqueue,
    enqueue_many,
)
from sqla_jobs.tasks import DEFAULT_MAX_PAYLOAD_BYTES
from tests.helpers import TestDatabase

REPO = Path(__file__).resolve().parents[2]
received: list[dict[str, Any]] = []


class Blob(Task, name="tests.faults.bad_input.blob"):
    value: Any

    async def run(self, ctx: JobContext) -> None:
        received.append(self.model_dump())


class SmallBlob(Task, name="tests.faults.bad_input.small_blob", max_payload_bytes=100):
    value: Any

    async def run(self, ctx: JobContext) -> None:
        return None


def json_size(task: Task) -> int:
    """The size `max_payload_bytes` limits: compact UTF-8 JSON of the payload."""
    return len(to_json(task.model_dump(mode="json")))


async def count_jobs(engine: AsyncEngine) -> int:
    async with AsyncSession(engine) as session:
        return (await session.scalar(select(func.count()).select_from(Job))) or 0


def test_the_default_limit_is_one_mebibyte() -> None:
    assert Blob.__task_options__.max_payload_bytes == DEFAULT_MAX_PAYLOAD_BYTES == 1_048_576


async def test_a_10_mb_payload_is_refused_and_nothing_is_written(engine: AsyncEngine) -> None:
    huge = Blob(value="x" * 10_000_000)
    async with AsyncSession(engine) as session:
        session.add(enqueue(Blob(value="fine")))
        with pytest.raises(PayloadError, match=r"10000012 bytes .* limit of 1048576 bytes"):
            session.add(enqueue(huge))
        # The whole chunk is checked before its statement is yielded, so none of it is written.
        statements = enqueue_many([Blob(value="a"), huge, Blob(value="b")])
        with pytest.raises(PayloadError, match=r"tasks\[1\]: .* over the limit"):
            next(statements)
        await session.commit()
    # The refused jobs never reached the session; the caller's other work committed.
    assert await count_jobs(engine) == 1


@pytest.mark.parametrize("value", ["a\x00b", {"k\x00": 1}, [["deep", "\x00"]]])
def test_a_payload_with_nul_is_refused(value: Any) -> None:
    with pytest.raises(PayloadError, match="NUL"):
        enqueue(Blob(value=value))
    with pytest.raises(PayloadError, match=r"tasks\[0\]: .*NUL"):
        list(enqueue_many([Blob(value=value)]))


def test_the_limit_is_inclusive() -> None:
    # {"value":"…"} is 12 bytes of JSON around the string; "é" is 2 bytes of UTF-8.
    at_limit = SmallBlob(value="é" * 44)
    assert json_size(at_limit) == 100
    assert enqueue(at_limit).payload == {"value": "é" * 44}
    over = SmallBlob(value="é" * 44 + "x")
    with pytest.raises(PayloadError, match="101 bytes of JSON, over the limit of 100 bytes"):
        enqueue(over)


def test_the_task_option_is_inherited_and_overridden_per_call() -> None:
    class Child(SmallBlob, name="tests.faults.bad_input.child"):
        pass

    assert Child.__task_options__.max_payload_bytes == 100
    big = Child(value="x" * 200)
    with pytest.raises(PayloadError, match="limit of 100 bytes"):
        enqueue(big)
    assert enqueue(big, max_payload_bytes=1000).payload == {"value": "x" * 200}
    assert len(list(enqueue_many([big], max_payload_bytes=1000))) == 1
    with pytest.raises(PayloadError, match="limit of 10 bytes"):
        enqueue(Blob(value="x" * 20), max_payload_bytes=10)


@pytest.mark.parametrize("limit", [0, -1, 1.5, "100", True])
def test_a_bad_limit_is_refused(limit: Any) -> None:
    with pytest.raises(ConfigurationError, match="max_payload_bytes must be an int of at least 1"):
        type(
            "Bad",
            (Task,),
            {"run": lambda self, ctx: None, "__module__": __name__},
            max_payload_bytes=limit,
        )
    with pytest.raises(EnqueueError, match="max_payload_bytes must be an int of at least 1"):
        enqueue(Blob(value=1), max_payload_bytes=limit)
    with pytest.raises(EnqueueError, match="max_payload_bytes must be an int of at least 1"):
        enqueue_many([Blob(value=1)], max_payload_bytes=limit)


async def test_a_payload_just_under_the_limit_round_trips_on_postgresql(
    pg_database: TestDatabase,
) -> None:
    # Multi-byte characters, so characters and bytes differ; 12 bytes of JSON around them.
    text = "é€😀" * ((DEFAULT_MAX_PAYLOAD_BYTES - 100) // 9)
    task = Blob(value=text)
    assert DEFAULT_MAX_PAYLOAD_BYTES - 100 <= json_size(task) <= DEFAULT_MAX_PAYLOAD_BYTES
    worker = Worker(pg_database.url, tasks=[Blob], handle_signals=False)
    received.clear()
    try:
        async with AsyncSession(worker.engine) as session:
            session.add(enqueue(task))
            await session.commit()
        async with AsyncSession(worker.engine) as session:
            assert (await session.scalars(select(Job.payload))).one() == {"value": text}
        assert await worker.run_until_idle() == 1
    finally:
        await worker.engine.dispose()
    assert received == [{"value": text}]


def _ruff() -> str | None:
    return shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")


@pytest.mark.skipif(_ruff() is None, reason="ruff is not installed")
@pytest.mark.parametrize("source", ["import pickle", "from marshal import loads", "import shelve"])
def test_ruff_bans_pickle_marshal_and_shelve(source: str) -> None:
    ruff = _ruff()
    assert ruff is not None
    # --stdin-filename puts the code inside the package, under the repository's own config.
    result = subprocess.run(
        [ruff, "check", "--no-cache", "--stdin-filename", "sqla_jobs/_probe.py", "-"],
        input=f"{source}\n",
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "TID251" in result.stdout
    assert "Payloads are JSON only" in result.stdout
