"""Job ids are version 7 UUIDs: time-ordered (the primary key grows at its right end), random
in their other 74 bits, and unique."""

from __future__ import annotations

import itertools
import time
import uuid

from sqla_jobs import JobContext, Task, enqueue
from sqla_jobs.ids import new_job_id, new_job_id_hexes


def test_an_id_is_a_version_7_uuid_carrying_the_time_in_milliseconds() -> None:
    before = time.time_ns() // 1_000_000
    job_id = new_job_id()
    after = time.time_ns() // 1_000_000
    assert (job_id.version, job_id.variant) == (7, uuid.RFC_4122)
    assert before <= job_id.int >> 80 <= after


def test_ids_made_later_sort_after_and_none_repeats() -> None:
    first = new_job_id()
    time.sleep(0.002)
    hexes = list(itertools.islice(new_job_id_hexes(batch=64), 5_000))
    ids = [uuid.UUID(h) for h in hexes]
    assert all((job_id.version, job_id.variant) == (7, uuid.RFC_4122) for job_id in ids)
    assert all(job_id > first for job_id in ids)
    assert len(set(ids)) == len(ids)
    # Batches refresh the time: ids of a later batch never sort before an earlier batch's.
    batches = [ids[start : start + 64] for start in range(0, len(ids), 64)]
    for earlier, later in itertools.pairwise(batches):
        assert max(job.int >> 80 for job in earlier) <= min(job.int >> 80 for job in later)


class Greet(Task, name="tests.ids.greet"):
    name: str

    async def run(self, ctx: JobContext) -> None:
        return None


def test_enqueued_jobs_get_such_ids() -> None:
    assert enqueue(Greet(name="a")).id.version == 7
