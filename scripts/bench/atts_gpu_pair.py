"""ATTS with a realistic draft/target pair, whole inside one time-limited GPU call: train, cost ratio, calibrate, evaluate.

    PYTHONPATH=. python3 scripts/bench/atts_gpu_pair.py --budget-s 540 --out $OUT/atts
    PYTHONPATH=. python3 scripts/bench/atts_gpu_pair.py --task chain --budget-s 530 --out $OUT/atts-chain
    PYTHONPATH=. python3 scripts/bench/atts_gpu_pair.py --tiny --budget-s 120 --out /tmp/atts-gpu-pair   # CPU check

A ~100M-parameter checkpoint cannot be brought back from a lent GPU, and one call lasts at most 600 s. Every
phase runs in this one process, each ending at a share of `--budget-s` counted from the start; or, with
`--state DIR` (an ignored folder, which a lent machine keeps between calls while it stays warm), over several
calls on one machine (`atts_pair_state.py`):

    PYTHONPATH=. python3 scripts/bench/atts_gpu_pair.py --task chain --state .atts-state/chain --stop-after calibration --budget-s 560 --out $OUT/a
    PYTHONPATH=. python3 scripts/bench/atts_gpu_pair.py --task chain --state .atts-state/chain --ms 4,8,32,64 --budget-s 580 --out $OUT/b
    PYTHONPATH=. python3 scripts/bench/atts_gpu_pair.py --task chain --state .atts-state/chain --skip-headline --ms 4,8,32,64 --budget-s 400 --out $OUT/c

the first trains, chooses, measures and calibrates (phases 1-3 up to the bank, half the budget for the target, a
third for the calibration), the second loads all that and spends its budget on the evaluation at m, then the
sweep as time allows, the third on the sweep and the latency regime. The phases:

1. train the target (`target_config("large")`, 106M params, bf16 compute) and the draft
   (`draft_config("large")`, 4.0M, 26x smaller) on the task (`--task`: arith, or chain: a running value
   through 2-12 one-line computations, `codesign.atts.ChainTask`) for their time shares
   (`TrainSpec.time_budget_s`: a wall-clock budget, compilation included; the steps done are recorded); the
   draft's shape is chosen before it trains (`--draft auto`: the first of `DRAFT_VARIANTS` whose decode call,
   measured untrained at the pipeline's rows, is >= 10x faster than the target's);
   on the chain task both train on every width (1-6 digit values), and right after the target's training
   the evaluation's difficulty is set (`--chain-level`; default auto: the level whose greedy exact-match
   accuracy on validation problems is `--chain-aim`, interpolated between the widths measured), and the
   target's greedy accuracy on the held-out test problems at that level is printed and saved (phase "level");
2. the per-call time of both models at the rows the pipeline runs (questions per batch x m): the
   target/draft ratio of a one-byte decode step (the issue asks >= 10x before anything else; a smaller
   ratio is reported and the run goes on) and of the target's scoring call;
3. a calibration bank on as many validation questions as the calibration share allows (chunks of
   `--batch-questions` questions x m), then `codesign.atts.bench`'s accuracy part on held-out test
   problems at m: target-only, ATTS (the calibrator chosen in advance: Mondrian with its per-turn
   banks), sync and draft-only at the first alpha, then ATTS and sync at the others; paired bootstrap
   intervals and per-turn takeover rates with SE; each run's wall time per question (the batched,
   serving regime; compilation apart). No run starts once the time left would not hold it;
4. with `--ms`, the accuracy runs again at each other m (target-only, ATTS at the first alpha, sync,
   draft-only; the same rows per batch, so `--batch-questions` x m / m' questions a batch), each m
   started only if two of its runs' estimated time is left (phase "sweep", saved after every run);
5. if time is left, bench's speed part at m (one question at a time: the latency regime).

Files under --out: atts_gpu_pair.json (rewritten atomically after every phase and run, "complete"
false until the end), atts_gpu_pair.txt (the tables), atts_gpu_pair.log (the progress lines) and
bank.npz (the calibration scores), runs.npz (per accuracy run, "<m>/<run>/levels" (questions x m x turns,
-1 not scored), "/correct" and, at the headline m, "/scores"; "test/n_steps" and, on the chain task,
"test/digits" of the held-out problems: what the cluster-robust SE and per-length breakdowns need;
rewritten atomically after every run).
"""

