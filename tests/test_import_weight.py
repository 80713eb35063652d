"""What an application imports, and what the CLI loads to print its help, stays light.

Each check runs in a fresh interpreter: this test process has imported everything already.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sqla_jobs.cli import COMMANDS

# The worker, the store and Alembic (with mako and pygments) are what an application that only
# defines and enqueues tasks must not pay for at import time.
HEAVY = ["alembic", "sqla_jobs.worker", "sqla_jobs.store", "sqla_jobs.cli"]


def loaded_after(code: str) -> set[str]:
    """Return which of `HEAVY` are in ``sys.modules`` after a fresh interpreter runs `code`."""
    probe = (
        f"{code}\nimport json, sys\nprint(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    return set(json.loads(result.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize(
    "code",
    [
        "import sqla_jobs",
        "from sqla_jobs import Task, enqueue, enqueue_many, enqueue_unique, JobContext",
        "from sqla_jobs import Job, DeadLetterJob, Settings, Periodic, periodic, Retry",
        "from sqla_jobs import enqueue_bulk",
        "import sqla_jobs.admin",
    ],
)
def test_application_imports_leave_worker_store_and_alembic_out(code: str) -> None:
    assert loaded_after(code) == set()


def test_cli_help_loads_neither_worker_nor_alembic() -> None:
    code = (
        "import sys\n"
        "from sqla_jobs.cli import main\n"
        "status = main(['--help'])\n"
        "assert status == 0, status\n"
    )
    assert loaded_after(code) <= {"sqla_jobs.cli"}


def test_python_m_sqla_jobs_help_lists_every_command() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sqla_jobs", "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    for name in ("worker", "migrate", "enqueue", "list", "show", "stats", "check", "periodic"):
        assert f"  {name} " in result.stdout, name


@pytest.mark.parametrize(
    "command",
    [
        "migrate",
        "enqueue",
        "list",
        "show",
        "cancel",
        "stats",
        "check",
        "retry",
        "purge",
        "periodic",
    ],
)
def test_operator_commands_load_neither_worker_nor_alembic(command: str) -> None:
    # The health probe runs `sqla-jobs check` every few seconds: a command loads what it uses.
    code = f"from sqla_jobs.cli import main\nassert main([{command!r}, '--help']) == 0\n"
    assert loaded_after(code) <= {"sqla_jobs.cli"}


def test_check_run_loads_no_worker(tmp_path: Path) -> None:
    # Alembic is fine here (the schema check reads the history), the worker and store are not.
    url = f"sqlite+aiosqlite:///{tmp_path / 'probe.db'}"
    code = f"from sqla_jobs.cli import main\nprint(main(['check', '--database-url', {url!r}]))\n"
    assert loaded_after(code) <= {"sqla_jobs.cli", "alembic"}


def test_worker_is_importable_from_the_package_and_is_the_worker_class() -> None:
    code = (
        "from sqla_jobs import Worker\n"
        "import sqla_jobs.worker\n"
        "assert Worker is sqla_jobs.worker.Worker\n"
        "import sqla_jobs\n"
        "assert sqla_jobs.Worker is Worker\n"
        "assert 'Worker' in dir(sqla_jobs)\n"
        "namespace = {}\n"
        "exec('from sqla_jobs import *', namespace)\n"
        "assert namespace['Worker'] is Worker\n"
        "assert sorted(set(sqla_jobs.__all__) - set(namespace)) == []\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unknown_attribute_raises_attribute_error() -> None:
    import sqla_jobs

    with pytest.raises(AttributeError, match="no attribute 'NoSuchThing'"):
        sqla_jobs.NoSuchThing  # noqa: B018


def test_lazy_help_lines_are_the_commands_own() -> None:
    # The registry lists each command without importing it: its line must not drift from the
    # command's docstring, nor point at a module or attribute that no longer exists.
    import click

    from sqla_jobs.cli import cli

    context = click.Context(cli)
    for name, lazy in COMMANDS.items():
        command = lazy.load()
        assert command.name == name
        assert lazy.short_help == command.get_short_help_str(limit=200), name
        assert cli.get_command(context, name) is command
