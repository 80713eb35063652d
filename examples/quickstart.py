"""sqla_jobs in one file: enqueue inside a business transaction, then run a worker until idle.

Runs on the default SQLite database (``sqla_jobs.db`` in the working directory), or on
whatever ``SQLA_JOBS_DATABASE_URL`` names (``postgresql://user@host/db`` works too).

    python examples/quickstart.py
"""

from __future__ import annotations

import asyncio
import os

from sqlalchemy import String, delete
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from sqla_jobs import JobContext, Task, Worker, enqueue, migrate
from sqla_jobs.engine import create_engine
from sqla_jobs.settings import DEFAULT_DATABASE_URL

DATABASE_URL = os.environ.get("SQLA_JOBS_DATABASE_URL", DEFAULT_DATABASE_URL)


class AppBase(DeclarativeBase):
    """The application's own models, beside sqla_jobs' tables in the same database."""


class User(AppBase):
    __tablename__ = "quickstart_user"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(255), unique=True)


class SendWelcomeEmail(Task, name="send_welcome_email", queue="mail", max_retries=5):
    email: str

    async def run(self, ctx: JobContext) -> None:
        print(f"  sent the welcome email to {self.email} (attempt {ctx.attempt})")


class RebuildReport(Task, name="rebuild_report", priority=-1):
    reason: str

    def run(self, ctx: JobContext) -> None:  # a plain def runs in the worker's thread pool
        print(f"  rebuilt the signup report ({self.reason}), enqueued because: {ctx.context}")


async def sign_up(session: AsyncSession, email: str) -> None:
    """The business transaction: the user and its jobs commit together, or not at all."""
    session.add(User(email=email))
    session.add(enqueue(SendWelcomeEmail(email=email), context="signup"))
    session.add(enqueue(RebuildReport(reason=f"new user {email}"), context="signup"))


async def main() -> None:
    engine = create_engine(DATABASE_URL)
    async with engine.begin() as connection:
        await connection.run_sync(AppBase.metadata.create_all)
        await connection.execute(delete(User))

    async with AsyncSession(engine) as session:
        await sign_up(session, "ada@example.com")
        await session.commit()
        print("committed: ada@example.com and 2 jobs")

    async with AsyncSession(engine) as session:
        await sign_up(session, "bob@example.com")
        await session.rollback()
        print("rolled back: bob@example.com, so no jobs for bob")

    print("running a worker until no job is due:")
    processed = await Worker(engine, concurrency=4).run_until_idle()
    print(f"done: {processed} jobs ran")
    await engine.dispose()


if __name__ == "__main__":
    migrate.upgrade(DATABASE_URL)  # creates or updates sqla_jobs' tables; idempotent
    asyncio.run(main())
