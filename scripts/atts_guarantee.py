"""Full-size check of the ATTS conformal guarantee, of the calibrators under drift, and of the per-turn rate.

    python scripts/atts_guarantee.py [--out-dir runs/atts_guarantee] [--n-splits 10000] [--parts guarantee,drift,turns]

Writes guarantee.json (every row + the drift run + the per-turn runs), guarantee_table.txt (the table
printed here) and, with the guarantee and drift parts, guarantee.png (rate error in standard errors per
cell; per-turn rejection rate of each calibrator on a drifting stream). All numbers come from
`codesign.atts.guarantee_experiment`, `codesign.atts.drift_experiment` and
`codesign.atts.turn_rate_experiment` (turns: one calibration, `--turn-test` test chunks per turn, banks
thinning from 6400 scores at turn 0 to 14 at turn 12; exchangeable scores, and a drift of `--turn-drift`
in log-score per turn over `--turn-splits` bank draws).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from nets import atomic_write, atomic_write_json
from codesign.atts import drift_experiment, guarantee_experiment, turn_rate_experiment

PARTS = ("guarantee", "drift", "turns")


def _fmt(x, spec):
    width = spec.split(".")[0]
    return format("-", f">{width}") if x is None else format(x, spec)


def format_turns(turns: dict) -> str:
    """The per-turn rate of each calibrator (one line per calibrator and alpha) with its SE."""
    lines = []
    for label, run in turns.items():
        lines += ["", f"Per-turn rate ({label}): calibration scores by turn {run['calibration_counts']}, "
                      f"{run['n_test']} test chunks per turn, {run['n_splits']} bank draw(s), "
                      f"drift {run['drift_per_turn']} per turn; beyond = turns with |rate - alpha| - 0.02 > 2 SE",
                  f"{'calibrator':<10}{'alpha':>6}{'beyond':>7}{'max|dev|':>9}  rate by turn (SE)"]
        for r in run["rows"]:
            cells = " ".join(f"{x:.3f}" for x in r["rate_by_turn"])
            lines.append(f"{r['calibrator']:<10}{r['alpha']:>6.2f}{r['turns_beyond']:>7}{r['max_abs_dev']:>9.4f}  "
                         f"{cells}  (SE {min(r['se_by_turn']):.4f}-{max(r['se_by_turn']):.4f})")
            if "pool_size_by_turn" in r:
                lines.append(f"{'':<10}{'':>6}{'':>7}{'':>9}  min_bank {r['min_bank']}, pool sizes "
                             f"{r['pool_size_by_turn']}, TV bound max {max(r['tv_bound_by_turn']):.4f}")
    return "\n".join(lines)


def format_table(rows: list[dict], drift: dict) -> str:
    head = (f"{'dist':<12}{'N':>6}{'alpha':>7} {'kind':<13}{'rate':>8}{'exact':>8}{'z(SE)':>7}"
            f"{'KS p':>7}{'KS p MC':>8}{'KS p Binom':>11}")
    lines = [f"Conformal guarantee: {rows[0]['n_splits']} splits x {rows[0]['n_test']} test "
             "scores per split; exact = alpha (randomised) or tie-aware floor rate "
             "(unrandomised); KS against the exact count law (BetaBinomial etc.), and against "
             "Binomial(n_test, exact) which ignores the bank's randomness", head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['distribution']:<12}{r['bank_size']:>6}{r['alpha']:>7.2f} {r['kind']:<13}"
                     f"{r['mean_rate']:>8.4f}{r['expected_rate']:>8.4f}{r['z']:>7.2f}"
                     f"{_fmt(r['ks_p'], '7.3f')}{_fmt(r['ks_p_mc'], '8.3f')}{r['ks_p_binomial']:>11.3g}")
    n_z = sum(abs(r["z"]) > 3 for r in rows)
    n_ks = sum(r["ks_p"] is not None and r["ks_p"] <= 0.01 for r in rows)
    lines.append(f"cells with |z| > 3: {n_z} of {len(rows)}; KS p <= 0.01: {n_ks} of "
                 f"{sum(r['ks_p'] is not None for r in rows)}")
    lines += ["", f"Drift: alpha={drift['alpha']}, {drift['n_turns']} turns, "
              f"{drift['scores_per_turn']} scores per turn, ACI bound on the long-run error "
              f"{drift['aci_bound']:.4f}",
              f"{'calibrator':<26}{'overall':>8}{'max|turn-a|':>12}  per-turn rate"]
    for name, c in drift["calibrators"].items():
        lines.append(f"{name:<26}{c['overall_rate']:>8.4f}{c['max_turn_deviation']:>12.4f}  "
                     + " ".join(f"{x:.3f}" for x in c["per_turn_rate"]))
    return "\n".join(lines)


def plot(rows: list[dict], drift: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_z, ax_d) = plt.subplots(1, 2, figsize=(12, 4.5), dpi=120)
    labels = [f"{r['distribution'][:3]} N={r['bank_size']} a={r['alpha']} {r['kind'][:4]}" for r in rows]
    colors = ["C0" if r["kind"] == "randomized" else "C1" for r in rows]
    ax_z.bar(range(len(rows)), [r["z"] for r in rows], color=colors)
    ax_z.axhline(3, c="k", ls="--", lw=0.8)
    ax_z.axhline(-3, c="k", ls="--", lw=0.8)
    ax_z.set_xticks(range(len(rows)), labels, rotation=90, fontsize=5)
    ax_z.set_ylabel("(observed - exact rate) / std. error")
    ax_z.set_title("rejection rate vs exact value (blue: randomised, orange: not)")
    for name, c in drift["calibrators"].items():
        ax_d.plot(c["per_turn_rate"], "-o", label=name)
    ax_d.axhline(drift["alpha"], c="k", ls="--", lw=0.8, label="alpha")
    ax_d.set_xlabel("turn")
    ax_d.set_ylabel("rejection rate")
    ax_d.set_title("per-turn rejection rate on a drifting stream")
    ax_d.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=Path("runs/atts_guarantee"))
    parser.add_argument("--n-splits", type=int, default=10000)
    parser.add_argument("--n-test", type=int, default=100)
    parser.add_argument("--alphas", type=float, nargs="+", default=[0.1, 0.25, 0.4])
    parser.add_argument("--bank-sizes", type=int, nargs="+", default=[16, 64, 1600])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--parts", default=",".join(PARTS), help=f"any of {', '.join(PARTS)}")
    parser.add_argument("--turn-test", type=int, default=4000, help="test chunks per turn (turns part)")
    parser.add_argument("--turn-splits", type=int, default=400, help="bank draws of the drift run (turns part)")
    parser.add_argument("--turn-drift", type=float, default=0.03, help="log-score drift per turn (turns part)")
    args = parser.parse_args()
    parts = args.parts.split(",")
    if not parts or not set(parts) <= set(PARTS):
        parser.error(f"--parts {args.parts!r}: must be a selection of {', '.join(PARTS)}")
    start = time.perf_counter()
    rows = drift = None
    if "guarantee" in parts:
        rows = guarantee_experiment(alphas=args.alphas, bank_sizes=args.bank_sizes, n_splits=args.n_splits,
                                    n_test=args.n_test, seed=args.seed)
    if "drift" in parts:
        drift = drift_experiment(seed=args.seed)
    turns = {}
    if "turns" in parts:
        turns["exchangeable"] = turn_rate_experiment(alphas=(0.1, 0.25), n_test=args.turn_test, seed=args.seed)
        turns["drift"] = turn_rate_experiment(alphas=(0.1, 0.25), n_test=100, n_splits=args.turn_splits,
                                              drift_per_turn=args.turn_drift, seed=args.seed)
    elapsed_s = time.perf_counter() - start
    args.out_dir.mkdir(parents=True, exist_ok=True)
    table = "\n".join(x for x in (format_table(rows, drift) if rows and drift else "",
                                   format_turns(turns) if turns else "") if x)
    atomic_write(args.out_dir / "guarantee_table.txt", table + "\n")
    payload = dict(config={k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                   elapsed_s=elapsed_s, guarantee=rows, drift=drift, turns=turns)
    atomic_write_json(args.out_dir / "guarantee.json", payload)
    if rows and drift:
        plot(rows, drift, args.out_dir / "guarantee.png")
    print(table)
    print(f"\n{elapsed_s:.1f} s; wrote {args.out_dir}/guarantee.json, guarantee_table.txt")


if __name__ == "__main__":
    main()
