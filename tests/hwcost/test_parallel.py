"""hwcost.parallel: collective formulas by hand, gradients, pipeline bubble, mesh errors, the Megatron comparison."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import hwcost
import nets
from hwcost import parallel

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "results" / "parallel"
TINY = nets.ModelConfig(name="tiny", vocab_size=64, d_model=32, n_layers=4, max_seq_len=32,
                        attention=nets.zoo.AttentionConfig(kind="mha", n_heads=4, n_kv_heads=4, head_dim=8),
                        ffn=nets.zoo.FFNConfig(kind="dense", activation="gelu", d_ff=128), norm="layernorm")


# ---- collectives: hand-derived alpha-beta values ------------------------------------------
def test_ring_all_reduce_by_hand():
    # 4 devices, 1 MB, 1 GB/s, 1 us per step: 2*3 steps of latency + 2*3/4 of the buffer over the link
    assert float(parallel.all_reduce_s(1e6, 4, 1e9, 1e-6)) == pytest.approx(6e-6 + 1.5e-3, rel=1e-6)
    assert float(parallel.all_reduce_s(1e6, 8, 1e9, 1e-6, algorithm="tree")) == pytest.approx(6e-6 + 2e-3,
                                                                                               rel=1e-6)


@pytest.mark.parametrize("collective", [parallel.all_gather_s, parallel.reduce_scatter_s, parallel.all_to_all_s])
def test_one_pass_collectives_by_hand(collective):
    assert float(collective(8e6, 2, 4e9, 2e-6)) == pytest.approx(2e-6 + 0.5 * 8e6 / 4e9, rel=1e-6)
    assert float(collective(8e6, 1, 4e9, 2e-6)) == 0.0


def test_send_and_bus_bandwidth():
    assert float(parallel.send_recv_s(3e6, 1e9, 5e-6)) == pytest.approx(3e-3 + 5e-6, rel=1e-6)
    # without latency a ring's bus bandwidth is the link bandwidth, for any group size
    for n in (2, 4, 8):
        seconds = parallel.all_reduce_s(2.0 ** 30, n, 450e9, 0.0)
        assert float(parallel.bus_bandwidth("all_reduce", 2.0 ** 30, n, seconds)) == pytest.approx(450e9, rel=1e-5)
        seconds = parallel.all_gather_s(2.0 ** 30, n, 450e9, 0.0)
        assert float(parallel.bus_bandwidth("all_gather", 2.0 ** 30, n, seconds)) == pytest.approx(450e9, rel=1e-5)


def test_topology_link_choice():
    topo = parallel.topology("dgx-a100")
    assert float(topo.link(8, 1)[0]) == pytest.approx(300e9)    # inside the node: NVLink
    assert float(topo.link(8, 8)[0]) == pytest.approx(25e9)     # stages of 8-GPU nodes: InfiniBand
    with pytest.raises(nets.InputError, match="topology"):
        parallel.topology("dgx-z9")


# ---- the step model -------------------------------------------------------------------------
MICRO_BATCH = 2  # one micro-batch shape for every test: the layer work is counted (and compiled) once


def _train(par, topo=None, overlap=None, **kw):
    gpu = hwcost.gpu("a100")
    topo = topo or parallel.topology("dgx-a100")
    batch = MICRO_BATCH * par.data * par.fsdp * par.expert * par.microbatches
    return parallel.training_step(TINY, par, gpu, topo, global_batch=batch, seq_len=32, overlap=overlap, **kw)


def test_tensor_all_reduces_counted_as_megatron():
    # no sequence parallelism, full recompute: 6 all-reduces of the hidden state per layer and micro-batch
    par = parallel.Parallelism(tensor=4, recompute="full")
    cost = _train(par)
    hidden = MICRO_BATCH * 32 * 32 * 2.0
    expected = TINY.n_layers * 6 * parallel.all_reduce_s(hidden, 4, 300e9, 1e-6)
    assert float(cost.breakdown["tensor_s"]) == pytest.approx(float(expected), rel=1e-5)
    seqsel = _train(parallel.Parallelism(tensor=4, sequence_parallel=True, recompute="selective"))
    expected = TINY.n_layers * 10 * parallel.all_gather_s(hidden, 4, 300e9, 1e-6)  # 6 gathers + 4 scatters
    assert float(seqsel.breakdown["tensor_s"]) == pytest.approx(float(expected), rel=1e-5)


def test_gradients_in_bandwidth_and_overlap_are_finite_and_nonzero():
    par = parallel.Parallelism(data=4, tensor=4)  # 16 GPUs: tensor inside a node, data across two

    def latency(nvlink, network, tensor_overlap, data_overlap):
        topo = parallel.topology("dgx-a100", nvlink_bandwidth=nvlink, network_bandwidth=network)
        overlap = parallel.Overlap(tensor=tensor_overlap, data=data_overlap)
        return _train(par, topo, overlap).latency_s

    grads = jax.grad(latency, argnums=(0, 1, 2, 3))(jnp.float32(300e9), jnp.float32(25e9), jnp.float32(0.5),
                                                    jnp.float32(0.5))
    for g in grads:
        assert np.isfinite(float(g)) and float(g) < 0  # faster links and more overlap: shorter steps
    g_topo = jax.grad(lambda bw: parallel.all_reduce_s(1e9, 8, bw, 1e-6))(jnp.float32(300e9))
    assert float(g_topo) == pytest.approx(-2 * 7 / 8 * 1e9 / 300e9 ** 2, rel=1e-4)


def test_pipeline_bubble_limits():
    assert parallel.pipeline_bubble_fraction(1, 16) == 0.0
    assert parallel.pipeline_bubble_fraction(8, 64, 3) == pytest.approx(7 / 192)
    assert parallel.pipeline_bubble_fraction(4, 10 ** 6) < 1e-5
    with pytest.raises(nets.InputError, match="mesh.microbatches"):
        parallel.pipeline_bubble_fraction(4, 0)
    assert float(_train(parallel.Parallelism(tensor=4, recompute="full")).breakdown["bubble_s"]) == 0.0
    plain = _train(parallel.Parallelism(pipeline=2, microbatches=4))
    interleaved = _train(parallel.Parallelism(pipeline=2, microbatches=4, interleave=2))
    assert float(interleaved.breakdown["bubble_s"]) < float(plain.breakdown["bubble_s"])
    assert float(plain.breakdown["bubble_s"]) > 0


def test_one_device_inference_is_the_single_gpu_cost():
    gpu = hwcost.gpu("h100")
    scenario = hwcost.Scenario(phase="decode", batch=4, context_len=64)
    cost = parallel.inference_step(TINY, parallel.Parallelism(), gpu, parallel.topology("dgx-h100"), scenario)
    alone = eqx.filter_jit(lambda device: device.cost(hwcost.workload(TINY, scenario)).latency_s)(gpu)
    assert float(cost.latency_s) == pytest.approx(float(alone), rel=1e-6)


@pytest.mark.parametrize("text, field", [("data=2,tensr=4", "mesh"), ("tensor=0", "mesh.tensor"),
                                         ("data=2,data=2", "mesh"), ("data", "mesh"), ("pipeline=x", "mesh.pipeline")])
def test_invalid_mesh_names_the_field(text, field):
    with pytest.raises(nets.InputError) as err:
        parallel.parse_mesh(text)
    assert err.value.field == field


def test_invalid_parallel_options():
    with pytest.raises(nets.InputError, match="mesh.sequence_parallel"):
        parallel.Parallelism(sequence_parallel=True)
    with pytest.raises(nets.InputError, match="mesh.tensor"):
        _train(parallel.Parallelism(tensor=3))
    with pytest.raises(nets.InputError, match="mesh.microbatches"):
        parallel.training_step(TINY, parallel.Parallelism(data=2, microbatches=3), hwcost.gpu("a100"),
                               parallel.topology("dgx-a100"), global_batch=8, seq_len=32)


def test_cli_bad_mesh_is_one_line(codesign_main):
    # (a good --mesh runs in tests/test_docs.py: the cost guide's `codesign cost ... --mesh data=2,tensor=4`)
    bad = codesign_main("cost", "codesign-default", "--mesh", "data=2,tensr=4")
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0 and "--mesh" in bad.stderr and "tensr" in bad.stderr


def test_a100_preset_from_datasheet():
    a100 = hwcost.get_target("a100")
    assert float(a100.peak_flops_bf16) == pytest.approx(312e12) and float(a100.mem_bandwidth) == pytest.approx(2.039e12)


# ---- the Megatron comparison ------------------------------------------------------------------
def test_megatron_comparison_recomputed_from_committed_files():
    """The published times (test inputs) against the committed predictions give the reported errors."""
    predicted = json.loads((RESULTS / "megatron_predictions.json").read_text())
    published = json.loads((RESULTS / "megatron_published.json").read_text())
    reported = json.loads((RESULTS / "megatron_comparison.json").read_text())
    readme = (RESULTS / "README.md").read_text()
    ours = {(r["model"], r["mode"]): r["predicted_s"] for r in predicted["iterations"]}
    rows = {(r["model"], r["mode"]): r for r in reported["iterations"]}
    assert len(published["iterations"]["rows"]) == 4
    for row in published["iterations"]["rows"]:
        key = (row["model"], row["mode"])
        error = ours[key] / row["published_s"] - 1
        assert rows[key]["error"] == pytest.approx(error, abs=1e-12)
        assert f"| {row['model']} | {row['mode']} |" in readme and f"{error:+.2%}" in readme
    measured = {r["gpus"]: r["measured_busbw_gbs"] for r in published["allreduce_busbw"]["rows"]}
    assert measured == {2: 329.0, 4: 355.0, 8: 361.0}
    for row in reported["allreduce_busbw"]:
        assert row["error"] == pytest.approx(row["predicted_busbw_gbs"] / measured[row["gpus"]] - 1, abs=1e-12)


@pytest.mark.slow  # four full-size Megatron models: a few compiles
def test_library_still_gives_the_committed_predictions():
    spec = importlib.util.spec_from_file_location("parallel_cost", ROOT / "scripts" / "parallel_cost.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    committed = json.loads((RESULTS / "megatron_predictions.json").read_text())
    for now, then in zip(script.predict_iterations(), committed["iterations"], strict=True):
        assert (now["model"], now["mode"]) == (then["model"], then["mode"])
        assert math.isclose(now["predicted_s"], then["predicted_s"], rel_tol=1e-5)
