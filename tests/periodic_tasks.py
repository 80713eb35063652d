"""A periodic schedule for the worker processes tests start (``--import tests.periodic_tasks``).

Only those child processes import this module, so the test process's registries stay as the
other tests expect them. Each run writes one ledger line keyed by its job id.
"""

from __future__ import annotations

from datetime import timedelta

from sqla_jobs import JobContext, Task, periodic
from tests.cli_tasks import write

SCHEDULE = "tests.every-second"
TASK = "tests.periodic.tick"


class Tick(Task, name=TASK):
    async def run(self, ctx: JobContext) -> None:
        await write(str(ctx.job_id), "tick")


# A window, so that a process stalled past a slot on a busy machine still enqueues it.
periodic(Tick(), every=timedelta(seconds=1), name=SCHEDULE, catch_up=timedelta(minutes=1))
