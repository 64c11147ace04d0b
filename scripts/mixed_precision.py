"""Layer-adaptive mixed precision against the XR-NPE target, and uniform-format baselines.

    PYTHONPATH=. python scripts/mixed_precision.py [--model codesign-default] [--lams 0.001 0.01 0.1]
        [--pretrain-steps 150] [--steps 24] [--recovery-steps 8] [--out results/mixed_precision]

On the embedded byte-level LM task, every arm starts from ONE shared pretraining of the
network (float32, no quantisation, at `lr`) and then trains for the same number of steps at the lower
`finetune_lr` (the usual QAT practice: fine-tuning a trained network with a fresh optimiser at
the pretraining rate first throws it out of its minimum; measured on the H200 at 3e-3, every arm
ended above the pretrained loss):

- joint arms (one per lambda): `codesign.JointTrainer` minimises
  task loss + lam * log(XR-NPE energy of one decode step) over the network weights and the
  per-layer format logits of weights AND activations (both GEMM operands: the XR-NPE lane
  split needs both at the low width, arXiv 2508.13049, section III), `steps` joint steps, then
  argmax hardening and `recovery_steps` of fine-tuning with the hardened formats applied exactly
  (`codesign.harden_and_recover`);
- uniform arms: every layer in one format, weights and activations, trained with
  `HardenedTrainer` for `steps + recovery_steps` steps: BF16 (the unquantised-training reference
  at 16 bits; XR-NPE prices it like any 16-bit format), Posit(16,1), Posit(8,0), Posit(4,1), FP4.

Formats (a decision; `nets/formats/_registry.py`): each element format is used with a
power-of-two scale, per output channel for weights ("@channel") and per tensor for activations
("@tensor", dynamic). A power-of-two scale is an exponent shift, free in the MAC datapath and
not counted in the bits. Unscaled posit(4,1) (minpos 1/16) and fp4 (max 6) cannot hold
trained weights of magnitude ~0.02-0.2: almost all round to 0 or minpos. The scale puts a channel's
largest weight in [1, 2) for posits (where tapered precision is finest) and at the top binade
for FP4 (the OCP MX rule). "FP4" is E2M1 with the same per-channel scale (4.0 bits; MXFP4 would
be 4.25 bits with a per-32 block scale). Embeddings, LM head, norms and the MoE router stay
float (outside the per-layer knobs); the KV cache is not searched (16 bits in the cost).

Cost: `codesign.design_cost` of the hardened design on `hwcost.xrnpe()` (the
paper's 1.72 GHz, 14 pJ per 16-bit MAC op, plus the documented assumptions of
`hwcost.xrnpe`) for a decode step of `scenario_batch` sequences at `scenario_context`
tokens of context (default 1 x 256: one user on an XR headset, the model's full context).
Energy per token [J] = energy of the step / tokens in the step; latency per token likewise [s].

Writes into --out's parent: mixed_precision.json (config, where it ran, wall time, every arm),
mixed_precision.md (the table) and mixed_precision.png (validation loss against energy per
token, log x; uniform arms as labelled markers, joint arms connected in lambda order). The
training runs (checkpoints, metrics) go to --work (default runs/mixed_precision); a rerun
with the same configuration resumes them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import platform
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np

import hwcost
import nets
from codesign import (HardenedTrainer, design_cost, harden_and_recover, JointConfig, JointTrainer, DesignSpace,
                      make_target, Trainer, TrainConfig, train)
from nets import atomic_write_json, fail
from nets.formats import get_format

WEIGHT_SCALING = "@channel"
ACT_SCALING = "@tensor"
JOINT_FORMATS = ("posit(16,1)", "posit(8,0)", "posit(4,1)")
UNIFORM_FORMATS = (("BF16", "bf16"), ("Posit(16,1)", "posit(16,1)"), ("Posit(8,0)", "posit(8,0)"),
                   ("Posit(4,1)", "posit(4,1)"), ("FP4", "fp4_e2m1"))
TARGET = "xrnpe"
METRIC = "energy"


@dataclass(frozen=True)
class MixedConfig:
    """The experiment. Element formats are registry names without a scaling suffix (see module docstring)."""

    model: str = "codesign-default"
    lams: tuple[float, ...] = (0.001, 0.01, 0.1)
    joint_formats: tuple[str, ...] = JOINT_FORMATS
    uniform: tuple[tuple[str, str], ...] = UNIFORM_FORMATS
    pretrain_steps: int = 150
    steps: int = 24
    recovery_steps: int = 8
    batch: int = 8
    seq_len: int = 64
    lr: float = 3e-3
    finetune_lr: float = 1e-3
    knob_lr: float = 0.1
    eval_batches: int = 4
    seed: int = 0
    scenario_batch: int = 1
    scenario_context: int = 256

    def __post_init__(self) -> None:
        if not self.lams:
            fail("lams", self.lams, "give at least one lambda")
        for lam in self.lams:
            if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not 0 <= lam < math.inf:
                fail("lam", lam, "must be a finite number >= 0")
        if len(self.joint_formats) < 2:
            fail("joint_formats", self.joint_formats, "must name at least two formats to choose between")
        for name in tuple(self.joint_formats) + tuple(f for _, f in self.uniform):
            if "@" in name:
                fail("format", name, "give the element format only; the script adds @channel / @tensor scaling")
            get_format(name + WEIGHT_SCALING)  # ValueError listing the known names
        for name in ("pretrain_steps", "steps", "recovery_steps", "batch", "seq_len", "eval_batches",
                     "scenario_batch", "scenario_context"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if name == "pretrain_steps" else 1):
                fail(name, value, "must be a positive integer" if name != "pretrain_steps" else "must be an integer >= 0")
        self.train_config(self.steps)  # model, lr validated by TrainConfig
        self.train_config(self.steps, self.finetune_lr)
        self.joint_config(self.lams[0])  # knob_lr validated by JointConfig

    def train_config(self, steps: int, lr: float | None = None) -> TrainConfig:
        """Pretraining at `lr`; every arm's fine-tuning at `lr=finetune_lr` (see module docstring)."""
        return TrainConfig(model=self.model, steps=steps, batch=self.batch, seq_len=self.seq_len,
                           lr=self.lr if lr is None else lr,
                           warmup_steps=min(10, steps // 10), eval_every=steps, eval_batches=self.eval_batches,
                           ckpt_every=steps, log_every=max(1, min(10, steps)), seed=self.seed)

    def joint_config(self, lam: float) -> JointConfig:
        return JointConfig(lam=float(lam), metric=METRIC, target=TARGET, knob_lr=self.knob_lr,
                           scenario_batch=self.scenario_batch, scenario_context=self.scenario_context)

    def scenario(self) -> hwcost.Scenario:
        return self.joint_config(self.lams[0]).scenario()


def joint_space(formats: tuple[str, ...] = JOINT_FORMATS) -> DesignSpace:
    """Per-layer weight and activation formats over `formats` (scaled); KV and FFN width not searched."""
    return DesignSpace(formats=tuple(f + WEIGHT_SCALING for f in formats), kv_formats=(),
                       act_formats=tuple(f + ACT_SCALING for f in formats), search_ffn_width=False)


def uniform_design(cfg: nets.ModelConfig, element_format: str) -> tuple[DesignSpace, dict[str, Any]]:
    """(space, hardened design) with every layer's weights and activations in `element_format`."""
    space = joint_space((element_format,))
    widths = [cfg.ffn.d_expert if kind == "moe" else cfg.ffn.d_ff for kind in cfg.layer_kinds]
    hardened = {"formats": [space.formats[0]] * cfg.n_layers, "kv_formats": [],
                "act_formats": [space.act_formats[0]] * cfg.n_layers, "ffn_widths": widths}
    return space, hardened


def _per_token(cost: dict[str, Any], scenario: hwcost.Scenario) -> dict[str, float]:
    return {"energy_per_token_j": cost["energy_j"] / scenario.tokens,
            "latency_per_token_s": cost["latency_s"] / scenario.tokens}


def _mean_bits(names: list[str]) -> float:
    return float(np.mean([get_format(n).bits for n in names]))


def _prepare_work_dir(work: Path, mc: MixedConfig) -> None:
    """Resume only a run of the same configuration; a folder from another configuration is replaced."""
    marker = work / "mixed_precision_config.json"
    wanted = json.dumps(dataclasses.asdict(mc), sort_keys=True)
    if work.exists() and any(work.iterdir()):
        if not marker.exists():
            fail("work", str(work), "exists and is not a mixed_precision work folder; give an empty or new folder")
        if marker.read_text() != wanted:
            shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    marker.write_text(wanted)


def run(mc: MixedConfig, work: str | Path, *, progress: bool = False, log=print) -> dict[str, Any]:
    """Pretrain once, run every joint and uniform arm; returns the result record (see module docstring)."""
    t0 = time.perf_counter()
    work = Path(work)
    _prepare_work_dir(work, mc)
    cfg = mc.train_config(mc.steps).model_config()
    scenario = mc.scenario()
    target = make_target(TARGET)
    init, pretrain_loss = None, None
    if mc.pretrain_steps:
        log(f"mixed_precision: pretraining {mc.model} for {mc.pretrain_steps} steps (float32) -> {work / 'pretrain'}")
        ptc = mc.train_config(mc.pretrain_steps)
        result = train(ptc, work / "pretrain", progress=progress, trainer=Trainer(ptc))
        init, pretrain_loss = jax.device_get(result.params), result.final_val_loss
    rows: list[dict[str, Any]] = []
    for lam in mc.lams:
        space = joint_space(tuple(mc.joint_formats))
        tc = mc.train_config(mc.steps, mc.finetune_lr)
        log(f"mixed_precision: joint lam={lam:g}: {mc.steps} joint + {mc.recovery_steps} recovery steps")
        trainer = JointTrainer(tc, mc.joint_config(lam), space, init_net_params=init)
        pdir = work / f"joint-lam{lam:g}"
        train(tc, pdir, progress=progress, trainer=trainer)
        probs = np.asarray(space.format_probs(jax.device_get(trainer.params["knobs"])))
        record = harden_and_recover(trainer, pdir, recovery_steps=mc.recovery_steps, progress=progress)
        cost = record["cost"]
        rows.append({"arm": f"joint lam={lam:g}", "kind": "joint", "lam": float(lam),
                     "formats": record["hardened"]["formats"], "act_formats": record["hardened"]["act_formats"],
                     "mean_weight_bits": _mean_bits(record["hardened"]["formats"]),
                     "mean_act_bits": _mean_bits(record["hardened"]["act_formats"]),
                     "weight_format_probs": probs.tolist(), "val_loss": record["validation"]["loss"],
                     "energy_j": cost["energy_j"], "latency_s": cost["latency_s"], **_per_token(cost, scenario)})
    for label, element in mc.uniform:
        space, hardened = uniform_design(cfg, element)
        tc = mc.train_config(mc.steps + mc.recovery_steps, mc.finetune_lr)
        log(f"mixed_precision: uniform {label}: {tc.steps} steps with every layer in {element}")
        trainer = HardenedTrainer(tc, space, hardened, init_params=init)
        result = train(tc, work / f"uniform-{element}", progress=progress, trainer=trainer)
        cost = design_cost(cfg, space, hardened, target, scenario, METRIC)
        rows.append({"arm": label, "kind": "uniform", "lam": None, "formats": hardened["formats"],
                     "act_formats": hardened["act_formats"], "mean_weight_bits": _mean_bits(hardened["formats"]),
                     "mean_act_bits": _mean_bits(hardened["act_formats"]), "val_loss": result.final_val_loss,
                     "energy_j": cost["energy_j"], "latency_s": cost["latency_s"], **_per_token(cost, scenario)})
    seconds = time.perf_counter() - t0
    return {"config": dataclasses.asdict(mc), "target": TARGET, "metric": METRIC,
            "scenario": dataclasses.asdict(scenario), "pretrain_val_loss": pretrain_loss, "rows": rows,
            "wall_s": seconds, "where": {"backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()],
                                         "host": platform.node(), "python": platform.python_version(),
                                         "jax": jax.__version__}}


def _short(names: list[str]) -> str:
    """posit(8,0)@channel -> p8,0 ; fp4_e2m1@channel -> fp4."""
    return " ".join(n.split("@")[0].replace("_e2m1", "").replace("posit(", "p").replace(")", "") for n in names)


def format_table(record: dict[str, Any]) -> str:
    """Markdown table of every arm; loss gap and energy relative to the uniform Posit(16,1) arm when present."""
    rows = record["rows"]
    ref = next((r for r in rows if r["kind"] == "uniform" and r["formats"][0].startswith("posit(16,1)")), None)
    sc = record["scenario"]
    lines = [f"Mixed precision on {record['config']['model']} against XR-NPE (decode, batch {sc['batch']}, "
             f"context {sc['context_len']}); every arm {record['config']['steps'] + record['config']['recovery_steps']}"
             f" steps from one {record['config']['pretrain_steps']}-step float32 pretrain "
             f"(val loss {record['pretrain_val_loss'] if record['pretrain_val_loss'] is None else round(record['pretrain_val_loss'], 4)})",
             "",
             "| arm | weight formats (per layer) | act formats | mean bits w/a | val loss | loss vs P16 "
             "| energy/token [uJ] | energy vs P16 | latency/token [us] |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        gap = f"{r['val_loss'] / ref['val_loss'] - 1:+.2%}" if ref else "-"
        ratio = f"{r['energy_per_token_j'] / ref['energy_per_token_j']:.3f}x" if ref else "-"
        lines.append(f"| {r['arm']} | {_short(r['formats'])} | {_short(r['act_formats'])} | "
                     f"{r['mean_weight_bits']:.1f}/{r['mean_act_bits']:.1f} | {r['val_loss']:.4f} | {gap} | "
                     f"{r['energy_per_token_j'] * 1e6:.2f} | {ratio} | {r['latency_per_token_s'] * 1e6:.2f} |")
    w = record["where"]
    lines += ["", f"ran on {w['backend']} ({w['host']}, {len(w['devices'])} device(s)) in {record['wall_s']:.0f} s"]
    return "\n".join(lines)


def plot(record: dict[str, Any], path: Path) -> Path:
    """Validation loss against XR-NPE energy per token (log x): uniform markers, joint points connected."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=130)
    markers = iter("sD^vP*X")
    uniform = [r for r in record["rows"] if r["kind"] == "uniform"]
    for i, r in enumerate(uniform):  # labels alternate right/left: equal-bit formats share an energy
        x = r["energy_per_token_j"] * 1e6
        ax.scatter([x], [r["val_loss"]], marker=next(markers), s=60, label=f"uniform {r['arm']}", zorder=3)
        right = i % 2 == 0
        ax.annotate(r["arm"], (x, r["val_loss"]), textcoords="offset points", xytext=(7 if right else -7, -3),
                    ha="left" if right else "right", fontsize=8)
    joint = sorted((r for r in record["rows"] if r["kind"] == "joint"), key=lambda r: r["lam"])
    if joint:
        xs = [r["energy_per_token_j"] * 1e6 for r in joint]
        ax.plot(xs, [r["val_loss"] for r in joint], "-o", c="C3", label="joint (layer-adaptive)", zorder=4)
        for r, x in zip(joint, xs):
            ax.annotate(f"lam={r['lam']:g}", (x, r["val_loss"]), textcoords="offset points", xytext=(5, -10),
                        fontsize=8, color="C3")
    if record["pretrain_val_loss"] is not None:
        ax.axhline(record["pretrain_val_loss"], ls=":", c="0.5", label="float32 pretrain (start)")
    ax.set_xscale("log")
    ax.set_xlabel("XR-NPE energy per decoded token [uJ] (log)")
    ax.set_ylabel("validation loss [nats/byte]")
    ax.set_title(f"{record['config']['model']}: mixed precision vs uniform formats")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> dict[str, Any]:
    d = MixedConfig()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=d.model, help="zoo name or ModelConfig JSON path")
    parser.add_argument("--lams", type=float, nargs="+", default=list(d.lams))
    parser.add_argument("--joint-formats", nargs="+", default=list(d.joint_formats))
    parser.add_argument("--pretrain-steps", type=int, default=d.pretrain_steps)
    parser.add_argument("--steps", type=int, default=d.steps, help="joint steps (uniform arms: steps + recovery)")
    parser.add_argument("--recovery-steps", type=int, default=d.recovery_steps)
    parser.add_argument("--batch", type=int, default=d.batch)
    parser.add_argument("--seq-len", type=int, default=d.seq_len)
    parser.add_argument("--finetune-lr", type=float, default=d.finetune_lr,
                        help="learning rate of every arm after the shared pretraining (its recovery: 0.3x this)")
    parser.add_argument("--knob-lr", type=float, default=d.knob_lr)
    parser.add_argument("--eval-batches", type=int, default=d.eval_batches)
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--scenario-batch", type=int, default=d.scenario_batch)
    parser.add_argument("--scenario-context", type=int, default=d.scenario_context)
    parser.add_argument("--out", default="results/mixed_precision", help="output stem: writes STEM.json/.md/.png")
    parser.add_argument("--work", default="runs/mixed_precision", help="folder for the training runs")
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args(argv)
    mc = MixedConfig(model=args.model, lams=tuple(args.lams), joint_formats=tuple(args.joint_formats),
                     pretrain_steps=args.pretrain_steps, steps=args.steps, recovery_steps=args.recovery_steps,
                     batch=args.batch, seq_len=args.seq_len, finetune_lr=args.finetune_lr, knob_lr=args.knob_lr,
                     eval_batches=args.eval_batches,
                     seed=args.seed, scenario_batch=args.scenario_batch, scenario_context=args.scenario_context)
    print(f"mixed_precision: running on {jax.default_backend()} ({jax.devices()[0].device_kind}, "
          f"{jax.device_count()} device(s)), host {platform.node()}")
    record = run(mc, args.work, progress=args.progress)
    stem = Path(args.out)
    stem.parent.mkdir(parents=True, exist_ok=True)
    table = format_table(record)
    atomic_write_json(stem.with_suffix(".json"), record)
    stem.with_suffix(".md").write_text(table + "\n")
    plot(record, stem.with_suffix(".png"))
    print(table)
    print(f"mixed_precision: wrote {stem.with_suffix('.json')}, {stem.with_suffix('.md')}, {stem.with_suffix('.png')}")
    return record


if __name__ == "__main__":
    main()
