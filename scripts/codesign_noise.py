"""Measure the seed-to-seed spread of `codesign run` once and store it with the package.

Runs `codesign run`'s sweep (`codesign.SweepConfig()` with only the seed changed) for each seed
into WORKDIR/seed-S/ (an interrupted measurement resumes: finished points are read back), then
writes codesign/search/noise.json: per lambda the sample standard deviation across seeds of the
validation loss and of log10(cost), their maxima (what `codesign run` marks differences
against), every seed's rows, and how it was measured. `codesign run` and `codesign sweep` with
the same settings then mark front differences within 2 of those standard deviations as "within
noise" (see `codesign.spread_for`).

    python scripts/codesign_noise.py --seeds 0,1,2 --workdir runs/noise
"""

from __future__ import annotations

import argparse
import datetime
import platform
import subprocess
import time
from pathlib import Path

import codesign
import nets

NOISE_FILE = Path(codesign.__file__).resolve().parent / "search" / "noise.json"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (at least two)")
    ap.add_argument("--workdir", default="runs/noise", help="where each seed's run goes")
    ap.add_argument("--out", default=str(NOISE_FILE), help="the JSON written (default: the package's noise.json)")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    if len(seeds) < 2:
        raise SystemExit("codesign_noise: --seeds needs at least two seeds")
    base = codesign.SweepConfig()
    runs, timings = [], {}
    for seed in seeds:
        sc = codesign.SweepConfig(**{**{k: getattr(base, k) for k in base.__dataclass_fields__}, "seed": seed})
        t0, c0 = time.perf_counter(), time.process_time()
        result = codesign.sweep(sc, Path(args.workdir) / f"seed-{seed}", progress=False)
        timings[seed] = {"wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0}
        runs.append([{k: r[k] for k in ("lam", "val_loss", "cost", "formats", "kv_formats", "ffn_widths")}
                     for r in result.rows])
        print(f"seed {seed}: " + ", ".join(f"lam={r['lam']:g} loss {r['val_loss']:.4f} cost {r['cost']:.4g}"
                                           for r in runs[-1]), flush=True)
    spread = codesign.spread_of(runs)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    record = {"settings": codesign.settings_of(base), **spread, "seeds": seeds, "rows": runs,
              "measured": {"command": "python scripts/codesign_noise.py --seeds " + ",".join(map(str, seeds)),
                           "git_commit": commit, "python": platform.python_version(),
                           "date_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                           "timings": timings}}
    nets.atomic_write_json(Path(args.out), record)
    print(f"sd loss {spread['sd_loss']:.4f} nats, sd log10 cost {spread['sd_log10_cost']:.4f} -> {args.out}")


if __name__ == "__main__":
    main()
