"""Tasks the benchmark enqueues; importable by worker subprocesses (``PYTHONPATH=benchmarks``)."""

from __future__ import annotations

import os
import time

from sqla_jobs import JobContext, Task

BENCH_QUEUE = "bench"
LATENCY_QUEUE = "bench_latency"


class NoOp(Task, name="bench.noop", queue=BENCH_QUEUE):
    """Do nothing: a drain of these measures the framework, not the jobs."""

    n: int = 0

    async def run(self, ctx: JobContext) -> None:
        return None


class Stamp(Task, name="bench.stamp", queue=LATENCY_QUEUE):
    """Write ``<key> <time.time_ns()>`` when it starts, to the file named by BENCH_STAMP_FILE."""

    key: int

    async def run(self, ctx: JobContext) -> None:
        started_ns = time.time_ns()
        with open(os.environ["BENCH_STAMP_FILE"], "a") as stamps:
            stamps.write(f"{self.key} {started_ns}\n")
