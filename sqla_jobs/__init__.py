"""sqla_jobs: background jobs that live in your SQLAlchemy application's own database.

>>> class SendEmail(Task, name="send_email", queue="mail"):
...     to: str
...     async def run(self, ctx: JobContext) -> None: ...
>>> session.add(enqueue(SendEmail(to="a@example.com"), context="signup"))
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from loguru import logger

from .bulk import enqueue_bulk as enqueue_bulk
from .context import JobContext as JobContext
from .enqueue import enqueue as enqueue
from .enqueue import enqueue_many as enqueue_many
from .errors import ConfigurationError as ConfigurationError
from .errors import Discard as Discard
from .errors import DuplicateTaskNameError as DuplicateTaskNameError
from .errors import EnqueueError as EnqueueError
from .errors import PayloadError as PayloadError
from .errors import Retry as Retry
from .errors import Snooze as Snooze
from .errors import SqlaJobsError as SqlaJobsError
from .errors import UnknownTaskError as UnknownTaskError
from .models import DeadLetterJob as DeadLetterJob
from .models import Job as Job
from .periodic import Periodic as Periodic
from .periodic import periodic as periodic
from .retry import constant_backoff as constant_backoff
from .retry import exponential_backoff as exponential_backoff
from .retry import exponential_backoff_with_jitter as exponential_backoff_with_jitter
from .settings import Settings as Settings
from .tasks import Task as Task
from .unique import enqueue_unique as enqueue_unique

if TYPE_CHECKING:
    from .worker import Worker as Worker

# Imported on first use: the worker brings the store and Alembic, which an application that only
# defines and enqueues tasks (and every `sqla-jobs` invocation) should not pay for.
_LAZY = {"Worker": "sqla_jobs.worker"}

__all__ = [
    "ConfigurationError",
    "DeadLetterJob",
    "Discard",
    "DuplicateTaskNameError",
    "EnqueueError",
    "Job",
    "JobContext",
    "PayloadError",
    "Periodic",
    "Retry",
    "Settings",
    "Snooze",
    "SqlaJobsError",
    "Task",
    "UnknownTaskError",
    "Worker",
    "constant_backoff",
    "enqueue",
    "enqueue_bulk",
    "enqueue_many",
    "enqueue_unique",
    "exponential_backoff",
    "exponential_backoff_with_jitter",
    "periodic",
]

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'sqla_jobs' has no attribute {name!r}")
    import importlib

    member = getattr(importlib.import_module(module), name)
    # Cached: later lookups are ordinary attribute reads.
    globals()[name] = member
    return member


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


# A library stays silent until the application (or our CLI) enables it.
logger.disable("sqla_jobs")
