"""How the commands print: aligned tables, ages, JSON, durations read from the command line."""

from __future__ import annotations

import dataclasses
import enum
import json
import re
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import click

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class Duration(click.ParamType[timedelta, Any]):
    """A duration on the command line: ``90s``, ``15m``, ``12h``, ``7d``, ``2w`` (or seconds)."""

    name = "duration"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> timedelta:
        if isinstance(value, timedelta):
            return value
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", str(value))
        if match is None:
            self.fail(f"{value!r} is not a duration such as 90s, 15m, 12h, 7d or 2w", param, ctx)
        number, unit = match.groups()
        return timedelta(seconds=float(number) * _UNITS[unit or "s"])


DURATION = Duration()


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Return `rows` under `headers` in left-aligned columns, one line each."""
    cells = [[_cell(value) for value in row] for row in rows]
    widths = [max(len(h), *(len(row[i]) for row in cells)) for i, h in enumerate(headers)]
    lines = [headers, *cells]
    return "\n".join(
        "  ".join(value.ljust(width) for value, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def format_age(seconds: float | None) -> str:
    """Return an age for people: ``45s``, ``3m 20s``, ``2h 5m``, ``3d 4h``; ``-`` for None."""
    if seconds is None:
        return "-"
    whole = int(seconds)
    if whole < 60:
        return f"{seconds:.1f}s" if seconds < 10 else f"{whole}s"
    for unit, size, smaller, smaller_size in (
        ("d", 86400, "h", 3600),
        ("h", 3600, "m", 60),
        ("m", 60, "s", 1),
    ):
        if whole >= size:
            return f"{whole // size}{unit} {(whole % size) // smaller_size}{smaller}"
    return f"{whole}s"


def format_instant(instant: datetime | None) -> str:
    """Return a UTC instant to the second, ``-`` for None."""
    return "-" if instant is None else instant.strftime("%Y-%m-%d %H:%M:%S")


def to_json(value: Any) -> str:
    """Return `value` (records, lists of them) as indented JSON."""
    return json.dumps(_plain(value), indent=2, ensure_ascii=False)


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            field.name: _plain(getattr(value, field.name)) for field in dataclasses.fields(value)
        }
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, datetime):
        return format_instant(value)
    return str(value).replace("\n", " ")
