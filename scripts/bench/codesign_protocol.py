"""A fair comparison of co-design methods against uniform formats and practitioners' heuristics.

    PYTHONPATH=. python scripts/bench/codesign_protocol.py                # the CPU protocol (tiny4, 5 seeds, ~35 min)
    PYTHONPATH=. python scripts/bench/codesign_protocol.py --quick        # a 2-layer smoke version (minutes)

THE PROTOCOL (fixed before any result was seen; the numbers below are the defaults, --quick shrinks them
and the JSON records what ran):
- Model, data, target: the "tiny4" decoder of scripts/codesign_diagnosis.py (4 layers, d_model 64,
  MFA + MoE), the embedded byte-level corpus, XR-NPE energy of one decode step (batch 1, context 256).
- Space (every method searches the same one): the weight format of each layer in
  {bf16, fp8_e4m3@channel, posit(8,0)@channel, fp4_e2m1@channel, mxfp4, posit(4,1)@channel} (fp8 and fp4
  were added before the first complete run, when no method's result had been seen); activations, KV cache,
  FFN widths, embeddings and LM head are not searched (scenario defaults / float). Uniform arms: all six.
- Budgets: B1, B2, B3 = the energy of uniform Posit(8,0), MXFP4 and Posit(4,1) designs. A method's design
  at budget B is its best design (by its own search signal) with cost <= B.
- One shared pretraining (seed 0, `--pretrain-steps`, float32). Every design that is compared — uniform
  arms, every method's chosen designs — is retrained from those pretrained weights for the same
  `--retrain-steps` steps at `--finetune-lr`, with the design applied exactly,
  under `--seeds` paired seeds (seed s: the same data order for every design). Search signals never enter
  the comparison. Every retraining and every post-quantisation evaluation runs in ONE `codesign.DesignTrainer`
  (the design is an argument of the compiled step), so the protocol compiles a handful of functions, not one
  per design; finished retrainings are cached in --out (a rerun with the same settings continues).
- Methods and their tuning budgets (stated in the JSON):
  gradient path: `codesign.PathTrainer` over `--lams` ascending, `--path-steps` joint steps per lambda
    (the continuation path of `codesign.gradient_path`, on this space), hardened after each segment;
    signal: the path's post-quantisation loss of the hardened design at the path's weights;
  random search: `--trials` designs drawn uniformly (`codesign.random_candidate`); signal: post-training
    quantisation (PTQ) validation loss at the pretrained weights;
  Optuna TPE: `--trials` multi-objective (PTQ loss, log10 energy) trials, seed 0, 5 start-up trials;
  HAWQ-like: per-layer empirical-Fisher sensitivity sum_i F_ii (w_i - Q(w_i))^2 (F from `--fisher-batches`
    squared-gradient batches), bits lowered greedily by least sensitivity per energy saved until the budget
    holds; one design per budget, no tuning;
  practitioner's rule: first and last layer bf16 (embeddings and LM head are float anyway), the rest in
    the budget's low format; reported at its own cost (it may exceed the budget: then it says so).
- Statistics: per design, mean and sample std of the retrained loss over seeds. The uniform front at
  budget B: uniform arms' losses per seed, the lower envelope over cost, linearly interpolated in log10
  cost, evaluated AT B (the strict reading: the joint design must beat the front at the full budget).
  Paired difference per seed (competitor - joint), 95% paired bootstrap CI (10000 resamples, seed 0).
  "Beats" = mean difference > 2 x the pooled seed std sqrt((s_joint^2 + s_other^2) / 2) AND joint cost <= B.
  Goal: beats the front and both heuristics at >= 2 of the 3 budgets.
- Hypervolume in (mean retrained loss, log10 energy), reference fixed in advance from the uniform arms
  only: (max uniform mean loss + 0.05 nats, log10 of the uniform bf16 energy).

- Search speed (secondary; not the retrained comparison): wall time for the gradient path to reach the
  best black-box method's final hypervolume of the SEARCH SIGNALS, over `--search-seeds` search seeds,
  with and without the path's step compilation (random/TPE reuse an evaluation compiled earlier).

Options added after the protocol's first complete run (defaults = the protocol above): --path-order descending
walks the lambdas from the most penalised end; --path-patience N stops a lambda's segment once its hardened
design has not changed for N steps (`codesign.PathTrainer.run_segment`). The path's clock starts after its
trainer is built, as random / TPE's starts after their evaluator is.

Writes --out/STEM.json, STEM.md (table) and STEM.png (loss vs energy, seed std bars); STEM = --stem.
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

import nets
import hwcost
from codesign import (DesignSpace, DesignTrainer, JointConfig, TrainConfig, Trainer, cost_metric,
                      full_widths, hv_curve, hypervolume, make_target, speedup)
from nets import atomic_write_json

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import codesign_diagnosis as diag  # noqa: E402  (the tiny4 config and its step loop)
sys.path.insert(0, str(Path(__file__).resolve().parent))
from codesign_protocol_report import front_at, paired, plot, summarise, table  # noqa: E402,F401
from codesign_protocol_state import Deadline, OutOfTime, PretrainCache, RetrainCache  # noqa: E402
from codesign_protocol_methods import (fisher_sensitivity, gradient_path, hawq_greedy, pick,  # noqa: E402,F401
                                       practitioner_rule, random_search, tpe_search)

FORMATS = ("bf16", "fp8_e4m3@channel", "posit(8,0)@channel", "fp4_e2m1@channel", "mxfp4", "posit(4,1)@channel")
UNIFORM = (("BF16", "bf16"), ("FP8", "fp8_e4m3@channel"), ("Posit(8,0)", "posit(8,0)@channel"),
           ("FP4", "fp4_e2m1@channel"), ("MXFP4", "mxfp4"), ("Posit(4,1)", "posit(4,1)@channel"))
BUDGET_FORMATS = (("Posit(8,0)", "posit(8,0)@channel"), ("MXFP4", "mxfp4"), ("Posit(4,1)", "posit(4,1)@channel"))
QUICK = dict(name="tiny2-mfa-moe", d_model=32, n_layers=2, max_seq_len=32,
             attention={"n_heads": 2, "head_dim": 16, "q_rank": 16},
             ffn={"d_ff": 64, "n_experts": 2, "top_k": 1, "d_expert": 32})


class Pricing:
    """The model, the space and the cost of a design on `--target`'s `--metric` (no training)."""

    def __init__(self, a, cfg):
        self.a, self.cfg = a, cfg
        self.n = cfg.n_layers
        self.formats = tuple(a.formats)
        self.space = DesignSpace(formats=self.formats, kv_formats=(), act_formats=(), search_ffn_width=False)
        self.widths = [int(w) for w in full_widths(cfg)]
        self.target = make_target(a.target)
        self.scenario = self.joint_config(0.0).scenario()
        self._costs: dict[tuple[str, ...], float] = {}
        self._metric = jax.jit(lambda knobs: cost_metric(self.target.cost(hwcost.workload(cfg, self.scenario, knobs)),
                                                         a.metric))

    def joint_config(self, lam: float) -> JointConfig:
        return JointConfig(lam=float(lam), metric=self.a.metric, target=self.a.target, knob_lr=self.a.knob_lr,
                           scenario_batch=1, scenario_context=256)

    def design(self, formats: list[str]) -> dict[str, Any]:
        return {"formats": list(formats), "kv_formats": [], "act_formats": [], "ffn_widths": self.widths}

    def cost(self, formats: list[str]) -> float:
        """`design_cost(...)["metric_value"]`, through one compiled function of the design's bits and memoised: the
        HAWQ greedy prices ~70 designs a step, which took 60-195 s a budget eagerly on the H100 machine at 12 layers."""
        key = tuple(formats)
        if key not in self._costs:
            knobs = self.space.hard_workload_knobs(self.cfg, self.design(formats), self.scenario)
            self._costs[key] = float(self._metric(knobs))
        return self._costs[key]