from __future__ import annotations

import time

START = time.perf_counter()   # the budget counts from here, before jax is imported

import argparse
import dataclasses
import statistics
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import nets
from nets import atomic_write, atomic_write_json
from codesign.atts import (DRAFT_VARIANTS, TASKS, TrainSpec, bank_settings, bench, chain_level_for, collect_bank,
                           draft_config, in_draft_band, joint_min_bank, pipeline_buf_len, row_forward, save_bank,
                           step_accuracy, target_config, task_for, train_model)
from codesign.training import compute_dtype, training_flops_per_token
from atts_pair_report import RunStore, summary, under_calibrated  # scripts/bench is on sys.path as a script
from atts_pair_state import PairState
from gpu_speed import timed_carrying_cache  # scripts/bench is on sys.path as a script

# shares of the budget at which each phase must end (counted from the start of the process)
TARGET_END, DRAFT_END, CALIBRATION_END = 0.42, 0.50, 0.62
# the same with --stop-after PHASE: that phase ends the call (a phase kept in --state is loaded, not rerun, so
# "draft" on a state holding the target gives the draft the whole call, and "calibration" a third of it or more)
STOP_AFTER_ENDS = {"target": (0.95, 1.0, 1.0), "draft": (0.50, 0.95, 1.0), "calibration": (0.50, 0.62, 1.0)}
EVAL_RESERVE = 0.12               # share of a training phase kept for its closing evaluations (one more compile)
MIN_SHARE = 0.04                  # the least share a training phase gets when an earlier one ran over
H100_BF16_PEAK = 989e12           # dense bf16 FLOP/s (datasheet)
PLANNED_MFU = (0.12, 0.29)        # measured training MFU on an H100: codesign-100m 12%, dense-300m 29% (results/gpu_speed)


def elapsed() -> float:
    return time.perf_counter() - START


class Run:
    """The report, its files and the log: every update rewrites the JSON atomically."""

    def __init__(self, out: Path, budget_s: float):
        self.out, self.budget_s = out, budget_s
        self.report = {"budget_s": budget_s, "device": str(jax.devices()[0]), "backend": jax.default_backend(),
                       "complete": False, "phases": {}}
        self.log_file = open(out / "atts_gpu_pair.log", "a", buffering=1)

    def log(self, msg: str) -> None:
        line = f"[{elapsed():6.1f} s] {msg}"
        print(line, flush=True)
        self.log_file.write(line + "\n")

    def phase(self, name: str, result: dict) -> None:
        self.report["phases"][name] = {**result, "ended_at_s": elapsed()}
        self.save()

    def save(self) -> None:
        self.report["elapsed_s"] = elapsed()
        atomic_write_json(self.out / "atts_gpu_pair.json", self.report)
        atomic_write(self.out / "atts_gpu_pair.txt", summary(self.report) + "\n")

    def until(self, share: float) -> float:
        """Seconds left until `share` of the budget."""
        return share * self.budget_s - elapsed()


