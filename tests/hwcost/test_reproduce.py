"""`reproduce` registry and the `codesign cost` / `codesign reproduce` commands."""

import json
import subprocess
import sys

import pytest

import hwcost
import nets


def _codesign(*args: str) -> subprocess.CompletedProcess:
    """The console command in a new interpreter: one call per command family (the other calls go through the
    in-process `codesign_main`, which sees the same exit status and streams)."""
    return subprocess.run([sys.executable, "-m", "codesign", *args], capture_output=True, text=True, timeout=300)


QUICK = {"step3": None, "spatten": None, "cambricon": None, "duplex": ("hardware", "intensity")}  # duplex gains: slow
_ROWS: dict[str, list] = {}


def rows_of(paper: str) -> list:
    """The rows of a paper (the quick parts of duplex), computed once per test session."""
    if paper not in _ROWS:
        _ROWS[paper] = hwcost.reproduce(paper, QUICK[paper])
    return _ROWS[paper]


def test_step3_rows_all_within_tolerance():
    rows = rows_of("step3")
    assert len(rows) >= 90
    bad = [r.to_dict() for r in rows if not r.ok]
    assert not bad, bad
    names = " ".join(r.name for r in rows)
    for needle in ("KV bytes", "attention @32K on 910B", "AFD total", "minimum MoE sparsity", "stage budget",
                   "roofline <= measured", "unit cost per byte"):
        assert needle in names


def test_step3_identity_rows_are_the_papers_own_arithmetic():
    """Unit costs (price / peak), Table 7's sparsity bound (its closed form on its own H, L, chip and NIC figures),
    the AFD budget example and the measured TGS are not reproductions."""
    rows = {r.name: r for r in rows_of("step3")}
    identity = {name for name, r in rows.items() if r.kind == "identity"}
    assert {n for n in rows if "unit cost" in n or "minimum MoE sparsity" in n} <= identity
    assert any("TGS at measured TPOT" in n for n in identity) and any("stage budget" in n for n in identity)
    assert all(rows[n].why for n in identity)
    # everything the library models (workload, cost tables, searches, roofline bounds) stays counted
    for needle in ("KV bytes", "FLOPs/token", "AFD total", "FFN on", "attention @", "training cost", "roofline"):
        assert all(rows[n].kind == "counted" for n in rows if needle in n), needle
    assert sum(r.kind == "counted" for r in rows.values()) >= 80


def test_row_checks_can_fail():
    assert not hwcost.Row("x", 1.0, 1.02, "rel", 0.01).ok
    assert not hwcost.Row("x", 0.050, 0.0515, "abs", 0.001).ok
    assert not hwcost.Row("x", 10.0, 10.5, "at_most", 0.0).ok
    assert not hwcost.Row("x", 10.0, 9.5, "at_least", 0.0).ok
    assert not hwcost.Row("x", 10.0, float("nan"), "rel", 0.5).ok
    with pytest.raises(ValueError, match="^check='approx'"):
        hwcost.Row("x", 1.0, 1.0, "approx")
    with pytest.raises(ValueError, match="^paper='nope': must be one of .*step3"):
        hwcost.reproduce("nope")


def test_a_paper_in_parts_reproduces_as_all_its_parts_or_the_named_ones():
    first, second = [hwcost.Row("a", 1.0, 1.0)], [hwcost.Row("b", 2.0, 2.0), hwcost.Row("c", 3.0, 3.0)]
    hwcost.register("fake-parts", part="first")(lambda: first)
    hwcost.register("fake-parts", part="second")(lambda: second)
    try:
        assert hwcost.reproduce("fake-parts") == first + second
        assert hwcost.reproduce("fake-parts", parts=("second", "first")) == second + first
        with pytest.raises(ValueError, match=r"^parts=\('third',\): must be a non-empty tuple of fake-parts's parts "
                                             r"\(first, second\)"):
            hwcost.reproduce("fake-parts", parts=("third",))
        with pytest.raises(ValueError, match=r"^parts='first': must be a non-empty tuple"):
            hwcost.reproduce("fake-parts", parts="first")
        with pytest.raises(ValueError, match=r"^parts=\('all',\): .*none: step3 is reproduced as a whole"):
            hwcost.reproduce("step3", parts=("all",))
    finally:
        del hwcost.PAPERS["fake-parts"]


def test_only_counted_rows_fail_and_uncounted_rows_say_why():
    assert hwcost.Row("x", 1.0, 2.0).failed
    assert not hwcost.Row("x", 1.0, 2.0, kind="identity", why="a sum of the paper's parts").failed
    assert not hwcost.Row("x", 1.0, 2.0, kind="reported", why="inconsistent table").failed
    with pytest.raises(ValueError, match="^kind='approx': must be one of counted, identity, reported"):
        hwcost.Row("x", 1.0, 1.0, kind="approx")
    with pytest.raises(ValueError, match="^why='': a identity row must say why"):
        hwcost.Row("x", 1.0, 1.0, kind="identity")


def loose_tolerances(rows) -> list[str]:
    """Rows whose tolerance passes almost anything: relative above the simulated-figure rule (25%),
    an absolute step as large as the paper's number, or a bound loosened by 100% or more."""
    return [r.name for r in rows if (r.check == "rel" and r.tolerance > hwcost.Row.SIMULATED)
            or (r.check == "abs" and r.tolerance >= abs(r.paper) > 0)
            or (r.check in ("at_most", "at_least") and r.tolerance >= 1.0)]


