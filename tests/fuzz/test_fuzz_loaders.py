"""Fuzzing every input file loader: a bad file is one line naming the file and what is allowed, never a traceback.

Loaders: ModelConfig JSON and Hugging Face config.json (`nets.load_config`), deployment files
(`codesign.load_deployment`), kernel measurement data (`hwcost.load_data`), calibrated presets
(`hwcost.load_preset`) and ATTS calibration banks (`codesign.atts.load_bank`). Each gets

- a corpus built from a valid file: truncations, seeded bit flips, every top-level field given
  a wrong type or a huge number, the whole file replaced by another JSON type, and a huge
  (sparse) file that must be refused from its size before it is read;
- hypothesis cases: one JSON field anywhere in the file (or, for banks, the arrays and
  settings) replaced by a generated value.

Every case runs under a time limit (a hang fails), and must either load or raise a
`ValueError` whose message is one line naming the file. Minimum counts per loader: the
corpus plus FUZZ_DEFAULT hypothesis cases in the default suite, FUZZ_SLOW in the slow one;
each test counts the cases it ran and checks the minimum was met.
"""

from __future__ import annotations

import contextlib
import io
import json
import random
import signal
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import codesign
import hwcost
import nets
from codesign.atts import load_bank, save_bank

FUZZ_DEFAULT = 60      # hypothesis cases per JSON loader in the default suite (plus the corpus)
FUZZ_DEFAULT_BANK = 30  # banks: each case writes and opens an npz (~0.5 s on 2 busy cores)
FUZZ_SLOW = 1000       # per loader in the slow suite
CASE_LIMIT_S = 10      # a case running longer is a hang
MIN_CORPUS = 20

TINY = nets.zoo.default_config().replace(
    name="fuzz-tiny", d_model=32, n_layers=2, max_seq_len=32,
    attention={"n_heads": 2, "head_dim": 16, "q_rank": 16},
    ffn={"d_ff": 64, "n_experts": 2, "top_k": 1, "d_expert": 16})
HF_LLAMA = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": 256, "hidden_size": 64,
            "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "max_position_embeddings": 128, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "hidden_act": "silu",
            "tie_word_embeddings": False}


# ---- the valid base file of each loader -------------------------------------------------------
def _kernel_data() -> dict:
    gemm = lambda m: {"type": "gemm", "m": m, "n": 256, "k": 256, "bits_in": 16, "bits_out": 16}  # noqa: E731
    items = [{"id": f"gemm/bf16/m{m}", "kind": "gemm", "dtype": "bf16", "describe": gemm(m),
              "timing": {"median_s": 1e-5 * m}} for m in (16, 64, 256, 1024)]
    items.append({"id": "norm/bf16/t64", "kind": "norm", "dtype": "bf16",
                  "describe": {"type": "norm", "tokens": 64, "width": 256, "bits": 16}, "timing": {"median_s": 3e-6}})
    return {"schema": hwcost.DATA_SCHEMA, "device": {"kind": "fuzz"}, "items": items,
            "ceilings": {"copy_bytes": 1e6, "copy_bytes_per_s": 1e12, "matmul_n": 512,
                         "matmul_bf16_flops_per_s": 1e14}}


def _preset(folder: Path) -> Path:
    target = hwcost.calibrated(hwcost.gpu("h100-sxm"), hwcost.Efficiency.default(), "fuzz-calibrated")
    return hwcost.save_preset(target, folder / "preset.json")


def _deployment(folder: Path) -> Path:
    """A sealed deployment record over a small fake checkpoint (the loader reads structure and digests only)."""
    step = folder / "ckpt" / "4"
    step.mkdir(parents=True)
    (step / "state").write_bytes(bytes(range(256)) * 4)
    record = {"schema_version": codesign.SCHEMA_VERSION, "kind": "codesign.deployment", "model": TINY.to_dict(),
              "design_space": {}, "hardened": {"formats": ["fp8_e4m3"]}, "target": {"name": "xrnpe", "params": {}},
              "scenario": {}, "objective": {"metric": "edap"}, "cost": {"latency_s": 1e-3},
              "validation": {"loss": 1.5}, "checkpoint": {"path": "ckpt", "step": 4}, "train": {"steps": 4},
              "provenance": {"seed": 0}}
    path = folder / "deployment.json"
    codesign.write_deployment(path, record)
    return path


