"""`codesign atts calibrate|run|bench`: conformal asynchronous test-time scaling (arXiv 2509.15148).

Thin wrappers over `codesign.atts._pipeline` and `codesign.atts._models`; a pair of models comes
from `scripts/atts_train.py --out DIR` (or `codesign atts bench` trains one when --ckpt is absent).
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np
import typer

from codesign.cli._options import json_option, out_dir, out_option, parse_list, seed_option

atts_app = typer.Typer(name="atts", help="ATTS: a draft model writes, a target model takes over where a conformal "
                                        "test says the draft's chunk is unlikely.", no_args_is_help=True)


def _load(ckpt: str):
    from codesign.atts import load_pair

    if not Path(ckpt, "target", "config.json").exists():
        raise ValueError(f"ckpt={ckpt!r}: must be a folder written by scripts/atts_train.py (target/, draft/)")
    return load_pair(ckpt)


def _turn_options(turn_end_prob: float, max_chunk: int, buf_len: int, overlap: bool) -> dict:
    return dict(turn_end_prob=turn_end_prob, max_chunk=max_chunk, buf_len=buf_len, overlap=overlap)


TURN_END_HELP = "Chance a turn ends at a line end (1: one line per turn; 0.5: paragraphs of 2 lines on average)."
OVERLAP_HELP = "Overlapped ticks: the target's calls read the tick's start, so they do not wait for the draft's."
DEVICES_HELP = "2: the draft on device 0 and the target on device 1 (needs --overlap; ATTS and sync)."


def _rates(levels) -> list:
    scored = levels >= 0
    n = scored.sum((0, 1))
    return [None if k == 0 else float(((levels[:, :, t] > 0) & scored[:, :, t]).sum() / k) for t, k in enumerate(n)]


@atts_app.command("calibrate")
def calibrate(
    ckpt: str = typer.Option(..., help="Folder with draft/ and target/ (scripts/atts_train.py --out)."),
    out: Path = out_option("the calibration scores (npz, key 'scores'; default: runs/atts-calibrate-*/bank.npz)"),
    n: int = typer.Option(64, help="Validation problems."),
    m: int = typer.Option(8, help="Draft samples per problem."),
    max_turns: int = typer.Option(16, help="Turns (lines) per sample."),
    turn_end_prob: float = typer.Option(1.0, help=TURN_END_HELP),
    max_chunk: int = typer.Option(16, help="Bytes per turn at most."),
    buf_len: int = typer.Option(256, help="Context per sample (bytes)."),
    seed: int = seed_option(),
    as_json: bool = json_option(),
) -> None:
    """Collect a calibration bank: the target's mean NLL (nats/byte) of every draft chunk."""
    from codesign.atts import PipelineConfig, bank_settings, collect_bank, save_bank

    out = Path(out) if out else out_dir(None, "atts-calibrate") / "bank.npz"
    turns = _turn_options(turn_end_prob, max_chunk, buf_len, False)
    PipelineConfig(mode="calibrate", m=m, max_turns=max_turns, **turns)   # bad settings fail before loading
    pair = _load(ckpt)
    problems = list(pair.task.dataset(n, seed, "valid").problems)
    from codesign._lock import output_lock
    from codesign._phase import phase

    with output_lock(out.parent, f".{out.name}.lock"):  # one writer of this bank at a time
        with phase("generate"):
            bank = collect_bank(pair.draft, pair.target, problems, m=m, max_turns=max_turns,
                                key=jax.random.key(seed), **turns)
        with phase("file"):
            save_bank(out, bank, bank_settings(pair.draft, pair.target, max_turns=max_turns,
                                               turn_end_prob=turn_end_prob, max_chunk=max_chunk, buf_len=buf_len))
    per_turn = [{"turn": t, "n": int(np.isfinite(bank[:, :, t]).sum()),
                 "median": float(np.nanmedian(bank[:, :, t])) if np.isfinite(bank[:, :, t]).any() else None,
                 "q90": float(np.nanpercentile(bank[:, :, t], 90)) if np.isfinite(bank[:, :, t]).any() else None}
                for t in range(bank.shape[2])]
    if as_json:
        print(json.dumps({"out": str(out), "device": str(jax.devices()[0]), "shape": list(bank.shape),
                          "per_turn": per_turn}, indent=2))
        return
    print(f"calibration bank {bank.shape} (questions, m, turns) on {jax.devices()[0]} -> {out}")
    print(f"{'turn':>4} {'n':>6} {'median NLL':>10} {'q90 NLL':>8}")
    for r in per_turn:
        if r["n"]:
            print(f"{r['turn']:>4} {r['n']:>6} {r['median']:>10.4f} {r['q90']:>8.4f}")