def plan(args, task, target_cfg, spec_t: TrainSpec, ends: tuple[float, float, float]) -> dict:
    """The time plan: phase ends (`ends`: the target's, the draft's and the calibration's shares of the budget), and
    what the target's share buys on an H100 at the measured MFU range."""
    tokens = spec_t.batch * task.seq_len
    flops = training_flops_per_token(target_cfg, task.seq_len) * tokens
    step_ms = [flops / (H100_BF16_PEAK * mfu) * 1e3 for mfu in PLANNED_MFU]
    share_s = ends[0] * args.budget_s
    return {"target_end_s": share_s, "draft_end_s": ends[1] * args.budget_s,
            "calibration_end_s": ends[2] * args.budget_s, "evaluation_end_s": args.budget_s,
            "target_step_tflop": flops / 1e12, "target_step_ms_h100_at_mfu": dict(zip(map(str, PLANNED_MFU), step_ms)),
            "target_steps_h100_if_compile_30s": [int((share_s * (1 - EVAL_RESERVE) - 30) / (ms / 1e3))
                                                 for ms in step_ms[::-1]]}


def train(run: Run, role: str, cfg, task, spec: TrainSpec, end: float, **kw):
    """Train for the time left until `end` (a share of the budget; at least MIN_SHARE), less the evaluation's reserve."""
    phase_s = max(run.until(end), MIN_SHARE * run.budget_s)
    spec = dataclasses.replace(spec, time_budget_s=phase_s * (1 - EVAL_RESERVE))
    run.log(f"training the {role} ({cfg.name}, {spec.time_budget_s:.0f} s budget)")
    model, hist = train_model(cfg, task, spec, log=run.log, **kw)
    test = step_accuracy(model, task.dataset(spec.eval_n * 2, spec.seed + 7, "test"), batch=spec.eval_n)
    result = {"config": cfg.name, "params": nets.param_count(model), "spec": dataclasses.asdict(spec),
              "steps_done": hist[-1]["step"] if hist else 0, "history": hist, "test": test,
              "test_n": spec.eval_n * 2}
    run.phase(f"train_{role}", result)
    run.log(f"{role}: {result['params']:,} params, {result['steps_done']} steps, test step acc {test['step']:.4f}")
    return model, result


def choose_level(run: Run, target, task, args) -> tuple[object, dict]:
    """Chain task: the target's greedy accuracy at every width on validation problems, the evaluation level
    (`--chain-level`, or auto: `chain_level_for` at `--chain-aim`) and the target's greedy accuracy on the
    held-out test problems the evaluation will use (bench draws them with seed + 13)."""
    n = 64 if args.tiny else 256
    by_width = {w: step_accuracy(target, task.at_level(w).dataset(n, args.seed + 5, "valid"), batch=n)
                for w in task.widths}
    exact = {w: a["exact"] for w, a in by_width.items()}
    level = chain_level_for(exact, args.chain_aim) if args.chain_level == "auto" else float(args.chain_level)
    eval_task = task.at_level(level)
    test = step_accuracy(target, eval_task.dataset(args.n_accuracy, args.seed + 13, "test"), batch=min(n, 256))
    in_band = 0.4 <= test["exact"] <= 0.8
    result = {"valid_n_per_width": n, "by_width": {str(w): a for w, a in by_width.items()}, "aim": args.chain_aim,
              "chosen": args.chain_level, "level": level, "task": dataclasses.asdict(eval_task),
              "test_greedy": test, "test_n": args.n_accuracy, "greedy_exact_in_40_80": in_band}
    run.phase("level", result)
    run.log("target greedy exact-match by width (validation): "
            + ", ".join(f"{w}: {a:.3f}" for w, a in exact.items()))
    run.log(f"evaluation level {level:.3f} ({args.chain_level}); target greedy exact-match on the {args.n_accuracy} "
            f"held-out test problems {test['exact']:.3f}, step accuracy {test['step']:.4f}"
            + ("" if in_band else "  ** OUTSIDE the 40-80% band: set --chain-level **"))
    return eval_task, result


