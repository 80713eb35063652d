"""SIGTERM and SIGINT: the first stops the worker gracefully, a second one at once."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from typing import Protocol

from loguru import logger


class Stoppable(Protocol):
    """What a signal stops."""

    def stop(self, *, force: bool = False) -> None:
        """Stop gracefully, or at once with `force`."""
        ...


def install(target: Stoppable, stopping: asyncio.Event) -> Callable[[], None]:
    """Call `target.stop()` on the first signal, `stop(force=True)` on the next; return a remover.

    Does nothing outside the main thread, or where the loop cannot handle signals.
    """
    loop = asyncio.get_running_loop()
    installed = []

    def on_signal(signum: int) -> None:
        if stopping.is_set():
            logger.warning("second signal; cancelling running jobs", signal=signum)
            target.stop(force=True)
        else:
            logger.info("signal received; shutting down gracefully", signal=signum)
            target.stop()

    for signum in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(signum, on_signal, signum)
        except (NotImplementedError, RuntimeError, ValueError):
            continue  # not the main thread, or a platform without signals
        installed.append(signum)

    def remove() -> None:
        for signum in installed:
            loop.remove_signal_handler(signum)

    return remove
