"""Task definitions and the registry that maps job names to Task classes.

A `Task` is a pydantic model whose fields are the job's JSON payload. Its options are class
keyword arguments, so they never collide with payload fields::

    class SendEmail(Task, name="send_email", queue="mail", priority=5, max_retries=10):
        to: str
        name: str  # a payload field, unrelated to the option above

        async def run(self, ctx: JobContext) -> None: ...
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict

from .errors import ConfigurationError, DuplicateTaskNameError, UnknownTaskError
from .options import DEFAULT_MAX_PAYLOAD_BYTES as DEFAULT_MAX_PAYLOAD_BYTES
from .options import DEFAULT_MAX_SNOOZES as DEFAULT_MAX_SNOOZES
from .options import MAX_NAME_LENGTH as MAX_NAME_LENGTH
from .options import (
    check_backoff,
    check_max_payload_bytes,
    check_max_retries,
    check_max_snoozes,
    check_name,
    check_priority,
    check_queue,
    check_timeout,
)
from .retry import Backoff, exponential_backoff

if TYPE_CHECKING:
    from .context import JobContext

_OPTION_NAMES = frozenset(
    {
        "name",
        "queue",
        "priority",
        "max_retries",
        "backoff",
        "max_payload_bytes",
        "timeout",
        "max_snoozes",
    }
)


@dataclass(frozen=True, slots=True)
class TaskOptions:
    """The options of a Task class; each can be overridden per call of `enqueue`."""

    name: str
    queue: str = "default"
    priority: int = 0
    max_retries: int | None = None
    """None: the worker's `max_retries` (20 unless configured)."""
    backoff: Backoff = exponential_backoff
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
    """The largest payload `enqueue` accepts, in bytes of compact UTF-8 JSON."""
    timeout: timedelta | None = None
    """How long one attempt may run before it fails; None: no limit."""
    max_snoozes: int = DEFAULT_MAX_SNOOZES
    """How many times a job may raise `Snooze`; the next snooze dead-letters it."""


class Task(BaseModel):
    """Base class of job definitions: subclass it, declare payload fields, implement `run`.

    `async def run` runs on the worker's event loop; a plain `def run` runs in the worker's
    thread pool. Subclasses register themselves under their `name` when the class is created.
    """

    # NaN and infinities stay floats when dumped, where enqueue() refuses them by name, instead
    # of pydantic's default of turning those in `Any` fields silently into null.
    model_config = ConfigDict(ser_json_inf_nan="constants")

    __task_options__: ClassVar[TaskOptions]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # Options are consumed in __pydantic_init_subclass__, once the model is complete.
        super().__init_subclass__(**{k: v for k, v in kwargs.items() if k not in _OPTION_NAMES})

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        options = {k: v for k, v in kwargs.items() if k in _OPTION_NAMES}
        super().__pydantic_init_subclass__(**{k: v for k, v in kwargs.items() if k not in options})
        cls.__task_options__ = _make_options(cls, options)
        if is_concrete(cls):
            _register(cls)

    def run(self, ctx: JobContext) -> Any:
        """Do the job's work; raise to fail the attempt (it is then retried or dead-lettered)."""
        raise NotImplementedError(f"{type(self).__qualname__} does not implement run()")


def is_concrete(task_class: type[Task]) -> bool:
    """Tell whether `task_class` implements `run` (abstract bases share options, not names)."""
    return task_class.run is not Task.run


@functools.cache
def is_async(task_class: type[Task]) -> bool:
    """Tell whether `task_class.run` is a coroutine function (else it runs in a thread)."""
    # Cached: asked for every job run, and a class's run() does not change.
    return inspect.iscoroutinefunction(task_class.run)


def _make_options(cls: type[Task], given: dict[str, Any]) -> TaskOptions:
    # Options are inherited from a parent Task class, except the name, which identifies a class.
    inherited = getattr(cls, "__task_options__", None) or TaskOptions(name="")
    name = given.get("name", f"{cls.__module__}.{cls.__qualname__}")
    try:
        return TaskOptions(
            name=check_name(name),
            queue=check_queue(given.get("queue", inherited.queue)),
            priority=check_priority(given.get("priority", inherited.priority)),
            max_retries=check_max_retries(given.get("max_retries", inherited.max_retries)),
            backoff=check_backoff(given.get("backoff", inherited.backoff)),
            max_payload_bytes=check_max_payload_bytes(
                given.get("max_payload_bytes", inherited.max_payload_bytes)
            ),
            timeout=check_timeout(given.get("timeout", inherited.timeout)),
            max_snoozes=check_max_snoozes(given.get("max_snoozes", inherited.max_snoozes)),
        )
    except ValueError as exc:
        raise ConfigurationError(f"{cls.__qualname__}: {exc}") from exc


_registry: dict[str, type[Task]] = {}


def _register(task_class: type[Task]) -> None:
    name = task_class.__task_options__.name
    existing = _registry.get(name)
    if existing is not None and not _is_same_definition(existing, task_class):
        raise DuplicateTaskNameError(
            f"task name {name!r} is claimed by {_where(existing)} and {_where(task_class)}"
        )
    _registry[name] = task_class


def _is_same_definition(a: type[Task], b: type[Task]) -> bool:
    # A module imported twice (reload, a test module collected anew) redefines the same class.
    return (a.__module__, a.__qualname__) == (b.__module__, b.__qualname__)


def _where(task_class: type[Task]) -> str:
    return f"{task_class.__module__}.{task_class.__qualname__}"


def registered_tasks() -> Mapping[str, type[Task]]:
    """Return a read-only view of every registered Task class by name."""
    return MappingProxyType(_registry)


def get_task(name: str) -> type[Task]:
    """Return the Task class registered under `name`, or raise `UnknownTaskError`."""
    try:
        return _registry[name]
    except KeyError:
        raise UnknownTaskError(f"no task is registered under the name {name!r}") from None
