"""The welcome e-mail task, and the mailer the worker gives it as ``ctx.state``.

The worker imports this module (``--import examples.fastapi_signup.tasks``) so the task is
known, and calls `mail_clients` once at start
(``--state examples.fastapi_signup.tasks:mail_clients``) to open the mailer, which it closes when
it stops.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TextIO

from loguru import logger

from sqla_jobs import JobContext, Task


class OutboxMailer:
    """Stands in for an e-mail API client: "sends" by appending a line to the outbox file."""

    def __init__(self, outbox: TextIO) -> None:
        self._outbox = outbox

    async def send(self, *, to: str, subject: str) -> None:
        """Send one e-mail."""
        self._outbox.write(f"to={to} subject={subject}\n")
        self._outbox.flush()


@dataclass(frozen=True)
class Clients:
    """What jobs see as ``ctx.state``."""

    mailer: OutboxMailer


@contextlib.contextmanager
def mail_clients() -> Iterator[Clients]:
    """Open the mailer when the worker starts and close it when it stops (``--state``)."""
    path = os.environ.get("OUTBOX_PATH", "outbox.txt")
    with open(path, "a", encoding="utf-8") as outbox:
        yield Clients(mailer=OutboxMailer(outbox))


class SendWelcomeEmail(Task, name="fastapi_signup.send_welcome_email", queue="mail"):
    email: str
    name: str

    async def run(self, ctx: JobContext) -> None:
        await ctx.state.mailer.send(to=self.email, subject=f"Welcome, {self.name}!")
        # The worker logs this line with the job's id, task and attempt.
        logger.info("welcome e-mail sent", to=self.email)