def test_loose_tolerances_are_found():
    assert loose_tolerances([hwcost.Row("gain", 2.07, 3.6, "rel", 1.0), hwcost.Row("share", 0.007, 0.0, "abs", 0.01),
                             hwcost.Row("ok", 2.0, 2.1, "rel", 0.25)]) == ["gain", "share"]


def test_tolerance_rules_are_recognised():
    assert [hwcost.Row("x", 2.0, 2.0, "rel", tol).rule for tol in (0.01, 0.25, 0.05)] == ["exact", "simulated", ""]
    assert [hwcost.Row("x", 0.048, 0.048, "abs", tol).rule for tol in (0.001, 0.0001, 0.002, 0.1)] == [
        "printed digit", "printed digit", "", ""]
    assert hwcost.Row("x", 7e10, 7e10, "abs", 1e10).rule == "printed digit"
    assert hwcost.Row("x", 0.0816, 0.0816, "abs", 0.001).rule == ""  # 0.0816 is printed to 4 decimals
    assert [hwcost.Row("x", 1.0, 1.0, check, tol).rule for check in ("at_most", "at_least")
            for tol in (0.0, 1e-6, 0.1)] == ["bound", "bound", "", "bound", "bound", ""]


@pytest.mark.parametrize("paper", sorted(QUICK))
def test_every_row_follows_a_tolerance_rule_and_can_fail(paper):
    rows = rows_of(paper)
    assert not [r.name for r in rows if not r.rule]
    loose = loose_tolerances(rows)
    assert not loose, loose


def test_reproduce_cli_json_and_exit_status():
    proc = _codesign("reproduce", "step3", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    rows = report["rows"]
    assert {"name", "paper", "ours", "rel_error", "ok", "kind", "why"} <= set(rows[0])
    assert all(r["ok"] for r in rows) and report["failed"] == []
    assert all(r["rule"] for r in rows)
    kinds = [r["kind"] for r in rows]
    assert report["counts"] == {"counted_ok": kinds.count("counted"), "counted": kinds.count("counted"),
                                "identity": kinds.count("identity"), "reported": 0}


def _register(name, rows):
    hwcost.register(name)(lambda: rows)


@pytest.mark.parametrize("rows, code, line", [
    # an identity or reported row out of tolerance does not fail the reproduction
    ([hwcost.Row("a number we reproduce", 1.0, 1.001),
      hwcost.Row("a sum of the paper's parts", 1.0, 2.0, kind="identity", why="sum of parts"),
      hwcost.Row("an inconsistent cell", 1.0, 2.0, kind="reported", why="inconsistent table")],
     0, "1/1 counted rows within tolerance, 1 identity rows, 1 reported-not-gated rows"),
    # a counted row out of tolerance does
    ([hwcost.Row("a number we miss", 1.0, 2.0), hwcost.Row("a number we reproduce", 1.0, 1.0),
      hwcost.Row("a restated input", 1.0, 1.0, kind="identity", why="restated")],
     1, "1/2 counted rows within tolerance, 1 identity rows, 0 reported-not-gated rows"),
    # nothing counted: nothing to fail, however far the other rows are
    ([hwcost.Row("a restated input", 1.0, 5.0, kind="identity", why="restated"),
      hwcost.Row("no published number", 1.0, 5.0, kind="reported", why="the paper prints none")],
     0, "0/0 counted rows within tolerance, 1 identity rows, 1 reported-not-gated rows"),
])
def test_reproduce_cli_exits_1_only_on_a_counted_row(codesign_main, rows, code, line):
    _register("fake-paper", rows)
    try:
        result = codesign_main("reproduce", "fake-paper")
        assert result.returncode == code, result.stdout
        assert f"fake-paper: {line}" in result.stdout
        assert ("BAD counted" in result.stdout) == (code == 1)
        as_json = codesign_main("reproduce", "fake-paper", "--json")
        assert as_json.returncode == code
        report = json.loads(as_json.stdout)
        assert [r["kind"] for r in report["rows"]] == [r.kind for r in rows]
        assert report["counts"]["counted"] == sum(r.kind == "counted" for r in rows)
        assert report["failed"] == [r.name for r in rows if r.failed]
    finally:
        del hwcost.PAPERS["fake-paper"]


def test_cost_cli_json_totals_and_config_path(tmp_path, codesign_main):
    path = tmp_path / "cfg.json"
    path.write_text(nets.zoo.get("codesign-100m").to_json())
    proc = _codesign("cost", str(path), "--target", "h200", "--batch", "8", "--context", "512", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["model"] == "codesign-100m" and report["target"] == "h200"
    total = sum(r["latency_s"] for r in report["ops"])
    assert total == pytest.approx(report["totals"]["latency_s"], rel=1e-5)
    assert sum(r["flops"] for r in report["ops"]) == pytest.approx(report["totals"]["flops"], rel=1e-5)
    table = codesign_main("cost", "step-3", "--target", "h20", "--batch", "16", "--context", "8192")
    assert table.returncode == 0 and "moe_routed" in table.stdout and "attn_score" in table.stdout


@pytest.mark.parametrize("args, message", [
    (["cost", "no-such-model"], "model='no-such-model': not in the zoo"),
    (["cost", "step-3", "--target", "tpu"], "target='tpu': must be one of"),
    (["cost", "step-3", "--phase", "serve"], "phase='serve': must be one of prefill, decode, train"),
    (["cost", "step-3", "--batch", "0"], "batch=0: must be a positive integer"),
    (["cost", "missing.json"], "model='missing.json': no such JSON file"),
])
def test_cost_cli_bad_input_is_one_line(codesign_main, args, message):
    proc = codesign_main(*args)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and message in proc.stderr
