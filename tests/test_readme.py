"""Every code block in README.md runs as written, and so do the examples.

Blocks are fenced with their language. ``sh`` and ``python`` blocks run in order, in one fresh
directory holding ``.venv`` (a link to the environment running the tests), against a
``checkpointd serve`` of their own, started as the README's first command starts it (defaults,
prefix ``checkpoint``, embedded nats-server) but on a free port. ``text`` blocks show output and
are never run. The one difference from a reader's run is the daemon's address: in a Python
block ``nats://127.0.0.1:4222`` becomes the test daemon's, and ``sh`` blocks get it as
``CHECKPOINTD_NATS_URL``.

A ``print(...)  # text`` line in a Python block promises that the block prints ``text``.

An HTML comment on the line before a block says how else to run it:
``<!-- test_readme: skip (why) -->``: not run (it installs software, or is the test suite);
``<!-- test_readme: background (why) -->``: started, waited for until it prints its first line,
left running while the blocks after it run, expected to print one more line by then, stopped.
"""

from __future__ import annotations

import json
import queue
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from daemon.serving import DEADLINE, Daemon, clean_environ, daemons_under
from natsserver import free_port

from checkpointd import wire
from checkpointd.daemon.endpoints import ENDPOINTS

ROOT = Path(__file__).parent.parent
README = ROOT / "README.md"
PROTOCOL = ROOT / "docs" / "protocol.md"
DEFAULT_URL = "nats://127.0.0.1:4222"
# ``ts`` blocks are the TypeScript client's: its own tests (clients/typescript) run them.
LANGUAGES = {"sh", "python", "text", "ts"}
PROTOCOL_LANGUAGES = {"json", "text"}
# What users read speaks of the original Checkpoint API, never of documents they do not have.
INTERNAL_NAMES = re.compile(r"(?i:\bthe seed\b|\bseed's\b)|\bDESIGN\b|\bshared/")
_FENCE = re.compile(r"^```(\S*)\s*$")
_MARKER = re.compile(r"^<!-- test_readme: (skip|background) \((.+)\) -->$")
_SHOWN = re.compile(r"^\s*print\(.*\)  # (.+)$", re.MULTILINE)
"""A ``print(...)  # output`` line in a Python block: the block must print that line."""


@dataclass(frozen=True)
class Block:
    """One fenced code block: its language, text, first line number and how to run it."""

    language: str
    code: str
    line: int
    how: str = "run"  # "run", "skip" or "background"

    def __str__(self) -> str:
        return f"README.md:{self.line} ({self.language})"


def blocks(text: str) -> list[Block]:
    """The fenced blocks of a Markdown text, each with the marker on the line before it."""
    found: list[Block] = []
    lines = text.splitlines()
    number = 0
    while number < len(lines):
        opening = _FENCE.match(lines[number])
        if opening is None:
            number += 1
            continue
        start = number
        number += 1
        while number < len(lines) and not _FENCE.match(lines[number]):
            number += 1
        assert number < len(lines), f"README.md:{start + 1}: a block is never closed"
        marker = _MARKER.match(lines[start - 1]) if start > 0 else None
        code = "\n".join(lines[start + 1 : number]) + "\n"
        how = marker.group(1) if marker else "run"
        found.append(Block(opening.group(1), code, start + 2, how))
        number += 1
    return found


class Output:
    """The lines a background process prints, read on a thread; ``next_line`` waits for one."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self._lines: queue.Queue[str | None] = queue.Queue()
        assert process.stdout is not None
        self._stdout = stdout = process.stdout

        def read() -> None:
            for line in stdout:
                self._lines.put(line.rstrip("\n"))
            self._lines.put(None)

        self._reader = threading.Thread(target=read, daemon=True)
        self._reader.start()

    def close(self) -> None:
        """Once the process has exited: the rest is read to its end, then the pipe closed."""
        self._reader.join(DEADLINE)
        self._stdout.close()

    def next_line(self) -> str:
        line = self._lines.get(timeout=DEADLINE)
        assert line is not None, "the process ended without printing another line"
        return line


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    """``checkpointd serve`` on its defaults (embedded nats-server, prefix ``checkpoint``)."""
    with daemons_under(tmp_path / "daemons", None) as factory:
        settings = {"nats": {"subject_prefix": "checkpoint", "embedded_port": free_port()}}
        yield factory.start(settings, nats_url=None)


@pytest.fixture
def reader(tmp_path: Path) -> Path:
    """A reader's working directory: empty but for ``.venv``."""
    directory = tmp_path / "reader"
    directory.mkdir()
    (directory / ".venv").symlink_to(Path(sys.prefix))
    return directory


def run_python(path: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(path), *args],
        cwd=cwd,
        env=clean_environ(),
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=False,
    )


