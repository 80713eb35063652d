"""A click group that imports a subcommand's module only when that subcommand runs.

Each subcommand is registered by name with the ``module:attribute`` that defines it and its
one-line help, so ``sqla-jobs --help`` lists them without importing the worker, the admin API or
Alembic, and ``sqla-jobs check`` (a health probe run every few seconds) loads only `check`.
tests/test_import_weight.py pins each line of help to the command's own docstring.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import click


@dataclass(frozen=True)
class LazyCommand:
    """Where a subcommand is defined (``"package.module:attribute"``) and its line of help."""

    target: str
    short_help: str

    def load(self) -> click.Command:
        """Import the module and return the command it defines."""
        module_name, _, attribute = self.target.partition(":")
        command = getattr(importlib.import_module(module_name), attribute)
        if not isinstance(command, click.Command):
            raise TypeError(f"{self.target} is not a click command")
        return command


class LazyGroup(click.Group):
    """A `click.Group` whose subcommands are imported on first use (click's "lazy loading")."""

    def __init__(
        self, *args: Any, lazy_commands: Mapping[str, LazyCommand] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.lazy_commands = dict(lazy_commands or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy_commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        lazy = self.lazy_commands.get(cmd_name)
        if lazy is not None and cmd_name not in self.commands:
            self.add_command(lazy.load(), cmd_name)
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # click's own listing loads every command for its help; ours reads the registry.
        rows = []
        for name in self.list_commands(ctx):
            lazy = self.lazy_commands.get(name)
            if name in self.commands or lazy is None:
                command = super().get_command(ctx, name)
                if command is None or command.hidden:
                    continue
                rows.append((name, command.get_short_help_str(limit=formatter.width)))
            else:
                rows.append((name, lazy.short_help))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)
