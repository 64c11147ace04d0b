"""Generation throughput: `nets.generate` (prefill, then every new token in one compiled scan) by batch.

    PYTHONPATH=. python scripts/bench/generate_speed.py --out runs/bench/generate.json
    PYTHONPATH=. python scripts/bench/generate_speed.py --quick      # CPU smoke run, tiny sizes

For each batch: one compiled call continues a random prompt of `--prompt` tokens by `--new`
tokens (greedy, no host round trip between tokens). Reported: the median wall time of that call
(compilation and two warm-up calls excluded), new tokens per second over the whole call
(batch x new / time, prefill included, what a user of `generate` gets) and the decode rate alone
(the same call minus a prefill-only call of one new token). Parameters in bfloat16 (GPU) or
float32 (`--quick`), random weights: the speed does not depend on their values.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import jax
import jax.numpy as jnp
from flax import nnx

import nets
from gpu_speed import timed  # scripts/bench is on sys.path when run as a script


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="codesign-100m")
    parser.add_argument("--batches", default="1,4,16,64,256")
    parser.add_argument("--prompt", type=int, default=128)
    parser.add_argument("--new", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="codesign-default, float32, tiny sizes")
    parser.add_argument("--out", default="runs/bench/generate.json")
    a = parser.parse_args()
    if a.quick:
        a.model, a.batches, a.prompt, a.new, a.repeats = "codesign-default", "1,2", 8, 8, 2
    dtype = jnp.float32 if a.quick else jnp.bfloat16
    cfg = nets.zoo.get(a.model)
    model = nets.TransformerLM(cfg, rngs=nnx.Rngs(0), dtype=dtype, param_dtype=dtype)
    rows: list[dict] = []
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)

    def write() -> None:  # after every row: a time limit keeps what was measured
        out = {"model": a.model, "device": jax.devices()[0].device_kind, "dtype": jnp.dtype(dtype).name,
               "prompt": a.prompt, "new_tokens": a.new, "decode_attention": "auto", "rows": rows}
        Path(a.out).write_text(json.dumps(out, indent=1))

    print(f"{a.model} on {jax.devices()[0].device_kind}: prompt {a.prompt}, {a.new} new tokens, greedy", flush=True)
    print(f"{'batch':>6} {'call ms':>10} {'tok/s (call)':>14} {'decode ms/tok':>14} {'tok/s (decode)':>15}", flush=True)
    for batch in (int(b) for b in a.batches.split(",")):
        prompt = jax.random.randint(jax.random.key(batch), (batch, a.prompt), 0, cfg.vocab_size)
        key = jax.random.key(0)
        try:
            call_s = timed(lambda: nets.generate(model, prompt, a.new, key=key), blocks=a.repeats, inner=1)
            prefill_s = timed(lambda: nets.generate(model, prompt, 1, key=key), blocks=a.repeats, inner=1)
        except Exception as error:  # noqa: BLE001 - an out-of-memory batch is a row, the others still run
            rows.append({"batch": batch, "error": f"{type(error).__name__}: {error}"[:300]})
            print(f"{batch:>6} failed: {rows[-1]['error'][:120]}", flush=True)
            write()
            continue
        # nan where noise makes the difference meaningless (the call no longer than its prefill)
        decode_s = (call_s - prefill_s) / (a.new - 1) if a.new > 1 and call_s > prefill_s else float("nan")
        row = {"batch": batch, "call_s": call_s, "prefill_and_first_token_s": prefill_s,
               "tokens_per_s_call": batch * a.new / call_s, "decode_s_per_token": decode_s,
               "tokens_per_s_decode": batch / decode_s}
        rows.append(row)
        print(f"{batch:>6} {call_s * 1e3:>10.2f} {row['tokens_per_s_call']:>14.0f} {decode_s * 1e3:>14.3f} "
              f"{row['tokens_per_s_decode']:>15.0f}", flush=True)
        write()
    print("written:", a.out)


if __name__ == "__main__":
    main()
