"""Hook objects the tests load by name (``tests.hook_objects:Recorder``), as settings do."""

from __future__ import annotations

import contextvars

from sqla_jobs.hooks import JobEnd, JobStart

current_label: contextvars.ContextVar[str] = contextvars.ContextVar("current_label", default="")


class Recorder:
    """Hooks that write down what they saw, and label the running job in a context variable."""

    def __init__(self) -> None:
        self.starts: list[JobStart] = []
        self.ends: list[JobEnd] = []

    async def on_job_start(self, job: JobStart) -> None:
        self.starts.append(job)
        current_label.set(f"job {job.id}")

    def on_job_end(self, end: JobEnd) -> None:
        self.ends.append(end)
