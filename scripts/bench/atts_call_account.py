"""Where each ATTS mode's time goes: every model call the compiled pipeline makes, counted on a CPU, priced at
the per-call times measured on a GPU, and compared with the wall times measured there.

    PYTHONPATH=. python scripts/bench/atts_call_account.py --out /tmp/call-account                    # tiny, ~2 min
    PYTHONPATH=. python scripts/bench/atts_call_account.py --geometries gpu,tiny --out results/atts/call_account   # ~12 min

1. A tiny draft/target pair (`target_config("tiny")`, `draft_config("tiny")`) trains for a few seconds on the chain
   task (2-12 instructions, 1-6 digit values: the GPU evaluation's task, so the samples have its chain lengths).
2. At each geometry (`--geometries`): "gpu", the GPU evaluation's batch (64 questions x m 16 = 1024 rows, the
   held-out test problems at the GPU run's level, max_turns 16, max_chunk 16, its buffer), and "tiny", the
   GPU script's `--tiny` settings (8 questions x m 4, max_turns 8, max_chunk 12, the tiny chain task), a
   calibration bank is collected, then target-only, draft-only, ATTS (Mondrian, per-turn banks) and sync at each
   alpha run with `PipelineConfig.count_rows`: every draft decode, target scoring and target decode call of the
   loop, by the row bucket it ran on (`row_buckets`). The prompts' prefill runs before the timed loop and is
   not counted.
3. Prediction per question = sum over kinds and buckets of calls x (the GPU's per-call time at the full rows)
   x (bucket rows / full rows), divided by the questions: a call's time is ASSUMED proportional to its rows
   (the GPU measured only the full 1024-row calls). Compared with the GPU's measured wall time per question
   (`--measured`, an `atts_gpu_pair.py` report: its `call_ratio` and `evaluation` phases).

The counts come from the tiny pair, not from the GPU's pair: the chain lengths are the task's, but how long
a sample's lines are and which chunks are taken over follow the tiny models (the report gives the bytes written and
chunks scored per sample beside the GPU run's). Writes call_account.json and call_account.txt under --out.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import numpy as np

import nets
from codesign.atts import (CALL_KINDS, ChainTask, PipelineConfig, TrainSpec, collect_bank, draft_config,
                           make_calibrator, pipeline_buf_len, row_buckets, run_batched, target_config, train_model)

RUNS = ("target_only", "draft_only", "atts@0.25", "sync@0.25", "atts@0.1", "sync@0.1")
# the GPU report's run names (bench's accuracy part) for each of ours
GPU_NAMES = {"target_only": "target_only", "draft_only": "draft_only", "atts@0.25": "atts_mondrian",
             "sync@0.25": "sync", "atts@0.1": "atts_mondrian@0.1", "sync@0.1": "sync@0.1"}
PER_CALL = {"draft_decode": "draft_decode_ms", "target_score": "target_score_ms", "target_decode": "target_decode_ms"}


def geometry(name: str, measured: dict) -> dict:
    """The batch, turn settings and problems of a geometry."""
    if name == "gpu":
        args = measured["args"]
        task = ChainTask(**{k: v for k, v in measured["phases"]["evaluation"]["bench"]["task"].items()
                            if k in ("min_steps", "max_steps", "min_digits", "max_digits", "level")})
        return dict(task=task, m=args["m"], questions=args["batch_questions"], batches=1, max_turns=args["max_turns"],
                    max_chunk=args["max_chunk"], buf_len=args["buf_len"], seed=args["seed"])
    task = ChainTask(2, 6, 1, 3)   # atts_gpu_pair.py --tiny --task chain
    return dict(task=task, m=4, questions=8, batches=2, max_turns=8, max_chunk=12,
                buf_len=pipeline_buf_len(task, 12), seed=0)


def count_calls(draft, target, geo: dict, log, save=lambda runs: None) -> dict:
    """Every run's call counts at one geometry (and its bytes and scored chunks per sample); `save(runs)` after
    each run."""
    task, m, qb = geo["task"], geo["m"], geo["questions"]
    turns = dict(max_turns=geo["max_turns"], max_chunk=geo["max_chunk"], buf_len=geo["buf_len"])
    n = qb * geo["batches"]
    problems = task.dataset(n, geo["seed"] + 13, "test").problems          # the GPU run's held-out problems
    cal_problems = task.dataset(n, geo["seed"] + 7, "valid").problems
    key = jax.random.key(geo["seed"])
    start = time.perf_counter()
    bank = collect_bank(draft, target, cal_problems, m=m, key=jax.random.fold_in(key, 1), batch_questions=qb, **turns)
    log(f"  calibration bank: {np.isfinite(bank).sum()} scores ({time.perf_counter() - start:.0f} s)")
    out = {}
    for run in RUNS:
        mode, _, alpha = run.partition("@")
        alpha = float(alpha or 0.25)
        cfg = PipelineConfig(mode="atts" if mode == "atts" else mode, m=m, alpha=alpha, count_rows=True, **turns)
        kw = {}
        if mode == "atts":
            cal, state = make_calibrator("mondrian", bank, alpha=alpha, max_turns=geo["max_turns"])
            kw = dict(calibrator=cal, cal_state=state)
        start = time.perf_counter()
        r = run_batched(draft, target, problems, cfg, key=jax.random.fold_in(key, 2), batch_questions=qb, **kw)
        scored = (r.levels >= 0).sum()
        out[run] = {"calls_by_rows": {k: {str(rows): c for rows, c in t.items()} for k, t in r.calls_by_rows.items()},
                    "counts": r.counts, "accuracy": r.accuracy, "scored_chunks": int(scored),
                    "takeover_rate": float((r.levels > 0).sum() / max(scored, 1)),
                    "bytes_per_sample": (r.counts["draft_tokens"] + r.counts["target_tokens"]) / (n * m),
                    "scored_chunks_per_sample": float(scored) / (n * m), "questions": n,
                    "n_steps_mean": float(np.mean([p.n_steps for p in problems])) if hasattr(problems[0], "n_steps")
                    else None}
        log(f"  {run}: {r.counts['ticks']} ticks, calls {r.calls_by_rows} ({time.perf_counter() - start:.0f} s)")
        save(out)
    return out


def predict(runs: dict, per_call: dict, full_rows: int) -> dict:
    """Predicted ms per question of each run: calls x per-call time at full rows x rows / full rows."""
    pred = {}
    for run, rec in runs.items():
        q = rec["questions"]
        parts = {}
        for kind in CALL_KINDS:
            for rows, calls in rec["calls_by_rows"][kind].items():
                parts[f"{kind}@{rows}"] = calls * per_call[kind] * int(rows) / full_rows / q
        flat = {kind: sum(rec["calls_by_rows"][kind].values()) * per_call[kind] / q for kind in CALL_KINDS}
        pred[run] = {"ms_per_question": sum(parts.values()), "parts_ms_per_question": parts,
                     "ms_per_question_all_calls_full_rows": sum(flat.values())}
    return pred


def floor_fit(runs: dict, per_call: dict, full_rows: int, measured: dict) -> dict:
    """A call's time as t_full x (c + (1 - c) x rows / full_rows): the floor share c that best fits the measured
    wall times (least squares of the log ratio, c on a 0.01 grid), on all runs and leaving each run out (its
    prediction then uses the c fitted on the others): a FIT to the GPU's times, not a measurement."""
    grid = np.linspace(0.0, 1.0, 101)

    def pred(run, c):
        rec = runs[run]
        return sum(calls * per_call[kind] * (c + (1 - c) * int(rows) / full_rows)
                   for kind in CALL_KINDS for rows, calls in rec["calls_by_rows"][kind].items()) / rec["questions"]

    def best(names):
        err = [sum(np.log(pred(r, c) / measured[r]) ** 2 for r in names) for c in grid]
        return float(grid[int(np.argmin(err))])

    names = [r for r in runs if r in measured]
    c_all = best(names)
    loo = {r: (lambda c: {"c": c, "ms_per_question": pred(r, c)})(best([o for o in names if o != r])) for r in names}
    return {"c_all": c_all, "ms_per_question_all": {r: pred(r, c_all) for r in names}, "leave_one_out": loo}


