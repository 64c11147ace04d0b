"""Can the draft and the target run at the same time on ONE GPU? A loop of independent draft and target
calls (the ATTS pair's configs, 256 slots), once on one stream and once with the draft call put on a
second CUDA stream (XLA's stream annotation, `on_stream` below).

    PYTHONPATH=. python scripts/bench/atts_streams.py --out results/atts

If the second is faster than the first, draft and target calls overlap and an asynchronous tick could
cost max(draft, target) instead of their sum (what two devices give). Measured on the H200 (jax 0.11.2,
results/atts/session15/): overlap_gain 1.11x at 16 rows, 1.05x at 64, 1.04x at 256 (ideal: 1.35x,
1.23x, 1.18x), so the pipeline does not use it; its overlapped ticks run draft and target on two
devices instead (`PipelineConfig.devices`). Writes <out>/atts_streams.json.
"""

from __future__ import annotations

import argparse
import inspect
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import nets
from codesign.atts import draft_config, target_config, row_forward


def on_stream(f, stream: int = 1):
    """`f`, jitted, with its work annotated for CUDA stream `stream` (outputs stay in device memory)."""
    from jax.experimental import compute_on as _co

    compute_type = f"gpu_stream:{stream}"
    if "out_memory_spaces" in inspect.signature(_co.compute_on).parameters:   # jax >= 0.11: a transform
        def flat(*args):
            # Inline every nested jit (jnp's own, e.g. `any`, `%`): each would lower to an XLA call carrying
            # the same stream annotation, which XLA's stream assignment rejects ("No ExecutionStreamId").
            with jax.disable_jit():
                return f(*args)

        return _co.compute_on(flat, compute_type=compute_type, out_memory_spaces=jax.memory.Space.Device)
    return _co.compute_on(compute_type)(jax.jit(f))                          # jax <= 0.10: a context manager


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--buf-len", type=int, default=320)
    parser.add_argument("--iters", type=int, default=200)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()

    S, L = args.rows, args.buf_len
    draft = nets.TransformerLM(draft_config(), rngs=nnx.Rngs(params=0))
    target = nets.TransformerLM(target_config(), rngs=nnx.Rngs(params=1))
    dgd, dstate = nnx.split(draft)
    tgd, tstate = nnx.split(target)

    def draft_call(state, cache, i):
        start = jnp.full(S, 40, jnp.int32) + i % 64
        logits, cache = row_forward(dgd, state, jnp.ones((S, 1), jnp.int32), cache, start)
        return logits[:, 0, 0], cache

    def target_call(state, cache, i):
        start = jnp.full(S, 40, jnp.int32) + i % 64
        logits, cache = row_forward(tgd, state, jnp.ones((S, 1), jnp.int32), cache, start)
        return logits[:, 0, 0], cache

    streamed_draft = on_stream(draft_call)

    def make(kind):
        @jax.jit
        def loop(dstate, tstate, dcache, tcache):
            def body(i, c):   # the weights ride in the carry: nnx merges them at the loop's trace level
                dc, tc, acc, dstate, tstate = c
                if kind in ("both", "streams"):
                    d_out, dc = (streamed_draft if kind == "streams" else draft_call)(dstate, dc, i)
                    t_out, tc = target_call(tstate, tc, i)
                    acc = acc + d_out.sum() + t_out.sum()
                elif kind == "draft":
                    d_out, dc = draft_call(dstate, dc, i)
                    acc = acc + d_out.sum()
                else:
                    t_out, tc = target_call(tstate, tc, i)
                    acc = acc + t_out.sum()
                return dc, tc, acc, dstate, tstate
            return jax.lax.fori_loop(0, args.iters, body, (dcache, tcache, jnp.zeros(()), dstate, tstate))[2]
        return loop

    report = {"device": str(jax.devices()[0]), "rows": S, "buf_len": L, "iters": args.iters, "ms_per_iter": {}}
    caches = (nets.init_cache(draft, S, L), nets.init_cache(target, S, L))
    for kind in ("draft", "target", "both", "streams"):
        try:
            fn = make(kind)
            jax.block_until_ready(fn(dstate, tstate, *caches))
            times = []
            for _ in range(args.reps):
                start = time.perf_counter()
                jax.block_until_ready(fn(dstate, tstate, *caches))
                times.append(time.perf_counter() - start)
            report["ms_per_iter"][kind] = float(np.median(times)) * 1e3 / args.iters
        except Exception as err:  # an unsupported annotation is a result to report, not a crash
            report["ms_per_iter"][kind] = None
            report[f"{kind}_error"] = f"{type(err).__name__}: {str(err)[:2000]}"
        print(kind, report["ms_per_iter"][kind], report.get(f"{kind}_error", ""), flush=True)
    ms = report["ms_per_iter"]
    if all(ms.get(k) for k in ("both", "streams")):
        report["overlap_gain"] = ms["both"] / ms["streams"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "atts_streams.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
