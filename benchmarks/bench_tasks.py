"""Tasks the benchmark enqueues; importable by worker subprocesses (``PYTHONPATH=benchmarks``)."""

from __future__ import annotations

import time

from sqla_jobs import JobContext, Task

BENCH_QUEUE = "bench"
LATENCY_QUEUE = "bench_latency"

LATENCIES_NS: list[int] = []
"""Enqueue-to-start latency of every `Stamp` run in this process, in nanoseconds."""


class NoOp(Task, name="bench.noop", queue=BENCH_QUEUE):
    """Do nothing: a drain of these measures the framework, not the jobs."""

    n: int = 0

    async def run(self, ctx: JobContext) -> None:
        return None


class Stamp(Task, name="bench.stamp", queue=LATENCY_QUEUE):
    """Record how long after `enqueued_ns` (``time.time_ns()`` before the commit) it started."""

    enqueued_ns: int

    async def run(self, ctx: JobContext) -> None:
        LATENCIES_NS.append(time.time_ns() - self.enqueued_ns)
