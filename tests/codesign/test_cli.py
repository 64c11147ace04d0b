"""The command line: the real console script lists the subcommands; zoo --json prints computed counts; bad
input is one line and exit 2 (the last two through `main(argv)` in-process)."""

import json
import subprocess
import sys

import nets


def test_console_script_help_lists_subcommands():
    proc = subprocess.run([sys.executable, "-m", "codesign", "--help"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    for name in ("run", "train", "zoo"):
        assert name in proc.stdout


def test_zoo_json_has_counts_computed_from_configs(codesign_main):
    proc = codesign_main("zoo", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = {r["name"]: r for r in json.loads(proc.stdout)}
    assert set(rows) == set(nets.zoo.names())
    for name, row in rows.items():
        counts = nets.count_params(nets.zoo.get(name))
        assert (row["params_total"], row["params_active"]) == (counts.total, counts.active)
    assert abs(rows["deepseek-v3"]["params_total"] / 671e9 - 1) < 0.02


def test_bad_model_name_is_one_line_error(codesign_main):
    proc = codesign_main("train", "--model", "no-such-model", "--steps", "1", "--quiet")
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert "model='no-such-model': not in the zoo" in proc.stderr
