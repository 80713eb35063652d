"""A worker's options: which tasks and queues it serves, and the limits it accepts."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy.engine import URL, make_url

from sqla_jobs.errors import ConfigurationError
from sqla_jobs.tasks import Task, is_concrete, registered_tasks


def check_limits(
    *,
    concurrency: int,
    max_retries: int,
    poll_interval: timedelta,
    lock_timeout: timedelta,
    heartbeat_interval: timedelta,
    heartbeat_timeout: timedelta,
) -> None:
    """Raise `ConfigurationError` for a limit no worker can run with."""
    if concurrency < 1:
        raise ConfigurationError("concurrency must be at least 1")
    if max_retries < 0:
        raise ConfigurationError("max_retries must be at least 0")
    for option, value in (
        ("poll_interval", poll_interval),
        ("lock_timeout", lock_timeout),
        ("heartbeat_interval", heartbeat_interval),
        ("heartbeat_timeout", heartbeat_timeout),
    ):
        if value <= timedelta(0):
            raise ConfigurationError(f"{option} must be positive")
    if heartbeat_timeout <= heartbeat_interval:
        raise ConfigurationError("heartbeat_timeout must be longer than heartbeat_interval")


def pool_options(url: str | URL, concurrency: int) -> dict[str, Any]:
    """Size the pool of an engine the worker creates for the connections it really uses."""
    if make_url(url).get_backend_name() == "sqlite":
        return {}
    # The claim loop, the completer, the listener's wake-ups, and failures written at once by
    # up to `concurrency` jobs; idle overflow connections are closed and reopened, so keep them.
    return {"pool_size": min(concurrency, 20) + 2, "max_overflow": concurrency}


def task_map(tasks: Iterable[type[Task]] | None) -> Mapping[str, type[Task]]:
    """Map task names to the classes a worker serves: `tasks`, or every registered one."""
    if tasks is None:
        return dict(registered_tasks())
    mapping: dict[str, type[Task]] = {}
    for task_class in tasks:
        if not (isinstance(task_class, type) and issubclass(task_class, Task)):
            raise ConfigurationError(f"tasks must be Task subclasses, not {task_class!r}")
        if not is_concrete(task_class):
            raise ConfigurationError(f"{task_class.__qualname__} does not implement run()")
        mapping[task_class.__task_options__.name] = task_class
    return mapping


def serve_queues(queues: Sequence[str] | None, tasks: Mapping[str, type[Task]]) -> tuple[str, ...]:
    """Return the queues to serve: `queues`, or those of `tasks`, each once."""
    if queues is None:
        queues = sorted({task.__task_options__.queue for task in tasks.values()})
    if isinstance(queues, str):
        raise ConfigurationError("queues must be a sequence of queue names, not a string")
    if not queues or not all(isinstance(q, str) and q for q in queues):
        raise ConfigurationError(
            "the worker has no queue to serve: register or pass tasks, or name queues"
        )
    return tuple(dict.fromkeys(queues))
