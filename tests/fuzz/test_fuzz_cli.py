"""Fuzzing the command line: any invalid option value ends with exit 2 and one line on stderr, writing nothing.

Hypothesis draws a command, one of its options and an invalid value for it (integers out of
range (for the analytic `cost`, any positive size is valid: there only non-positive ones) or not numbers, numbers that are not positive or finite, names that are not among the
choices, lists with a bad entry, unknown options); the rest of the command line is valid
and tiny, with --out in a fresh folder. Every case runs in-process (`codesign_main`) under a
time limit. Minimum counts: CLI_DEFAULT cases in the default suite, CLI_SLOW in the slow one.
"""

from __future__ import annotations

import json
import signal
import string
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

CLI_DEFAULT = 60
CLI_SLOW = 1500
CASE_LIMIT_S = 20

letters = st.text(alphabet=string.ascii_letters + "_-.", min_size=1, max_size=10).filter(
    lambda s: not s.startswith("-"))
bad_int = st.one_of(st.integers(max_value=0), st.integers(min_value=2**31, max_value=2**80),
                    letters, st.just("1.5"), st.just(""))
bad_count = st.one_of(st.integers(max_value=0), letters, st.just("1.5"), st.just(""))  # where any size is valid
bad_pos_float = st.one_of(st.floats(max_value=0.0, allow_nan=False), st.sampled_from(["nan", "inf", "-inf"]),
                          letters)
bad_prob = st.one_of(st.floats(min_value=1.0001, max_value=1e30), st.floats(max_value=-1e-6), st.just("nan"))
not_a_name = st.builds(lambda s: "zz" + s, letters)  # no target, preset or parameter name starts with zz
bad_list = st.builds(lambda a, b: f"{a},{b}", st.floats(0, 1), letters)


def _choice(valid):
    return letters.filter(lambda s: s.lower() not in valid)


# (command prefix, option, strategy of invalid values)
OPTIONS = [
    *[(("train",), o, bad_int) for o in ("--steps", "--batch", "--seq-len", "--eval-every", "--ckpt-every")],
    (("train",), "--lr", bad_pos_float),
    (("train",), "--dtype", _choice({"auto", "float32", "bfloat16"})),
    (("train",), "--on-nonfinite", _choice({"stop", "skip"})),
    (("train",), "--model", st.sampled_from(["/nonexistent/model.json", "no-such-zoo-model", "x/y"])),
    (("sweep",), "--lams", bad_list),
    (("sweep",), "--budgets", bad_list),
    (("sweep",), "--metric", _choice({"latency", "energy", "dollars", "edp", "edap"})),
    (("sweep",), "--target", not_a_name),
    (("sweep",), "--hardware", not_a_name),
    *[(("sweep",), o, bad_int) for o in ("--steps", "--batch", "--seq-len")],
    (("calibrate", "DATA"), "--steps", bad_int),
    (("calibrate", "DATA"), "--target", not_a_name),
    (("atts", "calibrate", "--ckpt", "/nonexistent/pair"), "--turn-end-prob", bad_prob),
    *[(("atts", "calibrate", "--ckpt", "/nonexistent/pair"), o, bad_int)
      for o in ("--n", "--m", "--max-turns", "--max-chunk", "--buf-len")],
    (("cost", "codesign-default"), "--target", not_a_name),
    (("cost", "codesign-default"), "--phase", _choice({"prefill", "decode", "train"})),
    *[(("cost", "codesign-default"), o, bad_count) for o in ("--batch", "--context", "--gen-len")],
    *[(("cost", "codesign-default"), o, bad_pos_float) for o in ("--weight-bits", "--kv-bits", "--act-bits")],
    (("verify",), "--no-such-option", st.just("1")),
    (("train",), "--no-such-option", letters),
]
@st.composite
def bad_command(draw):
    prefix, option, values = draw(st.sampled_from(OPTIONS))
    value = draw(values)
    return prefix, option, str(value)


@pytest.fixture(scope="module")
def kernel_data(tmp_path_factory):
    gemm = lambda m: {"type": "gemm", "m": m, "n": 64, "k": 64, "bits_in": 16, "bits_out": 16}  # noqa: E731
    items = [{"id": f"g{m}", "kind": "gemm", "describe": gemm(m), "timing": {"median_s": 1e-5}} for m in (8, 16, 32)]
    path = tmp_path_factory.mktemp("cli-fuzz") / "kernels.json"
    path.write_text(json.dumps({"schema": "codesign.kernels/1", "items": items}))
    return str(path)


def _fuzz_cli(codesign_main, tmp_path, kernel_data, examples: int) -> int:
    ran = []

    def on_alarm(signum, frame):
        raise TimeoutError(f"CLI case ran over {CASE_LIMIT_S} s")

    @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(case=bad_command())
    def run(case):
        prefix, option, value = case
        prefix = tuple(kernel_data if p == "DATA" else p for p in prefix)
        out = tmp_path / uuid.uuid4().hex
        out_args = () if prefix[0] in ("cost", "verify") else ("--out", str(out))
        argv = (*prefix, *(("/nonexistent/deployment.json",) if prefix == ("verify",) else ()), option, value,
                *out_args)
        previous = signal.signal(signal.SIGALRM, on_alarm)
        signal.alarm(CASE_LIMIT_S)
        try:
            result = codesign_main(*argv)
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2, (argv, result)
        assert len(lines) == 1 and lines[0].startswith("codesign: error:"), (argv, result.stderr)
        assert not out.exists() or not any(p for p in out.rglob("*") if p.is_file()), (argv, list(out.rglob("*")))
        ran.append(1)

    run()
    return len(ran)


def test_invalid_cli_options_exit_2_with_one_line(codesign_main, tmp_path, kernel_data):
    assert _fuzz_cli(codesign_main, tmp_path, kernel_data, CLI_DEFAULT) >= CLI_DEFAULT


@pytest.mark.slow
def test_invalid_cli_options_exit_2_with_one_line_slow(codesign_main, tmp_path, kernel_data):
    ran = _fuzz_cli(codesign_main, tmp_path, kernel_data, CLI_SLOW)
    print(f"fuzzed CLI options: {ran} cases")  # the count a slow run reports (pytest -s)
    assert ran >= CLI_SLOW
