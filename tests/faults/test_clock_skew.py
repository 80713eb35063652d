"""A worker process whose wall clock is an hour off still claims and retries by database time.

The worker runs under ``tests/faults/skewed_worker.py``, which moves its ``time.time()`` and
``datetime.now()`` an hour ahead or behind. `ClockProbe` jobs record, as they start, what the
database says: a worker comparing instants with its own clock would, an hour ahead, start a
delayed job (or a retry) before it is due, and, an hour behind, start no job at all.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from sqla_jobs import Job, enqueue
from tests.cli_tasks import ledger
from tests.faults.conftest import FaultDatabase
from tests.faults.poison_tasks import PROBE_BACKOFF, ClockProbe
from tests.helpers import wait_until
from tests.processes import REPO, WorkerProcess

SCRIPT = Path(__file__).with_name("skewed_worker.py")
# Far below the skew, far above any delay between the probe's query and its clock reading.
TOLERANCE = 60.0


class SkewedWorker(WorkerProcess):
    """``python tests/faults/skewed_worker.py SECONDS`` serving `database`, output to a file."""

    def __init__(self, database: FaultDatabase, log_path: Path, seconds: float) -> None:
        self.log_path = log_path
        environment = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
            # The probes read and write as postgres; the worker logs in as its own role.
            "SQLA_JOBS_DATABASE_URL": database.url,
            "SQLA_JOBS_POLL_INTERVAL": "0.05",
        }
        command = [sys.executable, str(SCRIPT), str(seconds), "--database-url",
                   database.worker_url, "--import", "tests.cli_tasks",
                   "--import", "tests.faults.poison_tasks"]  # fmt: skip
        with log_path.open("wb") as log:
            self.process = subprocess.Popen(
                command, env=environment, stdout=log, stderr=subprocess.STDOUT, cwd=log_path.parent
            )


async def probe_records(engine: AsyncEngine) -> dict[str, list[dict[str, Any]]]:
    """Return each probe's ledger records, by key, in attempt order."""
    async with AsyncSession(engine) as session:
        rows = await session.execute(select(ledger.c.key, ledger.c.event).order_by(ledger.c.id))
    records: dict[str, list[dict[str, Any]]] = {}
    for key, event in rows:
        records.setdefault(key, []).append(json.loads(event))
    return records


async def no_job_left(engine: AsyncEngine) -> bool:
    async with AsyncSession(engine) as session:
        return (await session.scalar(select(func.count()).select_from(Job))) == 0


@pytest.mark.parametrize("skew", [3600.0, -3600.0], ids=["an_hour_ahead", "an_hour_behind"])
async def test_a_worker_with_a_skewed_clock_claims_and_retries_by_database_time(
    fault_db: FaultDatabase, fault_engine: AsyncEngine, tmp_path: Path, skew: float
) -> None:
    worker = SkewedWorker(fault_db, tmp_path / "worker.log", skew)
    try:
        async with AsyncSession(fault_engine) as session:
            session.add_all(
                [
                    enqueue(ClockProbe(key="due")),
                    enqueue(ClockProbe(key="delayed"), delay=timedelta(seconds=2)),
                    enqueue(ClockProbe(key="retried", fail_first=True)),
                ]
            )
            await session.commit()

        async def done() -> bool:
            return await no_job_left(fault_engine)

        # An hour behind, a worker using its own clock would find nothing due: this times out.
        await wait_until(done, timeout=30, interval=0.1)
        records = await probe_records(fault_engine)
        assert {key: [r["attempt"] for r in rs] for key, rs in records.items()} == {
            "due": [1],
            "delayed": [1],
            "retried": [1, 2],
        }, worker.output
        for key, attempts in records.items():
            for record in attempts:
                # The patch took: the worker's own clock really is an hour off...
                assert abs(record["skew"] - skew) < TOLERANCE, (key, record)
                assert abs(record["datetime_skew"] - skew) < TOLERANCE, (key, record)
                # ...and yet no attempt started before the database said it was due.
                assert record["due"] is True, (key, record)
        retry = records["retried"][1]
        # The retry was scheduled by the database: its backoff exactly, from a failure instant
        # between the job's creation and the retry (not an hour away from both).
        assert retry["backoff"] == PROBE_BACKOFF.total_seconds(), retry
        assert retry["failed_in_order"] is True, retry

        worker.signal(signal.SIGTERM)
        assert await worker.exit_code() == 0, worker.output
    finally:
        worker.kill()
