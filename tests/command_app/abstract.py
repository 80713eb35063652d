"""A module whose only Task forgot its run()."""

from __future__ import annotations

from sqla_jobs import Task


class Forgetful(Task, name="tests.command_app.forgetful"):
    to: str
