"""Run several worker processes under one supervisor: start, restart, forward signals, stop.

Process supervision only: the children do all the job work. Each child is a fresh interpreter
started with `subprocess` (the CLI runs ``python -m sqla_jobs.worker``), not a fork: it inherits
no event loop, engine, connection pool or thread from the supervisor, it is exactly the process
an operator could start by hand, and, unlike multiprocessing's spawn context, nothing has to be
pickled to start it. POSIX only, like the worker's own signal handling.

The children stay in the supervisor's process group, so a terminal treats them as one job
(Ctrl-C, Ctrl-Z, hangup), and systemd's default ``KillMode=control-group`` signals them all.
A stop can therefore reach a child twice, directly and forwarded: a supervised child takes only
the first SIGTERM or SIGINT, and only `FORCE_STOP_SIGNAL`, sent by the supervisor on its own
second signal, stops it at once (see `sqla_jobs.worker.signals`).
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
# "Stop at once", from the supervisor to its children only. Neither a terminal nor systemd sends
# it, and its default action (unlike SIGQUIT's) dumps no core in a child not yet listening.
FORCE_STOP_SIGNAL = signal.SIGUSR1


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
    The first signal is forwarded to every child, which shuts down gracefully; a second one
    makes the supervisor send them `FORCE_STOP_SIGNAL`: they cancel running jobs and exit at
    once. Children must ignore a repeated SIGTERM or SIGINT (``python -m sqla_jobs.worker
    --supervisor-pid`` does): they may get each stop both directly and from the supervisor.

    >>> command = [sys.executable, "-m", "sqla_jobs.worker", "--processes", "1"]
    >>> Supervisor([*command, "--supervisor-pid", str(os.getpid())], 4).run()
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
                logger.warning("second signal; stopping worker processes at once", signal=signum)
                sent: int = FORCE_STOP_SIGNAL
            else:
                logger.info("signal received; stopping worker processes", signal=signum)
                sent = signum
            self._stopping = True
            for slot in self._slots:
                if slot.process is not None:
                    slot.process.send_signal(sent)

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
                slot.process = subprocess.Popen(self.command)
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
