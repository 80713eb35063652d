"""A job this worker runs: its claim, its task or thread, and whether its code still runs."""

from __future__ import annotations

import asyncio
import concurrent.futures
from typing import Any

from sqla_jobs.context import ClaimedJob


class RunningJob:
    """A claimed job this worker runs, under the lease id (`owner`) that claimed it."""

    # One per job run: slots keep it small and quick to make.
    __slots__ = ("cancel_reason", "code_returned", "is_disowned", "job", "owner", "task", "thread")

    def __init__(self, job: ClaimedJob, owner: str) -> None:
        self.job = job
        self.owner = owner
        self.task: asyncio.Task[None] | None = None
        self.thread: concurrent.futures.Future[Any] | None = None
        self.cancel_reason: str | None = None
        self.is_disowned = False
        """The lease that claimed it was lost: another worker may run it now."""
        self.code_returned = False
        """Whether the job's code has returned (its thread included)."""

    @property
    def code_is_running(self) -> bool:
        """Tell whether the job's own code may still be running (a task or a thread)."""
        if self.thread is not None and not self.thread.done():
            return True
        return not self.code_returned
