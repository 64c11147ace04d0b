"""ATTS on a trained draft/target pair: accuracy vs target-only, takeover rate per turn, async vs sync speed.

    PYTHONPATH=. python scripts/bench/atts_speedup.py --ckpt runs/atts-models --out runs/atts-bench
    PYTHONPATH=. python scripts/bench/atts_speedup.py --tiny --out /tmp/atts-bench      # CPU check

Without --ckpt the pair is trained first (scripts/atts_train.py does the same, with checks).
Writes <out>/atts_speedup.json and <out>/atts_speedup.txt (the table that is also printed), rewritten
after every run, so a run cut by a time limit keeps what it measured ("complete": false).
The experiments are `codesign.atts.bench`; this file only parses arguments.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import jax

from nets import atomic_write, atomic_write_json
from codesign.atts import load_pair, train_pair, BENCH_PARTS, CALIBRATORS, TAKEOVERS, bench, format_bench


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", help="folder written by scripts/atts_train.py (else train first)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--tiny", action="store_true", help="tiny models and counts: a CPU check of the code path")
    parser.add_argument("--ms", default="4,8,16,32,64", help="samples per question for the speed runs")
    parser.add_argument("--n-accuracy", type=int, default=500)
    parser.add_argument("--m-accuracy", type=int, default=16)
    parser.add_argument("--n-speed", type=int, default=8)
    parser.add_argument("--n-calibration", type=int, default=200)
    parser.add_argument("--alpha", type=float, default=0.25)
    parser.add_argument("--takeover", default="regenerate", choices=TAKEOVERS)
    parser.add_argument("--max-turns", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--turn-end-prob", type=float, default=1.0,
                        help="chance a turn ends at a line end (1: one line per turn; 0.5: paragraphs, mean 2 lines)")
    parser.add_argument("--max-chunk", type=int, default=16, help="bytes per turn at most")
    parser.add_argument("--buf-len", type=int, default=256, help="context per sample (bytes)")
    parser.add_argument("--overlap", action="store_true",
                        help="overlapped ticks: the target's calls read the tick's start (PipelineConfig.overlap)")
    parser.add_argument("--devices", type=int, default=1, choices=(1, 2),
                        help="2: ATTS and sync with the draft on device 0, the target on device 1 (needs --overlap)")
    parser.add_argument("--tag", default="", help="suffix of the output files")
    parser.add_argument("--bank", default=None,
                        help="calibration bank .npz: read if collected with the same settings and models, "
                             "else collected and written (later invocations skip the ~1 min collection)")
    parser.add_argument("--calibrators", default=",".join(CALIBRATORS),
                        help=f"ATTS arms of the accuracy part, any of {', '.join(CALIBRATORS)}")
    parser.add_argument("--baselines", default="target_only,draft_only,sync",
                        help="accuracy-part baselines besides ATTS (target_only always runs: the paired bootstrap's base)")
    parser.add_argument("--slots", type=int, default=256, help="pool size of the serving runs")
    parser.add_argument("--serve-samples", type=int, default=2048, help="samples per serving run (questions = this / m)")
    parser.add_argument("--parts", default=",".join(BENCH_PARTS),
                        help=f"any of {', '.join(BENCH_PARTS)} (split a long run)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"ATTS bench on {', '.join(str(d) for d in jax.devices()[:args.devices])} ({jax.default_backend()})",
          flush=True)
    if args.tiny:
        args.ms, args.n_accuracy, args.m_accuracy, args.n_speed, args.n_calibration = "4,8", 16, 4, 2, 16
        args.max_turns, args.slots, args.serve_samples = 8, 16, 64
    if args.ckpt:
        pair = load_pair(args.ckpt)
    else:
        pair = train_pair("tiny" if args.tiny else "full", out=out / "models", seed=args.seed,
                          test_n=200 if args.tiny else 1000)
        print(json.dumps({k: pair.report[k] for k in ("target_ok", "draft_ok")}), flush=True)
    stem = "atts_speedup" if args.parts == ",".join(BENCH_PARTS) else "atts_speedup_" + args.parts.replace(",", "_")
    stem += f"_{args.tag}" if args.tag else ""
    models = pair.report.get("target", {}).get("test"), pair.report.get("draft", {}).get("test")

    def save(report: dict) -> None:   # after every run, through a temporary file and a rename
        atomic_write_json(out / f"{stem}.json", {**report, "models": models})
        atomic_write(out / f"{stem}.txt", format_bench(report) + "\n")

    report = bench(pair.draft, pair.target, pair.task, ms=tuple(int(m) for m in args.ms.split(",")),
                   n_accuracy=args.n_accuracy, m_accuracy=args.m_accuracy, n_speed=args.n_speed,
                   n_calibration=args.n_calibration, alpha=args.alpha, takeover=args.takeover,
                   max_turns=args.max_turns, seed=args.seed, min_turn_n=20 if args.tiny else 200,
                   parts=tuple(args.parts.split(",")), turn_end_prob=args.turn_end_prob,
                   max_chunk=args.max_chunk, buf_len=args.buf_len, pool_slots=args.slots,
                   serve_samples=args.serve_samples, overlap=args.overlap, devices=args.devices,
                   bank_file=args.bank, calibrators=tuple(args.calibrators.split(",")),
                  baselines=tuple(args.baselines.split(",")),
                   log=lambda msg: print(msg, flush=True), save=save)
    print(format_bench(report))
    print(f"wrote {out / (stem + '.json')} and {out / (stem + '.txt')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
