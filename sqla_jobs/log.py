"""Logging: entry points configure loguru; the library itself only logs, never configures."""

from __future__ import annotations

import sys

from loguru import logger

from .settings import Settings

HUMAN_FORMAT = (
    "<green>{time:YYYY-MM-DD HH:mm:ss.SSS}</green> | <level>{level: <8}</level> | "
    "<level>{message}</level> | {extra}"
)


def configure(settings: Settings) -> None:
    """Send sqla_jobs' log lines (and the application's) to stderr, as text or JSON lines.

    Called by entry points such as ``python -m sqla_jobs.worker``, which own the process.
    `diagnose=False` keeps variable values (payloads, URLs) out of tracebacks.
    """
    logger.remove()
    logger.add(
        sys.stderr,
        level=settings.log_level,
        serialize=settings.log_json,
        format=HUMAN_FORMAT,
        diagnose=False,
        backtrace=False,
    )
    logger.enable("sqla_jobs")
