"""admin.list_jobs / count_jobs / list_dead_letters / get_job on rows in every state."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from sqla_jobs.admin import (
    JobState,
    count_dead_letters,
    count_jobs,
    get_job,
    list_dead_letters,
    list_jobs,
)
from tests.admin_rows import add_dead_letter, add_job


async def test_each_hand_written_row_is_in_the_state_its_columns_say(engine: AsyncEngine) -> None:
    ids = {
        JobState.DUE: await add_job(engine, due_in=-5),
        JobState.SCHEDULED: await add_job(engine, due_in=3600),
        JobState.RETRYING: await add_job(engine, due_in=3600, error_count=2),
        JobState.RUNNING: await add_job(engine, due_in=-5, locked_by="w1"),
        JobState.CANCELLED: await add_job(engine, due_in=3600, cancel_reason="stop"),
    }
    due_after_failures = await add_job(engine, due_in=-5, error_count=1)
    dead = await add_dead_letter(engine)
    async with AsyncSession(engine) as session:
        listed = {job.id: job.state for job in await list_jobs(session)}
        for state, job_id in ids.items():
            expected = {job_id, due_after_failures} if state is JobState.DUE else {job_id}
            assert {job.id for job in await list_jobs(session, state=state)} == expected
            assert listed[job_id] is state
        assert listed[due_after_failures] is JobState.DUE
        assert [job.id for job in await list_jobs(session, state=JobState.DEAD)] == [dead]
        assert await count_jobs(session) == 6
        assert await count_jobs(session, state=JobState.DUE) == 2
        assert await count_jobs(session, state=JobState.DEAD) == 1


async def test_filters_and_pages_agree_with_the_counts(engine: AsyncEngine) -> None:
    for n in range(7):
        await add_job(engine, queue="mail", created_ago=100 + n)
    await add_job(engine, queue="other", name="tests.admin.other", created_ago=5)
    async with AsyncSession(engine) as session:
        pages = [await list_jobs(session, queue="mail", limit=3, offset=o) for o in (0, 3, 6)]
        assert [len(page) for page in pages] == [3, 3, 1]
        seen = [job.id for page in pages for job in page]
        assert len(set(seen)) == 7
        # Newest first.
        created = [job.created_at for page in pages for job in page]
        assert created == sorted(created, reverse=True)
        assert await count_jobs(session, queue="mail") == 7
        assert await count_jobs(session, name="tests.admin.other") == 1
        assert await count_jobs(session, older_than=timedelta(seconds=50)) == 7
        assert await list_jobs(session, queue="nobody") == []
        assert await count_jobs(session, queue="nobody") == 0


async def test_an_empty_database_lists_nothing(engine: AsyncEngine) -> None:
    async with AsyncSession(engine) as session:
        assert await list_jobs(session) == []
        assert await list_dead_letters(session) == []
        assert await count_jobs(session) == 0
        assert await count_dead_letters(session) == 0
        assert await get_job(session, uuid.uuid4()) is None


async def test_dead_letters_are_filtered_by_failure_time(engine: AsyncEngine) -> None:
    old = await add_dead_letter(engine, failed_ago=8 * 86400)
    recent = await add_dead_letter(engine, failed_ago=60, queue="mail")
    async with AsyncSession(engine) as session:
        listed = await list_dead_letters(session)
        assert [job.id for job in listed] == [recent, old]  # latest failures first
        assert listed[0].error == "ValueError: it failed"
        aged = await list_dead_letters(session, older_than=timedelta(days=7))
        assert [job.id for job in aged] == [old]
        assert await count_dead_letters(session, queue="mail") == 1


async def test_get_job_finds_a_job_and_a_dead_letter_by_either_id(engine: AsyncEngine) -> None:
    job_id = await add_job(engine, error_count=1, error="Traceback\nKeyError: 'x'")
    original = uuid.uuid4()
    dead = await add_dead_letter(engine, original_job_id=original)
    async with AsyncSession(engine) as session:
        job = await get_job(session, job_id)
        assert job is not None
        assert (job.state, job.attempts, job.error) == (JobState.DUE, 1, "KeyError: 'x'")
        assert job.error_text == "Traceback\nKeyError: 'x'"
        by_dead_id = await get_job(session, dead)
        by_original = await get_job(session, original)
    assert by_dead_id is not None
    assert by_dead_id == by_original
    assert by_dead_id.state is JobState.DEAD
    assert by_dead_id.original_job_id == original


async def test_a_huge_payload_is_shown_by_get_job_and_never_read_by_listings(
    engine: AsyncEngine,
) -> None:
    payload = {"blob": "x" * 2_000_000}
    job_id = await add_job(engine, payload=payload)
    async with AsyncSession(engine) as session:
        [summary] = await list_jobs(session)
        assert not hasattr(summary, "payload")
        detail = await get_job(session, job_id)
    assert detail is not None
    assert detail.payload == payload


@pytest.mark.parametrize(("limit", "offset"), [(0, 0), (10_001, 0), (10, -1), (True, 0)])
async def test_a_bad_page_raises_one_sentence(engine: AsyncEngine, limit: int, offset: int) -> None:
    async with AsyncSession(engine) as session:
        with pytest.raises(ValueError, match="must be an int"):
            await list_jobs(session, limit=limit, offset=offset)


async def test_a_hand_written_row_of_an_unknown_task_with_a_list_payload_is_shown(
    engine: AsyncEngine,
) -> None:
    # Not a dict: written by hand, or by another version; reads must show it, not choke.
    job_id = await add_job(engine, name="legacy.task", payload=[1, 2])  # type: ignore[arg-type]  # on purpose
    async with AsyncSession(engine) as session:
        [summary] = await list_jobs(session, name="legacy.task")
        detail = await get_job(session, job_id)
    assert summary.name == "legacy.task"
    assert detail is not None
    assert detail.payload == [1, 2]
