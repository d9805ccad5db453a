"""The docs stay short, self-contained and runnable: README size, its first screen (the two commands, how
long they take, the trainer snippet), the CI command, docs that are bounded references rather than dated
logs, relative links that resolve, and no reference to a design file outside the repository."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOC_PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
QUICK_START = [
    "bash scripts/bootstrap.sh && .venv/bin/ldifs-hf demo --output_dir runs/demo",
    "bash scripts/bootstrap.sh && .venv/bin/python -m pytest -q",
]
# [text](target) and ![alt](target); the target ends at whitespace or ")".
MARKDOWN_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)[^)]*\)")


def _code_lines(markdown: str) -> list[str]:
    """The command lines of a page's code, in order: indented blocks and fenced blocks alike."""
    lines, fenced = [], False
    for line in markdown.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if fenced or line.startswith("    "):
            if line.strip():
                lines.append(line.strip())
    return lines


def _tracked_text_files() -> list[Path]:
    try:
        listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: the tracked files are unknown")
    files = []
    for name in listed.decode().split("\0"):
        path = ROOT / name
        if name and path.is_file():
            data = path.read_bytes()
            if b"\0" not in data[:8192]:
                files.append(path)
    return files


def test_readme_is_at_most_12_kib():
    assert len(README.read_bytes()) <= 12 * 1024


def test_readmes_first_two_commands_are_the_quick_start():
    assert _code_lines(README.read_text(encoding="utf-8"))[:2] == QUICK_START


def test_readmes_first_screen_has_the_commands_their_durations_and_the_trainer_snippet():
    first_screen = "\n".join(README.read_text(encoding="utf-8").splitlines()[:60])
    assert _code_lines(first_screen)[:2] == QUICK_START
    timed = first_screen.split(QUICK_START[1], 1)[1]  # the durations follow the two commands
    assert "<!-- durations: remeasure -->" in timed and re.search(r"\d+ min", timed)
    assert any(line.startswith("trainer = LDIFSTrainer(") for line in _code_lines(first_screen))


def test_docs_are_references_of_bounded_size_without_dated_logs():
    sizes = {p.name: len(p.read_bytes()) for p in (ROOT / "docs").glob("*.md")}
    assert sum(sizes.values()) <= 70 * 1024, sizes
    assert sizes["RELIABILITY.md"] <= 15 * 1024 and sizes["PERFORMANCE.md"] <= 10 * 1024, sizes
    for name in ("RELIABILITY.md", "PERFORMANCE.md", "DEMO.md"):
        dates = re.findall(r"\b20\d\d-\d\d-\d\d\b", (ROOT / "docs" / name).read_text(encoding="utf-8"))
        assert not dates, f"docs/{name} is a reference, its history is in git: {dates}"


def test_ci_runs_the_readmes_test_command():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert QUICK_START[1] in [line.strip() for line in ci.splitlines()]


@pytest.mark.parametrize("page", DOC_PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page):
    broken = []
    for target in MARKDOWN_LINK.findall(page.read_text(encoding="utf-8")):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # a URL (https:, mailto:) or an anchor on the same page
        path = target.split("#", 1)[0]
        if not (page.parent / path).exists():
            broken.append(target)
    assert not broken, f"{page.relative_to(ROOT)} links to missing files: {broken}"


def test_no_file_refers_to_a_design_file_outside_the_repository():
    name = "DESIGN" + ".md"  # spelt apart so that this file does not cite it either
    citing = [str(p.relative_to(ROOT)) for p in _tracked_text_files()
              if name in p.read_text(encoding="utf-8", errors="replace")]
    assert not citing, f"these files cite a {name} that is not in the repository; cite docs/PROTOCOL.md: {citing}"


def test_docs_cite_no_issue_numbers():
    pattern = re.compile(r"\bissues? #?\d+|(?<![\w&/(])#\d+\b", re.IGNORECASE)
    found = {str(p.relative_to(ROOT)): pattern.findall(p.read_text(encoding="utf-8")) for p in DOC_PAGES}
    assert not {page: hits for page, hits in found.items() if hits}


def test_every_test_that_reliability_md_cites_exists():
    """A test is cited as `tests/file.py::test_name[case]`, or by its name alone, `test_name[case]`, when
    exactly one test file defines it."""
    reliability = (ROOT / "docs" / "RELIABILITY.md").read_text(encoding="utf-8")
    cited = re.findall(r"`(tests/\w+\.py)::(\w+)(?:\[([^\]]*)\])?`", reliability)
    sources = {f"tests/{p.name}": p.read_text(encoding="utf-8") for p in (ROOT / "tests").glob("test_*.py")}
    for name, case in re.findall(r"`(test_\w+)(?:\[([^\]]*)\])?`", reliability):
        defining = [path for path, source in sources.items() if re.search(rf"^\s*def {name}\(", source, re.MULTILINE)]
        cited.append((defining[0] if len(defining) == 1 else f"(defined in {len(defining)} test files)", name, case))
    assert cited
    missing = []
    for path, name, case in cited:
        source = sources.get(path, "")
        if not re.search(rf"^\s*def {name}\(", source, re.MULTILINE) or (case and case not in source):
            missing.append(f"{path}::{name}" + (f"[{case}]" if case else ""))
    assert not missing, f"docs/RELIABILITY.md cites tests that do not exist: {missing}"
