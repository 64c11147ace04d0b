"""The quantisers alone: fake-quantising a large float32 array, against the bandwidth bound.

    PYTHONPATH=. python scripts/bench/quantizer.py --out runs/bench/quantizer.json
    PYTHONPATH=. python scripts/bench/quantizer.py --quick        # CPU smoke run

Each quantiser reads n float32 values and writes n (8n bytes); its bound is the time of the
same traffic through the simplest elementwise op (a negation, measured in the same run), so
"fraction of bound" = bound time / quantiser time. Rows: every format of the QAT list through
`nets.formats.fake_quant`, and for the float formats the cast through the narrow dtype
(`cast_quantize`) beside the same rounding in float32 arithmetic (`rne_quantize`).
"""

from __future__ import annotations

import argparse
import functools
import json
from pathlib import Path

import jax
import jax.numpy as jnp

from nets.formats import cast_quantize, fake_quant, rne_quantize
from gpu_speed import timed  # scripts/bench is on sys.path when run as a script

FORMATS = ("fp8_e4m3", "fp4_e2m1", "mxfp4", "posit(8,0)", "posit(4,1)", "posit(16,1)")
CASTS = (("fp8_e4m3", jnp.float8_e4m3fn), ("fp4_e2m1", jnp.float4_e2m1fn))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1 << 26)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default="runs/bench/quantizer.json")
    a = parser.parse_args()
    n = 1 << 14 if a.quick else a.n
    x = jax.random.normal(jax.random.key(0), (n // 1024, 1024), jnp.float32) * 3.0
    blocks, inner = (2, 2) if a.quick else (5, 10)
    bound_s = timed(jax.jit(jnp.negative), x, blocks=blocks, inner=inner)
    cases = [(f"fake_quant {name}", jax.jit(functools.partial(fake_quant, fmt=name))) for name in FORMATS]
    for name, dtype in CASTS:
        cases.append((f"cast_quantize {name}", jax.jit(functools.partial(cast_quantize, dtype=dtype))))
        cases.append((f"rne_quantize {name}", jax.jit(functools.partial(rne_quantize, dtype=dtype))))
    rows = [{"case": "bound (negate)", "s": bound_s, "gb_per_s": 8 * n / bound_s / 1e9, "fraction_of_bound": 1.0}]
    print(f"{jax.devices()[0].device_kind}: {n} float32 values; bound {8 * n / bound_s / 1e9:.0f} GB/s", flush=True)
    for name, fn in cases:
        s = timed(fn, x, blocks=blocks, inner=inner)
        rows.append({"case": name, "s": s, "gb_per_s": 8 * n / s / 1e9, "fraction_of_bound": bound_s / s})
        print(f"{name:<26} {s * 1e3:8.3f} ms {rows[-1]['gb_per_s']:7.0f} GB/s  {bound_s / s:6.1%} of bound", flush=True)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps({"device": jax.devices()[0].device_kind, "n": n, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
