"""What one model call of the ATTS pipeline costs, by rows served: the draft's and the target's
one-byte decode step and the target's scoring prefill of a chunk window, for the pair's configs.

    PYTHONPATH=. python scripts/bench/atts_calls.py --out results/atts

The pipeline (`codesign.atts.run_batched`) runs every call on all slots of its pool; this table
says whether a call's time follows the rows it serves (compute-bound) or not (launch-bound), which
decides what an idle slot costs. Writes <out>/atts_calls.json and <out>/atts_calls.txt.
Weights are random (the time does not depend on them), computed as the pipeline computes them (bfloat16 on
a GPU, float32 on the CPU); the median of `--reps` timed calls after
warm-up is reported, each call's cache donated and handed to the next, as the pipeline's loop carries it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import jax
import jax.numpy as jnp
from flax import nnx

import nets
from codesign.atts import draft_config, forward_some, row_buckets, target_config, row_forward
from codesign.training import compute_dtype
from gpu_speed import timed_carrying_cache  # scripts/bench is on sys.path when run as a script


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--rows", default="16,64,256,1024")
    parser.add_argument("--widths", default="1,17,65", help="tokens per row per call (1 = decode step)")
    parser.add_argument("--buf-len", type=int, default=320)
    parser.add_argument("--reps", type=int, default=50)
    parser.add_argument("--size", default="full", choices=("full", "large", "tiny"),
                        help="the pair's configs; large: the GPU pair of atts_gpu_pair.py (draft --draft-variant)")
    parser.add_argument("--draft-variant", default="kv2", help="the large draft's variant (DRAFT_VARIANTS)")
    args = parser.parse_args()
    rows_list = [int(x) for x in args.rows.split(",")]
    widths = [int(x) for x in args.widths.split(",")]
    report = {"device": str(jax.devices()[0]), "backend": jax.default_backend(), "buf_len": args.buf_len,
              "cache": "donated, carried from call to call", "reps": args.reps, "calls": []}
    draft_cfg = draft_config(args.size, args.draft_variant) if args.size == "large" else draft_config(args.size)
    for name, cfg in (("draft", draft_cfg), ("target", target_config(args.size))):
        model = nets.TransformerLM(cfg, rngs=nnx.Rngs(params=0), dtype=compute_dtype("auto"))
        gd, state = nnx.split(model)
        fn = jax.jit(lambda st, tok, cache, start, gd=gd: row_forward(gd, st, tok, cache, start), donate_argnums=2)
        for rows in rows_list:
            start = jnp.full(rows, 40, jnp.int32)
            for width in widths:
                tokens = jnp.ones((rows, width), jnp.int32)
                t = timed_carrying_cache(lambda c: fn(state, tokens, c, start),
                                         nets.init_cache(model, rows, args.buf_len), args.reps)
                report["calls"].append({"model": name, "params": nets.param_count(model), "rows": rows,
                                        "width": width, "ms": t * 1e3, "us_per_row": t * 1e6 / rows})
                print(f"{name:<6} rows {rows:>5} width {width:>3}: {t * 1e3:8.3f} ms", flush=True)
    # the engine's call on a bucket of rows (`forward_some`): the target's decode step serving C of the most rows
    S = max(rows_list)
    target = nets.TransformerLM(target_config(args.size), rngs=nnx.Rngs(params=0), dtype=compute_dtype("auto"))
    gd, state = nnx.split(target)
    buf, pos = jnp.ones((S, args.buf_len), jnp.int32), jnp.full(S, 40, jnp.int32)
    fn = jax.jit(lambda st, c, mask: forward_some(gd, st, buf, c, mask, pos, 1, args.buf_len - 2, row_buckets(S)),
                 donate_argnums=1)
    report["buckets"] = []
    for served in row_buckets(S):
        mask = jnp.arange(S) < served
        t = timed_carrying_cache(lambda c: fn(state, c, mask), nets.init_cache(target, S, args.buf_len), args.reps)
        report["buckets"].append({"rows": S, "served": served, "ms": t * 1e3})
        print(f"target decode, {served} of {S} rows served (forward_some): {t * 1e3:8.3f} ms", flush=True)
    lines = [f"ATTS model calls on {report['device']} ({report['backend']}), buf_len {args.buf_len}, "
             f"median of {args.reps}", "", f"{'model':<7} {'rows':>5} " + " ".join(f"{'w=' + str(w):>9}" for w in widths)
             + "   (ms per call)"]
    for name in ("draft", "target"):
        for rows in rows_list:
            cells = [c["ms"] for c in report["calls"] if c["model"] == name and c["rows"] == rows]
            lines.append(f"{name:<7} {rows:>5} " + " ".join(f"{ms:>9.3f}" for ms in cells))
    lines += ["", f"target decode on a bucket of the {S} rows (forward_some): "
              + ", ".join(f"{b['served']} served {b['ms']:.3f} ms" for b in report["buckets"])]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "atts_calls.json").write_text(json.dumps(report, indent=2))
    (out / "atts_calls.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
