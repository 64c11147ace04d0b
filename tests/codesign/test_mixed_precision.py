"""scripts/mixed_precision.py: the joint format search against XR-NPE energy, and the uniform arms' cost."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

import hwcost
from codesign import design_cost, JointConfig, JointTrainer, TrainConfig
from nets.formats import get_format

from conftest import TINY

_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "mixed_precision.py"
_spec = importlib.util.spec_from_file_location("mixed_precision_script", _SCRIPT)
mp = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = mp  # dataclasses look their module up there
_spec.loader.exec_module(mp)

GEMM_OPS = ("q_proj", "kv_proj", "o_proj", "ffn_dense", "moe_routed", "moe_shared", "router")


def _expected_bits(trainer: JointTrainer) -> tuple[float, float]:
    """Mean expected (weight, activation) bits per layer under the trainer's format probabilities."""
    knobs, space = trainer.params["knobs"], trainer.space
    act_bits = jnp.asarray([get_format(n).bits for n in space.act_formats])
    return (float(jnp.mean(space.format_probs(knobs) @ space.format_bits)),
            float(jnp.mean(space.act_probs(knobs) @ act_bits)))


def test_joint_search_moves_toward_fewer_bits_as_lambda_rises(tmp_path):
    one_layer = tmp_path / "one_layer.json"  # one dense layer: the smallest graph with every GEMM kind quantised
    one_layer.write_text(TINY.replace(name="tiny-1", n_layers=1, ffn={"kind": "dense", "n_experts": 0, "top_k": 0, "n_shared_experts": 0, "d_expert": 0}).to_json())
    tc = TrainConfig(model=str(one_layer), steps=5, batch=2, seq_len=16, warmup_steps=1, eval_batches=1)
    space = mp.joint_space()
    start = float(np.mean([get_format(n).bits for n in space.formats]))  # uniform logits: 28/3 bits
    bits = {}
    for lam in (0.0, 1.0):  # two compilations: the test's whole cost
        jc = JointConfig(lam=lam, metric="energy", target="xrnpe", knob_lr=0.1, scenario_batch=1,
                         scenario_context=64)
        trainer = JointTrainer(tc, jc, space)
        params, opt_state = trainer.params, trainer.opt_state
        for step in range(tc.steps):
            params, opt_state, _ = trainer.step_fn(params, opt_state, trainer.train_data, jnp.asarray(step))
        trainer.params = params
        bits[lam] = _expected_bits(trainer)
        assert trainer.trace_count == 1  # one compilation for all steps
    (w0, a0), (w1, a1) = bits[0.0], bits[1.0]
    assert w1 < w0 - 1.0 and a1 < a0 - 1.0, bits
    assert w1 < start - 1.0 and a1 < start - 1.0, bits


@pytest.mark.parametrize("label, element", mp.UNIFORM_FORMATS)
def test_uniform_design_energy_equals_xrnpe_cost_formats(label, element):
    """The energy the script reports for a uniform arm prices every layer GEMM exactly as the XR-NPE's
    own per-format model does (`XRNPE.cost_formats`: lanes and energy per MAC at the format's bits,
    weight bytes at bits/8); the rest of the step (attention, norms, LM head, activation bytes) is
    what the full workload adds on top."""
    scenario = hwcost.Scenario(phase="decode", batch=1, context_len=64)  # batch 1: routed weights read = top_k
    target = hwcost.xrnpe()
    space, hardened = mp.uniform_design(TINY, element)
    assert set(hardened["formats"]) == {f"{element}@channel"} and set(hardened["act_formats"]) == {f"{element}@tensor"}
    knobs = space.hard_workload_knobs(TINY, hardened, scenario)
    work = hwcost.workload(TINY, scenario, knobs)
    gemm = work.select(GEMM_OPS)
    gemm = hwcost.Workload(op_flops=gemm.op_flops, op_bytes={"weights": gemm.op_bytes["weights"]},
                           op_bits=gemm.op_bits, op_resident=gemm.op_resident, footprint=gemm.footprint,
                           tokens=gemm.tokens, n_layers=gemm.n_layers, phase=gemm.phase)
    flops_L = sum(gemm.op_flops[op][:TINY.n_layers] for op in GEMM_OPS if op in gemm.op_flops)
    one_hot = jnp.ones((TINY.n_layers, 1))
    latency, energy = target.cost_formats(flops_L, one_hot, [hardened["formats"][0]], tokens=scenario.tokens)
    np.testing.assert_allclose(float(target.cost(gemm).energy_j), float(energy), rtol=1e-6)
    full = design_cost(TINY, space, hardened, target, scenario, "energy")
    assert full["metric_value"] == full["energy_j"] > float(energy)


def test_uniform_energy_falls_with_the_format_bits():
    scenario = hwcost.Scenario(phase="decode", batch=1, context_len=64)
    energy = {}
    for label, element in mp.UNIFORM_FORMATS:
        space, hardened = mp.uniform_design(TINY, element)
        energy[label] = design_cost(TINY, space, hardened, hwcost.xrnpe(), scenario, "energy")["energy_j"]
    assert energy["Posit(16,1)"] > energy["Posit(8,0)"] > energy["Posit(4,1)"] == energy["FP4"]


@pytest.mark.parametrize("kw, field", [({"lams": (-1.0,)}, "lam"), ({"lams": ()}, "lams"),
                                       ({"joint_formats": ("posit(4,1)@channel", "posit(8,0)")}, "format"),
                                       ({"joint_formats": ("posit(8,0)",)}, "joint_formats"),
                                       ({"steps": 0}, "steps"), ({"model": "no-such-model"}, "model")])
def test_bad_config_names_the_field(kw, field):
    with pytest.raises(ValueError, match=f"^{field}="):
        mp.MixedConfig(**kw)
