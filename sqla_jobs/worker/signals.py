"""SIGTERM and SIGINT: the first stops the worker gracefully, a second one at once."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable

from loguru import logger


def install(stop: Callable[..., None], is_stopping: Callable[[], bool]) -> Callable[[], None]:
    """Call `stop()` on the first signal and `stop(force=True)` on the next; return a remover.

    Does nothing outside the main thread, or where the loop cannot handle signals.
    """
    loop = asyncio.get_running_loop()
    installed = []

    def on_signal(signum: int) -> None:
        if is_stopping():
            logger.warning("second signal; cancelling running jobs", signal=signum)
            stop(force=True)
        else:
            logger.info("signal received; shutting down gracefully", signal=signum)
            stop()

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
