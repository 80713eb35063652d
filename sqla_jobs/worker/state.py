"""The application state jobs see as `ctx.state`, built from ``--state module:factory``.

The factory is called once when the worker starts. It may return the state itself, or be a
context manager (sync or async) around it, such as a function decorated with
`contextlib.asynccontextmanager` that opens the application's clients and closes them when the
worker stops::

    @contextlib.asynccontextmanager
    async def worker_state() -> AsyncIterator[Clients]:
        async with httpx.AsyncClient() as http:
            yield Clients(mailer=Mailer(http))
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
from collections.abc import AsyncIterator, Callable
from typing import Any

from sqla_jobs.errors import ConfigurationError


def load_factory(reference: str) -> Callable[[], Any]:
    """Import ``module:attribute`` and return it; `ConfigurationError` if it is not callable."""
    module_name, _, attribute = reference.partition(":")
    if not module_name or not attribute:
        raise ConfigurationError(
            f"--state takes module:factory (e.g. myapp.jobs:make_state), not {reference!r}"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"cannot import {module_name!r} for --state: {exc}") from exc
    factory = module
    for part in attribute.split("."):
        try:
            factory = getattr(factory, part)
        except AttributeError:
            raise ConfigurationError(f"{module_name!r} has no {attribute!r} (--state)") from None
    if not callable(factory):
        raise ConfigurationError(f"--state {reference}: {attribute!r} is not callable")
    return factory


@contextlib.asynccontextmanager
async def entered(factory: Callable[[], Any] | None) -> AsyncIterator[Any]:
    """Call `factory` and yield the state: entered and exited if it is a context manager."""
    if factory is None:
        yield None
        return
    made = factory()
    if inspect.isawaitable(made):
        made = await made
    if isinstance(made, contextlib.AbstractAsyncContextManager):
        async with made as state:
            yield state
    elif isinstance(made, contextlib.AbstractContextManager):
        with made as state:
            yield state
    else:
        yield made
