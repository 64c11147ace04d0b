"""The documentation runs: the README's cheap commands and every Python block of the guide.

Commands are taken from the README's and the guide's code blocks (lines that start with
`codesign`), restricted to the subcommands that finish in seconds on a CPU; optional parts
written as `[--json]` are run with the option. They run in-process through `codesign.cli.main(argv)`
(the `codesign_main` fixture), so no interpreter is started per command. Each guide page's ```python blocks
run in order in one namespace per page, from the repository root, so a page reads like a
script: a block may use what an earlier block of the same page defined.
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
# Pages whose Python trains or sweeps a network: tens of seconds on a CPU, so marked slow.
SLOW_PAGES = {"codesign.md", "deploy.md"}

_FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)


def code_blocks(text: str, language: str | tuple[str, ...]) -> list[str]:
    """The bodies of the fenced code blocks of `text` whose info string is `language` (or one of them)."""
    languages = (language,) if isinstance(language, str) else language
    return [body for lang, body in _FENCE.findall(text) if lang in languages]


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


def _page_params():
    params = []
    for page in GUIDE_PAGES:
        if not code_blocks(page.read_text(), "python"):
            continue
        marks = [pytest.mark.slow] if page.name in SLOW_PAGES else []
        params.append(pytest.param(page, marks=marks, id=page.name))
    return params


def test_the_guide_has_python_on_the_pages_that_promise_it():
    with_python = {p.values[0].name for p in _page_params()}
    assert {"cost.md", "calibrate.md", "atts.md", "codesign.md"} <= with_python, with_python


@pytest.mark.parametrize("page", _page_params())
def test_guide_page_python_runs(page, monkeypatch):
    monkeypatch.chdir(ROOT)
    namespace = {"__name__": f"docs.{page.stem}"}
    for index, source in enumerate(code_blocks(page.read_text(), "python")):
        exec(compile(source, f"{page.relative_to(ROOT)} (python block {index + 1})", "exec"), namespace)


def test_code_blocks_extraction():
    text = "intro\n```python\nx = 1\n```\n```bash\ncodesign zoo [--json]  # list\n```\n```\ncodesign cost MODEL\n```\n"
    assert code_blocks(text, "python") == ["x = 1\n"]
    assert cli_commands(text) == [["codesign", "zoo", "--json"]]
