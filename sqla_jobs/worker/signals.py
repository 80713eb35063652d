"""How a worker is told to stop from outside: SIGTERM and SIGINT, and a supervisor's death.

A worker on its own stops gracefully on the first SIGTERM or SIGINT, and at once on a second.

A worker started by the ``--processes`` supervisor (which names itself with the hidden
``--supervisor-pid`` flag) takes only its first SIGTERM or SIGINT, and ignores later ones
whatever sent them: systemd's default ``KillMode=control-group`` signals every process of the
unit, and a terminal's Ctrl-C its whole process group, while the supervisor forwards the same
stop as well, so one stop reaches a child twice. The supervisor alone decides "at once": on its
own second signal it sends `FORCE_STOP_SIGNAL`. A supervised worker whose supervisor is gone
(killed with SIGKILL, say) stops gracefully by itself, rather than run on unsupervised.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable
from typing import Protocol

from loguru import logger

from sqla_jobs.supervisor import FORCE_STOP_SIGNAL

# How often a supervised worker checks that its supervisor is still its parent.
SUPERVISOR_CHECK_INTERVAL = 1.0


class Stoppable(Protocol):
    """What a signal stops."""

    def stop(self, *, force: bool = False) -> None:
        """Stop gracefully, or at once with `force`."""
        ...


def install(
    target: Stoppable,
    stopping: asyncio.Event,
    supervisor_pid: int | None = None,
    enabled: bool = True,
) -> Callable[[], None]:
    """Call `target.stop()` on the first signal, `stop(force=True)` on the next; return a remover.

    With `supervisor_pid`, the worker is supervised: later SIGTERMs and SIGINTs are ignored,
    `FORCE_STOP_SIGNAL` calls `stop(force=True)`, and `stop()` is called once the process with
    that pid is no longer the parent. Signals are not handled outside the main thread, or where
    the loop cannot handle them; nor when not `enabled` (the remover then does nothing).
    """
    if not enabled:
        return lambda: None
    loop = asyncio.get_running_loop()
    installed = []

    def on_stop_signal(signum: int) -> None:
        if not stopping.is_set():
            logger.info("signal received; shutting down gracefully", signal=signum)
            target.stop()
        elif supervisor_pid is not None:
            logger.info("signal received while already stopping; ignored", signal=signum)
        else:
            logger.warning("second signal; cancelling running jobs", signal=signum)
            target.stop(force=True)

    def on_force_signal(signum: int) -> None:
        logger.warning("stop at once requested; cancelling running jobs", signal=signum)
        target.stop(force=True)

    handlers = {signal.SIGTERM: on_stop_signal, signal.SIGINT: on_stop_signal}
    if supervisor_pid is not None:
        handlers[FORCE_STOP_SIGNAL] = on_force_signal
    for signum, handler in handlers.items():
        try:
            loop.add_signal_handler(signum, handler, signum)
        except (NotImplementedError, RuntimeError, ValueError):
            continue  # not the main thread, or a platform without signals
        installed.append(signum)
    watch = None
    if supervisor_pid is not None:
        watch = loop.create_task(_watch_supervisor(target, stopping, supervisor_pid))

    def remove() -> None:
        for signum in installed:
            loop.remove_signal_handler(signum)
        if watch is not None:
            watch.cancel()

    return remove


async def _watch_supervisor(
    target: Stoppable, stopping: asyncio.Event, supervisor_pid: int
) -> None:
    # A process whose parent dies is given another (init, or a subreaper): polling the parent's
    # pid works on every POSIX system, where prctl(PR_SET_PDEATHSIG) is Linux's alone.
    while os.getppid() == supervisor_pid:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), SUPERVISOR_CHECK_INTERVAL)
        if stopping.is_set():
            return  # stopping anyway: nothing left to watch for
    logger.warning("supervisor gone; shutting down gracefully", supervisor_pid=supervisor_pid)
    target.stop()
