"""Every fenced code block of docs/*.md is run or checked; README.md's blocks are checked.

The convention, for whoever writes a page of the guide, is stated in docs/README.md ("About
the code in this guide"). In short, by the info string after the opening fence:

- ``python``: executed, in order, in one Python process per Markdown file (blocks share its
  namespace and its event loop; top-level ``await`` works);
- ``bash`` / ``sh``: run by ``bash -euo pipefail``, with the venv's ``bin`` first on PATH;
  ``stop-when=TEXT`` starts a long-running command, sends SIGTERM once TEXT appears in its output,
  and expects exit status 0;
- ``text output``: what the block before it printed; each line must match a line of that output,
  in order (``...`` matches anything);
- ``file=PATH`` (any language): the block is written to PATH in the file's working directory
  (``python file=...`` is also compiled), so later blocks can import or run it;
- ``python no-run``, ``bash no-run``: compiled (``bash -n``) but not run, for code that needs
  what the test cannot have (Celery, RQ, another database); their sqla_jobs commands' flags are
  checked as below;
- ``ini``, ``dockerfile``, ``toml``: parsed, and every ``sqla-jobs`` / ``python -m sqla_jobs``
  command in them must use only flags that the command's ``--help`` lists.

Any other info string fails. The blocks of a file run in its own directory, against a database of
its own (``$SQLA_JOBS_DATABASE_URL``): a migrated PostgreSQL database cloned from the test
template, or an empty one if the file holds ``<!-- docs-test: empty-database -->``.
"""

from __future__ import annotations

