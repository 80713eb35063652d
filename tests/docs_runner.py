"""Run the ```python blocks of one Markdown file, in one process, sharing one namespace.

Started by tests/test_docs.py, one process per Markdown file, so each file gets a fresh task
registry, a fresh loguru setup and its own event loop. It reads one JSON request per line on
stdin (``{"source": ..., "filename": ..., "line": ...}``) and answers each on the file
descriptor given as its first argument (``{"ok": bool, "stdout": str, "error": str}``).

A block that uses ``await`` at top level is run on the file's event loop, which stays open
between blocks, so an `AsyncEngine` made in one block works in the next.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import inspect
import io
import json
import os
import sys
import traceback
import types
from typing import Any


def main() -> None:
    answers = os.fdopen(int(sys.argv[1]), "w", encoding="utf-8")
    loop = asyncio.new_event_loop()
    # The blocks run as one module: `__main__`, the way `python file.py` would run them.
    namespace: dict[str, Any] = {"__name__": "__main__", "__builtins__": __builtins__}
    sys.modules["__main__"] = module = types.ModuleType("__main__")
    module.__dict__.update(namespace)
    namespace = module.__dict__
    for request_line in sys.stdin:
        request = json.loads(request_line)
        answer = run_block(request, namespace, loop)
        answers.write(json.dumps(answer) + "\n")
        answers.flush()


def run_block(
    request: dict[str, Any], namespace: dict[str, Any], loop: asyncio.AbstractEventLoop
) -> dict[str, Any]:
    """Execute one block in `namespace`; report its output and, if it failed, the traceback."""
    # Blank lines first, so tracebacks name the Markdown file's own line numbers.
    source = "\n" * (request["line"] - 1) + request["source"]
    stdout = io.StringIO()
    try:
        code = compile(source, request["filename"], "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
        with contextlib.redirect_stdout(stdout):
            if code.co_flags & inspect.CO_COROUTINE:
                loop.run_until_complete(eval(code, namespace))
            else:
                exec(code, namespace)
    except BaseException:
        return {"ok": False, "stdout": stdout.getvalue(), "error": traceback.format_exc()}
    return {"ok": True, "stdout": stdout.getvalue(), "error": ""}


if __name__ == "__main__":
    main()
