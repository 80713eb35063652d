"""admin.queue_stats and admin.workers: counted by the database, aged by its clock."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from sqla_jobs.admin import QueueStats, queue_stats, set_queue_limit, workers
from tests.admin_rows import add_dead_letter, add_job, add_worker


async def test_queue_stats_count_each_state_per_queue(engine: AsyncEngine) -> None:
    await add_job(engine, queue="mail", due_in=-120)
    await add_job(engine, queue="mail", due_in=-5)
    await add_job(engine, queue="mail", due_in=600)
    await add_job(engine, queue="mail", due_in=600, error_count=1)
    await add_job(engine, queue="mail", locked_by="w1")
    await add_job(engine, queue="mail", cancel_reason="stop")
    await add_dead_letter(engine, queue="mail")
    await add_dead_letter(engine, queue="graveyard")
    async with AsyncSession(engine) as session:
        await session.execute(set_queue_limit("paused", 0))
        await session.commit()
        stats = await queue_stats(session)
    assert [s.queue for s in stats] == ["graveyard", "mail", "paused"]
    graveyard, mail, paused = stats
    assert graveyard == QueueStats(queue="graveyard", dead=1)
    assert paused == QueueStats(queue="paused", max_running=0)
    assert (mail.due, mail.scheduled, mail.retrying, mail.running, mail.cancelled, mail.dead) == (
        2,
        1,
        1,
        1,
        1,
        1,
    )
    # The oldest due job became due two minutes ago by the database's clock.
    assert mail.oldest_due_age is not None
    assert 119 <= mail.oldest_due_age < 3600


async def test_queue_stats_of_an_empty_database_is_empty(engine: AsyncEngine) -> None:
    async with AsyncSession(engine) as session:
        assert await queue_stats(session) == []


async def test_a_queue_without_due_jobs_has_no_oldest_due_age(engine: AsyncEngine) -> None:
    await add_job(engine, queue="later", due_in=600)
    async with AsyncSession(engine) as session:
        [stats] = await queue_stats(session)
    assert (stats.scheduled, stats.oldest_due_age) == (1, None)


async def test_workers_show_heartbeat_age_running_jobs_and_liveness(engine: AsyncEngine) -> None:
    await add_worker(engine, "alive", heartbeat_ago=2)
    await add_worker(engine, "silent", heartbeat_ago=120)
    await add_job(engine, locked_by="alive")
    await add_job(engine, locked_by="alive")
    await add_job(engine, locked_by="gone-without-registration")
    async with AsyncSession(engine) as session:
        alive, silent = await workers(session)
        [both_alive, _] = await workers(session, heartbeat_timeout=timedelta(hours=1))
    assert (alive.id, alive.running_jobs, alive.is_alive) == ("alive", 2, True)
    assert (alive.hostname, alive.pid, alive.queues) == ("host-a", 4242, ("admin",))
    assert 2 <= alive.heartbeat_age < 60
    assert (silent.id, silent.running_jobs, silent.is_alive) == ("silent", 0, False)
    assert silent.heartbeat_age >= 120
    assert both_alive.is_alive


async def test_workers_of_an_empty_database_is_empty(engine: AsyncEngine) -> None:
    async with AsyncSession(engine) as session:
        assert await workers(session) == []