def table(report: dict) -> str:
    lines = []
    per_call = report["per_call_ms_measured"]
    lines.append(f"per-call times measured on the GPU at {report['full_rows']} rows (ms): "
                 + ", ".join(f"{k} {v:.2f}" for k, v in per_call.items()))
    for geo, body in report["geometries"].items():
        lines.append(f"\n## geometry {geo}: {body['rows']} rows, buckets {body['buckets']}")
        head = ("| run | ticks | " + " | ".join(f"{k} calls by rows" for k in CALL_KINDS)
                + " | per question: draft, score, target decode calls | per sample: bytes, chunks scored (GPU run) |")
        lines += [head, "|" + " --- |" * (len(CALL_KINDS) + 4)]
        for run, rec in body["runs"].items():
            q = rec["questions"]
            cells = [", ".join(f"{r}: {c}" for r, c in rec["calls_by_rows"][k].items() if c) or "0" for k in CALL_KINDS]
            per_q = ", ".join(f"{sum(rec['calls_by_rows'][k].values()) / q:.2f}" for k in CALL_KINDS)
            gpu = body.get("gpu_per_sample", {}).get(run)
            ours = f"{rec['bytes_per_sample']:.1f}, {rec['scored_chunks_per_sample']:.2f}"
            ours += f" ({gpu['bytes']:.1f}, {gpu['scored_chunks']:.2f})" if gpu else ""
            lines.append(f"| {run} | {rec['counts']['ticks']} | " + " | ".join(cells) + f" | {per_q} | {ours} |")
        if "prediction" in body:
            fit = body["floor_fit"]
            lines += ["", "| run | measured on the GPU (ms/question) | predicted, rows-scaled | predicted, every call at "
                      "full rows | fitted floor, leave-one-out (c) | largest parts of the rows-scaled prediction "
                      "(ms/question) |", "| --- | --- | --- | --- | --- | --- |"]
            for run, p in body["prediction"].items():
                top = sorted(p["parts_ms_per_question"].items(), key=lambda kv: -kv[1])[:3]
                meas, loo = body["measured_ms_per_question"].get(run), fit["leave_one_out"][run]
                lines.append(f"| {run} | {meas:.1f} | {p['ms_per_question']:.1f} | "
                             f"{p['ms_per_question_all_calls_full_rows']:.1f} | {loo['ms_per_question']:.1f} "
                             f"({loo['c']:.2f}) | " + ", ".join(f"{k} {v:.1f}" for k, v in top if v > 0) + " |")
            lines.append(f"\nfloor share fitted on all six runs: c = {fit['c_all']:.2f}")
    return "\n".join(lines) + "\n"


