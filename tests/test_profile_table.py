"""scripts/bench/profile_table.py: kernels and XLA ops of a jax.profiler trace, from their own lines."""

from __future__ import annotations

import gzip
import importlib.util
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

_PATH = Path(__file__).resolve().parents[1] / "scripts" / "bench" / "profile_table.py"
_spec = importlib.util.spec_from_file_location("profile_table_script", _PATH)
profile_table = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(profile_table)


def _meta(pid, tid, kind, name):
    return {"ph": "M", "pid": pid, **({} if tid is None else {"tid": tid}), "name": kind, "args": {"name": name}}


def test_gpu_trace_counts_stream_kernels_once_and_ops_from_their_line(tmp_path):
    """A GPU-shaped trace: kernels on two streams, the derived XLA Ops/Modules lines not added to them,
    host events ignored; per-step times divide by the steps."""
    events = [_meta(1, None, "process_name", "/device:GPU:0"), _meta(2, None, "process_name", "/host:CPU"),
              _meta(1, 10, "thread_name", "Stream #14(Compute)"), _meta(1, 11, "thread_name", "Stream #7(MemcpyD2D)"),
              _meta(1, 20, "thread_name", "XLA Ops"), _meta(1, 21, "thread_name", "XLA Modules"),
              _meta(2, 30, "thread_name", "python")]
    kernels = [("nvjet_tst_128x256_gemm", 10, 400.0, {"hlo_op": "dot.3"}),
               ("cudnn_generated_fort_native_sdpa_sm90", 10, 300.0, {"hlo_op": "custom-call.1"}),
               ("loop_add_fusion", 10, 50.0, {"hlo_op": "fusion.7"}),
               ("nvjet_tst_128x256_gemm", 10, 200.0, {"hlo_op": "dot.4"}),
               ("MemcpyD2D", 11, 50.0, {})]
    t = 0.0
    for name, tid, dur, args in kernels:
        events.append({"ph": "X", "pid": 1, "tid": tid, "ts": t, "dur": dur, "name": name, "args": args})
        t += dur
    events += [{"ph": "X", "pid": 1, "tid": 20, "ts": 0.0, "dur": 600.0, "name": "dot.3"},
               {"ph": "X", "pid": 1, "tid": 21, "ts": 0.0, "dur": 1000.0, "name": "jit__step"},
               {"ph": "X", "pid": 2, "tid": 30, "ts": 0.0, "dur": 5000.0, "name": "PjitFunction(_step)"}]
    path = tmp_path / "plugins" / "profile" / "run" / "host.trace.json.gz"
    path.parent.mkdir(parents=True)
    with gzip.open(path, "wt") as f:
        json.dump({"traceEvents": events}, f)
    table = profile_table.breakdown(profile_table.newest_trace(tmp_path), steps=2)
    assert table["source"] == "device streams"
    assert table["device_busy_us_per_step"] == pytest.approx(1000.0 / 2)
    assert table["top"][0]["kernel"] == "nvjet_tst_128x256_gemm"
    assert table["top"][0]["us_per_step"] == pytest.approx(300.0) and table["top"][0]["calls_per_step"] == 1.0
    parts = {p["part"]: p["us_per_step"] for p in table["parts"]}
    assert parts["matmul (GEMM)"] == pytest.approx(300.0)
    assert parts["attention (cuDNN / fused)"] == pytest.approx(150.0)
    assert parts["copies / casts / transposes"] == pytest.approx(25.0)
    assert table["top_xla_ops"] == [{"op": "dot.3", "us_per_step": 300.0}]
    assert "nvjet_tst_128x256_gemm" in profile_table.format_table(table)


def test_cpu_trace_of_a_jitted_function_names_its_ops(tmp_path):
    f = jax.jit(lambda x: jnp.tanh(x @ x).sum())
    x = jnp.ones((128, 128))
    f(x).block_until_ready()
    jax.profiler.start_trace(str(tmp_path))
    for _ in range(2):
        f(x).block_until_ready()
    jax.profiler.stop_trace()
    table = profile_table.breakdown(profile_table.newest_trace(tmp_path), steps=2)
    assert table["source"] == "host XLA threads (CPU trace)"
    assert table["events"] > 0 and table["device_busy_us_per_step"] > 0
    assert not any(r["kernel"].startswith("ThunkExecutor") for r in table["top"])
