"""The documentation runs: the README's cheap commands and every Python block of the guide.

Commands are taken from the README's and the guide's code blocks (lines that start with
`codesign`), restricted to the subcommands that finish in seconds on a CPU; optional parts
written as `[--json]` are run with the option. They run in-process through `codesign.cli.main(argv)`
(the `codesign_main` fixture), so no interpreter is started per command. Each guide page's ```python blocks
run in order in one namespace per page, from the repository root, so a page reads like a
script: a block may use what an earlier block of the same page defined. A block that trains
or sweeps a network is marked `<!-- slow -->` on the line before its fence and runs only in
the slow test, which runs every block of its page.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
GUIDE_PAGES = sorted(DOCS.glob("*.md"))

# Commands cheap enough for the default suite (a few seconds of compute each), by leading arguments;
# the other reproductions (duplex, cambricon, spatten) take minutes and are tested in tests/hwcost.
CHEAP_COMMANDS = (("--help",), ("zoo",), ("cost",), ("reproduce", "step3"))
# A guide block that trains or sweeps a network (tens of seconds on a CPU) is preceded by this line,
# which the rendered page does not show; such blocks run only in the slow test.
SLOW_MARK = "<!-- slow -->"

_FENCE = re.compile(r"^(<!-- slow -->\n)?```(\w*)[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)


def code_blocks(text: str, language: str | tuple[str, ...], *, with_slow: bool = False) -> list:
    """The bodies of the fenced code blocks of `text` whose info string is `language` (or one of them).

    With `with_slow`, (body, slow) pairs, where slow says the block is preceded by SLOW_MARK.
    """
    languages = (language,) if isinstance(language, str) else language
    blocks = [(body, bool(mark)) for mark, lang, body in _FENCE.findall(text) if lang in languages]
    return blocks if with_slow else [body for body, _ in blocks]


def cli_commands(text: str) -> list[list[str]]:
    """`codesign ...` lines of the shell blocks of `text` (fences without a language included) as argv lists.

    A trailing `# comment` is dropped; an optional part written `[--json]` is kept as `--json`;
    a line with another placeholder (`MODEL`, `a|b`, `DIR/...`) is not a runnable command and is skipped.
    """
    commands = []
    for block in code_blocks(text, ("bash", "sh", "")):
        for line in block.splitlines():
            line = line.split(" #", 1)[0].strip()
            if not line.startswith("codesign"):
                continue
            line = re.sub(r"\[(--[\w-]+)\]", r"\1", line)
            if re.search(r"[\[\]|]|\bDIR\b|[A-Z]{3,}", line):
                continue
            commands.append(shlex.split(line))
    return commands


def _cheap(argv: list[str]) -> bool:
    if argv[0] != "codesign" or not any(tuple(argv[1:1 + len(lead)]) == lead for lead in CHEAP_COMMANDS):
        return False
    # a target given as a file is written by an earlier step of its page (a calibration), not by this test
    return "--target" not in argv or not argv[argv.index("--target") + 1].endswith(".json")


def _documented_commands() -> list[list[str]]:
    seen, out = set(), []
    for page in [ROOT / "README.md", *GUIDE_PAGES]:
        for argv in cli_commands(page.read_text()):
            if _cheap(argv) and tuple(argv) not in seen:
                seen.add(tuple(argv))
                out.append(argv)
    return out


COMMANDS = _documented_commands()


def test_the_readme_commands_are_found():
    """The extraction sees the README's cheap commands (an empty list would make the next test vacuous)."""
    found = {" ".join(argv) for argv in COMMANDS}
    for expected in ("codesign --help", "codesign zoo --json", "codesign reproduce step3 --json",
                     "codesign cost step-3 --target h800 --phase decode --batch 64 --context 8192 --json"):
        assert expected in found, sorted(found)


@pytest.mark.parametrize("argv", COMMANDS, ids=[" ".join(a[1:]) for a in COMMANDS])
def test_documented_command_runs(argv, codesign_main, monkeypatch):
    monkeypatch.chdir(ROOT)
    result = codesign_main(*argv[1:])
    assert result.returncode == 0, f"{' '.join(argv)}\n{result.stdout}\n{result.stderr}"
    assert result.stdout.strip()
    if "--json" in argv:
        report = json.loads(result.stdout)
        if argv[1] == "zoo":
            assert {row["name"] for row in report} >= {"step-3", "deepseek-v3", "codesign-default"}
        if argv[1] == "cost":
            assert report["totals"]["latency_s"] > 0
        if argv[1] == "reproduce":
            assert report["rows"] and all(row["ok"] for row in report["rows"])


def _pages(slow: bool) -> list[Path]:
    """Guide pages with a fast Python block (slow=False) or with a slow one (slow=True)."""
    return [page for page in GUIDE_PAGES
            if any(is_slow == slow for _, is_slow in code_blocks(page.read_text(), "python", with_slow=True))]


def _run_page(page: Path, *, include_slow: bool) -> int:
    namespace = {"__name__": f"docs.{page.stem}"}
    ran = 0
    for index, (source, slow) in enumerate(code_blocks(page.read_text(), "python", with_slow=True)):
        if slow and not include_slow:
            continue
        exec(compile(source, f"{page.relative_to(ROOT)} (python block {index + 1})", "exec"), namespace)
        ran += 1
    return ran


def test_the_guide_has_python_on_the_pages_that_promise_it():
    with_python = {page.name for page in _pages(slow=False)}
    assert {"cost.md", "calibrate.md", "atts.md", "codesign.md", "deploy.md"} <= with_python, with_python


@pytest.mark.parametrize("page", _pages(slow=False), ids=lambda page: page.name)
def test_guide_page_python_runs(page, monkeypatch):
    """The page's fast blocks, in order, in one namespace (the slow ones are skipped)."""
    monkeypatch.chdir(ROOT)
    assert _run_page(page, include_slow=False) > 0


@pytest.mark.slow
@pytest.mark.parametrize("page", _pages(slow=True), ids=lambda page: page.name)
def test_guide_page_python_runs_with_slow_blocks(page, monkeypatch):
    """Every block of the page, in order, in one namespace."""
    monkeypatch.chdir(ROOT)
    assert _run_page(page, include_slow=True) > 0


def test_code_blocks_extraction():
    text = ("intro\n```python\nx = 1\n```\n<!-- slow -->\n```python\ny = 2\n```\n"
            "```bash\ncodesign zoo [--json]  # list\n```\n```\ncodesign cost MODEL\n```\n")
    assert code_blocks(text, "python") == ["x = 1\n", "y = 2\n"]
    assert code_blocks(text, "python", with_slow=True) == [("x = 1\n", False), ("y = 2\n", True)]
    assert cli_commands(text) == [["codesign", "zoo", "--json"]]


def test_architecture_api_table_names_exist():
    """Every name in the architecture page's API table is an attribute of the package its row names."""
    import importlib

    text = (DOCS / "architecture.md").read_text()
    table = text[text.index("## Each package's API"):].split("\n## ", 1)[0]
    package, checked, missing = None, 0, []
    for line in table.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 3 or cells[0] == "package" or cells[2].startswith("---"):
            continue  # not a row, the header or the separator
        package = cells[0].strip("`") or package
        module = importlib.import_module(package)
        for name in re.findall(r"`([\w.]+)`", cells[2]):
            obj = module
            for part in name.split("."):
                obj = getattr(obj, part, None)
            checked += 1
            if obj is None:
                missing.append(f"{package}.{name}")
    assert checked > 40 and not missing, missing