class Bench(Pricing):
    """The shared pieces: pricing, pretrained weights, the PTQ evaluator and the retraining."""

    def __init__(self, a, model: str, log):
        self.a, self.log = a, log
        self.tc = self.train_config(model, a.retrain_steps, a.finetune_lr)
        super().__init__(a, self.tc.model_config())
        ptc = self.train_config(model, a.pretrain_steps, a.lr, pretraining=True)
        pre = Trainer(ptc)
        cache = PretrainCache(Path(a.state or a.out), {
            "model": self.cfg.to_json(), "corpus": a.corpus, "steps": a.pretrain_steps, "batch": a.batch,
            "seq_len": a.seq_len, "lr": a.lr, "warmup": ptc.warmup_steps, "eval_batches": a.eval_batches,
            "backend": jax.default_backend()})
        stored = cache.load(pre.params)  # shapes and tree only: no copy of the fresh weights to the host
        t = time.perf_counter()
        if stored is None:
            diag.train_steps(pre, a.pretrain_steps)
            self.init = jax.device_get(pre.params)
            self.pretrain_loss = pre.evaluate()
            cache.save(self.init, self.pretrain_loss)
        else:
            self.init, self.pretrain_loss = stored
            pre.params = jax.device_put(self.init, pre.rules.tree_shardings(self.init))
        self.pre = pre
        self.dt = DesignTrainer(self.tc, self.space, self.init)  # ONE compilation for every retrain and PTQ eval
        c = pre.corpus
        self.corpus = {"corpus": a.corpus, "train_sha256": c.train_sha256, "valid_sha256": c.valid_sha256,
                       "train_bytes": int(c.train.size), "valid_bytes": int(c.valid.size),
                       "packages": dict(c.packages)}
        log(f"corpus {a.corpus}: {c.train.size} train bytes, sha256 {c.train_sha256}")
        log(f"pretrained {a.pretrain_steps} steps ({'loaded from ' + str(cache.path) if stored else 'trained'} in "
            f"{time.perf_counter() - t:.0f}s): val loss {self.pretrain_loss:.4f}")

    def train_config(self, model: str, steps: int, lr: float, pretraining: bool = False) -> TrainConfig:
        a = self.a
        warmup = min(a.warmup, steps - 1) if pretraining and a.warmup is not None else min(10, steps // 10)
        return TrainConfig(model=model, steps=steps, batch=a.batch, seq_len=a.seq_len, lr=lr, warmup_steps=warmup,
                           eval_batches=a.eval_batches, seed=0, corpus=a.corpus)

    def ptq(self, formats: list[str], params: Any = None) -> float:
        return self.dt.loss_of(self.design(formats), params)

    def retrain(self, formats: list[str]) -> list[float]:
        """The comparison: `--seeds` paired retrainings of the design from the pretrained weights."""
        return [self.dt.train(self.design(formats), seed=seed) for seed in range(self.a.seeds)]


def searches(b: Bench, retrained: RetrainCache, skey: str) -> dict[str, Any]:
    """The searches' record under `skey` in the retrain cache, run first if absent: each search kept as it finishes
    (under "partial ...", so a report reads only whole records), and the Fisher sensitivities, which no target or
    metric enters, once for every arm of the state."""
    if skey in retrained.cache:
        return retrained.cache[skey]
    a, log = b.a, b.log
    part = retrained.cache.get("partial " + skey, {"timings": {}, "searched": {}})
    for name, method in (("gradient path", gradient_path), ("random", random_search), ("tpe", tpe_search)):
        if name in part["searched"]:
            continue
        a.deadline.check(a.search_need_s, f"the search: {name}")
        t = time.perf_counter()
        part["searched"][name] = method(b)
        part["timings"][name] = time.perf_counter() - t
        log(f"{name}: {len(part['searched'][name])} candidates in {part['timings'][name]:.1f}s")
        retrained.keep("partial " + skey, part)
    fkey = "fisher " + repr([a.fisher_batches, a.formats])
    if fkey not in retrained.cache:
        a.deadline.check(a.search_need_s, "the Fisher sensitivities")
        t = time.perf_counter()
        sens = fisher_sensitivity(b)
        retrained.keep(fkey, {"sens": sens.tolist(), "seconds": time.perf_counter() - t})
    else:
        log(f"Fisher sensitivities: reused from {retrained.path} (computed in {retrained.cache[fkey]['seconds']:.1f}s)")
    part["timings"]["hawq"] = retrained.cache[fkey]["seconds"]
    retrained.keep(skey, {**part, "sens": retrained.cache[fkey]["sens"]})
    return retrained.cache[skey]


def run(a, log) -> dict[str, Any]:
    t0 = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="codesign-protocol-"))
    if a.quick:
        model = str(work / "quick.json")
        Path(model).write_text(nets.zoo.default_config().replace(**QUICK).to_json())
    else:
        model = diag.model_spec(a.model, work)
    b = Bench(a, model, log)
    # every retraining is saved as it finishes: a rerun with the same settings continues where it stopped
    cache_path = Path(a.state or a.out) / ("protocol_retrain_cache" + ("_quick" if a.quick else "") + ".json")
    keys = ("model", "quick", "seeds", "pretrain_steps", "retrain_steps", "batch", "seq_len", "lr", "finetune_lr",
            "eval_batches") + (("corpus", "warmup") if a.corpus != "stdlib" or a.warmup is not None else ())
    # (corpus and warm-up enter the key only when not at their defaults, so caches made before they existed still match)
    retrained = RetrainCache(cache_path, repr({k: getattr(a, k) for k in keys}), a.deadline)
    retrained.keep("corpus", b.corpus)  # what the retrained losses were measured on

    def retrain_once(formats):
        return retrained.get(formats, b.retrain)
    uniform = []
    labels = dict((f, lab) for lab, f in UNIFORM)
    for fmt in a.formats:
        label = labels.get(fmt, fmt)
        formats = [fmt] * b.n
        uniform.append(summarise(label, formats, b.cost(formats), retrain_once(formats)))
        log(f"uniform {label}: {uniform[-1]['mean']:.4f} +- {uniform[-1]['std']:.4f}")
    budget_formats = tuple((labels.get(f, f), f) for f in a.budget_formats)
    budgets = {label: b.cost([fmt] * b.n) for label, fmt in budget_formats}
    reference = (max(u["mean"] for u in uniform) + 0.05, math.log10(uniform[0]["cost"]))  # before any method
    # the search signals' own reference (post-quantisation losses of the uniform designs), also fixed in advance
    signal_reference = (max(b.ptq(u["formats"]) for u in uniform) + 0.05, math.log10(uniform[0]["cost"]))
    # the searches, kept with the retrainings (a later call with the same settings reuses them)
    skey = "search " + repr([a.target, a.metric, a.lams, a.path_steps, a.path_order, a.path_patience,
                             a.path_min_steps, a.path_signal, a.trials, a.fisher_batches, a.formats, a.knob_lr])
    record = searches(b, retrained, skey)
    timings, searched, sens = record["timings"], record["searched"], np.asarray(record["sens"])
    rows = []
    for (label, fmt), (_, budget) in zip(budget_formats, budgets.items()):
        designs = {name: pick(rows_, budget) for name, rows_ in searched.items()}
        designs["hawq"] = {"formats": hawq_greedy(b, sens, budget)}
        designs["rule"] = {"formats": practitioner_rule(b, fmt)}
        at_budget = {}
        for name, d in designs.items():
            if d is None:
                at_budget[name] = None
                continue
            cost = b.cost(d["formats"])
            at_budget[name] = summarise(name, d["formats"], cost, retrain_once(d["formats"]),
                                        within_budget=bool(cost <= budget * (1 + 1e-9)))
            log(f"budget {label}: {name} {d['formats']} -> {at_budget[name]['mean']:.4f} +- {at_budget[name]['std']:.4f}")
        front = [front_at(uniform, budget, s) for s in range(a.seeds)]
        front_std = float(np.mean([u["std"] for u in uniform]))
        joint = at_budget["gradient path"]
        verdict = None
        if joint is not None:
            verdict = {"vs_uniform_front": paired(joint["losses"], front, front_std),
                       **{f"vs_{h}": paired(joint["losses"], at_budget[h]["losses"]) for h in ("hawq", "rule")}}
            verdict["beats_all"] = bool(joint["within_budget"] and all(v["beats"] for v in verdict.values()))
        rows.append({"budget": label, "budget_cost": budget, "uniform_front": front, "designs": at_budget,
                     "verdict": verdict})
    hv = {}
    for name in ("gradient path", "random", "tpe", "hawq", "rule"):
        pts = [(r["designs"][name]["mean"], math.log10(r["designs"][name]["cost"])) for r in rows
               if r["designs"][name] is not None]
        hv[name] = hypervolume(np.asarray(pts), reference) if pts else 0.0
    hv["uniform"] = hypervolume(np.asarray([(u["mean"], math.log10(u["cost"])) for u in uniform]), reference)
    # wall time to the same hypervolume of the SEARCH SIGNALS (not the retrained comparison), per search seed
    def speed(found: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
        compile_s = found["gradient path"][0].get("compile_s") or 0.0
        out = {}
        for label, minus in (("measured", 0.0), ("path_compile_excluded", compile_s)):
            curves = {name: hv_curve([{"val_loss": r["signal"], "cost": r["cost"],
                                       "t_s": r["t_s"] - (minus if name == "gradient path" else 0.0)}
                                      for r in rows_], signal_reference) for name, rows_ in found.items()}
            out[label] = {**speedup(curves, gradient="gradient path"), "curves": curves}
        out["path_compile_s"] = compile_s
        return out
    speed_runs = [speed(searched)]
    for seed in range(1, a.search_seeds):
        found = {name: fn(b, seed) for name, fn in (("gradient path", gradient_path), ("random", random_search),
                                                     ("tpe", tpe_search))}
        speed_runs.append(speed(found))
        log(f"search seed {seed}: speed-up {speed_runs[-1]['measured']['ratio']}")
    ratios = {k: [r[k]["ratio"] for r in speed_runs] for k in ("measured", "path_compile_excluded")}
    search_speed = {"per_seed": speed_runs, "reference": list(signal_reference),
                    **{f"ratio_{k}": {"values": v, "mean": float(np.mean([x for x in v if x is not None]))
                                      if any(x is not None for x in v) else None,
                                      "std": float(np.std([x for x in v if x is not None], ddof=1))
                                      if sum(x is not None for x in v) > 1 else None,
                                      "reached": sum(x is not None for x in v)} for k, v in ratios.items()},
                    "note": "hypervolume of each method's search signal (random/TPE: PTQ loss at the pretrained "
                            "weights; path: the hardened design's loss at the path's weights) in (loss, log10 "
                            "energy) against wall time, one reference fixed from the uniform designs' PTQ losses; "
                            "seed s: random/TPE sampler seed s, path batches from step s * SEED_STRIDE; random/TPE "
                            "reuse the evaluation compiled before the search, the path compiles its joint step "
                            "(measured with and without that compile)"}
    wins = sum(bool(r["verdict"] and r["verdict"]["beats_all"]) for r in rows)
    return {"protocol": "see the script's docstring", "reduced": bool(a.quick or a.reduced),
            "config": {k: v for k, v in vars(a).items() if k != "deadline"}, "formats": list(a.formats),
            "pretrain_val_loss": b.pretrain_loss, "corpus": b.corpus, "uniform": uniform, "budgets": rows,
            "tuning_budget": {"gradient path": f"{len(a.lams)} lambdas ({a.path_order}) x "
                              + (f"{a.path_steps} joint steps" if not a.path_patience else
                                 f"at most {a.path_steps} joint steps (stopped after {a.path_patience} steps "
                                 f"without a design change, {a.path_min_steps} at least)"),
                              "random": f"{a.trials} PTQ evaluations",
                              "tpe": f"{a.trials} PTQ evaluations" if searched["tpe"] else "not run (optuna not installed)",
                              "hawq": f"{a.fisher_batches} Fisher batches, greedy, no tuning",
                              "rule": "none"},
            "search_seconds": timings, "fisher_sensitivity": sens.tolist(), "hv_reference": list(reference),
            "hypervolume": hv, "search_speed": search_speed, "path_rows": searched["gradient path"], "goal_met": wins >= 2, "budgets_won": wins, "wall_s": time.perf_counter() - t0,
            "where": {"backend": jax.default_backend(), "host": platform.node(), "jax": jax.__version__}}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tiny4", help="tiny4, scale115m (12 layers, 115M), a zoo name or a JSON path")
    p.add_argument("--target", default="xrnpe", help="the hwcost target the cost is priced on (codesign.make_target)")
    p.add_argument("--metric", choices=("energy", "latency"), default="energy")
    p.add_argument("--corpus", default="stdlib", help="the training corpus (codesign.data.load_byte_corpus)")
    p.add_argument("--warmup", type=int, default=None,
                   help="the pretraining's warm-up steps (default, and every other run: min(10, steps/10))")
    p.add_argument("--state", default=None, help="folder of the pretrained weights and retrain cache (default --out)")
    p.add_argument("--search-need-s", type=float, default=0.0, help="with --deadline-s: seconds the searches need")
    p.add_argument("--deadline-s", type=float, default=0.0,
                   help="stop (saving what finished) before work that would not end within this many seconds")
    p.add_argument("--budget-formats", nargs="+", default=[f for _, f in BUDGET_FORMATS],
                   help="the budgets: costs of these uniform designs (the protocol's: posit(8,0), mxfp4, posit(4,1))")
    p.add_argument("--formats", nargs="+", default=list(FORMATS),
                   help="the space: per-layer weight formats (bf16 first; every one is also a uniform arm)")
    p.add_argument("--quick", action="store_true", help="2-layer model, tiny budgets (a smoke run, minutes)")
    p.add_argument("--reduced", action="store_true", help="mark the record as a reduced run (fewer seeds/steps)")
    p.add_argument("--seeds", type=int, default=None)
    p.add_argument("--pretrain-steps", type=int, default=None)
    p.add_argument("--retrain-steps", type=int, default=None)
    p.add_argument("--path-steps", type=int, default=None)
    p.add_argument("--lams", type=float, nargs="+", default=None)
    p.add_argument("--trials", type=int, default=None)
    p.add_argument("--fisher-batches", type=int, default=4)
    p.add_argument("--path-signal", choices=("loss", "damage"), default="loss",
                   help="loss (the protocol's): the hardened design's loss at the path's weights; damage: that loss "
                        "minus the bf16 loss at the same weights, plus the pretrained bf16 loss (removes the "
                        "advantage of later path points, which have trained longer)")
    p.add_argument("--path-order", choices=("ascending", "descending"), default="ascending",
                   help="the order the path walks --lams in (ascending: the protocol's; descending: from the most "
                        "penalised, cheapest end, as a regularisation path is usually computed)")
    p.add_argument("--path-patience", type=int, default=0,
                   help="stop a lambda's segment once its hardened design has not changed for this many consecutive "
                        "steps (0: the protocol's fixed --path-steps per lambda; --path-steps stays the maximum)")
    p.add_argument("--path-min-steps", type=int, default=1, help="with --path-patience: steps a segment runs at least")
    p.add_argument("--search-seeds", type=int, default=3, help="search repeats for the wall-time-to-hypervolume "
                   "speed-up (seed 0's designs are the ones retrained)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=None)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--finetune-lr", type=float, default=1e-3)
    p.add_argument("--knob-lr", type=float, default=0.1)
    p.add_argument("--eval-batches", type=int, default=4)
    p.add_argument("--out", default="results/codesign")
    p.add_argument("--stem", default="protocol_cpu", help="output file names: STEM.json / .md / .png")
    a = p.parse_args(argv)
    defaults = dict(seeds=(2, 5), pretrain_steps=(20, 150), retrain_steps=(8, 40), path_steps=(4, 16),
                    lams=([0.0, 0.1, 1.0], [0.0, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0]), trials=(6, 40), seq_len=(32, 64))
    for name, (quick, full) in defaults.items():
        if getattr(a, name) is None:
            setattr(a, name, quick if a.quick else full)
    if a.quick:
        a.eval_batches = min(a.eval_batches, 2)
    if a.formats[0] != "bf16":
        nets.fail("formats", a.formats, "must start with bf16 (the greedy heuristic starts from it)")
    for fmt in ("bf16",) + tuple(a.budget_formats):
        if fmt not in a.formats:
            nets.fail("formats", a.formats, f"must include {fmt} (a uniform arm or a budget)")
    if a.seeds < 2:
        nets.fail("seeds", a.seeds, "must be at least 2 (a seed spread needs two)")
    t0 = time.perf_counter()
    log = lambda msg: print(f"[{time.perf_counter() - t0:7.1f}s] protocol: {msg}", flush=True)  # noqa: E731
    a.deadline = Deadline(a.deadline_s)
    try:
        rec = run(a, log)
    except OutOfTime as e:
        log(f"stopped at the deadline: {e}; what finished is in {a.state or a.out}; rerun the same command")
        return {"stopped": str(e)}
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / ("protocol_quick" if a.quick else a.stem)
    atomic_write_json(stem.with_suffix(".json"), rec)
    stem.with_suffix(".md").write_text(table(rec) + "\n")
    plot(rec, stem.with_suffix(".png"))
    print(table(rec))
    return rec


if __name__ == "__main__":
    main()
