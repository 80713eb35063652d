"""The README's quickstart task, unchanged, with a state factory for ``--state``."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from sqla_jobs import JobContext, Task
from tests.cli_tasks import write


class Mailer:
    async def send(self, to: str) -> None:
        await write(to, "mailed")


@dataclass
class Clients:
    mailer: Mailer


class SendEmail(Task, name="tests.command_app.send_email", queue="mail", max_retries=10):
    to: str

    async def run(self, ctx: JobContext) -> None:
        await ctx.state.mailer.send(self.to)


@contextlib.asynccontextmanager
async def worker_state() -> AsyncIterator[Clients]:
    await write("state", "opened")
    try:
        yield Clients(mailer=Mailer())
    finally:
        await write("state", "closed")
