"""The joint loop against every kind of hwcost target: the cost it is trained on falls as lambda rises and
every gradient of the step stays finite.

One kind per test (the GPU presets, a calibrated GPU preset file, AFD, each Duplex mode, Cambricon-LLM,
SpAtten, XR-NPE; `test_kinds_cover_every_target` checks the list against `hwcost.TARGETS`). Each runs
`codesign.PathTrainer`, whose lambda is a state leaf, so ONE compiled joint step per target serves both
lambdas: from the same pretrained-free start, `STEPS` steps at lambda 0 and, from the same start again,
`STEPS` steps at `HIGH`; the latency it prices and the mean weight bits must be lower at `HIGH`, and
every step's gradient norm (over the network and the knobs) finite and non-zero. The target's own
parameters are differentiated for every kind in tests/hwcost/test_targets.py. Duplex is the default
case; the others are slow (each compiles its own joint step).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import hwcost
import nets
from codesign import DesignSpace, JointConfig, PathTrainer, TrainConfig

MICRO = nets.zoo.default_config().replace(
    name="micro-mfa-moe", d_model=32, n_layers=2, max_seq_len=16,
    attention={"n_heads": 2, "head_dim": 16, "q_rank": 16},
    ffn={"d_ff": 64, "n_experts": 4, "top_k": 2, "d_expert": 16})
STEPS, HIGH = 6, 3.0
CALIBRATED = "calibrated"  # a calibrated preset file written by the test
KINDS = {"gpu": "h100-sxm", "calibrated": CALIBRATED, "afd": "afd", "duplex": "duplex",
         "duplex-dispatch": "duplex-dispatch", "duplex-gpu": "duplex-gpu", "cambricon": "cambricon",
         "spatten": "spatten", "xrnpe": "xrnpe"}
DEFAULT = "duplex"


@pytest.fixture(scope="module")
def micro_json(tmp_path_factory):
    path = tmp_path_factory.mktemp("micro") / "micro.json"
    path.write_text(MICRO.to_json())
    return str(path)


@pytest.fixture(scope="module")
def preset_path(tmp_path_factory):
    target = hwcost.calibrated(hwcost.gpu("h200"), hwcost.Efficiency.default(), name="h200-calibrated")
    return str(hwcost.save_preset(target, tmp_path_factory.mktemp("preset") / "h200-calibrated.json"))


def test_kinds_cover_every_target():
    """Every fixed target name is one of the kinds tested (GPU presets by one, AFD pairs by `afd`)."""
    kind_of = {name: ("gpu" if name in hwcost.PRESETS else "afd" if name.startswith("afd")
                      else "cambricon" if name.startswith("cambricon") else name) for name in hwcost.TARGETS}
    assert set(kind_of.values()) == set(KINDS) - {CALIBRATED}


def _segment(trainer, start_state, lam):
    """STEPS joint steps at `lam` from `start_state`; (last step's metrics, max grad norm seen)."""
    params = trainer.with_lam(jax.device_put(start_state[0], trainer.replicated), lam)
    opt_state = jax.device_put(start_state[1], trainer.replicated)
    norms = []
    for step in range(STEPS):
        params, opt_state, m = trainer.step_fn(params, opt_state, trainer.train_data, jnp.asarray(step, jnp.int32))
        norms.append(float(m["grad_norm"]))
        assert int(m["bad_step"]) == -1 and int(m["skipped_steps"]) == 0
    return jax.device_get(m), norms


def _check_target(name, micro_json, preset_path):
    target = preset_path if name == CALIBRATED else name
    tc = TrainConfig(model=micro_json, steps=STEPS, batch=4, seq_len=16, warmup_steps=1, eval_batches=1)
    # decode batch 48 = AFD's 16 attention GPUs x 3 micro-batches (every target takes it; 64 is not one for AFD)
    jc = JointConfig(lam=0.0, metric="latency", target=target, knob_lr=0.1, scenario_batch=48)
    trainer = PathTrainer(tc, jc, DesignSpace())
    start = jax.device_get((trainer.params, trainer.opt_state))
    low, low_norms = _segment(trainer, start, 0.0)
    high, high_norms = _segment(trainer, start, HIGH)
    assert trainer.trace_count == 1, "one compiled step for both lambdas"
    assert np.all(np.isfinite(low_norms + high_norms)) and min(high_norms) > 0, (name, low_norms, high_norms)
    assert np.isfinite(float(high["cost"])) and float(high["cost"]) > 0
    assert float(high["cost"]) < float(low["cost"]), (name, float(low["cost"]), float(high["cost"]))
    assert float(high["weight_bits"]) < float(low["weight_bits"])


@pytest.mark.parametrize("kind", [DEFAULT])
def test_joint_loop_on_target(kind, micro_json, preset_path):
    _check_target(KINDS[kind], micro_json, preset_path)


@pytest.mark.slow
@pytest.mark.parametrize("kind", [k for k in KINDS if k != DEFAULT])
def test_joint_loop_on_every_other_target(kind, micro_json, preset_path):
    _check_target(KINDS[kind], micro_json, preset_path)
