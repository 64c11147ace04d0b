"""Duplex co-design demo (a): expert split and Logic-PIM MAC count by gradient, checked by exhaustive search.

    PYTHONPATH=. python scripts/duplex_codesign.py [--model mixtral-8x7b] [--batch 64] [--out-dir runs/duplex_codesign]

Objective: seconds per token x silicon area (H100 die + 5 Logic-PIM stacks), i.e. the
inverse of tokens/s per mm^2, of a continuous batch on Mixtral (the objective of
`hwcost.codesign_split_macs`). Knobs: the number of least-loaded experts on the PIM in decode-only
and in mixed steps (continuous) and the MACs per GEMM module. Adam (optax) on the relaxation,
then integer splits and MACs rounded to a multiple of 64; the grid is every integer split
pair x MACs in multiples of 64 up to 4096. Writes duplex_codesign.json and duplex_codesign.txt.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax

import nets
from hwcost import ContinuousBatching, codesign_split_macs, grid_search


def format_table(result: dict, grid: dict) -> str:
    gap = result["objective"] / grid["objective"] - 1
    lines = [f"Duplex co-design (a): {result['model']}, batch {result['batch']}, {result['devices']} devices, "
             f"objective = s/token x mm^2 (lower is better)",
             f"{'':<26}{'split decode':>13}{'split mixed':>12}{'MACs/module':>12}{'objective':>12}",
             f"{'paper dispatch':<26}{result['split_start'] * 2:>13.0f}{0:>12d}{512:>12}"
             f"{result['objective_dispatch']:>12.5g}",
             f"{'start of the descent':<26}{result['split_start']:>13.3f}{result['split_start']:>12.3f}{512:>12}"
             f"{result['objective_start']:>12.5g}",
             f"{'gradient, relaxed':<26}{result['split_decode']:>13.3f}{result['split_mixed']:>12.3f}"
             f"{result['macs_per_module']:>12.1f}{result['objective_relaxed']:>12.5g}",
             f"{'gradient, rounded':<26}{result['split_decode_int']:>13d}{result['split_mixed_int']:>12d}"
             f"{result['macs_per_module_int']:>12d}{result['objective']:>12.5g}",
             f"{'exhaustive grid':<26}{grid['split_decode']:>13d}{grid['split_mixed']:>12d}"
             f"{grid['macs_per_module']:>12.0f}{grid['objective']:>12.5g}",
             f"gap gradient vs grid: {gap:+.3%} ({grid['points']} grid points)"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mixtral-8x7b")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--prompt-len", type=int, default=1024)
    parser.add_argument("--gen-len", type=int, default=1024)
    parser.add_argument("--sim-steps", type=int, default=1024, help="continuous-batching steps simulated")
    parser.add_argument("--steps", type=int, default=300, help="Adam steps")
    parser.add_argument("--max-macs", type=int, default=4096)
    parser.add_argument("--out-dir", default="runs/duplex_codesign")
    args = parser.parse_args()
    start = time.time()
    cfg = nets.zoo.get(args.model)
    batching = ContinuousBatching(batch=args.batch, prompt_len=args.prompt_len, gen_len=args.gen_len,
                                  n_steps=args.sim_steps)
    result = codesign_split_macs(cfg, batching, steps=args.steps)
    grid = grid_search(result["system"], result["work"], tuple(float(m) for m in range(64, args.max_macs + 1, 64)))
    table = format_table(result, grid)
    where = f"{jax.default_backend()} ({jax.devices()[0].device_kind}), {time.time() - start:.1f} s"
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    record = {k: v for k, v in result.items() if k not in ("system", "work")}
    record.update(grid={k: v for k, v in grid.items()}, gap=result["objective"] / grid["objective"] - 1,
                  config=vars(args), ran_on=where)
    (out / "duplex_codesign.json").write_text(json.dumps(record, indent=2))
    (out / "duplex_codesign.txt").write_text(table + f"\nran on {where}\n")
    print(table)
    print(f"ran on {where}; wrote {out / 'duplex_codesign.json'} and {out / 'duplex_codesign.txt'}")


if __name__ == "__main__":
    main()
