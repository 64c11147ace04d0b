"""Why joint mixed-precision points lose to uniform formats: noise floor, per-layer sensitivity, relaxation gap.

    PYTHONPATH=. python scripts/codesign_diagnosis.py [--model tiny4] [--seeds 5] [--pretrain-steps 150]
        [--finetune-steps 40] [--joint-steps 32] [--recovery-steps 8] [--out results/codesign]

Three measurements on one model and the embedded byte-level corpus, through the public API only:

(a) noise floor: the validation loss of `--seeds` pretrainings of `--pretrain-steps` steps (seed =
    init and data order), and of `--seeds` bf16 fine-tunes of `--finetune-steps` steps from the
    seed-0 pretraining (seed = data order only: the spread a paired comparison of arms sees).
(b) per-layer sensitivity: the seed-0 pretrained weights, evaluated (no retraining) with ONE layer's
    weights, or separately ONE layer's KV cache, in a low format and everything else in bf16; the
    loss increase over the all-bf16 evaluation, per layer and format, next to (a)'s stds and the
    uniform (every layer) increase. Weight formats get a power-of-two per-channel scale
    ("@channel"), as in scripts/mixed_precision.py; MX formats carry their own block scale.
(c) relaxation / hardening gap: the joint trainer of scripts/mixed_precision.py (per-layer weight and
    activation formats over posit(16,1)/posit(8,0)/posit(4,1), XR-NPE energy penalty, lam per
    `--lams`) for `--joint-steps` steps from the seed-0 pretraining; the soft (softmax-mixture, final
    temperature) model's loss, the argmax-hardened model's loss before and after `--recovery-steps`
    of recovery (0.3x lr, as `codesign.harden_and_recover`), and the SAME hardened design trained
    hard from the pretrained weights for joint + recovery steps (the uniform arms' protocol).

Writes --out/diagnosis.json (every number, config, where and how long it ran); prints a summary.
The model "tiny4" is a 4-layer, d_model 64 MFA + MoE decoder (a few minutes per phase on 2 CPU
cores); any zoo name or ModelConfig JSON path works.
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import nets
from codesign import (DesignSpace, HardenedTrainer, JointConfig, JointTrainer, TrainConfig, Trainer, design_cost,
                      full_widths, make_target)
from nets import atomic_write_json

TINY4 = dict(name="tiny4-mfa-moe", d_model=64, n_layers=4, max_seq_len=64,
             attention={"n_heads": 2, "head_dim": 32, "q_rank": 32},
             ffn={"d_ff": 128, "n_experts": 4, "top_k": 2, "d_expert": 32})
# the GPU-scale decoder: 12 layers, d_model 768, MFA + MoE (4 routed experts, top 2, one shared), 115M parameters
SCALE115M = dict(name="scale115m-mfa-moe", d_model=768, n_layers=12, max_seq_len=256,
                 attention={"n_heads": 12, "head_dim": 64, "q_rank": 256},
                 ffn={"d_ff": 2048, "n_experts": 4, "top_k": 2, "d_expert": 768})
PRESETS = {"tiny4": TINY4, "scale115m": SCALE115M}
WEIGHT_FORMATS = ("fp4_e2m1@channel", "mxfp4", "posit(4,1)@channel", "posit(8,0)@channel", "fp8_e4m3@channel")
KV_FORMATS = ("fp4_e2m1@tensor", "mxfp4", "posit(4,1)@tensor", "posit(8,0)@tensor", "fp8_e4m3")
JOINT_FORMATS = ("posit(16,1)", "posit(8,0)", "posit(4,1)")


def model_spec(name: str, work: Path) -> str:
    """A zoo name / JSON path as is; a preset ("tiny4", "scale115m") written as a ModelConfig JSON into `work`."""
    if name not in PRESETS:
        return name
    path = work / f"{name}.json"
    path.write_text(nets.zoo.default_config().replace(**PRESETS[name]).to_json())
    return str(path)


def train_steps(trainer, steps: int, start: int = 0) -> None:
    """`steps` updates of `trainer` in place (no checkpoints, no metrics files)."""
    run_steps(trainer, trainer, steps, start)


def run_steps(compiled, state, steps: int, start: int = 0) -> None:
    """`steps` updates of `state`'s params with `compiled`'s jitted step (same config: one compilation
    serves every seed; `start` offsets the step counter, which picks the batches)."""
    for step in range(start, start + steps):
        state.params, state.opt_state, _ = compiled.step_fn(state.params, state.opt_state, compiled.train_data,
                                                            jnp.asarray(step, jnp.int32))


def make_eval(trainer):
    """jitted (params, quant) -> mean validation loss of `trainer`'s network with `quant` (KV formats) applied;
    one compilation for every weight and KV design with the same format tuple."""
    def loss(params, quant, valid):
        xs, ys = valid
        losses = [optax.softmax_cross_entropy_with_integer_labels(
            trainer.model_from(params)(xs[i], quant=quant)[0].astype(jnp.float32), ys[i]).mean()
            for i in range(xs.shape[0])]
        return jnp.mean(jnp.stack(losses))
    fn = jax.jit(loss)
    return lambda params, quant: float(fn(params, quant, trainer.valid))


def noise_floor(a, model: str, log) -> tuple[dict[str, Any], Any, Trainer]:
    """(a): seeds vary init + data order for pretraining, data order only for fine-tuning."""
    def cfg(steps, lr, seed):
        return TrainConfig(model=model, steps=steps, batch=a.batch, seq_len=a.seq_len, lr=lr,
                           warmup_steps=min(10, steps // 10), eval_batches=a.eval_batches, seed=seed)
    first = Trainer(cfg(a.pretrain_steps, a.lr, 0))
    rows, init = [], None
    for seed in range(a.seeds):
        state = first if seed == 0 else Trainer(cfg(a.pretrain_steps, a.lr, seed))  # fresh init of this seed
        run_steps(first, state, a.pretrain_steps, start=seed * 1_000_000)
        rows.append(first.evaluate(state.params))
        log(f"(a) pretrain seed {seed}: val loss {rows[-1]:.4f}")
        if seed == 0:
            init = jax.device_get(state.params)
    ft = Trainer(cfg(a.finetune_steps, a.finetune_lr, 0), init_net_params=init)
    fine = []
    for seed in range(a.seeds):
        ft.params = jax.device_put(init, ft.replicated)
        ft.opt_state = jax.device_put(ft.optimizer.init(init), ft.replicated)
        run_steps(ft, ft, a.finetune_steps, start=seed * 1_000_000)
        fine.append(ft.evaluate())
        log(f"(a) fine-tune seed {seed}: val loss {fine[-1]:.4f}")
    summary = {"pretrain_val_loss": rows, "pretrain_std": float(np.std(rows, ddof=1)),
               "finetune_val_loss": fine, "finetune_std": float(np.std(fine, ddof=1)),
               "seed_meaning": "pretrain: init and data order; fine-tune: data order (same pretrained start)"}
    return summary, init, first


def sensitivity(trainer: Trainer, init: Any, log) -> dict[str, Any]:
    """(b): post-training quantisation of one layer at a time (weights, then KV cache), no retraining."""
    cfg = trainer.cfg
    n = cfg.n_layers
    evaluate = make_eval(trainer)
    kv_names = ("bf16",) + KV_FORMATS
    bf16_kv = nets.one_hot_quant(n, kv_formats=kv_names, kv_choice=["bf16"] * n)
    base = evaluate(init, bf16_kv)
    out = {"bf16_loss": base, "bf16_loss_trainer_eval": trainer.evaluate(init), "weights": {}, "kv": {},
           "method": "post-training: pretrained weights evaluated with the format applied, no fine-tuning"}
    widths = [int(w) for w in full_widths(cfg)]
    for fmt in WEIGHT_FORMATS:
        space = DesignSpace(formats=("bf16", fmt), kv_formats=(), act_formats=(), search_ffn_width=False)

        def weight_loss(names):
            hardened = {"formats": names, "kv_formats": [], "act_formats": [], "ffn_widths": widths}
            return evaluate(space.apply_hard(cfg, init, hardened), bf16_kv) - base
        per_layer = [weight_loss(["bf16"] * i + [fmt] + ["bf16"] * (n - i - 1)) for i in range(n)]
        out["weights"][fmt] = {"per_layer_delta": per_layer, "uniform_delta": weight_loss([fmt] * n)}
        log(f"(b) weights {fmt}: per-layer delta " + " ".join(f"{d:+.4f}" for d in per_layer)
            + f"; all layers {out['weights'][fmt]['uniform_delta']:+.4f}")
    for fmt in KV_FORMATS:
        def kv_loss(names):
            return evaluate(init, nets.one_hot_quant(n, kv_formats=kv_names, kv_choice=names)) - base
        per_layer = [kv_loss(["bf16"] * i + [fmt] + ["bf16"] * (n - i - 1)) for i in range(n)]
        out["kv"][fmt] = {"per_layer_delta": per_layer, "uniform_delta": kv_loss([fmt] * n)}
        log(f"(b) kv {fmt}: per-layer delta " + " ".join(f"{d:+.4f}" for d in per_layer)
            + f"; all layers {out['kv'][fmt]['uniform_delta']:+.4f}")
    return out


def relaxation_gap(a, model: str, init: Any, log) -> list[dict[str, Any]]:
    rows = []
    space = DesignSpace(formats=tuple(f + "@channel" for f in JOINT_FORMATS), kv_formats=(),
                        act_formats=tuple(f + "@tensor" for f in JOINT_FORMATS), search_ffn_width=False)
    for lam in a.lams:
        tc = TrainConfig(model=model, steps=a.joint_steps, batch=a.batch, seq_len=a.seq_len, lr=a.finetune_lr,
                         warmup_steps=min(10, a.joint_steps // 10), eval_batches=a.eval_batches, seed=0)
        jc = JointConfig(lam=float(lam), metric="energy", target="xrnpe", knob_lr=a.knob_lr, scenario_batch=1,
                         scenario_context=256)
        joint = JointTrainer(tc, jc, space, init_net_params=init)
        train_steps(joint, a.joint_steps)
        soft = joint.evaluate()
        params = jax.device_get(joint.params)
        cfg = joint.cfg
        probs = np.asarray(space.format_probs(params["knobs"])).tolist()
        hardened = space.harden(cfg, params["knobs"])
        rtc = dataclasses.replace(tc, steps=a.recovery_steps, warmup_steps=0, lr=tc.lr * 0.3)
        rec = HardenedTrainer(rtc, space, hardened, init_params=params["net"])
        hard_before = rec.evaluate()
        train_steps(rec, a.recovery_steps, start=a.joint_steps)
        hard_after = rec.evaluate()
        # the same design under the uniform arms' protocol: trained hard from the pretrained weights
        htc = dataclasses.replace(tc, steps=a.joint_steps + a.recovery_steps,
                                  warmup_steps=min(10, (a.joint_steps + a.recovery_steps) // 10))
        direct = HardenedTrainer(htc, space, hardened, init_params=init)
        train_steps(direct, htc.steps)
        direct_loss = direct.evaluate()
        cost = design_cost(cfg, space, hardened, make_target("xrnpe"), jc.scenario(), "energy")
        rows.append({"lam": float(lam), "hardened": hardened, "weight_format_probs": probs, "soft_loss": soft,
                     "hard_before_recovery": hard_before, "hard_after_recovery": hard_after,
                     "same_design_trained_hard": direct_loss, "energy_j": cost["energy_j"]})
        log(f"(c) lam={lam:g}: soft {soft:.4f}, hardened {hard_before:.4f}, recovered {hard_after:.4f}, "
            f"same design trained hard {direct_loss:.4f}; formats {hardened['formats']}")
    return rows


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="tiny4", help='"tiny4" (see docstring), a zoo name or ModelConfig JSON path')
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--pretrain-steps", type=int, default=150)
    p.add_argument("--finetune-steps", type=int, default=40)
    p.add_argument("--joint-steps", type=int, default=32)
    p.add_argument("--recovery-steps", type=int, default=8)
    p.add_argument("--lams", type=float, nargs="+", default=[0.01, 0.1])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--finetune-lr", type=float, default=1e-3)
    p.add_argument("--knob-lr", type=float, default=0.1)
    p.add_argument("--eval-batches", type=int, default=4)
    p.add_argument("--out", default="results/codesign")
    a = p.parse_args(argv)
    jax.config.update("jax_compilation_cache_dir", str(Path(tempfile.gettempdir()) / "codesign-jax-cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    if a.seeds < 2:
        nets.fail("seeds", a.seeds, "must be at least 2 (a spread needs two runs)")
    t0 = time.perf_counter()
    log = lambda msg: print(f"[{time.perf_counter() - t0:7.1f}s] {msg}", flush=True)  # noqa: E731
    work = Path(tempfile.mkdtemp(prefix="codesign-diagnosis-"))
    model = model_spec(a.model, work)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    record = {"config": vars(a), "model_config": nets.zoo.default_config().replace(**TINY4).to_dict()
              if a.model == "tiny4" else a.model,
              "where": {"backend": jax.default_backend(), "host": platform.node(), "jax": jax.__version__,
                        "python": platform.python_version()}}

    def save(**parts):  # after every phase: an interrupted run keeps what it measured
        record.update(parts, wall_s=time.perf_counter() - t0)
        atomic_write_json(out / "diagnosis.json", record)
    noise, init, first = noise_floor(a, model, log)
    save(noise=noise)
    save(sensitivity=sensitivity(first, init, log))
    save(relaxation=relaxation_gap(a, model, init, log))
    log(f"wrote {out / 'diagnosis.json'}")
    return record


if __name__ == "__main__":
    main()
