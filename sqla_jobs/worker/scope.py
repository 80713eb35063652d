"""Which tasks and queues a worker serves."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from sqla_jobs.errors import ConfigurationError
from sqla_jobs.tasks import Task, is_concrete, registered_tasks


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