def assert_clean(block: object, done: subprocess.CompletedProcess[str]) -> None:
    """Exit 0, nothing on stderr, and no warning anywhere (the tour's snapshots are valid)."""
    report = f"{block} exited {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert done.returncode == 0, report
    assert done.stderr == "", report
    assert "warning" not in done.stdout.lower(), report


def test_every_block_is_marked_with_its_language() -> None:
    """Each block names a language the test knows; only runnable ones carry a marker."""
    found = blocks(README.read_text(encoding="utf-8"))

    assert found
    for block in found:
        assert block.language in LANGUAGES, f"{block}: fence it as one of {sorted(LANGUAGES)}"
        assert block.how == "run" or block.language != "text", f"{block}: text is never run"


def test_the_readme_runs_as_written(daemon: Daemon, reader: Path) -> None:
    """Every sh and Python block of the README runs without error or warning, in order."""
    background: list[tuple[Block, subprocess.Popen[str], Output]] = []
    try:
        for number, block in enumerate(blocks(README.read_text(encoding="utf-8"))):
            if block.how == "skip" or block.language in {"text", "ts"}:
                continue
            if block.language == "sh":
                done = subprocess.run(
                    ["bash", "-e", "-o", "pipefail", "-c", block.code],
                    cwd=reader,
                    env=clean_environ({"CHECKPOINTD_NATS_URL": daemon.url}),
                    capture_output=True,
                    text=True,
                    timeout=DEADLINE,
                    check=False,
                )
                assert_clean(block, done)
                continue
            script = reader / f"block{number}.py"
            script.write_text(block.code.replace(DEFAULT_URL, daemon.url), encoding="utf-8")
            if block.how == "background":
                process = subprocess.Popen(
                    [sys.executable, str(script)],
                    cwd=reader,
                    env=clean_environ(),
                    stdout=subprocess.PIPE,
                    text=True,
                )
                output = Output(process)
                background.append((block, process, output))
                output.next_line()  # ready
                continue
            done = run_python(script, cwd=reader)
            assert_clean(block, done)
            printed = done.stdout.splitlines()
            for shown in _SHOWN.findall(block.code):
                assert shown in printed, f"{block} did not print {shown!r}: {printed}"
        for block, _, output in background:
            seen = output.next_line()
            if "restores" in block.code:
                restored = r"\d+ s-1 \{'sessions': \['s-1'\], 'state': \{'progress': 90\}\}"
                assert re.fullmatch(restored, seen), f"{block}: {seen}"
    finally:
        for _, process, output in background:
            process.send_signal(signal.SIGTERM)
            process.wait(DEADLINE)
            output.close()


def test_the_examples_run(daemon: Daemon, reader: Path) -> None:
    """examples/tour.py against the daemon and examples/quickstart.py on its own both run."""
    tour = run_python(ROOT / "examples" / "tour.py", daemon.url, cwd=reader)
    quickstart = run_python(
        ROOT / "examples" / "quickstart.py", str(reader / "quickstart.db"), cwd=reader
    )

    assert_clean("examples/tour.py", tour)
    assert_clean("examples/quickstart.py", quickstart)
    assert "notification seq" in tour.stdout
    assert "verify" in quickstart.stdout


def test_the_protocol_document_covers_every_endpoint_and_header() -> None:
    """docs/protocol.md names every endpoint and header the service uses; its JSON parses."""
    text = PROTOCOL.read_text(encoding="utf-8")
    headers = [
        value
        for name, value in vars(wire).items()
        if name.isupper() and isinstance(value, str) and value[:1].isupper() and "-" in value
    ]

    for verb in [*ENDPOINTS, "upload", "download"]:
        assert f"`checkpoint.{verb}`" in text, f"docs/protocol.md does not describe {verb}"
    assert headers
    for header in headers:
        assert header in text, f"docs/protocol.md does not mention the {header} header"
    for block in blocks(text):
        assert block.language in PROTOCOL_LANGUAGES, f"docs/protocol.md:{block.line}"
        if block.language == "json":
            json.loads(block.code)


@pytest.mark.parametrize(
    "path",
    [
        README,
        PROTOCOL,
        ROOT / "CHANGELOG.md",
        ROOT / "RELIABILITY.md",
        *sorted((ROOT / "examples").glob("*.py")),
    ],
    ids=lambda path: path.name,
)
def test_user_facing_text_names_no_internal_documents(path: Path) -> None:
    """What users read (README, protocol, changelog, reliability notes, examples) names the
    original Checkpoint API, never internal documents."""
    text = path.read_text(encoding="utf-8")

    found = [
        f"{path.name}:{text.count(chr(10), 0, match.start()) + 1}: {match.group()}"
        for match in INTERNAL_NAMES.finditer(text)
    ]
    assert found == []
