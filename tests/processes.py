"""Worker processes for the tests: started as ``python -m sqla_jobs.worker``, read via a ledger."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from tests.cli_tasks import ledger

REPO = Path(__file__).resolve().parent.parent


class WorkerProcess:
    """A worker process whose output goes to a file (a pipe could fill up and block it)."""

    def __init__(self, database_url: str, log_path: Path, *args: str, **env: str) -> None:
        self.log_path = log_path
        environment = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
            "SQLA_JOBS_DATABASE_URL": database_url,
            "SQLA_JOBS_POLL_INTERVAL": "0.05",
            **env,
        }
        with log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "sqla_jobs.worker", "--import", "tests.cli_tasks", *args],
                env=environment,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=log_path.parent,
            )

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    async def exit_code(self, timeout: float = 30) -> int:
        return await asyncio.to_thread(self.process.wait, timeout)

    @property
    def output(self) -> str:
        return self.log_path.read_text()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


async def count_where(engine: AsyncEngine, *conditions: object, table: object = ledger) -> int:
    async with AsyncSession(engine) as session:
        query = select(func.count()).select_from(table).where(*conditions)  # type: ignore[arg-type]
        return (await session.scalar(query)) or 0


def predicate(
    engine: AsyncEngine, *conditions: object, equals: int, table: object = ledger
) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return await count_where(engine, *conditions, table=table) == equals

    return check
