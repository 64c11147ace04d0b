"""The shared CLI conventions: list options through one parser that names the field, outputs under runs/,
and bad input as one line with exit status 2 before any work starts."""

import sys

import pytest

from codesign import fresh_run_dir
from codesign.cli import main, parse_formats, parse_list


def test_parse_list_converts_and_names_the_field_on_error():
    assert parse_list("0, 0.01,0.1", "lams", float) == (0.0, 0.01, 0.1)
    assert parse_list("", "budgets", float) == ()
    assert parse_list("a,,b ", "hardware") == ("a", "b")
    with pytest.raises(ValueError, match=r"^ms='4,x': must be comma-separated integers"):
        parse_list("4,x", "ms", int)
    with pytest.raises(ValueError, match=r"^parts='speed,fast': entry 'fast' is not one of accuracy, speed"):
        parse_list("speed,fast", "parts", choices=("accuracy", "speed"))


def test_parse_formats_keeps_the_posit_comma_and_names_the_field_on_error():
    assert parse_formats("bf16, posit(8,0),mxfp4", "formats") == ("bf16", "posit(8,0)", "mxfp4")
    assert parse_formats("", "act_formats") == ()
    with pytest.raises(ValueError, match=r"^kv_formats='bf16,int3': entry 'int3' is not one of fp32"):
        parse_formats("bf16,int3", "kv_formats")


def test_fresh_run_dir_is_under_runs_and_never_reused(tmp_path):
    first = fresh_run_dir("sweep", root=tmp_path)
    assert first.parent == tmp_path and first.name.startswith("sweep-")
    first.mkdir()
    second = fresh_run_dir("sweep", root=tmp_path)
    assert second != first and second.name.startswith(first.name)
    assert fresh_run_dir("run").parts[0] == "runs"


@pytest.mark.parametrize("args, field", [
    (["sweep", "--lams", "0,big"], "lams="),
    (["sweep", "--budgets", "1,x"], "budgets="),
    (["sweep", "--formats", "bf16,posit(8,9)"], "formats="),
    (["sweep", "--budgets", "1e-5"], "method="),  # budgets need --method independent
    (["run", "--method", "annealing"], "method="),
    (["atts", "bench", "--ms", "4,eight"], "ms="),
    (["atts", "bench", "--parts", "speed,fast"], "parts="),
    (["train", "--remat", "some"], "remat="),
    (["train", "--attention", "flash"], "attention="),
    (["train", "--corpus", "web"], "corpus="),
    (["sweep", "--corpus", "web"], "corpus="),
])
def test_bad_list_option_is_one_line_and_exit_2(monkeypatch, capsys, tmp_path, args, field):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["codesign", *args])
    with pytest.raises(SystemExit) as exc:
        main()
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"codesign: error: {field}") and err.strip().count("\n") == 0, err
    assert not (tmp_path / "runs").exists()  # refused before anything was written
