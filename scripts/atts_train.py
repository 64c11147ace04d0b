"""Train the ATTS draft and target decoders on the arithmetic scratchpad task.

    PYTHONPATH=. python scripts/atts_train.py --out runs/atts-models [--size full|tiny]

The target must reach >= 99% step accuracy and the draft a step error in [10%, 30%] on
held-out test problems (codesign.atts.train_pair); the exit status is 1 if either
is missed. Writes <out>/{draft,target}/ (config + orbax params) and <out>/report.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax

from codesign.atts import train_pair


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--size", default="full", choices=("full", "tiny"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--test-n", type=int, default=1000)
    args = parser.parse_args()
    print(f"training ATTS draft + target ({args.size}) on {jax.devices()[0]} ({jax.default_backend()})")
    start = time.perf_counter()
    pair = train_pair(args.size, out=args.out, seed=args.seed, test_n=args.test_n)
    r = pair.report
    wall = time.perf_counter() - start
    r["wall_s"] = wall
    Path(args.out, "report.json").write_text(json.dumps(r, indent=2))
    print(f"{'model':<8} {'params':>9} {'train s':>8} {'step acc':>9} {'answer acc':>10} {'exact':>7}  requirement")
    for role, need, ok in (("target", "step acc >= 0.99", r["target_ok"]),
                           ("draft", "step error in [0.10, 0.30]", r["draft_ok"])):
        t = r[role]["test"]
        print(f"{role:<8} {r[role]['params']:>9,} {r[role]['train_s']:>8.0f} {t['step']:>9.4f} {t['answer']:>10.4f} "
              f"{t['exact']:>7.4f}  {need}: {'met' if ok else 'MISSED'}")
    print(f"total {wall:.0f} s on {jax.devices()[0]}; test problems {r['test_n']}; wrote {args.out}")
    return 0 if r["target_ok"] and r["draft_ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
