"""QAT step time and quality: fixed-format fake quantisation of every block weight vs plain training.

    PYTHONPATH=. python scripts/bench/qat_step.py --out runs/bench/qat_step.json [--steps 300]

Each format runs the joint trainer with a one-format design space and lambda = 0 (so it
is plain quantisation-aware training: the forward uses the quantised weights, the
gradient passes straight through), against the plain trainer at the same dtype, batch and
seed. Reported: median step time (timed blocks after warm-up, each ended by
`block_until_ready`), its ratio to plain training, and the validation loss after `--steps`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp

import nets
from codesign import JointConfig, JointTrainer, DesignSpace, TrainConfig, Trainer


def run(trainer: Trainer, steps: int, timed_blocks: int, block: int) -> tuple[float, float]:
    step = 0

    def go(n: int) -> float:
        nonlocal step
        if n == 0:
            return 0.0
        t = time.perf_counter()
        for _ in range(n):
            trainer.params, trainer.opt_state, m = trainer.step_fn(trainer.params, trainer.opt_state,
                                                                   trainer.train_data, jnp.asarray(step, jnp.int32))
            step += 1
        jax.block_until_ready(m)
        return time.perf_counter() - t

    go(3)  # compile + warm-up
    times = [go(block) / block for _ in range(timed_blocks)]
    go(max(0, steps - step))
    return statistics.median(times), trainer.evaluate()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/bench/qat_step.json")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--formats", default="posit(16,1);posit(8,0);fp8_e4m3;posit(4,1);fp4_e2m1",
                        help="semicolon-separated format names")
    args = parser.parse_args()
    on_gpu = jax.default_backend() == "gpu"
    dtype = "bfloat16" if on_gpu else "float32"
    tc = TrainConfig(steps=args.steps, batch=64 if on_gpu else 8, seq_len=256 if on_gpu else 64, dtype=dtype,
                     warmup_steps=min(20, args.steps // 10))
    blocks, block = (5, 10) if on_gpu else (2, 3)
    device = jax.devices()[0]
    report = {"device": getattr(device, "device_kind", str(device)), "jax": jax.__version__, "steps": args.steps,
              "batch": tc.batch, "seq_len": tc.seq_len, "rows": []}
    rows = report["rows"]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    base_s, base_val = run(Trainer(tc), args.steps, blocks, block)
    rows.append({"format": f"plain {dtype}", "step_s": base_s, "ratio": 1.0, "val_loss": base_val})
    nets.atomic_write_json(args.out, report)  # after every format: a time limit keeps what finished
    for name in args.formats.split(";"):
        space = DesignSpace(formats=(name,), search_ffn_width=False)
        s, val = run(JointTrainer(tc, JointConfig(lam=0.0), space), args.steps, blocks, block)
        rows.append({"format": name, "step_s": s, "ratio": s / base_s, "val_loss": val,
                     "val_gap": val / base_val - 1})
        print(json.dumps(rows[-1]), flush=True)
        nets.atomic_write_json(args.out, report)
    print(f"{report['device']}: codesign-default, batch {tc.batch} x {tc.seq_len}, {args.steps} steps")
    print(f"{'weights':<16}{'step ms':>9}{'x plain':>9}{'val loss':>10}{'gap':>8}")
    for r in rows:
        print(f"{r['format']:<16}{r['step_s'] * 1e3:>9.2f}{r['ratio']:>9.2f}{r['val_loss']:>10.4f}"
              f"{r.get('val_gap', 0.0):>8.1%}")
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