@atts_app.command("run")
def run(
    ckpt: str = typer.Option(..., help="Folder with draft/ and target/ (scripts/atts_train.py --out)."),
    mode: str = typer.Option("atts", help="atts, sync, target_only, draft_only."),
    calibrator: str = typer.Option("mondrian", help="static, window, mondrian, pooled or aci (mode atts)."),
    bank: str = typer.Option("", help="Calibration npz from `codesign atts calibrate` (else collected now)."),
    takeover: str = typer.Option("regenerate", help="regenerate, append or ordinal."),
    alpha: float = typer.Option(0.25, help="Rejection level in (0, 1); budget form alpha = B/m."),
    n: int = typer.Option(32, help="Held-out test problems."),
    m: int = typer.Option(8, help="Samples per problem."),
    max_turns: int = typer.Option(16, help="Turns (lines) per sample."),
    turn_end_prob: float = typer.Option(1.0, help=TURN_END_HELP),
    max_chunk: int = typer.Option(16, help="Bytes per turn at most."),
    buf_len: int = typer.Option(256, help="Context per sample (bytes)."),
    overlap: bool = typer.Option(False, "--overlap", help=OVERLAP_HELP),
    devices: int = typer.Option(1, help=DEVICES_HELP),
    slots: int = typer.Option(0, help="Pool size (a multiple of m): freed slots admit waiting samples; "
                                      "0: one slot per sample, 128 questions at a time."),
    seed: int = seed_option(),
    as_json: bool = json_option(),
) -> None:
    """Solve test problems with the pipeline; accuracy, takeover rate per turn and timing."""
    from codesign.atts import (PipelineConfig, bank_settings, collect_bank, load_bank, make_calibrator, run_batched,
                               run_pipeline)

    turns = _turn_options(turn_end_prob, max_chunk, buf_len, overlap)
    cfg = PipelineConfig(mode=mode, takeover=takeover, alpha=alpha, m=m, max_turns=max_turns,
                         slots=slots or None, devices=devices, **turns)
    pair = _load(ckpt)
    cal = state = None
    if mode == "atts":
        if bank:   # refused if collected with other turns or another pair
            scores = load_bank(bank, bank_settings(pair.draft, pair.target, max_turns=max_turns,
                                                   turn_end_prob=turn_end_prob, max_chunk=max_chunk, buf_len=buf_len))
        else:
            scores = collect_bank(pair.draft, pair.target, list(pair.task.dataset(64, seed, "valid").problems), m=m,
                                  max_turns=max_turns, key=jax.random.key(seed + 1), **turns)
        cal, state = make_calibrator(calibrator, scores, alpha=alpha, max_turns=max_turns)
    problems = list(pair.task.dataset(n, seed, "test").problems)
    run_fn = run_pipeline if slots else run_batched   # a pool serves every question in one run
    result = run_fn(pair.draft, pair.target, problems, cfg, key=jax.random.key(seed), calibrator=cal, cal_state=state)
    summary = {**result.summary(), "rejection_by_turn": _rates(result.levels), "device": str(jax.devices()[0])}
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    print(f"{mode} ({calibrator if mode == 'atts' else '-'}, {takeover}, alpha {alpha}) on {n} test problems x m={m} "
          f"on {summary['device']}")
    print(f"accuracy {summary['accuracy']:.4f}  takeover rate {summary['takeover_rate']:.3f}  "
          f"wall {summary['wall_s']:.3f} s ({summary['wall_s_per_question'] * 1e3:.2f} ms/question)  "
          f"{summary['tokens_per_s']:.0f} tokens/s  barrier wait {summary['barrier_wait_fraction']:.1%}")
    print(f"mean latency per question {summary['latency_s_mean'] * 1e3:.2f} ms  slots free "
          f"{summary['idle_slot_fraction']:.1%}  ticks {summary['ticks']}")
    rates = " ".join("-" if r is None else f"{r:.3f}" for r in summary["rejection_by_turn"])
    print(f"takeover rate by turn: {rates}")


@atts_app.command("bench")
def bench_cmd(
    ckpt: str = typer.Option("", help="Folder with draft/ and target/; empty: train a pair first."),
    size: str = typer.Option("full", help="full or tiny (models, task and counts when training)."),
    out: Path = out_option("the report and any trained models (default: a fresh runs/atts-bench-* folder)"),
    ms: str = typer.Option("4,8,16,32,64", help="Samples per question for the speed runs."),
    n_accuracy: int = typer.Option(500, help="Held-out test problems for accuracy."),
    n_speed: int = typer.Option(8, help="Questions per m for the speed runs."),
    alpha: float = typer.Option(0.25, help="Rejection level in (0, 1)."),
    turn_end_prob: float = typer.Option(1.0, help=TURN_END_HELP),
    max_chunk: int = typer.Option(16, help="Bytes per turn at most."),
    buf_len: int = typer.Option(256, help="Context per sample (bytes)."),
    overlap: bool = typer.Option(False, "--overlap", help=OVERLAP_HELP),
    devices: int = typer.Option(1, help=DEVICES_HELP),
    slots: int = typer.Option(256, help="Pool size of the serving runs."),
    serve_samples: int = typer.Option(2048, help="Samples per serving run (questions = this / m)."),
    parts: str = typer.Option("accuracy,speed,serve", help="Any of accuracy, speed, serve."),
    bank: str = typer.Option("", help="Calibration bank .npz: read if collected with the same settings and "
                                      "models, else collected and written there."),
    seed: int = seed_option(),
    as_json: bool = json_option(),
) -> None:
    """Accuracy vs target-only, takeover rate per turn per calibrator, async vs sync speed and throughput."""
    from codesign.atts import BENCH_PARTS, bench, format_bench, train_pair
    from nets import atomic_write_json

    ms_list = parse_list(ms, "ms", int)
    parts_list = parse_list(parts, "parts", choices=BENCH_PARTS)
    out = out_dir(out, "atts-bench")
    pair = _load(ckpt) if ckpt else train_pair(size, out=out / "models", seed=seed, log=None)
    out.mkdir(parents=True, exist_ok=True)
    report = bench(pair.draft, pair.target, pair.task, ms=ms_list,
                   n_accuracy=n_accuracy, n_speed=n_speed, alpha=alpha, seed=seed, log=None,
                   parts=parts_list, pool_slots=slots, serve_samples=serve_samples,
                   devices=devices, bank_file=bank or None,
                   save=lambda r: atomic_write_json(out / "atts_bench.json", r),
                   **_turn_options(turn_end_prob, max_chunk, buf_len, overlap))
    print(json.dumps(report, indent=2) if as_json else format_bench(report))


def register(app: typer.Typer) -> None:
    app.add_typer(atts_app, name="atts")
