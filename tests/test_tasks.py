"""Task definitions: options as class keywords, registration by name, sync or async run."""

from __future__ import annotations

from datetime import timedelta

import pytest

from sqla_jobs import ConfigurationError, DuplicateTaskNameError, JobContext, Task
from sqla_jobs.errors import UnknownTaskError
from sqla_jobs.retry import exponential_backoff
from sqla_jobs.tasks import get_task, is_async, is_concrete, registered_tasks


class Shout(Task, name="tests.tasks.shout", queue="loud", priority=7, max_retries=3):
    # Payload fields named like the options: options are class keywords, so nothing collides.
    name: str
    queue: int
    priority: list[str]

    async def run(self, ctx: JobContext) -> None:
        return None


class Whisper(Task, name="tests.tasks.whisper"):
    def run(self, ctx: JobContext) -> None:
        return None


def test_options_are_class_keywords_and_do_not_collide_with_fields() -> None:
    options = Shout.__task_options__
    assert (options.name, options.queue, options.priority, options.max_retries) == (
        "tests.tasks.shout",
        "loud",
        7,
        3,
    )
    task = Shout(name="payload name", queue=3, priority=["a"])
    assert task.model_dump() == {"name": "payload name", "queue": 3, "priority": ["a"]}


def test_defaults() -> None:
    options = Whisper.__task_options__
    assert options.queue == "default"
    assert options.priority == 0
    assert options.max_retries is None
    assert options.backoff is exponential_backoff


def test_subclass_registers_under_its_name() -> None:
    assert get_task("tests.tasks.shout") is Shout
    assert registered_tasks()["tests.tasks.whisper"] is Whisper


def test_unknown_name_raises_unknown_task_error() -> None:
    with pytest.raises(UnknownTaskError, match="no-such-task"):
        get_task("no-such-task")


def test_two_classes_with_one_name_raise_at_once() -> None:
    with pytest.raises(DuplicateTaskNameError, match=r"tests\.tasks\.shout"):

        class Impostor(Task, name="tests.tasks.shout"):
            async def run(self, ctx: JobContext) -> None:
                return None

    assert get_task("tests.tasks.shout") is Shout


def test_redefining_the_same_class_replaces_it() -> None:
    # What a module reload does: same module, same qualified name.
    def define() -> type[Task]:
        class Reloaded(Task, name="tests.tasks.reloaded"):
            async def run(self, ctx: JobContext) -> None:
                return None

        return Reloaded

    define()
    second = define()
    assert get_task("tests.tasks.reloaded") is second


def test_name_defaults_to_module_and_qualname() -> None:
    class Unnamed(Task):
        async def run(self, ctx: JobContext) -> None:
            return None

    assert Unnamed.__task_options__.name == f"{__name__}.{Unnamed.__qualname__}"


def test_a_base_without_run_shares_options_and_is_not_registered() -> None:
    class MailBase(Task, name="tests.tasks.mail_base", queue="mail", priority=2):
        pass

    class Welcome(MailBase, name="tests.tasks.welcome"):
        async def run(self, ctx: JobContext) -> None:
            return None

    assert not is_concrete(MailBase)
    assert "tests.tasks.mail_base" not in registered_tasks()
    assert Welcome.__task_options__.queue == "mail"
    assert Welcome.__task_options__.priority == 2
    assert Welcome.__task_options__.name == "tests.tasks.welcome"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"name": ""}, "name must be a non-empty string"),
        ({"name": "x" * 256}, "at most 255"),
        ({"queue": ""}, "queue must be a non-empty string"),
        ({"priority": "high"}, "priority must be an int"),
        ({"priority": True}, "priority must be an int"),
        ({"max_retries": -1}, "max_retries must be an int >= 0"),
        ({"backoff": 3}, "backoff must be callable"),
    ],
)
def test_bad_options_raise_configuration_error(options: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        type("Bad", (Task,), {"run": lambda self, ctx: None, "__module__": __name__}, **options)


def test_custom_backoff_option() -> None:
    class Patient(Task, name="tests.tasks.patient", backoff=lambda n: timedelta(minutes=n)):
        async def run(self, ctx: JobContext) -> None:
            return None

    assert Patient.__task_options__.backoff(3) == timedelta(minutes=3)


def test_async_and_sync_run_are_told_apart() -> None:
    assert is_async(Shout)
    assert not is_async(Whisper)


def test_exponential_backoff_matches_the_reference() -> None:
    assert [exponential_backoff(n).total_seconds() for n in range(4)] == [2, 4, 8, 16]
    assert exponential_backoff(10_000) == exponential_backoff(31)