def finish(report: dict, out: Path, measured: dict, per_call: dict, full_rows: int, gpu_wall: dict) -> None:
    """The prediction, the fit and the GPU's per-sample figures of the gpu geometry; the files written."""
    body = report["geometries"].get("gpu")
    if body is not None:
        runs = body["runs"]
        body["prediction"] = predict(runs, per_call, full_rows)
        body["measured_ms_per_question"] = gpu_wall
        body["floor_fit"] = floor_fit(runs, per_call, full_rows, gpu_wall)
        acc = measured["phases"]["evaluation"]["bench"]["accuracy"]
        body["gpu_per_sample"] = {}
        for run, name in GPU_NAMES.items():   # bytes written (tokens/s x wall) and chunks scored, per sample
            rec = acc[name]
            samples = rec["questions"] * rec["m"]
            body["gpu_per_sample"][run] = {"bytes": rec["tokens_per_s"] * rec["wall_s"] / samples,
                                           "scored_chunks": sum(rec.get("rejection", {}).get("n_by_turn", [0])) / samples}
    nets.atomic_write(out / "call_account.json", json.dumps(report, indent=1, default=str))
    text = table(report)
    nets.atomic_write(out / "call_account.txt", text)
    print(text)


def recount(path: Path, out: Path, measured, per_call, full_rows, gpu_wall) -> int:
    report = json.loads(path.read_text())
    for body in report["geometries"].values():
        m = body["settings"]["m"]
        for rec in body["runs"].values():   # per-sample figures from the counters (files of an earlier version)
            n = rec["questions"] * m
            rec["bytes_per_sample"] = (rec["counts"]["draft_tokens"] + rec["counts"]["target_tokens"]) / n
            rec["scored_chunks_per_sample"] = rec["scored_chunks"] / n
            rec.pop("lines_per_sample_mean", None)
    report.update(per_call_ms_measured=per_call, full_rows=full_rows)
    finish(report, out, measured, per_call, full_rows, gpu_wall)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--measured", default="results/atts/gpu_pair_chain_state_h100/call_b/atts_gpu_pair.json",
                        help="the GPU's atts_gpu_pair.py report: per-call times and wall times per question")
    parser.add_argument("--geometries", default="tiny",
                        help="comma-separated: tiny (~1 min on 2 CPU cores), gpu (1024 rows: ~10 min, and the prediction)")
    parser.add_argument("--counts", default=None,
                        help="an earlier call_account.json: reuse its counts (no training, no runs), recompute the rest")
    parser.add_argument("--train-s", type=float, default=20.0, help="seconds to train the tiny target (draft: a third)")
    args = parser.parse_args()
    geos = args.geometries.split(",")
    if not set(geos) <= {"gpu", "tiny"}:
        parser.error(f"--geometries {args.geometries}: each must be gpu or tiny")
    t0 = time.perf_counter()
    log = lambda msg: print(f"[{time.perf_counter() - t0:5.0f} s] {msg}", flush=True)
    measured = json.loads(Path(args.measured).read_text())
    ratio = measured["phases"]["call_ratio"]
    per_call = {k: float(ratio[v]) for k, v in PER_CALL.items()}
    full_rows = int(ratio["rows"])
    gpu_wall = {run: 1e3 * measured["phases"]["evaluation"]["bench"]["accuracy"][name]["wall_s_per_question"]
                for run, name in GPU_NAMES.items()}
    if args.counts:
        return recount(Path(args.counts), Path(args.out), measured, per_call, full_rows, gpu_wall)
    train_task = ChainTask()   # 2-12 instructions, widths 1-6: every geometry's problems are in its range
    spec = TrainSpec(steps=10**6, batch=32, lr=3e-3, warmup_steps=50, eval_every=10**6, eval_n=64,
                     time_budget_s=args.train_s, train_n=4000)
    target, _ = train_model(target_config("tiny"), train_task, spec, log=None)
    draft, _ = train_model(draft_config("tiny"), train_task,
                           TrainSpec(**{**spec.__dict__, "time_budget_s": args.train_s / 3, "seed": 1}), log=None)
    log(f"tiny pair trained: target {nets.param_count(target)} params, draft {nets.param_count(draft)}")
    report = {"per_call_ms_measured": per_call, "full_rows": full_rows, "measured_file": args.measured,
              "assumption": "a call's time is proportional to its rows (the GPU measured full-row calls only)",
              "geometries": {}}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in geos:
        geo = geometry(name, measured)
        rows = geo["questions"] * geo["m"]
        log(f"geometry {name}: {geo['questions']} questions x m {geo['m']} = {rows} rows")
        body = {"rows": rows, "buckets": list(row_buckets(rows)), "runs": {},
                "settings": {k: (v if k != "task" else v.__dict__) for k, v in geo.items()}}
        report["geometries"][name] = body

        def save(runs):   # what finished survives an interruption
            body["runs"] = runs
            nets.atomic_write(out / "call_account.json", json.dumps(report, indent=1, default=str))
        count_calls(draft, target, geo, log, save)
    finish(report, out, measured, per_call, full_rows, gpu_wall)
    log("done")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
