"""Every target through the one protocol: `hwcost.get_target(name).cost(hwcost.workload(cfg, scenario))`.

Fast by default: every target name is costed on the small default model; every kind of
target (the GPU presets, a calibrated preset file, the AFD deployments, each Duplex mode,
the Cambricon flash configurations, SpAtten, XR-NPE) is differentiated there (one jitted
gradient per kind, w.r.t. the target's float parameters and the knobs) and costed on an MLA
MoE model and an encoder. Every zoo model on every kind, with gradients, is the slow test.
"""

import functools
import json
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import codesign
import hwcost
import nets

# decode, batch 48 = AFD's 16 attention GPUs x 3 micro-batches (every target takes it)
SCENARIO = hwcost.Scenario(phase="decode", batch=48, context_len=128)
SMALL = "codesign-default"  # MoE and dense layers, GQA
CALIBRATED = "calibrated"  # stands for a calibrated preset file written in the test
KINDS = {
    "gpu": hwcost.PRESETS,
    "calibrated": (CALIBRATED,),
    "afd": ("afd",) + tuple(f"afd-{g}" for g in hwcost.PRESETS),
    "duplex": ("duplex",),
    "duplex-dispatch": ("duplex-dispatch",),
    "duplex-gpu": ("duplex-gpu",),
    "cambricon": ("cambricon", "cambricon-s", "cambricon-m", "cambricon-l"),
    "spatten": ("spatten",),
    "xrnpe": ("xrnpe",),
}
NAMES = [name for names in KINDS.values() for name in names]
MORE_MODELS = ("deepseek-v3", "bert-base")  # MLA with routed experts; an encoder with biases and LayerNorm
# the gradient checks need numbers, not fast code: XLA's cheapest compile (about a third less time)
CHEAP_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


@pytest.fixture(scope="module")
def preset_path(tmp_path_factory):
    """A calibrated preset file (default efficiency curves on the H200) for `get_target(path)`."""
    target = hwcost.calibrated(hwcost.gpu("h200"), hwcost.Efficiency.default(), name="h200-calibrated")
    return str(hwcost.save_preset(target, tmp_path_factory.mktemp("preset") / "h200-calibrated.json"))


def _target(name: str, preset_path: str) -> hwcost.Target:
    return hwcost.get_target(preset_path if name == CALIBRATED else name)


@functools.lru_cache(maxsize=None)
def _cost(name: str, model: str, preset_path: str) -> hwcost.Cost:
    return _target(name, preset_path).cost(hwcost.workload(nets.zoo.get(model), SCENARIO))


def _check_fields(target: hwcost.Target, cost: hwcost.Cost) -> None:
    """Modelled scalars finite and positive, the others NaN; latency always modelled."""
    assert cost.modelled == target.modelled and "latency_s" in cost.modelled and cost.target == target.name
    for field in hwcost.Cost.SCALARS:
        value = float(getattr(cost, field))
        if field in cost.modelled:
            assert math.isfinite(value) and value > 0, (target.name, field, value)
        else:
            assert math.isnan(value), (target.name, field, value)


def test_kinds_cover_every_target_name():
    assert set(NAMES) - {CALIBRATED} == set(hwcost.TARGETS) == set(hwcost.target_names())


@pytest.mark.parametrize("name", NAMES)
def test_every_target_costs_the_small_model(name, preset_path):
    _check_fields(_target(name, preset_path), _cost(name, SMALL, preset_path))


@pytest.mark.parametrize("model", MORE_MODELS)
@pytest.mark.parametrize("kind", list(KINDS))
def test_every_kind_costs_mla_and_encoder_models(kind, model, preset_path):
    name = KINDS[kind][0]
    _check_fields(_target(name, preset_path), _cost(name, model, preset_path))


def _check_gradients(name: str, model: str, preset_path: str) -> None:
    """Finite gradients of log latency + log energy (where modelled) w.r.t. the target's floats
    and the knobs, non-zero for some hardware parameter and some knob (the cost moves with
    both). Dollars, memory and area are products or sums of these and constants."""
    cfg = nets.zoo.get(model)
    target = _target(name, preset_path)
    knobs = hwcost.Knobs.default(cfg.n_layers, SCENARIO)

    def objective(target, knobs):
        cost = target.cost(hwcost.workload(cfg, SCENARIO, knobs))
        return sum(jnp.log(cost.value(f)) for f in ("latency_s", "energy_j") if f in cost.modelled)

    params, static = eqx.partition((target, knobs), eqx.is_inexact_array)
    grad = jax.jit(jax.value_and_grad(lambda p: objective(*eqx.combine(p, static))))
    value, (g_target, g_knobs) = grad.lower(params).compile(CHEAP_COMPILE)(params)
    assert np.isfinite(float(value))
    hardware = [np.asarray(g) for g in jax.tree.leaves(g_target)]
    design = [np.asarray(g) for g in jax.tree.leaves(g_knobs)]
    assert hardware and all(np.all(np.isfinite(g)) for g in hardware + design), (name, model)
    assert any(np.any(g != 0) for g in hardware) and any(np.any(g != 0) for g in design), (name, model)


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_kind_is_differentiable(kind, preset_path):
    _check_gradients(KINDS[kind][0], SMALL, preset_path)


