"""The project's files speak of the product, not of how it was made: no line names a numbered work session or
issue (the history is in git, and "session" is the product's own word for a session folder)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PLACES = ("README.md", "docs", "src", "tests", "benchmarks", "tools", "examples")
MAX_BYTES = 1 << 20
# Built from pieces, so that this file's own source does not match it.
HISTORY = re.compile(r"(?i)\bsession" + r"s? \d|\bissue" + r"s? \d")


def history_lines(root: Path, paths: list[str]) -> list[str]:
    """``file:line: text`` for each line of the text files at ``paths`` (relative to ``root``) that matches
    HISTORY; binary files, files that are not UTF-8 and files over MAX_BYTES are skipped."""
    found = []
    for rel in paths:
        path = root / rel
        if not path.is_file() or path.stat().st_size > MAX_BYTES:
            continue
        data = path.read_bytes()
        if b"\0" in data:
            continue
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            if HISTORY.search(line):
                found.append(f"{rel}:{number}: {line.strip()[:120]}")
    return found


def tracked_files() -> list[str]:
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", "--", *PLACES], capture_output=True,
                             check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("git is not available here")
    return [p for p in out.decode("utf-8", "replace").split("\0") if p]


def test_no_numbered_sessions_or_issues_in_the_project_files():
    found = history_lines(ROOT, tracked_files())
    assert not found, "development history in the project's files:\n" + "\n".join(found)


def test_the_check_finds_a_planted_line(tmp_path):
    (tmp_path / "notes.md").write_text("A clean line.\nMeasured in " + "Session" + " 12 on this CPU.\n",
                                       encoding="utf-8")
    (tmp_path / "clean.py").write_text("# a session folder holds the looks\n", encoding="utf-8")
    (tmp_path / "picture.bin").write_bytes(b"\0issue" + b" 7\0")
    assert history_lines(tmp_path, ["notes.md", "clean.py", "picture.bin"]) == [
        "notes.md:2: Measured in " + "Session" + " 12 on this CPU."]
