"""Lambda (or budget) sweeps of the joint loop: the Pareto front, its hypervolume, the plot, the export.

`sweep(SweepConfig, out)` first trains the network alone for `pretrain_steps` into
out/pretrain/ (all points start from the same weights: the design knobs are then judged on
a network that already models the data, as quantisation-aware training is done in
practice, and the sweep pays for that training once), then finds one design per lambda:

- method "path" (the default, `codesign.search._path`): ONE continuation over the lambdas in
  ascending order, each segment of `steps` joint steps warm-started from the previous one
  (network, knobs, hardware, optimiser), one compiled joint step for all of them; the path
  state after each segment is checkpointed into out/point-K/path/.
- method "independent": one joint run per lambda (or per budget, the constrained form) from
  the pretrained network, each with its own compilation, into out/point-K/checkpoints.

Every point is hardened and recovery-fine-tuned into out/point-K/ (recovery/,
deployment.json), and the sweep writes into out/:

    metrics.jsonl    one record per finished point (lambda or budget, val loss, cost, choices)
    front.json       every point, the non-dominated mask, the hypervolume and its reference,
                     the seed spread and which front differences are within it (`_noise`)
    pareto.png       validation loss against cost (log axis), the front highlighted, 2-sd
                     seed-spread bars, points within noise of the next cheaper one greyed
    deployment.json  the chosen point's deployment (checkpoint path relative to out/):
                     the cheapest front point whose loss is within `loss_tolerance` of the best
    summary.json     the table printed at the end

Interrupted sweeps resume: a point whose deployment.json exists is read back, a point with
checkpoints continues exactly from the last one (`codesign.train`). `codesign run` (`run`)
is this sweep with the defaults below (sized to finish in under 5 minutes on 2 CPU cores).

Hypervolume is measured in (validation loss [nats/byte], log10 cost) space, since costs
span orders of magnitude; the reference point is given by the caller or defaults to
(1.05 x the worst loss, log10 of the worst cost + 0.05).
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import jax
import numpy as np

import hwcost

from nets import atomic_write_json
from nets.formats import FORMAT_NAMES, get_format
from codesign.training._io import fresh_run_dir
from codesign._phase import phase
from codesign.joint._targets import make_target
from codesign.joint._deploy import harden_and_recover, load_deployment, write_deployment
from codesign.joint._trainer import METRICS, JointConfig, JointTrainer
from codesign.training._metrics import MetricsWriter
from codesign.search._noise import K_SD, distinct_pairs, noise_marks, spread_for
from codesign.search._pareto import hypervolume, pareto_mask, plot_front
from codesign.joint._prune_space import PruningSpace
from codesign.joint._space import DEFAULT_KV_FORMATS, DesignSpace
from codesign.training._trainer import TrainConfig, _check


METHODS = ("path", "independent")
PRUNING = ("tokens", "heads")
RECOVER_FROM = ("start", "path")
# `codesign run`'s weight formats: block-scaled mxfp4 as the 4-bit choice. Unscaled fp4_e2m1 (smallest
# nonzero magnitude 0.5) rounds this model's block weights to zero, so on a weight it deletes the layer
# rather than quantising it (pretrained codesign-default, uniform designs: bf16 2.144, mxfp4 2.146,
# fp4_e2m1 6.33 nats/byte); it stays available through `formats=` / `--formats`.
RUN_FORMATS = ("bf16", "fp8_e4m3", "mxfp4")


@dataclass(frozen=True)
class SweepConfig:
    """A sweep over `lams` (penalty form) or, when given, over `budgets` (constrained form)."""

    model: str = "codesign-default"
    lams: tuple[float, ...] = (0.0, 0.3, 1.0, 3.0)
    budgets: tuple[float, ...] = ()
    metric: str = "edap"
    target: str = "xrnpe"
    hardware: tuple[str, ...] | None = None           # learnable target parameters (None: n_macs on xrnpe, else none)
    formats: tuple[str, ...] = RUN_FORMATS            # per-layer weight formats searched
    kv_formats: tuple[str, ...] = DEFAULT_KV_FORMATS  # per-layer KV-cache formats (() = not searched)
    act_formats: tuple[str, ...] = ()                 # per-layer activation formats (() = not searched)
    search_ffn_width: bool = True                     # kept FFN / expert hidden width per layer
    pruning: tuple[str, ...] = ()                     # SpAtten keep ratios searched: "tokens", "heads"
    # sized so that `codesign run` takes at most 300 s wall on 2 CPU cores, compilation included (measured from a
    # fresh virtualenv: 207 s wall, 328 s CPU of both cores, on the shared machine at load ~1.5)
    pretrain_steps: int = 150
    steps: int = 20
    recovery_steps: int = 8
    batch: int = 16
    seq_len: int = 32
    lr: float = 3e-3
    knob_lr: float = 0.1
    eval_batches: int = 8
    seed: int = 0
    scenario_batch: int = 64
    scenario_context: int = 2048
    loss_tolerance: float = 0.02
    on_nonfinite: str = "stop"   # TrainConfig.on_nonfinite of every phase (pretrain, joint, recovery)
    mesh: str = ""               # TrainConfig.mesh of every phase ("data=2,fsdp=4"; "": data over all devices)
    corpus: str = "stdlib"       # TrainConfig.corpus of every phase (codesign.data.CORPORA)
    method: str = "path"         # "path": one continuation over the lambdas; "independent": one run per point
    recover_from: str = "start"  # path only: recovery from the weights the path started from, or from the path's

    def __post_init__(self) -> None:
        if self.hardware is None:  # the default learnable parameter (the NPE's MAC count) exists on xrnpe only
            object.__setattr__(self, "hardware", ("n_macs",) if self.target == "xrnpe" else ())
        lams, budgets = tuple(self.lams), tuple(self.budgets)
        _check(len(lams) + len(budgets) > 0, "lams", lams, "give at least one lambda (or budgets)")
        for lam in lams:
            _check(isinstance(lam, (int, float)) and not isinstance(lam, bool) and 0 <= lam < math.inf, "lam", lam,
                   "must be a finite number >= 0")
        for budget in budgets:
            _check(isinstance(budget, (int, float)) and 0 < budget < math.inf, "budget", budget,
                   "must be a positive finite number")
        _check(self.method in METHODS, "method", self.method, f"must be one of {', '.join(METHODS)}")
        _check(self.recover_from in RECOVER_FROM, "recover_from", self.recover_from,
               f"must be one of {', '.join(RECOVER_FROM)}")
        _check(self.method == "independent" or not budgets, "method", self.method,
               "the path runs the penalty form over lambdas; budgets need method='independent'")
        _check(self.metric in METRICS, "metric", self.metric, f"must be one of {', '.join(METRICS)}")
        _check(self.loss_tolerance >= 0, "loss_tolerance", self.loss_tolerance, "must be >= 0")
        for name in ("recovery_steps", "pretrain_steps"):
            value = getattr(self, name)
            _check(isinstance(value, int) and not isinstance(value, bool) and value >= (1 if name == "recovery_steps"
                                                                                       else 0),
                   name, value, "must be a positive integer" if name == "recovery_steps" else "must be an integer >= 0")
        for name in ("formats", "kv_formats", "act_formats"):
            names = getattr(self, name)
            _check(isinstance(names, (tuple, list)), name, names, "must be a tuple of format names")
            for entry in names:
                _check(_is_format(entry), name, tuple(names), f"entry {entry!r} is not a number format (known: "
                       f"{', '.join(FORMAT_NAMES)}, any posit(n,es) with 2 <= n <= 16, 0 <= es <= 3)")
        for entry in self.pruning:
            _check(entry in PRUNING, "pruning", tuple(self.pruning), f"entries must be among {', '.join(PRUNING)}")
        if self.pruning:
            _check(not self.kv_formats and not self.act_formats, "kv_formats", tuple(self.kv_formats),
                   "must be () with pruning (the pruned network has no per-layer KV/activation fake-quant); "
                   "give kv_formats=() and act_formats=()")
            _check(self.method == "path", "method", self.method, "pruning runs with method='path'")
        self.space()  # the rest (distinct names, at least one weight format) validated by DesignSpace
        self.train_config()  # model, steps, batch, ... validated by TrainConfig
        for point in self.points():
            self.joint_config(point)  # target, hardware, lam validated by JointConfig

    def points(self) -> list[dict[str, float]]:
        if self.budgets:
            return [{"budget": float(b)} for b in self.budgets]
        return [{"lam": float(lam)} for lam in self.lams]

    def train_config(self, steps: int | None = None) -> TrainConfig:
        steps = self.steps if steps is None else steps
        return TrainConfig(model=self.model, steps=steps, batch=self.batch, seq_len=self.seq_len, lr=self.lr,
                           warmup_steps=min(10, steps // 10), eval_every=steps, eval_batches=self.eval_batches,
                           ckpt_every=max(1, steps // 2), log_every=max(1, min(10, steps)), seed=self.seed,
                           on_nonfinite=self.on_nonfinite, mesh=self.mesh, corpus=self.corpus)

    def joint_config(self, point: dict[str, float]) -> JointConfig:
        return JointConfig(lam=point.get("lam", 0.0), budget=point.get("budget"), metric=self.metric,
                           target=self.target, hardware=tuple(self.hardware), knob_lr=self.knob_lr,
                           scenario_batch=self.scenario_batch, scenario_context=self.scenario_context)

    def space(self) -> DesignSpace:
        if self.pruning:
            return PruningSpace(formats=tuple(self.formats), search_ffn_width=bool(self.search_ffn_width),
                                search_tokens="tokens" in self.pruning, search_heads="heads" in self.pruning)
        return DesignSpace(formats=tuple(self.formats), kv_formats=tuple(self.kv_formats),
                           act_formats=tuple(self.act_formats), search_ffn_width=bool(self.search_ffn_width))


def _is_format(name: Any) -> bool:
    try:
        get_format(name)
    except (ValueError, TypeError):
        return False
    return True


@dataclass
class SweepResult:
    out_dir: Path
    rows: list[dict[str, Any]]
    front_mask: list[bool]
    hypervolume: float
    reference: tuple[float, float]
    chosen: int
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def _point_row(index: int, point: dict[str, float], record: dict[str, Any]) -> dict[str, Any]:
    hardened = record["hardened"]
    return {"point": index, **point, "val_loss": record["validation"]["loss"],
            "cost": record["cost"]["metric_value"], "metric": record["cost"]["metric"],
            "latency_s": record["cost"]["latency_s"], "energy_j": record["cost"]["energy_j"],
            "formats": hardened["formats"], "kv_formats": hardened["kv_formats"],
            "act_formats": hardened.get("act_formats", []),
            "ffn_widths": hardened["ffn_widths"], "target_params": record["target"]["params"],
            **{k: hardened[k] for k in ("token_counts", "head_counts") if k in hardened}}


def front_and_volume(rows: Sequence[dict[str, Any]], reference: tuple[float, float] | None = None):
    """(non-dominated mask, hypervolume in (loss, log10 cost), reference) of sweep rows."""
    pts = np.array([[r["val_loss"], math.log10(r["cost"])] for r in rows], dtype=np.float64)
    if reference is None:
        reference = (float(pts[:, 0].max() * 1.05), float(pts[:, 1].max() + 0.05))
    return pareto_mask(pts), hypervolume(pts, reference), reference


def sweep(sc: SweepConfig, out_dir: str | Path | None = None, *, progress: bool = True, log=print) -> SweepResult:
    """Run (or resume) the sweep into `out_dir` (default: a fresh `runs/sweep-*`); the module docstring says what
    it writes."""
    from codesign.joint._trainer import check_budget

    cfg = sc.train_config().model_config()
    for point in sc.points():  # every error a user can make surfaces before anything is written
        check_budget(cfg, sc.space(), sc.joint_config(point))
    jc = sc.joint_config(sc.points()[0])  # a scenario the target cannot run (AFD: batch not a multiple of 48)
    make_target(sc.target).cost(hwcost.workload(cfg, jc.scenario()))
    out = Path(out_dir) if out_dir is not None else fresh_run_dir("sweep")
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with phase("file"):
        atomic_write_json(out / "sweep_config.json", dataclasses.asdict(sc))
    from codesign.training._trainer import Trainer, train

    init = None
    if sc.pretrain_steps:
        log(f"codesign: pretraining the network alone for {sc.pretrain_steps} steps -> {out / 'pretrain'}")
        ptc = sc.train_config(sc.pretrain_steps)
        init = jax.device_get(train(ptc, out / "pretrain", progress=progress, trainer=Trainer(ptc)).params)
    (out / "metrics.jsonl").unlink(missing_ok=True)  # rewritten from the points' own files
    if sc.method == "path":
        from codesign.search._path import path_points

        done = path_points(sc, out, init, progress=progress, log=log, load_deployment=load_deployment)
    else:
        done = _independent_points(sc, out, init, progress=progress, log=log)
    rows: list[dict[str, Any]] = []
    metrics = MetricsWriter(out / "metrics.jsonl")
    for index, (point, record) in enumerate(done):
        row = _point_row(index, point, record)
        rows.append(row)
        metrics.write({"step": index, **{k: v for k, v in row.items() if not isinstance(v, (list, dict))}})
    metrics.close()
    mask, volume, reference = front_and_volume(rows)
    best_loss = min(r["val_loss"] for r in rows)
    eligible = [i for i, r in enumerate(rows) if mask[i] and r["val_loss"] <= best_loss * (1 + sc.loss_tolerance)]
    chosen = min(eligible, key=lambda i: rows[i]["cost"])
    record = load_deployment(out / f"point-{chosen}" / "deployment.json")
    record["checkpoint"]["path"] = f"point-{chosen}/{record['checkpoint']['path']}"
    with phase("file"):
        write_deployment(out / "deployment.json", record)
    spread = spread_for(sc)
    marks = noise_marks(rows, mask, spread)
    labels = [", ".join(f"{k}={r[k]:g}" for k in ("lam", "budget") if k in r) for r in rows]
    pts = np.array([[r["val_loss"], r["cost"]] for r in rows])
    with phase("file"):
        plot_front(pts, labels, out / "pareto.png", cost_label=f"{sc.metric} on {sc.target} (log)", marks=marks,
                   spread=None if spread is None else (K_SD * spread["sd_loss"], K_SD * spread["sd_log10_cost"]))
    noise = None if spread is None else {
        "sd_loss": spread["sd_loss"], "sd_log10_cost": spread["sd_log10_cost"], "runs": spread["runs"],
        "k_sd": K_SD, "distinct_pairs": distinct_pairs(rows, spread)}
    front = {"rows": rows, "front_mask": [bool(m) for m in mask], "hypervolume": volume,
             "hypervolume_space": "(val_loss, log10 cost)", "reference": list(reference), "chosen": chosen,
             "metric": sc.metric, "target": sc.target, "method": sc.method, "noise": noise, "noise_marks": marks}
    with phase("file"):
        atomic_write_json(out / "front.json", front)
    seconds = time.perf_counter() - t0
    with phase("file"):
        atomic_write_json(out / "summary.json", {**front, "seconds": seconds})
    return SweepResult(out_dir=out, rows=rows, front_mask=[bool(m) for m in mask], hypervolume=volume,
                       reference=reference, chosen=chosen, seconds=seconds, extra={"noise": noise, "marks": marks})


def _independent_points(sc: SweepConfig, out: Path, init: Any, *, progress: bool, log) -> list[tuple[dict, dict]]:
    """One joint run per point from the pretrained network (`method="independent"`): (point, record) each."""
    tc, space = sc.train_config(), sc.space()
    points = sc.points()
    from codesign.training._trainer import train

    done = []
    for index, point in enumerate(points):
        pdir = out / f"point-{index}"
        label = ", ".join(f"{k}={v:g}" for k, v in point.items())
        deployment = pdir / "deployment.json"
        record = None
        if deployment.exists():
            try:
                record = load_deployment(deployment)
                log(f"codesign: point {index + 1}/{len(points)} ({label}) already done, read back")
            except ValueError:
                record = None
        if record is None:
            log(f"codesign: point {index + 1}/{len(points)} ({label}): {sc.steps} joint steps + "
                f"{sc.recovery_steps} recovery steps -> {pdir}")
            trainer = JointTrainer(tc, sc.joint_config(point), space, init_net_params=init)
            train(tc, pdir, progress=progress, trainer=trainer)
            record = harden_and_recover(trainer, pdir, recovery_steps=sc.recovery_steps, progress=progress)
            record["objective"].update(point, method="independent")
            with phase("file"):
                write_deployment(deployment, record)
        done.append((point, record))
    return done


def run(out_dir: str | Path | None = None, sc: SweepConfig | None = None, *, progress: bool = True,
        log=print) -> SweepResult:
    """The main job (`codesign run`): `sweep(sc)` into `out_dir`.

    Defaults: `SweepConfig()` (the embedded MFA + MoE model co-designed with the XR-NPE target
    for four lambdas) and a fresh `runs/run-*` folder.
    """
    return sweep(sc or SweepConfig(), out_dir or fresh_run_dir("run"), progress=progress, log=log)


def summary_table(result: SweepResult) -> str:
    """The human-readable table `codesign run` / `codesign sweep` print: every point, the front (*), the
    exported point (<) and, per front point, whether it differs from the next cheaper front point beyond
    the seed spread ("distinct") or not ("within noise")."""
    marks = result.extra.get("marks") or [""] * len(result.rows)
    lines = [f"{'point':<6}{'setting':<14}{'val loss':>9}{'cost':>12}  {'weight formats':<28}{'kv formats':<26}"
             f"{'ffn widths':<22}{'front':<6}{'vs next cheaper'}"]
    for i, r in enumerate(result.rows):
        setting = ", ".join(f"{k}={r[k]:g}" for k in ("lam", "budget") if k in r)
        mark = ("*" if result.front_mask[i] else "") + (" <" if i == result.chosen else "")
        lines.append(f"{i:<6}{setting:<14}{r['val_loss']:>9.4f}{r['cost']:>12.4g}  {_short(r['formats']):<28}"
                     f"{_short(r['kv_formats']):<26}{str(r['ffn_widths']):<22}{mark:<6}{marks[i]}")
    lines.append(f"hypervolume {result.hypervolume:.4f} in (val loss, log10 cost), reference "
                 f"({result.reference[0]:.4f}, {result.reference[1]:.3f}); * = non-dominated, < = exported")
    noise = result.extra.get("noise")
    if noise is None:
        lines.append("seed spread: not measured for these settings (scripts/codesign_noise.py measures it), so no "
                     "difference is marked as beyond noise")
    else:
        lines.append(f"seed spread ({noise['runs']} seeds, measured once for these settings): sd {noise['sd_loss']:.4f} "
                     f"nats in loss, {noise['sd_log10_cost']:.4f} in log10 cost; 'within noise' = not more than "
                     f"{noise['k_sd']:g} sd apart in loss or in cost; {len(noise['distinct_pairs'])} point pairs "
                     "differ beyond noise in both" + "".join(f"{', ' if k else ': '}{i}-{j}" for k, (i, j)
                                                             in enumerate(noise["distinct_pairs"])))
    return "\n".join(lines)


def _short(names: list[str]) -> str:
    """Per-layer format names, abbreviated: fp8_e4m3 -> fp8, posit(8,0) -> p8,0."""
    if not names:
        return "-"
    return ",".join(n.replace("_e4m3", "").replace("_e2m1", "").replace("posit(", "p").replace(")", "")
                    for n in names)

