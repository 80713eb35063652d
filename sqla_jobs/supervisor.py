"""Run several worker processes under one supervisor: start, restart, forward signals, stop.

Process supervision only: the children do all the job work. Each child is a fresh interpreter
started with `subprocess` (the CLI runs ``python -m sqla_jobs.worker``), not a fork: it inherits
no event loop, engine, connection pool or thread from the supervisor, it is exactly the process
an operator could start by hand, and, unlike multiprocessing's spawn context, nothing has to be
pickled to start it. POSIX only, like the worker's own signal handling.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import FrameType

from loguru import logger

# How often the supervisor looks at its children and at signals it received. A child's exit is
# noticed this late at most; waiting in os.waitpid() instead would need a second timer for
# restarts, and this small poll costs nothing measurable.
CHECK_INTERVAL = 0.1
INITIAL_RESTART_DELAY = 0.5
MAX_RESTART_DELAY = 30.0
# A child that lived this long is considered healthy: its next restart starts from
# INITIAL_RESTART_DELAY again instead of the backed-off delay.
HEALTHY_LIFETIME = 60.0
FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@dataclass
class _Slot:
    """One of the N worker processes: the current child, if any, and its restart backoff."""

    index: int
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restarts: int = 0
    """Restarts since the child last lived `HEALTHY_LIFETIME`; sets the next restart's delay."""
    start_at: float = 0.0
    """Monotonic time at which to start the next child, while `process` is None."""


class Supervisor:
    """Keep `processes` copies of `command` running until SIGTERM or SIGINT.

    A child that exits while the supervisor is not stopping is restarted after a backoff
    (0.5 s doubling to 30 s), whatever its exit code: a worker is a service, so even a clean
    exit 0 of its own is unexpected, and restarting keeps the requested capacity.
    Each signal is forwarded to every child: the first makes them shut down gracefully, a
    second makes them cancel running jobs and exit at once.

    >>> Supervisor([sys.executable, "-m", "sqla_jobs.worker", "--processes", "1"], 4).run()
    """

    def __init__(self, command: Sequence[str], processes: int) -> None:
        if processes < 1:
            raise ValueError("processes must be at least 1")
        self.command = list(command)
        self._slots = [_Slot(index) for index in range(processes)]
        self._pending_signals: list[int] = []
        self._stopping = False
        self._clean = True

    def run(self) -> int:
        """Supervise until a signal stops every child; return 0 if all of them exited 0, else 1."""
        previous = {signum: signal.signal(signum, self._on_signal) for signum in FORWARDED_SIGNALS}
        logger.info("supervisor started", processes=len(self._slots))
        try:
            while True:
                self._forward_signals()
                self._reap()
                if self._stopping:
                    if all(slot.process is None for slot in self._slots):
                        break
                else:
                    self._start_due()
                time.sleep(CHECK_INTERVAL)
        except BaseException:
            # Never leave orphans behind: a supervisor that dies takes its children with it.
            self._kill_all()
            raise
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        code = 0 if self._clean else 1
        logger.info("supervisor stopped", exit_code=code)
        return code

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # Only record it: the main loop forwards it, so a child being started right now (whose
        # Popen has not returned yet) cannot miss it.
        self._pending_signals.append(signum)

    def _forward_signals(self) -> None:
        while self._pending_signals:
            signum = self._pending_signals.pop(0)
            if self._stopping:
                logger.warning(
                    "second signal; forwarding it to stop children at once", signal=signum
                )
            else:
                logger.info("signal received; stopping worker processes", signal=signum)
            self._stopping = True
            for slot in self._slots:
                if slot.process is not None:
                    slot.process.send_signal(signum)

    def _reap(self) -> None:
        now = time.monotonic()
        for slot in self._slots:
            if slot.process is None or (code := slot.process.poll()) is None:
                continue
            pid = slot.process.pid
            slot.process = None
            if self._stopping:
                # A child still starting (its worker has installed no signal handler yet) dies of
                # the forwarded signal itself; it held no job, so that is a clean stop as well.
                stopped_by_signal = code in [-signum for signum in FORWARDED_SIGNALS]
                self._clean = self._clean and (code == 0 or stopped_by_signal)
                logger.info("worker process stopped", process=slot.index, pid=pid, exit_code=code)
                continue
            if now - slot.started_at > HEALTHY_LIFETIME:
                slot.restarts = 0
            delay = min(INITIAL_RESTART_DELAY * 2**slot.restarts, MAX_RESTART_DELAY)
            slot.restarts += 1
            slot.start_at = now + delay
            logger.warning(
                "worker process exited unexpectedly; restarting",
                process=slot.index,
                pid=pid,
                exit_code=code,
                restart_in=delay,
            )

    def _start_due(self) -> None:
        now = time.monotonic()
        for slot in self._slots:
            if slot.process is None and slot.start_at <= now:
                # Own process group: a Ctrl-C in the terminal reaches only the supervisor, which
                # forwards it once; otherwise each child would get it twice and stop at once.
                # The price: a supervisor killed with SIGKILL leaves its children running
                # (a service manager's cgroup, or the container, still ends them).
                slot.process = subprocess.Popen(self.command, process_group=0)
                slot.started_at = now
                logger.info(
                    "worker process started",
                    process=slot.index,
                    pid=slot.process.pid,
                    restarts=slot.restarts,
                )

    def _kill_all(self) -> None:
        for slot in self._slots:
            if slot.process is not None and slot.process.poll() is None:
                slot.process.kill()
                slot.process.wait()
