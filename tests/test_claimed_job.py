"""ClaimedJob reads a claim's columns by name, whatever their order, typed or stored as text."""

from __future__ import annotations

import dataclasses
import random
import uuid
from datetime import UTC, datetime

import pytest

from sqla_jobs.context import CLAIMED_NAMES, UNREADABLE_TIME, ClaimedJob, JobContext
from sqla_jobs.dialects.claim import CLAIMED_COLUMNS

MOMENT = datetime(2026, 11, 30, 3, 0, tzinfo=UTC)


def typed_row() -> dict[str, object]:
    return {
        "id": uuid.uuid4(),
        "name": "mail.send",
        "payload": '{"to": "a@example.com"}',
        "queue": "mail",
        "priority": 5,
        "run_at": MOMENT,
        "created_at": MOMENT,
        "context": None,
        "error_count": 2,
        "timeout_seconds": 1.5,
        "snooze_count": 1,
        "trace_context": "00-abc-def-01",
    }


def test_the_names_read_are_the_columns_the_claim_returns() -> None:
    assert tuple(column.key for column in CLAIMED_COLUMNS) == CLAIMED_NAMES


def test_the_names_read_are_the_fields_in_order_so_typed_values_need_no_shuffle() -> None:
    fields = tuple("payload" if name == "payload_json" else name for name in ClaimedJob._fields)
    assert fields == (*CLAIMED_NAMES, "problem")


def test_rows_in_any_column_order_read_as_the_mapping_does() -> None:
    rows = [typed_row(), typed_row() | {"timeout_seconds": None, "trace_context": None}]
    keys = list(CLAIMED_NAMES)
    random.Random(7).shuffle(keys)
    jobs = ClaimedJob.from_rows(keys, [tuple(row[key] for key in keys) for row in rows])
    in_order = [tuple(row[name] for name in CLAIMED_NAMES) for row in rows]
    assert jobs == ClaimedJob.from_rows(CLAIMED_NAMES, in_order)
    assert [job.id for job in jobs] == [row["id"] for row in rows]
    assert jobs[0].payload_json == '{"to": "a@example.com"}'
    assert (jobs[0].timeout_seconds, jobs[1].timeout_seconds) == (1.5, None)
    assert jobs[0].context == ""  # NULL context reads as empty
    assert (jobs[0].priority, jobs[0].error_count, jobs[0].snooze_count) == (5, 2, 1)
    assert jobs[0].problem is None


def test_values_stored_as_text_are_converted_and_bad_ones_noted() -> None:
    keys = list(CLAIMED_NAMES)
    row = typed_row() | {
        "run_at": "2026-11-30 03:00:00",
        "created_at": "yesterday",
        "priority": "5",
        "timeout_seconds": "1.5",
    }
    [job] = ClaimedJob.from_rows(keys, [tuple(row[key] for key in keys)])
    assert job.run_at == MOMENT
    assert job.created_at == UNREADABLE_TIME
    assert (job.priority, job.timeout_seconds) == (5, 1.5)
    assert job.problem == "created_at is not a time: 'yesterday'"


def test_a_job_context_built_for_a_claimed_job_has_every_field_set() -> None:
    keys = list(CLAIMED_NAMES)
    row = typed_row() | {"context": "signup"}
    [job] = ClaimedJob.from_rows(keys, [tuple(row[key] for key in keys)])
    ctx = JobContext.for_job(job, worker_id="w1", state={"app": 1})
    # Filled slot by slot (speed): a field added later and not filled would be unset here.
    assert {field.name: getattr(ctx, field.name) for field in dataclasses.fields(ctx)} == {
        "job_id": row["id"],
        "name": "mail.send",
        "queue": "mail",
        "priority": 5,
        "error_count": 2,
        "context": "signup",
        "created_at": MOMENT,
        "run_at": MOMENT,
        "worker_id": "w1",
        "state": {"app": 1},
        "snooze_count": 1,
        "_transactions": None,
    }
    assert ctx == JobContext(
        job_id=job.id,
        name=job.name,
        queue=job.queue,
        priority=job.priority,
        error_count=job.error_count,
        context=job.context,
        created_at=job.created_at,
        run_at=job.run_at,
        worker_id="w1",
        state={"app": 1},
        snooze_count=1,
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        ctx.queue = "other"  # type: ignore[misc]
