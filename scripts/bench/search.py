"""Gradient co-design against black-box search (random, TPE) by hypervolume over wall-clock time.

One run, one model, one pretrained network, one target, metric and
scenario for every method:
  1. pretrain the network alone (`sc.pretrain_steps`), shared by all methods (not timed);
  2. the gradient method, two ways over the same `--lams` and step budget per point (joint +
     recovery steps):
     "gradient": `codesign.sweep` (what `codesign run`/`sweep` do: independent points from
     the pretrained network, each compiled, checkpointed and exported), timed by
     `codesign.timed_sweep`;
     "gradient-path": `codesign.gradient_path`, one continuation path over ascending
     lambdas with warm starts and one compiled joint step (the search without the export);
  3. random search and multi-objective TPE (`codesign.random_search`, `codesign.tpe_search`), each candidate trained from the
     pretrained weights for the same steps + recovery_steps, each method given
     `--blackbox-factor` x the slower gradient variant's wall time (and at most `--trials` candidates);
  4. hypervolume in (val loss, log10 cost) against wall time with ONE common reference, the
     black-box methods' best final hypervolume, the time each method needs to reach it, and
     ratio = fastest black-box time / gradient time, per gradient variant (goal: >= 3); the
     headline `verdict` is the path's (`verdicts` has both). The same counted in training steps.
Writes results/search_<backend>.json, results/search_<backend>.png and prints a table.

CPU (tiny config, ~10 min on 2 cores):
  PYTHONPATH=. python scripts/bench/search.py --tiny
CPU (codesign-default, ~37 min on 2 cores; results/search_cpu.*):
  PYTHONPATH=. python scripts/bench/search.py --model codesign-default --pretrain-steps 150 --steps 40 \
      --recovery-steps 10 --lams 0 0.01 0.03 0.1 0.3 --blackbox-factor 2
GPU (codesign-default):
  PYTHONPATH=. python scripts/bench/search.py --model codesign-default --pretrain-steps 150 --steps 40 \
      --recovery-steps 10 --lams 0 0.01 0.03 0.1 0.3 --blackbox-factor 3
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import jax

from nets import atomic_write_json
from codesign import (Evaluator, common_reference, gradient_path, hv_curve, random_search, speedup, timed_sweep,
                      tpe_search, SweepConfig, Trainer, train)

GRADIENT = ("gradient", "gradient-path")
TINY = dict(name="tiny-mfa-moe", d_model=64, n_layers=2, max_seq_len=64,
            attention={"n_heads": 2, "head_dim": 32, "q_rank": 32},
            ffn={"d_ff": 128, "n_experts": 4, "top_k": 2, "d_expert": 32})  # tests/codesign/conftest.py's TINY


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="codesign-default", help="zoo name or ModelConfig JSON path")
    p.add_argument("--tiny", action="store_true", help="the tests' 2-layer tiny config, CPU-sized defaults")
    p.add_argument("--lams", type=float, nargs="+", default=None)
    p.add_argument("--pretrain-steps", type=int, default=None)
    p.add_argument("--steps", type=int, default=None, help="joint steps per gradient point")
    p.add_argument("--recovery-steps", type=int, default=None)
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--seq-len", type=int, default=None)
    p.add_argument("--metric", default="edap")
    p.add_argument("--target", default="xrnpe")
    p.add_argument("--blackbox-factor", type=float, default=None,
                   help="each black-box method's wall-time budget, in units of the gradient sweep's time")
    p.add_argument("--trials", type=int, default=200, help="at most this many candidates per black-box method")
    p.add_argument("--startup-trials", type=int, default=4, help="TPE's random start-up trials")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="results", help="folder for search_<backend>.json/.png")
    p.add_argument("--work-dir", default=None, help="sweep checkpoints (default: a temporary folder, removed)")
    a = p.parse_args(argv)
    small = a.tiny
    pick = lambda value, tiny, full: value if value is not None else (tiny if small else full)  # noqa: E731

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(a.work_dir or tempfile.mkdtemp(prefix="codesign-search-"))
    model = a.model
    if a.tiny:
        import nets
        model = str(work / "tiny.json")
        work.mkdir(parents=True, exist_ok=True)
        Path(model).write_text(nets.zoo.default_config().replace(**TINY).to_json())
    sc = SweepConfig(model=model, lams=tuple(pick(a.lams, (0.0, 0.05, 0.2), (0.0, 0.01, 0.03, 0.1, 0.3))),
                     metric=a.metric, target=a.target, hardware=(),
                     pretrain_steps=pick(a.pretrain_steps, 60, 150), steps=pick(a.steps, 16, 40),
                     recovery_steps=pick(a.recovery_steps, 4, 10), batch=pick(a.batch, 8, 16),
                     seq_len=pick(a.seq_len, 32, 64), eval_batches=2 if small else 4, seed=a.seed,
                     formats=("bf16", "fp8_e4m3", "fp4_e2m1"), knob_lr=0.05,  # the space its results were measured in
                     method="independent")  # the independent-point sweep; the path is gradient_path below
    factor = pick(a.blackbox_factor, 1.0, 3.0)
    where = f"{jax.default_backend()} ({jax.devices()[0].device_kind}, {jax.device_count()} device(s)), " \
            f"{platform.node()}, python {platform.python_version()}, jax {jax.__version__}"
    print(f"codesign search bench on {where}")
    t_all = time.perf_counter()

    # 1. shared pretraining, written where the sweep looks for it (it resumes at the last step)
    grad_dir = work / "gradient"
    ptc = sc.train_config(sc.pretrain_steps)
    init = jax.device_get(train(ptc, grad_dir / "pretrain", progress=False, trainer=Trainer(ptc)).params)

    # 2. the gradient method, twice: as the sweep (independent points, each exported) and as one path
    result, grad_rows = timed_sweep(sc, grad_dir, progress=False)
    path_rows = gradient_path(sc, init)
    grad_seconds = max(max(r["t_s"] for r in grad_rows), max(r["t_s"] for r in path_rows))
    budget_s = factor * grad_seconds
    print(f"gradient sweep: {len(grad_rows)} points in {max(r['t_s'] for r in grad_rows):.1f}s, path: "
          f"{len(path_rows)} points in {max(r['t_s'] for r in path_rows):.1f}s; black-box budget {budget_s:.1f}s each")

    # 3. the black-box methods, same evaluator budget per candidate
    evaluator = Evaluator(sc, init)
    rand_rows = random_search(evaluator, n_trials=a.trials, seconds=budget_s, seed=a.seed)
    evaluator.cache.clear()  # each method pays for its own evaluations
    tpe_rows = tpe_search(evaluator, n_trials=a.trials, seconds=budget_s, seed=a.seed,
                          n_startup_trials=a.startup_trials)

    # 4. hypervolume against time with one reference; each gradient variant judged against the black-box pair
    runs = {"gradient": grad_rows, "gradient-path": path_rows, "random": rand_rows, "tpe": tpe_rows}
    reference = common_reference(*runs.values())
    curves = {m: hv_curve(rows, reference) for m, rows in runs.items()}
    blackbox = ("random", "tpe")
    verdicts = {g: speedup({g: curves[g], **{m: curves[m] for m in blackbox}}, gradient=g) for g in GRADIENT}
    verdict = verdicts["gradient-path"]
    # the same comparison counted in training steps (compile and host overheads excluded)
    per_eval = sc.steps + sc.recovery_steps
    step_curves = {m: hv_curve([{**r, "t_s": (i + 1) * per_eval} for i, r in enumerate(sorted(rows, key=lambda r:
                                r["t_s"])) if not r.get("cached")], reference) for m, rows in runs.items()}
    step_verdicts = {g: speedup({g: step_curves[g], **{m: step_curves[m] for m in blackbox}}, gradient=g)
                     for g in GRADIENT}
    backend = jax.default_backend()
    record = {"where": where, "backend": backend, "sweep_config": {k: (list(v) if isinstance(v, tuple) else v)
                                                                   for k, v in vars(sc).items()},
              "blackbox_budget_s": budget_s, "blackbox_factor": factor, "reference": list(reference),
              "hypervolume_space": "(val_loss [nats/byte], log10 cost)", "curves": curves, "rows": runs,
              "verdict": verdict, "verdicts": verdicts, "step_curves": step_curves, "step_verdicts": step_verdicts,
              "goal_ratio": 3.0, "total_seconds": time.perf_counter() - t_all}
    json_path, png_path = out / f"search_{backend}.json", out / f"search_{backend}.png"
    atomic_write_json(json_path, json.loads(json.dumps(record, default=float)))
    _plot(curves, verdict, png_path, title=f"{Path(sc.model).stem}, {sc.metric} on {sc.target}, {backend}")
    print(_table(runs, curves, verdicts))
    for g, v in step_verdicts.items():
        r = v["ratio"]
        print(f"{g}, counted in training steps instead of seconds ({per_eval} per point / candidate): ratio "
              + (f"{r:.2f}x" if r is not None else f"n/a (reached {100 * (v['gradient_fraction'] or 0):.0f}%)"))
    print(f"wrote {json_path} and {png_path}; ran on {where} in {record['total_seconds']:.0f}s")
    if a.work_dir is None:
        shutil.rmtree(work, ignore_errors=True)
    return record


def _table(runs, curves, verdicts) -> str:
    target = next(iter(verdicts.values()))["target_hv"]
    lines = [f"{'method':<14}{'evals':>6}{'wall s':>9}{'final HV':>10}{'t to target s':>15}"]
    times = {m: t for v in verdicts.values() for m, t in v["time_to_target_s"].items()}
    for m, rows in runs.items():
        t = times[m]
        lines.append(f"{m:<14}{len(rows):>6}{curves[m][-1][0]:>9.1f}{curves[m][-1][1]:>10.4f}"
                     f"{'never' if t is None else f'{t:.1f}':>15}")
    lines.append(f"target HV (best black-box final) {target:.4f}")
    for g, v in verdicts.items():
        ratio = v["ratio"]
        lines.append(f"speed ratio black-box/{g} = " + (f"{ratio:.2f}x" if ratio is not None else
                     f"n/a ({g} reached {100 * (v['gradient_fraction'] or 0):.0f}% of it)") + " (goal >= 3x)")
    return "\n".join(lines)


def _plot(curves, verdict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for m, curve in curves.items():
        ts = [0.0] + [t for t, _ in curve]
        hv = [0.0] + [h for _, h in curve]
        ax.step(ts, hv, where="post", label=m, marker="o", markersize=3)
    ax.axhline(verdict["target_hv"], color="0.5", ls="--", lw=1, label="best black-box final HV")
    ax.set_xlabel("wall-clock time after shared pretraining (s)")
    ax.set_ylabel("hypervolume (val loss x log10 cost)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":
    main(sys.argv[1:])
