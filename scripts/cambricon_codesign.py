"""Co-design demo: the smallest Cambricon-LLM flash configuration that decodes a zoo
model at a target rate, found by gradient on relaxed counts and checked by exhaustive search.

    PYTHONPATH=. python scripts/cambricon_codesign.py [--models opt-6.7b llama-2-7b llama-2-13b]
        [--min-tokens-per-s 10] [--max-channels 32] [--max-chips 8] [--out-dir runs/cambricon_codesign]

Size = dies + 4 x channels (die-equivalents; `hwcost.flash_size`), 2 dies per chip, the
rest of configuration S (tR 30 us, 16 KB pages, 1 GB/s channels, NPU 2 TOPS, LPDDR 40 GB/s).
Gradient: Adam on (channels, chips per channel) relaxed to reals with a quadratic penalty on the
log-throughput shortfall, then rounded (`gradient_flash_search`). Exhaustive: every integer point
of the grid, vmapped (`exhaustive_flash_search`). Writes codesign.json and codesign_table.txt.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import jax

import nets
from hwcost import exhaustive_flash_search, gradient_flash_search


def run(models, min_tokens_per_s: float, max_channels: int, max_chips: int, steps: int) -> list[dict]:
    rows = []
    for name in models:
        cfg = nets.zoo.get(name)
        t0 = time.perf_counter()
        found = gradient_flash_search(cfg, min_tokens_per_s, max_channels=max_channels, max_chips=max_chips,
                                      steps=steps)
        t_grad = time.perf_counter() - t0
        t0 = time.perf_counter()
        best = exhaustive_flash_search(cfg, min_tokens_per_s, max_channels=max_channels, max_chips=max_chips)
        t_exh = time.perf_counter() - t0
        history = found.pop("loss_history")
        gap = (found["size"] / best["size"] - 1) if found.get("feasible") and best.get("feasible") else None
        rows.append({"model": name, "gradient": found, "exhaustive": best, "size_gap": gap,
                     "same_answer": bool(found.get("feasible") and best.get("feasible")
                                         and (found["channels"], found["chips_per_channel"])
                                         == (best["channels"], best["chips_per_channel"])),
                     "loss_first_last": [history[0], history[-1]], "gradient_s": t_grad, "exhaustive_s": t_exh})
    return rows


def format_table(rows: list[dict], min_tokens_per_s: float) -> str:
    head = (f"{'model':<13}{'relaxed ch x chips':>19}{'gradient ch x chips':>20}{'dies':>6}{'tok/s':>7}"
            f"{'exhaustive':>12}{'dies':>6}{'tok/s':>7}{'size gap':>9}")
    lines = [f"Smallest flash configuration decoding at >= {min_tokens_per_s} tokens/s "
             "(size = dies + 4 x channels)", head, "-" * len(head)]
    for r in rows:
        g, e = r["gradient"], r["exhaustive"]
        relaxed = f"{g['relaxed_channels']:.2f} x {g['relaxed_chips_per_channel']:.2f}"
        grad = f"{g['channels']} x {g['chips_per_channel']}" if g.get("feasible") else "infeasible"
        exh = f"{e['channels']} x {e['chips_per_channel']}" if e.get("feasible") else "infeasible"
        lines.append(f"{r['model']:<13}{relaxed:>19}{grad:>20}{g.get('dies', 0):>6}{g.get('tokens_per_s', 0):>7.2f}"
                     f"{exh:>12}{e.get('dies', 0):>6}{e.get('tokens_per_s', 0):>7.2f}"
                     f"{'-' if r['size_gap'] is None else format(r['size_gap'], '.1%'):>9}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["opt-6.7b", "llama-2-7b", "llama-2-13b"])
    ap.add_argument("--min-tokens-per-s", type=float, default=10.0)
    ap.add_argument("--max-channels", type=int, default=32)
    ap.add_argument("--max-chips", type=int, default=8)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--out-dir", type=str, default="runs/cambricon_codesign")
    args = ap.parse_args()
    print(f"running on {jax.default_backend()} ({jax.devices()[0].device_kind}), host {platform.node()}", flush=True)
    rows = run(args.models, args.min_tokens_per_s, args.max_channels, args.max_chips, args.steps)
    table = format_table(rows, args.min_tokens_per_s)
    print(table)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "codesign.json").write_text(json.dumps({"min_tokens_per_s": args.min_tokens_per_s, "rows": rows,
                                                   "backend": jax.default_backend(), "host": platform.node()},
                                                  indent=2))
    (out / "codesign_table.txt").write_text(table + "\n")
    print(f"wrote {out / 'codesign.json'} and {out / 'codesign_table.txt'}")


if __name__ == "__main__":
    main()
