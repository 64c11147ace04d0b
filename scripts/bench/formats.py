"""Throughput of exact posit16 encode / decode against the memory-bandwidth bound.

    PYTHONPATH=. python scripts/bench/formats.py --out runs/bench/formats.json
    PYTHONPATH=. python scripts/bench/formats.py --n 4194304 --out /tmp/formats.json   # CPU size

Measures, on N float32 values (log-uniform magnitudes 2^-30..2^30, both signs):
  - posit16 quantize (encode + decode fused in one jit: float32 in, float32 out),
    encode alone (float32 -> uint32 patterns) and decode alone (uint32 -> float32);
  - the bandwidth bound: a jitted jnp.copy and a jitted jnp.negative (a fused streaming
    kernel) of the same N float32 values in the same run; the faster of the two is the time a
    perfectly memory-bound kernel moving 4 bytes in and 4 bytes out per value takes, and each
    result reports its time over that bound (below 1 means the probe was not at peak);
  - where the `softposit` package is importable: SoftPosit's scalar double -> posit16 -> double
    conversion on a sample (values / s, one Python call pair per value), checked bit-equal to
    ours on that sample. Skipped with a note where it is not installed (the GPU image).
Timing: one compiling call first, then the median of --repeats calls, each ended by
block_until_ready. Writes JSON to --out and prints a table.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from nets.formats import Posit


def median_seconds(fn, arg, repeats: int) -> float:
    jax.block_until_ready(fn(arg))  # compile and warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(arg))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def softposit_rate(values: np.ndarray, ours: np.ndarray) -> dict:
    try:
        import softposit
    except ImportError:
        return {"skipped": "softposit is not installed"}
    start = time.perf_counter()
    patterns = [softposit.convertDoubleToP16(float(v)) for v in values]
    for p in patterns:
        softposit.convertP16ToDouble(p)
    seconds = time.perf_counter() - start
    patterns = np.array([p.v for p in patterns], np.uint32)
    return {"sample": int(values.size), "seconds": seconds, "values_per_s": values.size / seconds,
            "bit_equal_to_ours": bool(np.array_equal(patterns, ours))}


def run(n: int, repeats: int, softposit_sample: int) -> dict:
    posit = Posit(16, 1)
    key_sign, key_mag = jax.random.split(jax.random.key(0))
    signs = jnp.where(jax.random.bernoulli(key_sign, 0.5, (n,)), 1.0, -1.0)
    x = (signs * jnp.exp2(jax.random.uniform(key_mag, (n,), minval=-30.0, maxval=30.0))).astype(jnp.float32)
    x = jax.block_until_ready(x)

    bytes_per_value = 8  # one 4-byte read and one 4-byte write
    copy_s = median_seconds(jax.jit(jnp.copy), x, repeats)
    stream_s = median_seconds(jax.jit(jnp.negative), x, repeats)
    bound_s = min(copy_s, stream_s)  # the faster of the two moves the same bytes
    patterns = jax.block_until_ready(jax.jit(posit.encode)(x))
    kernels = {"quantize (encode+decode)": (jax.jit(posit.quantize), x), "encode": (jax.jit(posit.encode), x),
               "decode": (jax.jit(posit.decode), patterns)}
    rows = []
    for name, (fn, arg) in kernels.items():
        seconds = median_seconds(fn, arg, repeats)
        rows.append({"kernel": name, "seconds": seconds, "values_per_s": n / seconds,
                     "effective_bandwidth_gb_s": bytes_per_value * n / seconds / 1e9,
                     "time_over_bandwidth_bound": seconds / bound_s})

    sample = np.asarray(x[:softposit_sample])
    reference = softposit_rate(sample, np.asarray(patterns[:softposit_sample]))
    if "values_per_s" in reference:
        reference["our_quantize_speedup"] = rows[0]["values_per_s"] / reference["values_per_s"]
    return {"format": posit.name, "n": n, "repeats": repeats, "backend": jax.default_backend(),
            "device": str(jax.devices()[0].device_kind), "jax": jax.__version__, "host": platform.node(),
            "copy": {"seconds": copy_s, "bandwidth_gb_s": bytes_per_value * n / copy_s / 1e9},
            "stream": {"seconds": stream_s, "bandwidth_gb_s": bytes_per_value * n / stream_s / 1e9},
            "bound_seconds": bound_s,
            "kernels": rows, "softposit_scalar": reference}


def print_table(result: dict) -> None:
    print(f"{result['format']} on {result['n']:,} float32 values, {result['backend']} ({result['device']}), "
          f"jax {result['jax']}")
    print(f"  {'kernel':<26}{'ms':>10}{'Gvalues/s':>12}{'GB/s':>10}{'x bound':>9}")
    for probe in ("copy", "stream"):
        entry = result[probe]
        print(f"  {probe + ' (bandwidth probe)':<26}{entry['seconds'] * 1e3:10.3f}{'':>12}{entry['bandwidth_gb_s']:10.1f}")
    for row in result["kernels"]:
        print(f"  {row['kernel']:<26}{row['seconds'] * 1e3:10.3f}{row['values_per_s'] / 1e9:12.3f}"
              f"{row['effective_bandwidth_gb_s']:10.1f}{row['time_over_bandwidth_bound']:9.2f}")
    ref = result["softposit_scalar"]
    if "skipped" in ref:
        print(f"  softposit scalar: skipped ({ref['skipped']})")
    else:
        print(f"  softposit scalar: {ref['values_per_s'] / 1e6:.3f} Mvalues/s on {ref['sample']:,} values "
              f"(bit-equal: {ref['bit_equal_to_ours']}); ours is {ref['our_quantize_speedup']:.0f}x faster")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/bench/formats.json", help="JSON output path")
    parser.add_argument("--n", type=int, default=None, help="values (default 2**28 on GPU, 2**22 elsewhere)")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--softposit-sample", type=int, default=200_000, help="values for the SoftPosit rate")
    args = parser.parse_args()
    n = args.n or (2**28 if jax.default_backend() == "gpu" else 2**22)
    if n < 1 or args.repeats < 1 or args.softposit_sample < 1:
        raise ValueError(f"--n, --repeats and --softposit-sample must be >= 1, got {n}, {args.repeats}, "
                         f"{args.softposit_sample}")
    result = run(n, args.repeats, min(args.softposit_sample, n))
    print_table(result)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
