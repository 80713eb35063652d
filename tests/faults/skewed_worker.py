"""Run a worker whose wall clock is off: ``python tests/faults/skewed_worker.py SECONDS [flags]``.

`time.time`, `time.time_ns` and `datetime.datetime.now`/`utcnow`/`today` are moved by SECONDS
(negative: into the past) before sqla_jobs or any task module is imported, so every
``from datetime import datetime`` they do sees the skewed class; then the flags go to
``sqla_jobs.cli.worker_main``, as for ``python -m sqla_jobs.worker``. `time.monotonic` is left
alone: it measures durations, not instants, and NTP never steps it either.
"""

from __future__ import annotations

import datetime
import sys
import time
from typing import Self


def skew_clocks(seconds: float) -> None:
    """Move this process's wall clock by `seconds`."""
    real_time = time.time
    real_time_ns = time.time_ns
    offset_ns = round(seconds * 1e9)

    def skewed_time() -> float:
        return real_time() + seconds

    def skewed_time_ns() -> int:
        return real_time_ns() + offset_ns

    class SkewedDatetime(datetime.datetime):
        @classmethod
        def now(cls, tz: datetime.tzinfo | None = None) -> Self:
            return cls.fromtimestamp(skewed_time(), tz)

        @classmethod
        def utcnow(cls) -> Self:
            return cls.fromtimestamp(skewed_time(), datetime.UTC).replace(tzinfo=None)

        @classmethod
        def today(cls) -> Self:
            return cls.fromtimestamp(skewed_time())

    time.time = skewed_time
    time.time_ns = skewed_time_ns
    datetime.datetime = SkewedDatetime  # type: ignore[misc]  # patching the class is the point


def main() -> int:
    skew_clocks(float(sys.argv[1]))
    # Imported only now, so that it, and the task modules it imports, see the skewed clock.
    from sqla_jobs.cli import worker_main

    return worker_main(sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