@pytest.mark.slow
@pytest.mark.parametrize("model", nets.zoo.names())
@pytest.mark.parametrize("kind", list(KINDS))
def test_every_kind_on_every_zoo_model(kind, model, preset_path):
    name = KINDS[kind][-1]
    _check_fields(_target(name, preset_path), _cost(name, model, preset_path))
    _check_gradients(name, model, preset_path)


def test_not_modelled_fields_raise_as_metrics():
    work = hwcost.workload(nets.zoo.get("codesign-default"), SCENARIO)
    cost = hwcost.get_target("cambricon").cost(work)
    assert cost.modelled == {"latency_s", "memory_bytes"} and math.isnan(float(cost.energy_j))
    with pytest.raises(ValueError, match=r"^metric='energy_j', which target 'cambricon-llm-S' does not model "
                                         r"\(it models latency_s, memory_bytes\)"):
        cost.value("energy_j")
    with pytest.raises(ValueError, match=r"^metric='edp' needs energy_j, which target 'cambricon-llm-S'"):
        codesign.cost_metric(cost, "edp")
    with pytest.raises(ValueError, match=r"^metric='dollars', which target 'xrnpe' does not model"):
        codesign.cost_metric(hwcost.get_target("xrnpe").cost(work), "dollars")
    with pytest.raises(ValueError, match=r"^metric='dollars', which target 'spatten' does not model"):
        codesign.JointConfig(target="spatten", metric="dollars")
    with pytest.raises(ValueError, match=r"^metric='energy' needs energy_j, which target 'cambricon-llm-S'"):
        codesign.JointConfig(target="cambricon", metric="energy")
    assert float(codesign.cost_metric(cost, "latency")) == float(cost.latency_s) > 0
    with pytest.raises(ValueError, match=r"^breakdown\['op_dollars'\]: target 'cambricon-llm-S' has no per-operation"):
        cost.of_ops(("q_proj",), "op_dollars")


def test_unsupported_phases_and_unknown_names_raise():
    cfg = nets.zoo.get("codesign-default")
    prefill = hwcost.workload(cfg, SCENARIO.replace(phase="prefill", batch=1))
    train = hwcost.workload(cfg, SCENARIO.replace(phase="train", batch=1))
    for name, work in (("afd", prefill), ("cambricon", prefill), ("spatten", train), ("duplex", train)):
        with pytest.raises(ValueError, match=rf"^phase='{work.phase}': target '{hwcost.get_target(name).name}' "
                                             r"models .* only \(allowed: "):
            hwcost.get_target(name).cost(work)
    for name in ("duplex", "spatten", "xrnpe", "h200"):  # these take a prefill step
        assert np.isfinite(float(hwcost.get_target(name).cost(prefill).latency_s))
    with pytest.raises(ValueError, match=r"^work.ops=.*: afd costs the whole model"):
        hwcost.get_target("afd").cost(hwcost.workload(cfg, SCENARIO).select(hwcost.ATTENTION_CORE))
    half = hwcost.workload(cfg, SCENARIO).scaled(0.5)
    assert half.device_share == 0.5 and half.config is cfg and half.scenario == SCENARIO
    with pytest.raises(ValueError, match=r"^work.device_share=0.5: duplex costs the whole model"):
        hwcost.get_target("duplex").cost(half)
    with pytest.raises(ValueError, match=r"^h800: 'energy_j' has a value but is not modelled"):
        hwcost.Cost.of("h800", frozenset({"latency_s"}), latency_s=jnp.ones(()), energy_j=jnp.ones(()))
    with pytest.raises(ValueError) as err:
        hwcost.get_target("h300")
    message = str(err.value)
    assert message.startswith("target='h300': must be one of ") and all(n in message for n in hwcost.TARGETS)
    assert "calibrated preset .json" in message
    with pytest.raises(ValueError, match=r"^target='afd-h20\+tpu': AFD sides must be GPU presets"):
        hwcost.get_target("afd-h20+tpu")
    mixed = hwcost.get_target("afd-h20+h800")
    assert (mixed.attention.name, mixed.ffn.name, mixed.name) == ("h20", "h800", "afd-h20+h800")
    assert hwcost.get_target("H100").name == "h100-sxm"  # aliases and case


def test_calibrated_preset_file_is_a_target(preset_path):
    target = hwcost.get_target(preset_path)
    assert isinstance(target, hwcost.CalibratedGPU) and isinstance(target, hwcost.Target)
    assert target.name == "h200-calibrated" and isinstance(target.device, hwcost.GPU)
    work = hwcost.workload(nets.zoo.get("codesign-default"), SCENARIO)
    # fitted launch costs and efficiencies below 1: slower than the plain roofline of its own GPU
    assert float(target.cost(work).latency_s) > float(target.device.cost(work).latency_s)


@pytest.mark.parametrize("name", NAMES)
def test_cost_cli_on_every_target(name, preset_path, codesign_main):
    """`codesign cost MODEL --target T --json`, in-process, reports the protocol's cost (None: not modelled)."""
    done = codesign_main("cost", SMALL, "--target", preset_path if name == CALIBRATED else name,
                         "--batch", str(SCENARIO.batch), "--context", str(SCENARIO.context_len), "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    expected = _cost(name, SMALL, preset_path)
    assert report["target"] == expected.target
    assert report["modelled"] == [f for f in hwcost.Cost.SCALARS if f in expected.modelled]
    for field in hwcost.Cost.SCALARS:
        value = report["totals"][field]
        if field in expected.modelled:
            assert value == pytest.approx(float(getattr(expected, field)), rel=1e-6), field
        else:
            assert value is None, field