import configparser
import json
import os
import re
import select
import shlex
import signal
import subprocess
import sys
import time
import tomllib
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
RUNNER = Path(__file__).with_name("docs_runner.py")
BIN = Path(sys.executable).parent
EMPTY_DATABASE = "<!-- docs-test: empty-database -->"
BLOCK_TIMEOUT = 60.0
# Any indentation: a block in a nested list item is a block too, never skipped unseen.
FENCE = re.compile(r"^(?P<indent> *)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
KNOWN = {"python", "bash", "sh", "text", "ini", "dockerfile", "toml"}
COMMAND = re.compile(r"(sqla-jobs|python3? -m sqla_jobs(?:\.worker)?)((?: +[a-z][a-z-]*)*)")


@dataclass(frozen=True)
class Block:
    """One fenced code block: where it is, its info string, its text."""

    path: Path
    line: int
    """The line of its first line of code (after the opening fence), counting from 1."""
    language: str
    attributes: dict[str, str]
    source: str

    @property
    def id(self) -> str:
        """``docs/page.md:12``: the file and the line of the opening fence."""
        name = self.path.relative_to(ROOT) if self.path.is_relative_to(ROOT) else self.path
        return f"{name}:{self.line - 1}"


def parse_blocks(path: Path) -> list[Block]:
    """Return the fenced code blocks of Markdown file `path`, in order."""
    blocks: list[Block] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        index += 1
        if opening is None:
            continue
        fence, indent = opening["fence"], len(opening["indent"])
        words = shlex.split(opening["info"].strip())
        start, body = index, []
        while index < len(lines) and not (
            lines[index].strip().startswith(fence) and not lines[index].strip().strip(fence[0])
        ):
            body.append(_dedent(lines[index], indent))
            index += 1
        index += 1
        language = words[0] if words else ""
        attributes = dict(w.partition("=")[::2] for w in words[1:])
        blocks.append(Block(path, start + 1, language, attributes, "\n".join(body) + "\n"))
    return blocks


def _dedent(line: str, indent: int) -> str:
    stripped = len(line) - len(line.lstrip(" "))
    return line[min(indent, stripped) :]


def _doc_files() -> list[Path]:
    return sorted(DOCS.glob("*.md"))


DOC_BLOCKS = [block for path in _doc_files() for block in parse_blocks(path)]
README_BLOCKS = [b for b in parse_blocks(ROOT / "README.md") if b.language in {"python", "sh"}]


@dataclass
class DocFile:
    """The working directory, database and Python process that one Markdown file's blocks share."""

    path: Path
    directory: Path
    env: dict[str, str]
    drop_database: Callable[[], None]
    results: dict[int, tuple[bool, str, str]] = field(default_factory=dict)
    """Line of each block run so far → (passed, output, error)."""
    process: subprocess.Popen[str] | None = None
    answers: Any = None

    def result(self, block: Block) -> tuple[bool, str, str]:
        """Run every block of this file up to `block` (once each); return `block`'s result."""
        for earlier in parse_blocks(self.path):
            if earlier.line > block.line:
                break
            if earlier.line not in self.results:
                self.results[earlier.line] = self._run(earlier)
        return self.results[block.line]

    def previous_output(self, block: Block) -> str:
        """Return the output of the executed block just before `block`."""
        self.result(block)
        earlier = [line for line in self.results if line < block.line]
        ran = [b for b in parse_blocks(self.path) if b.line in earlier and _executes(b)]
        if not ran:
            raise AssertionError("a `text output` block must follow a block that runs")
        return self.results[ran[-1].line][1]

    def _run(self, block: Block) -> tuple[bool, str, str]:
        if "file" in block.attributes:
            target = self.directory / block.attributes["file"]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(block.source, encoding="utf-8")
            if block.language == "python":
                compile(block.source, str(target), "exec")
            return True, "", ""
        if block.language == "python" and "no-run" not in block.attributes:
            return self._run_python(block)
        if block.language in {"bash", "sh"}:
            return self._run_shell(block)
        return True, "", ""

    def _run_python(self, block: Block) -> tuple[bool, str, str]:
        if self.process is None:
            reading, writing = os.pipe()
            self.process = subprocess.Popen(
                [sys.executable, str(RUNNER), str(writing)],
                stdin=subprocess.PIPE,
                stdout=open(self.directory / "python-output.log", "w"),  # noqa: SIM115
                stderr=subprocess.STDOUT,
                cwd=self.directory,
                env=self.env,
                text=True,
                pass_fds=[writing],
            )
            os.close(writing)
            self.answers = os.fdopen(reading, encoding="utf-8")
        assert self.process.stdin is not None
        request = {"source": block.source, "filename": block.id.split(":")[0], "line": block.line}
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        ready, _, _ = select.select([self.answers], [], [], BLOCK_TIMEOUT)
        if not ready:
            self.close()
            return False, "", f"the block did not finish within {BLOCK_TIMEOUT} s"
        line = self.answers.readline()
        if not line:
            return False, "", "the Python process of this file died: " + self._python_log()
        answer = json.loads(line)
        return answer["ok"], answer["stdout"], answer["error"]

    def _python_log(self) -> str:
        return (self.directory / "python-output.log").read_text(encoding="utf-8")[-4000:]

    def _run_shell(self, block: Block) -> tuple[bool, str, str]:
        stop_when = block.attributes.get("stop-when")
        process = subprocess.Popen(
            ["bash", "-euo", "pipefail", "-c", block.source],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=self.directory,
            env=self.env,
            text=True,
            start_new_session=True,
        )
        assert process.stdout is not None
        output, deadline = "", time.monotonic() + BLOCK_TIMEOUT
        signalled = False
        os.set_blocking(process.stdout.fileno(), False)
        while True:
            ready, _, _ = select.select([process.stdout], [], [], 0.1)
            chunk = process.stdout.read() if ready else ""
            output += chunk or ""
            if ready and not chunk and process.poll() is not None:
                break
            if stop_when and not signalled and stop_when in output:
                os.killpg(process.pid, signal.SIGTERM)
                signalled = True
            if time.monotonic() > deadline:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                return False, output, f"the block did not finish within {BLOCK_TIMEOUT} s"
        code = process.wait()
        if stop_when and not signalled:
            return False, output, f"the command ended before printing {stop_when!r}"
        if code != 0:
            return False, output, f"exit status {code}"
        return True, output, ""

    def close(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None
        if self.answers is not None:
            self.answers.close()
            self.answers = None


def _executes(block: Block) -> bool:
    if "file" in block.attributes or "no-run" in block.attributes:
        return False
    return (block.language == "python" and "no-run" not in block.attributes) or (
        block.language in {"bash", "sh"}
    )


@pytest.fixture(scope="session")
def doc_files() -> Iterator[dict[Path, DocFile]]:
    """One `DocFile` per Markdown file, made when its first block runs; dropped at the end."""
    files: dict[Path, DocFile] = {}
    yield files
    for doc in files.values():
        doc.close()
        doc.drop_database()


@pytest.fixture
def doc_file(
    request: pytest.FixtureRequest,
    doc_files: dict[Path, DocFile],
    tmp_path_factory: pytest.TempPathFactory,
    block: Block,
) -> DocFile:
    """The `DocFile` of the block's Markdown file (its database is made on first use)."""
    if block.path not in doc_files:
        server = request.getfixturevalue("pg_server")
        empty = EMPTY_DATABASE in block.path.read_text(encoding="utf-8")
        template = None if empty else request.getfixturevalue("pg_template")
        name = f"sqla_jobs_docs_{uuid.uuid4().hex[:12]}"
        server.create(name, template=template)
        url = server.database_url(name).render_as_string(hide_password=False)
        directory = tmp_path_factory.mktemp(block.path.stem)
        # The blocks see the settings they show, not the SQLA_JOBS_* of whoever runs the tests.
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("SQLA_JOBS_")}
        env = {
            **inherited,
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "SQLA_JOBS_DATABASE_URL": url,
            # Modules the blocks write (``file=myapp/tasks.py``) import as ``myapp.tasks``.
            "PYTHONPATH": str(directory),
        }
        doc_files[block.path] = DocFile(
            block.path, directory, env, drop_database=lambda: server.drop(name)
        )
    return doc_files[block.path]


@pytest.fixture
def block(request: pytest.FixtureRequest) -> Block:
    result: Block = request.param
    return result


@pytest.mark.parametrize("block", DOC_BLOCKS, ids=[b.id for b in DOC_BLOCKS], indirect=True)
def test_doc_block(block: Block, request: pytest.FixtureRequest) -> None:
    """Run or check one block of the guide, as its info string says."""
    check_info_string(block)
    if not _executes(block) and block.language != "text":
        check_static(block)  # a file a later block uses is checked as it is written
        if "file" not in block.attributes:
            return
    doc: DocFile = request.getfixturevalue("doc_file")
    if block.language == "text":
        assert_output_matches(block.source, doc.previous_output(block))
        return
    passed, output, error = doc.result(block)
    if not passed:
        pytest.fail(f"{block.id} failed:\n{error}\n--- output ---\n{output}", pytrace=False)


@pytest.mark.parametrize("block", README_BLOCKS, ids=[b.id for b in README_BLOCKS])
def test_readme_block_is_valid(block: Block) -> None:
    """README's Python parses, and its commands use flags that exist."""
    if block.language == "python":
        _compile(block)
    else:
        check_commands(block)


def check_info_string(block: Block) -> None:
    """Fail on an info string this test does not know: no block is skipped silently."""
    if block.language not in KNOWN:
        pytest.fail(
            f"{block.id}: unknown info string {block.language!r}: use one docs/README.md describes",
            pytrace=False,
        )
    if block.language == "text" and block.attributes != {"output": ""}:
        pytest.fail(f"{block.id}: a text block must be `text output` (the output before it)")


def check_static(block: Block) -> None:
    """Check a block that is not executed: it parses, and its commands' flags exist."""
    if block.language == "python":
        _compile(block)
    elif block.language in {"bash", "sh"}:
        syntax = subprocess.run(["bash", "-n", "-c", block.source], capture_output=True, text=True)
        assert syntax.returncode == 0, syntax.stderr
    elif block.language == "toml":
        tomllib.loads(block.source)
    elif block.language == "ini":
        parser = configparser.ConfigParser(strict=False, interpolation=None)
        parser.optionxform = str  # type: ignore[assignment,method-assign]  # keep key case
        parser.read_string(block.source)
    check_commands(block)


def _compile(block: Block) -> None:
    import ast

    source = "\n" * (block.line - 1) + block.source
    compile(source, str(block.path), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)


def check_commands(block: Block) -> None:
    """Fail if a sqla_jobs command in `block` uses a flag its ``--help`` does not list."""
    # Continued lines joined; a Dockerfile's exec form (["sqla-jobs", "worker", ...]) as words.
    text = re.sub(r'"\s*,\s*"', " ", block.source.replace("\\\n", " "))
    for line in text.splitlines():
        for match in COMMAND.finditer(line):
            program, words = match[1], match[2].split()
            rest = line[match.end() :]
            flags = re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", rest.split("#")[0])
            help_text = command_help(program, tuple(words))
            unknown = [f for f in flags if f not in help_text]
            assert not unknown, f"`{program} {' '.join(words)}` has no {unknown} (see --help)"


_HELP: dict[tuple[str, tuple[str, ...]], str] = {}


def command_help(program: str, words: tuple[str, ...]) -> str:
    """Return the ``--help`` text of a sqla_jobs command (cached)."""
    key = (program, words)
    if key not in _HELP:
        if program == "sqla-jobs":
            argv = [str(BIN / "sqla-jobs")]
        else:
            argv = [sys.executable, "-m", program.split()[-1]]
        completed = subprocess.run(
            [*argv, *words, "--help"], capture_output=True, text=True, timeout=30, check=False
        )
        assert completed.returncode == 0, f"{program} {' '.join(words)} --help failed"
        _HELP[key] = completed.stdout
    return _HELP[key]


def assert_output_matches(expected: str, output: str) -> None:
    """Check that each line of `expected` matches a line of `output`, in order."""
    lines = output.splitlines()
    position = 0
    for wanted in expected.strip("\n").splitlines():
        pattern = re.compile(".*?".join(re.escape(part) for part in wanted.strip().split("...")))
        while position < len(lines) and not pattern.fullmatch(lines[position].strip()):
            position += 1
        assert position < len(lines), f"no line matches {wanted!r} in:\n{output}"
        position += 1


def test_blocks_are_read_with_their_info_strings_and_lines(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        '# Title\n\n```python\nx = 1\n```\n\n- item\n\n  ```bash stop-when="worker started"\n'
        "  sqla-jobs worker\n  ```\n\n````text output\n```\n````\n",
        encoding="utf-8",
    )
    blocks = parse_blocks(page)
    assert [(b.line, b.language, b.attributes, b.source) for b in blocks] == [
        (4, "python", {}, "x = 1\n"),
        (10, "bash", {"stop-when": "worker started"}, "sqla-jobs worker\n"),
        (14, "text", {"output": ""}, "```\n"),
    ]


@pytest.mark.parametrize("info", ["pycon", "text", "text expected", ""])
def test_an_unknown_info_string_fails(tmp_path: Path, info: str) -> None:
    page = tmp_path / "page.md"
    page.write_text(f"```{info}\nx\n```\n", encoding="utf-8")
    with pytest.raises(pytest.fail.Exception):
        check_info_string(parse_blocks(page)[0])


def test_expected_output_must_appear_in_order() -> None:
    output = "2026 | INFO | worker started | {}\nsent\n2026 | INFO | worker stopped | {}\n"
    assert_output_matches("...worker started...\nsent\n", output)
    with pytest.raises(AssertionError, match="no line matches"):
        assert_output_matches("sent\n...worker started...\n", output)
    with pytest.raises(AssertionError, match="no line matches"):
        assert_output_matches("sent twice\n", output)


def test_a_command_with_a_flag_that_does_not_exist_fails(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "```ini\n[Service]\nExecStart=/srv/.venv/bin/sqla-jobs worker --import a --threads 4\n"
        '```\n```dockerfile\nCMD ["python", "-m", "sqla_jobs.worker", "--import", "a", '
        '"--queues", "b"]\n```\n',
        encoding="utf-8",
    )
    unknown, known = parse_blocks(page)
    with pytest.raises(AssertionError, match="--threads"):
        check_static(unknown)
    check_static(known)


def test_the_blocks_of_one_file_are_one_xdist_work_unit() -> None:
    from tests.conftest import xdist_scope

    blocks = [b for b in DOC_BLOCKS if b.path.name == "cli.md"]
    assert len(blocks) > 1
    ids = [f"tests/test_docs.py::test_doc_block[{b.id}]" for b in blocks]
    assert {xdist_scope(nodeid) for nodeid in ids} == {"docs/cli.md"}
    other = "tests/test_docs.py::test_an_unknown_info_string_fails[text]"
    assert xdist_scope(other) == other