def sweep(run: Run, draft, target, task, args, common: dict, batch_s: float, compile_s: float, store: RunStore) -> None:
    """`--ms`: the accuracy runs at each other m, the same rows per batch; an m starts only if two runs fit."""
    rows = args.batch_questions * args.m
    run.report["sweep"] = {}
    for m in args.ms:
        if m == args.m:
            continue
        bq = max(1, rows // m)
        per_run = 1.5 * compile_s + 1.25 * -(-args.n_accuracy // bq) * batch_s
        if run.until(1.0) < 2 * per_run:
            run.report["sweep"][str(m)] = {"skipped": f"{per_run:.0f} s a run estimated, {run.until(1.0):.0f} s left"}
            run.log(f"sweep m={m}: skipped ({run.report['sweep'][str(m)]['skipped']})")
            run.save()
            continue
        run.log(f"sweep m={m}: {bq} questions a batch, {per_run:.0f} s a run estimated")

        def partial(rep, m=m):
            run.report["sweep"][str(m)] = {"bench": rep, "batch_questions": bq}
            run.save()
        bench(draft, target, task, n_accuracy=args.n_accuracy, parts=("accuracy",), min_turn_n=common["min_turn_n"],
              **{**common["bench"], "m_accuracy": m, "bank_m": args.m, "batch_questions": bq,
                 "deadline": START + args.budget_s - per_run}, save=partial, keep=store.keep(m, False))
    run.save()


def call_ms(model, rows: int, buf_len: int, widths: tuple[int, ...], reps: int) -> list[float]:
    """Per-call time (ms) of `model` at `rows` rows, every row at its own position (the pipeline's `row_forward`),
    on `width` new bytes for each of `widths` (1: a decode step); the cache donated and carried from call to call,
    as the pipeline's loop carries it."""
    gd, state = nnx.split(model)
    fn = jax.jit(lambda st, tok, cache, start: row_forward(gd, st, tok, cache, start), donate_argnums=2)
    start = jnp.full(rows, buf_len // 2, jnp.int32)
    return [timed_carrying_cache(lambda c, w=w: fn(state, jnp.ones((rows, w), jnp.int32), c, start),
                                 nets.init_cache(model, rows, buf_len), reps) * 1e3 for w in widths]


def choose_draft(run: Run, target, args, rows: int) -> str:
    """`--draft auto`: the first of `DRAFT_VARIANTS` (most capable first) whose decode call, untrained (a call's time
    does not depend on the weights), is at least 10x faster than the target's at the pipeline's rows; else the
    fastest. Measured before the draft trains, so the draft that trains is the one the issue's ratio admits."""
    if args.draft != "auto":
        return args.draft
    target_ms = call_ms(target, rows, args.buf_len, (1,), reps=5 if args.tiny else 20)[0]
    ratios = {}
    for variant in DRAFT_VARIANTS:
        cfg = draft_config("large", variant)
        model = nets.TransformerLM(cfg, rngs=nnx.Rngs(params=args.seed + 1), dtype=compute_dtype(args.dtype))
        ratios[variant] = target_ms / call_ms(model, rows, args.buf_len, (1,), reps=5 if args.tiny else 20)[0]
        run.log(f"draft choice: {variant} ({nets.param_count(model):,} params) decode ratio {ratios[variant]:.2f}x")
        if ratios[variant] >= 10.0:
            break
    chosen = next((v for v, r in ratios.items() if r >= 10.0), max(ratios, key=ratios.get))
    run.phase("draft_choice", {"rows": rows, "buf_len": args.buf_len, "target_decode_ms_untrained": target_ms,
                               "decode_ratio_untrained": ratios, "chosen": chosen})
    return chosen


def call_ratio(draft, target, rows: int, buf_len: int, width: int, reps: int) -> dict:
    """Per-call time of each model at `rows` rows: a one-byte decode step of both, and the target's scoring call
    of `width` bytes."""
    times = {"draft_decode_ms": call_ms(draft, rows, buf_len, (1,), reps)[0]}
    times["target_decode_ms"], times["target_score_ms"] = call_ms(target, rows, buf_len, (1, width), reps)
    ratio = times["target_decode_ms"] / times["draft_decode_ms"]
    return {"rows": rows, "buf_len": buf_len, "score_width": width, "reps": reps, **times, "decode_ratio": ratio,
            "score_over_draft_decode": times["target_score_ms"] / times["draft_decode_ms"],
            "meets_10x": ratio >= 10.0, "params_ratio": nets.param_count(target) / nets.param_count(draft)}


def calibrate(run: Run, draft, target, task, args, turns: dict, k_cal, end: float) -> tuple[np.ndarray, dict]:
    """Calibration scores of validation questions, `--batch-questions` at a time, until the calibration share
    is spent (a chunk is started only if the time measured for one still fits) or `--max-calibration`."""
    bq, m = args.batch_questions, args.m
    problems = list(task.dataset(args.max_calibration, args.seed + 11, "valid").problems)
    chunks, chunk_s, compile_s = [], [], 0.0
    while len(chunks) * bq < len(problems):
        one = min(chunk_s) if chunk_s else 0.0
        if chunks and run.until(end) < 1.2 * one:
            break
        t = time.perf_counter()
        i = len(chunks)
        chunks.append(collect_bank(draft, target, problems[i * bq:(i + 1) * bq], m=m, key=jax.random.fold_in(k_cal, i),
                                   batch_questions=bq, **turns))
        if i == 0:   # the first chunk compiles the program
            compile_s = time.perf_counter() - t
        else:
            chunk_s.append(time.perf_counter() - t)
    bank = np.concatenate(chunks)
    counts = np.isfinite(bank).sum((0, 1))
    result = {"questions": int(bank.shape[0]), "m": m, "chunks": len(chunks), "first_chunk_s": compile_s,
              "chunk_s_median": statistics.median(chunk_s) if chunk_s else None, "count_by_turn": counts.tolist(),
              "min_bank": {str(a): joint_min_bank(a, args.max_turns) for a in args.alphas}}
    run.phase("calibration", result)
    run.log(f"calibration: {bank.shape[0]} questions x {m}, scores by turn {counts.tolist()}")
    return bank, result


def parse_args():
    """The options, checked before anything runs, and the task they pick."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output folder (at most 4 files)")
    parser.add_argument("--budget-s", type=float, default=540.0, help="wall-clock seconds for everything")
    parser.add_argument("--tiny", action="store_true", help="tiny models and counts: a CPU check of the path")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--m", type=int, default=16, help="samples per question")
    parser.add_argument("--alphas", default="0.25,0.1", help="rejection levels; the first is the speed runs'")
    parser.add_argument("--n-accuracy", type=int, default=512, help="held-out test problems")
    parser.add_argument("--batch-questions", type=int, default=64, help="questions per pipeline batch (rows = this x m)")
    parser.add_argument("--max-calibration", type=int, default=2048, help="calibration questions at most")
    parser.add_argument("--max-turns", type=int, default=16)
    parser.add_argument("--buf-len", type=int, default=None,
                        help="context per slot (default: 256 on arith, else the task's longest example plus two chunks)")
    parser.add_argument("--task", default="arith", choices=TASKS, help="arith (3-12 digit addition) or chain "
                        "(a running value through 2-12 one-line computations, difficulty set after training)")
    parser.add_argument("--chain-level", default="auto",
                        help="chain task: the evaluation's difficulty, a value width in digits (1-6; fractional: a "
                             "mix of the two widths around it), or auto (the level at --chain-aim)")
    parser.add_argument("--chain-aim", type=float, default=0.6,
                        help="chain task, --chain-level auto: the target's greedy exact-match accuracy to aim at")
    parser.add_argument("--chain-steps", default=None,
                        help="chain task: MIN,MAX instructions per problem (default 2,12; tiny 2,6); MAX + 1 <= --max-turns")
    parser.add_argument("--ms", default=None,
                        help="comma-separated m values (e.g. 4,8,16,32,64): the accuracy runs again at each other m, "
                             "as time allows")
    parser.add_argument("--max-chunk", type=int, default=16)
    parser.add_argument("--dtype", default="auto", choices=("auto", "bfloat16", "float32"),
                        help="compute dtype of both models (auto: bfloat16 on a GPU, float32 on a CPU)")
    parser.add_argument("--draft", default="auto", choices=("auto", *DRAFT_VARIANTS),
                        help="the large draft's shape (codesign.atts.DRAFT_VARIANTS); auto: the first whose measured "
                             "decode call is >= 10x faster than the target's (tiny: always base)")
    parser.add_argument("--state", default=None,
                        help="folder keeping the trained pair, level, draft choice, cost ratio and calibration bank: "
                             "phases found there are loaded, not rerun (a later call on the same machine)")
    parser.add_argument("--stop-after", default=None, choices=tuple(STOP_AFTER_ENDS),
                        help="end after this phase (the shares stretched to the whole --budget-s); with --state, a "
                             "later call goes on from there")
    parser.add_argument("--draft-select", default="band", choices=("band", "last"),
                        help="which draft checkpoint is kept: band (the latest with a step error of 10-30%%, stopping "
                             "once it is under 20%%), or last (trained for its whole share, the best it gets)")
    parser.add_argument("--skip-headline", action="store_true",
                        help="with a --state that holds the calibration: skip the accuracy runs at --m (run "
                             "before), go on to the --ms sweep and the latency regime")
    args = parser.parse_args()
    if args.tiny and args.draft == "auto":
        args.draft = "base"
    if args.tiny and args.draft != "base":
        parser.error(f"--draft {args.draft}: --tiny has only the base draft")
    if args.stop_after and not args.state:
        parser.error("--stop-after: needs --state (else what the call made is lost)")
    if args.skip_headline and not args.state:
        parser.error("--skip-headline: needs --state holding a calibration")
    args.alphas = [float(a) for a in args.alphas.split(",")]
    try:
        args.ms = [int(m) for m in args.ms.split(",")] if args.ms else []
    except ValueError:
        parser.error(f"--ms {args.ms!r}: must be comma-separated integers")
    if any(m < 1 for m in args.ms):
        parser.error(f"--ms {args.ms}: every m must be >= 1")
    if not 0 < args.chain_aim < 1:
        parser.error(f"--chain-aim {args.chain_aim}: must lie in (0, 1)")
    if args.tiny:
        args.m, args.n_accuracy, args.batch_questions, args.max_calibration = 4, 16, 8, 64
        args.max_turns, args.max_chunk = 8, 12
        args.buf_len = args.buf_len or (96 if args.task == "arith" else None)
    size = "tiny" if args.tiny else "large"
    task = task_for(size, args.task)
    if args.task == "chain" and args.chain_steps:
        try:
            low, high = (int(v) for v in args.chain_steps.split(","))
            task = dataclasses.replace(task, min_steps=low, max_steps=high)
        except ValueError as err:
            parser.error(f"--chain-steps {args.chain_steps!r}: MIN,MAX with 1 <= MIN <= MAX ({err})")
    if args.task == "chain" and task.max_steps + 1 > args.max_turns:
        parser.error(f"--chain-steps: {task.max_steps} instructions and the answer need --max-turns >= {task.max_steps + 1}")
    args.buf_len = args.buf_len or (256 if args.task == "arith" else pipeline_buf_len(task, args.max_chunk))
    if args.task == "chain" and args.chain_level != "auto":   # a bad level fails now, not after training
        try:
            task.at_level(float(args.chain_level))
        except ValueError as err:
            parser.error(f"--chain-level {args.chain_level!r}: auto, or a width in [{task.min_digits}, "
                         f"{task.max_digits}] ({err})")
    return args, task


def stopped(run: Run, state, what: str) -> int:
    run.report["complete"] = True
    run.save()
    run.log(f"stopped after the {what}; the phases are kept in {state.path}")
    return 0


def main() -> int:
    args, task = parse_args()
    size = "tiny" if args.tiny else "large"
    target_cfg = target_config(size)
    # the chain task's problem space is large: a larger fixed training set (generated on the host, ~0.1 ms a problem)
    train_n = 60_000 if args.task == "chain" and not args.tiny else 20_000
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    run = Run(out, args.budget_s)
    try:
        state = PairState(args.state, args) if args.state else None
    except nets.InputError as err:
        raise SystemExit(f"error: {err}") from None
    if args.skip_headline and not (state and state.has("calibration")):
        raise SystemExit(f"--skip-headline: --state {args.state} holds no calibration yet")
    ends = STOP_AFTER_ENDS[args.stop_after] if args.stop_after else (TARGET_END, DRAFT_END, CALIBRATION_END)
    target_end, draft_end, calibration_end = ends
    spec_t = TrainSpec(steps=10**6, batch=16 if args.tiny else 64, lr=3e-3 if args.tiny else 1e-3, warmup_steps=100,
                       eval_every=10**6 if args.tiny else 500, eval_n=64 if args.tiny else 256, seed=args.seed,
                       time_budget_s=TARGET_END * args.budget_s, dtype=args.dtype, train_n=train_n)
    run.report.update(args=vars(args), task=dataclasses.asdict(task), plan=plan(args, task, target_cfg, spec_t, ends))
    p = run.report["plan"]
    run.log(f"device {run.report['device']}; time plan (s from the start): target trained until {p['target_end_s']:.0f}, "
            f"draft until {p['draft_end_s']:.0f}, cost ratio, calibration until {p['calibration_end_s']:.0f}, "
            f"evaluation until {p['evaluation_end_s']:.0f}; a target step is {p['target_step_tflop']:.2f} TFLOP: "
            + ", ".join(f"{ms:.1f} ms at MFU {mfu}" for mfu, ms in p["target_step_ms_h100_at_mfu"].items())
            + f" on an H100, so {p['target_steps_h100_if_compile_30s'][0]}-{p['target_steps_h100_if_compile_30s'][1]} "
              "steps if it compiles in 30 s")
    run.save()

    def phase(name: str, make, model=None):
        """A phase's model (if any) and report entry: loaded from --state if kept there, else made and kept."""
        if state and state.has(name):
            run.phase(name, state.entry(name))
            run.log(f"{name}: loaded from {state.path}")
            return state.model(name) if model else None, state.phases[name]
        made, entry = make()
        if name not in run.report["phases"]:
            run.phase(name, entry)
        if state:
            state.keep(name, run.report["phases"][name], made if model else None)
        return made, entry

    target, _ = phase("train_target", lambda: train(run, "target", target_cfg, task, spec_t, target_end,
                                                    stop_at_step_accuracy=0.997), model=True)
    if args.task == "chain":
        level = phase("level", lambda: (None, choose_level(run, target, task, args)[1]))[1]
        eval_task = task.at_level(level["level"])
    else:
        eval_task = task
    if args.stop_after == "target":
        return stopped(run, state, "target")
    rows = args.batch_questions * args.m
    choice = phase("draft_choice", lambda: (None, {"chosen": choose_draft(run, target, args, rows)}))[1]
    draft_cfg = draft_config(size, choice["chosen"])
    spec_d = dataclasses.replace(spec_t, lr=3e-3, eval_every=10**6 if args.tiny else 100, seed=args.seed + 1)
    select = in_draft_band if args.draft_select == "band" else None
    draft, _ = phase("train_draft", lambda: train(run, "draft", draft_cfg, task, spec_d, draft_end, select=select),
                     model=True)

    def measure_ratio():
        ratio = call_ratio(draft, target, rows, args.buf_len, args.max_chunk + 1, reps=5 if args.tiny else 20)
        run.phase("call_ratio", ratio)
        return None, ratio
    ratio = phase("call_ratio", measure_ratio)[1]
    run.log(f"per-call ratio target/draft at {rows} rows: {ratio['decode_ratio']:.2f}x "
            f"({'meets' if ratio['meets_10x'] else 'BELOW'} the 10x the issue requires; the run continues)")
    if args.stop_after == "draft":
        return stopped(run, state, "draft and the cost ratio")

    turns = dict(max_turns=args.max_turns, turn_end_prob=1.0, max_chunk=args.max_chunk, buf_len=args.buf_len)
    k_cal = jax.random.split(jax.random.key(args.seed), 3)[0]   # bench's calibration key

    def collect():
        bank, cal = calibrate(run, draft, target, eval_task, args, turns, k_cal, calibration_end)
        settings = bank_settings(draft, target, questions=cal["questions"], m=args.m, seed=args.seed,
                                 task=dataclasses.asdict(eval_task), **turns)
        save_bank(out / "bank.npz", bank, settings)
        if state:
            state.keep_bank(out / "bank.npz")
        return None, cal
    cal = phase("calibration", collect)[1]
    if state and not (out / "bank.npz").exists():
        state.bank_to(out / "bank.npz")
    if args.stop_after == "calibration":
        return stopped(run, state, "calibration")

    # a run starts only if one more fits: its compilation (the calibration's first chunk less a later one) and its
    # batches, each at most the calibration's or a target decode step per byte of the longest example
    n_batches = -(-args.n_accuracy // args.batch_questions)
    chunk = cal["chunk_s_median"] or cal["first_chunk_s"] / 2
    batch_s = max(chunk, task.seq_len * ratio["target_decode_ms"] / 1e3)
    # margins: an ATTS or sync program holds more calls than the calibration's, and compiles vary
    per_run = 1.5 * max(cal["first_chunk_s"] - chunk, 0.0) + 1.25 * n_batches * batch_s
    deadline = START + args.budget_s - per_run
    common = dict(n_calibration=cal["questions"], m_accuracy=args.m, alpha=args.alphas[0], max_turns=args.max_turns,
                  batch_questions=args.batch_questions, seed=args.seed, turn_end_prob=1.0, max_chunk=args.max_chunk,
                  buf_len=args.buf_len, bank_file=out / "bank.npz", calibrators=("mondrian",), deadline=deadline,
                  log=run.log)
    min_turn_n = 20 if args.tiny else 2000
    run.log(f"evaluation: runs start until {deadline - START:.0f} s (one run estimated at {per_run:.0f} s)")

    def partial(rep):
        run.report["evaluation_partial"] = {"bench": rep}
        run.save()
    store = RunStore(out / "runs.npz", eval_task.dataset(args.n_accuracy, args.seed + 13, "test").problems)
    if args.skip_headline:
        run.log(f"the accuracy runs at m = {args.m} skipped (--skip-headline)")
    else:
        rep = bench(draft, target, eval_task, n_accuracy=args.n_accuracy, parts=("accuracy",), min_turn_n=min_turn_n,
                    more_alphas=tuple(args.alphas[1:]), save=partial, keep=store.keep(args.m, True), **common)
        rep["min_turn_n"] = min_turn_n
        run.report.pop("evaluation_partial", None)
        run.phase("evaluation", {"bench": rep, "under_calibrated": under_calibrated(rep, cal["count_by_turn"]),
                                 "accuracy_by_chain_length": store.accuracy_by_length(args.m)})
    if args.ms:
        sweep(run, draft, target, eval_task, args, {"bench": common, "min_turn_n": min_turn_n}, batch_s,
              max(cal["first_chunk_s"] - chunk, 0.0), store)

    if run.until(1.0) > 2 * per_run:   # the latency regime: one question at a time, 3 compilations
        lat = bench(draft, target, eval_task, ms=(args.m,), n_speed=4 if args.tiny else 8, parts=("speed",),
                    **{**common, "deadline": START + args.budget_s - 2 * per_run})
        run.phase("latency", {"bench": lat})
    else:
        run.log("latency regime skipped: not enough time left")
    run.report["complete"] = True
    run.save()
    run.log("done\n" + summary(run.report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