def _bank(folder: Path) -> Path:
    path = folder / "bank.npz"
    scores = np.random.default_rng(0).random((4, 3, 5)).astype(np.float32)
    save_bank(path, scores, {"max_turns": 5, "models": "fuzz"})
    return path


def _write_json(folder: Path, name: str, record: Any) -> Path:
    path = folder / name
    path.write_text(json.dumps(record))
    return path


LOADERS: dict[str, tuple[Callable[[Path], Path], Callable[[Path], Any]]] = {
    "model_config": (lambda d: _write_json(d, "model.json", TINY.to_dict()), lambda p: nets.load_config(str(p))),
    "hf_config": (lambda d: _write_json(d, "config.json", HF_LLAMA), lambda p: nets.load_config(str(p))),
    "deployment": (_deployment, codesign.load_deployment),
    "kernel_data": (lambda d: _write_json(d, "kernels.json", _kernel_data()), hwcost.load_data),
    "preset": (_preset, hwcost.load_preset),
    "atts_bank": (_bank, load_bank),
}


# ---- one case: load under a time limit; accepted, or one clean line naming the file --------------
class Hang(Exception):
    pass


@contextlib.contextmanager
def time_limit(seconds: float):
    def on_alarm(signum, frame):
        raise Hang(f"case ran over {seconds} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def check_case(load: Callable[[Path], Any], path: Path) -> str:
    """'accepted' or 'rejected'; anything else (a traceback, a hang, a multi-line or anonymous error) fails."""
    with time_limit(CASE_LIMIT_S):
        try:
            load(path)
        except ValueError as err:
            message = str(err)
            assert "\n" not in message, f"{path}: multi-line error: {message!r}"
            assert path.name in message, f"{path}: error does not name the file: {message!r}"
            return "rejected"
    return "accepted"


# ---- the corpus ---------------------------------------------------------------------------------
WRONG_VALUES = (None, "x", -1, 10**30, 1e308, [], {}, True)


def _json_corpus(base: Any) -> list[bytes]:
    text = json.dumps(base).encode()
    out = [b"", b"\xff\xfe\x00garbage", b"[" * 50000 + b"]" * 50000]
    out += [json.dumps(v).encode() for v in (None, 0, "text", [1, 2], [base])]
    out += [text[:n] for n in (1, len(text) // 3, len(text) // 2, len(text) - 1)]
    rng = random.Random(0)
    for _ in range(12):
        data = bytearray(text)
        for _ in range(rng.choice((1, 1, 3))):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        out.append(bytes(data))
    if isinstance(base, dict):
        for key in sorted(base):
            for value in WRONG_VALUES[:4] + (10**30,):
                out.append(json.dumps({**base, key: value}).encode())
            out.append(json.dumps({k: v for k, v in base.items() if k != key}).encode())
    return out


def _bank_corpus(base: bytes) -> list[bytes]:
    out = [b"", b"PK\x03\x04" + b"\x00" * 30, base[: len(base) // 2], base[:-1]]
    rng = random.Random(0)
    for _ in range(16):
        data = bytearray(base)
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        out.append(bytes(data))
    for arrays in ({"scores": np.zeros((2, 2), np.float32)}, {"scores": np.array(["a", "b"])},
                   {"scores": np.zeros((2, 2, 2), np.int64)}, {"other": np.zeros(3)},
                   {"scores": np.zeros((1, 1, 1), np.float32), "settings": np.array("not json")},
                   {"scores": np.zeros((1, 1, 1), np.float32), "settings": np.array("[1, 2]")},
                   {"scores": np.zeros((1, 1, 1), np.float32), "settings": np.zeros(3)}):
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        out.append(buffer.getvalue())
    out.append(_huge_header_npz())
    return out


def _huge_header_npz() -> bytes:
    """An npz whose scores header claims 10**15 float32 numbers (with no data): refused from the header."""
    npy = io.BytesIO()
    np.lib.format.write_array_header_1_0(npy, {"descr": "<f4", "fortran_order": False,
                                               "shape": (10**5, 10**5, 10**5)})
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("scores.npy", npy.getvalue())
    return buffer.getvalue()


def corpus(name: str, base_path: Path) -> list[bytes]:
    if name == "atts_bank":
        return _bank_corpus(base_path.read_bytes())
    return _json_corpus(json.loads(base_path.read_text()))


@pytest.fixture(scope="module")
def bases(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("fuzz-bases")
    out = {}
    for name, (make, _) in LOADERS.items():
        folder = root / name
        folder.mkdir()
        out[name] = make(folder)
    return out


@pytest.mark.parametrize("name", sorted(LOADERS))
def test_valid_base_file_loads(bases, name):
    assert check_case(LOADERS[name][1], bases[name]) == "accepted"


@pytest.mark.parametrize("name", sorted(LOADERS))
def test_corpus_of_bad_files_is_one_clean_line_each(bases, name):
    load, base = LOADERS[name][1], bases[name]
    cases = corpus(name, base)
    assert len(cases) >= MIN_CORPUS
    outcomes = []
    for n, data in enumerate(cases):
        path = base.with_name(f"case-{n}{base.suffix}")
        path.write_bytes(data)
        outcomes.append(check_case(load, path))
        path.unlink()
    # the huge file: refused from its size, never read (a sparse file, no disk used)
    huge = base.with_name(f"huge{base.suffix}")
    with open(huge, "wb") as f:
        f.truncate(max(nets.MAX_JSON_BYTES, 1 << 30) + 1)
    outcomes.append(check_case(load, huge))
    huge.unlink()
    assert outcomes.count("rejected") >= len(cases) // 2, outcomes  # most corruptions are caught, not loaded


# ---- hypothesis: any field replaced by any JSON value ---------------------------------------------
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6)


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, prefix + (i,))
    return out


def _replace(value: Any, path: tuple, new: Any) -> Any:
    if not path:
        return new
    copy = dict(value) if isinstance(value, dict) else list(value)
    copy[path[0]] = _replace(value[path[0]], path[1:], new)
    return copy


def _fuzz_json(name: str, base: Path, examples: int) -> int:
    load = LOADERS[name][1]
    record = json.loads(base.read_text())
    paths = _paths(record)
    ran = []

    @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(where=st.sampled_from(paths), value=json_values, reseal=st.booleans())
    def case(where, value, reseal):
        path = base.with_name(f"hyp{base.suffix}")
        mutated = _replace(record, where, value)
        if name == "deployment" and reseal and isinstance(mutated, dict):
            with contextlib.suppress(Exception):  # re-sealed: the fuzz reaches past the digest check
                codesign.write_deployment(path, mutated)
        if not path.exists():
            path.write_text(json.dumps(mutated))
        try:
            check_case(load, path)
        finally:
            path.unlink(missing_ok=True)
        ran.append(1)

    case()
    return len(ran)


def _fuzz_bank(base: Path, examples: int) -> int:
    ran = []

    @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(shape=st.lists(st.integers(0, 4), max_size=4), dtype=st.sampled_from(["f4", "f8", "i4", "U3", "b1"]),
           settings_value=json_values, flips=st.lists(st.integers(0, 10**6), max_size=3))
    def case(shape, dtype, settings_value, flips):
        path = base.with_name("hyp.npz")
        buffer = io.BytesIO()
        np.savez(buffer, scores=np.zeros(shape, dtype), settings=np.array(json.dumps(settings_value)))
        data = bytearray(buffer.getvalue())
        for f in flips:
            data[f % len(data)] ^= 1 << (f % 8)
        path.write_bytes(bytes(data))
        try:
            check_case(load_bank, path)
        finally:
            path.unlink(missing_ok=True)
        ran.append(1)

    case()
    return len(ran)


def _fuzz(name: str, base: Path, examples: int) -> int:
    return _fuzz_bank(base, examples) if name == "atts_bank" else _fuzz_json(name, base, examples)


@pytest.mark.parametrize("name", sorted(LOADERS))
def test_hypothesis_cases(bases, name):
    examples = FUZZ_DEFAULT_BANK if name == "atts_bank" else FUZZ_DEFAULT
    assert _fuzz(name, bases[name], examples) >= examples


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(LOADERS))
def test_hypothesis_cases_slow(bases, name):
    ran = _fuzz(name, bases[name], FUZZ_SLOW)
    print(f"fuzzed {name}: {ran} hypothesis cases")  # the count a slow run reports (pytest -s)
    assert ran >= FUZZ_SLOW
