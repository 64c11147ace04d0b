"""Decode attention (one new token against a full KV cache) against its HBM roofline, per implementation.

    PYTHONPATH=. python scripts/bench/decode_attention.py --out runs/bench/decode_attention.json
    PYTHONPATH=. python scripts/bench/decode_attention.py --sweep --no-raw-tiles --out $OUT/decode.json  # + tiles
    PYTHONPATH=. python scripts/bench/decode_attention.py --tiny --sweep --out /tmp/decode.json   # CPU smoke run

Shapes are zoo models' attention at batch 32 and a cache of 8192 tokens (bf16 cache):
Step-3 (MFA: 64 query heads, one K/V head of 256), DeepSeek-V3 (MLA absorbed: 128 heads
against the 512-wide latent plus the 64-wide RoPE key), Llama-3-70B (GQA 64/8 of 128) and
Llama-2-7B (MHA 32 of 128); with --odd (default) Step-3 also at 8193 tokens, in a cache of
exactly 8193 slots (where no kernel tile divides: the einsum fallback) and in one of
`nets.cache_slots(8193)` = 8320 slots (what `nets.init_cache` allocates now). Roofline = the
bytes that must be read (the written cache: K and V, or the latent and RoPE key once) /
3.35 TB/s (H100 SXM HBM3 datasheet; 4.8 TB/s on an H200, chosen from the device name); each
row also gives its compute floor (FLOPs / the 989 TFLOP/s bf16 datasheet peak), which for
MLA's 128 heads is 0.82 of the byte roofline. Paths:
  einsum        an einsum over one (batch, tokens, kv_heads, head_dim) cache, float32 softmax
                (MLA: the latent and RoPE key concatenated into one 576-wide key)
  cudnn         jax.nn.dot_product_attention(implementation="cudnn") with one query token
  nets X        the path a `nets` decode step takes with decode implementation X
                (`nets.grouped_decode` / `nets.latent_decode`: einsum (MLA: nets' own einsum form
                on the latent and RoPE key as stored), folded, cudnn, pallas, auto = what a GPU
                picks), on the cache in nets' own layout, slots past the written ones masked
  mla ...       the fused MLA kernel (`nets.mla_decode`) at one tile (--sweep)
  gqa ...       the shipped split-K kernel as nets calls it, at one tile and warp/stage count (--sweep)
  pallas ...    the shipped kernel on a transposed cache over its own tiles (--raw-tiles)
Errors are max |x - einsum| / max |einsum| on the same inputs; timings are medians of 5 blocks
of 20 calls after warm-up. A path that fails records its error and the others still run.
Writes the rows (JSON) and a table (the same name, .md) with a before/after summary per shape.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import time
import traceback
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import nets
from gpu_speed import timed  # the same median-of-blocks timer as the other GPU benchmarks (this folder)

BF16 = jnp.bfloat16
DEADLINE = [math.inf]  # time.monotonic() after which rows are skipped (--max-s)
BF16_PEAK = 989.4e12  # dense bf16 FLOP/s of an H100 SXM (an H200 has the same): the compute floor of a row


def rel_err(x, ref) -> float:
    x, ref = (np.asarray(jnp.asarray(a, jnp.float32), np.float64) for a in (x, ref))
    return float(np.max(np.abs(x - ref)) / max(np.max(np.abs(ref)), 1e-30))


def einsum_decode(q_BxHxK, k_BxTxNxK, v_BxTxNxV, scale, kv_len=None):
    """nets' einsum attention for one query token, slots < kv_len visible (None: all)."""
    B, H, K = q_BxHxK.shape
    T, N = k_BxTxNxK.shape[1:3]
    q = q_BxHxK.reshape(B, N, H // N, K)
    s = (jnp.einsum("bngk,btnk->bngt", q, k_BxTxNxK) * scale).astype(jnp.float32)
    if kv_len is not None and kv_len < T:
        s = jnp.where(jnp.arange(T) < kv_len, s, jnp.finfo(jnp.float32).min)
    p = jax.nn.softmax(s, axis=-1).astype(q.dtype)
    return jnp.einsum("bngt,btnv->bngv", p, v_BxTxNxV).reshape(B, H, v_BxTxNxV.shape[-1])


def pallas_decode(q_BxHxK, k_BxNxTxK, v_BxNxTxV, scale, block_h, block_k, k_splits):
    """Pallas-Triton split-K decoding over a cache stored (batch, kv_heads, tokens, head_dim)."""
    from jax.experimental.pallas.ops.gpu import decode_attention
    B, H, K = q_BxHxK.shape
    N = k_BxNxTxK.shape[1]
    inner = functools.partial(decode_attention.decode_attn_unbatched, sm_scale=scale, block_h=block_h,
                              block_k=block_k, k_splits=k_splits, num_warps=None, num_stages=2, grid=None,
                              interpret=jax.default_backend() != "gpu", debug=False, return_residuals=False,
                              normalize_output=True)
    out = jax.vmap(jax.vmap(lambda q, k, v: inner(q, k, v, None, None)))(
        q_BxHxK.reshape(B, N, H // N, K), k_BxNxTxK, v_BxNxTxV)
    return out.reshape(B, H, K)


def shapes(quick: bool) -> list[dict]:
    rows = []
    for name in ("llama-2-7b", "llama-3-70b", "step-3", "deepseek-v3"):  # the sweeps last (--max-s)
        a = nets.zoo.get(name).attention
        if a.kind == "mla":  # absorbed: one shared "head" of kv_rank + rope_dim keys, kv_rank values
            rows.append({"model": name, "kind": "mla-absorbed", "heads": a.n_heads, "kv_heads": 1,
                         "k_dim": a.kv_rank + a.rope_dim, "v_dim": a.kv_rank, "scale": 1 / math.sqrt(a.qk_head_dim)})
        else:
            rows.append({"model": name, "kind": a.kind, "heads": a.n_heads, "kv_heads": a.n_kv_heads,
                         "k_dim": a.head_dim, "v_dim": a.head_dim, "scale": 1 / math.sqrt(a.head_dim)})
    if quick:
        for r in rows:
            r.update(heads=max(r["heads"] // 16, 2 * (r["kv_heads"] > 1) or 2), k_dim=min(r["k_dim"], 32),
                     v_dim=min(r["v_dim"], 16 if r["kind"] == "mla-absorbed" else 32))
            r["kv_heads"] = min(r["kv_heads"], r["heads"])
    return rows


def mla_einsum(q_lat_BxHxR, q_rope_BxHxP, latent_BxTxR, rope_BxTxP, kv_len, scale):
    """nets' absorbed-MLA einsum path (the decode reference): latent and RoPE key as stored, slots < kv_len."""
    s = (jnp.einsum("bhr,btr->bht", q_lat_BxHxR, latent_BxTxR)
         + jnp.einsum("bhp,btp->bht", q_rope_BxHxP, rope_BxTxP)) * scale
    s = jnp.where(jnp.arange(latent_BxTxR.shape[1]) < kv_len, s.astype(jnp.float32), jnp.finfo(jnp.float32).min)
    p = jax.nn.softmax(s, axis=-1).astype(q_lat_BxHxR.dtype)
    return jnp.einsum("bht,btr->bhr", p, latent_BxTxR)


# Tiles tried by --sweep on the GPU (the first of each is what nets picks today).
MLA_SWEEP = [nets.MLATiles(*t) for t in ((64, 32, 4, 8, 2), (64, 32, 8, 8, 2), (64, 64, 4, 8, 2), (64, 32, 2, 8, 2),
                                         (64, 32, 4, 8, 3), (64, 16, 4, 4, 2), (32, 32, 4, 4, 2), (32, 32, 4, 8, 2),
                                         (32, 64, 4, 4, 2), (16, 64, 4, 4, 2), (64, 64, 4, 8, 1))]
MFA_SWEEP = [(64, 8, 4, 2), (64, 8, 8, 2), (64, 8, 4, 3), (32, 8, 4, 3), (32, 16, 4, 2), (64, 16, 4, 2), (64, 4, 4, 2),
             (64, 10, 4, 2), (64, 10, 8, 2), (64, 5, 4, 2), (64, 13, 4, 2), (32, 10, 4, 3)]  # the last: 8320 slots


def bench_shape(shape: dict, batch: int, cache: int, bandwidth: float, quick: bool, raw_tiles: bool = True,
                sweep: bool = False, valid: int | None = None) -> list[dict]:
    """Rows for one shape; `valid` < `cache`: a cache of `cache` slots with the first `valid` written."""
    B, T, H, N, K, V = batch, cache, shape["heads"], shape["kv_heads"], shape["k_dim"], shape["v_dim"]
    valid = T if valid is None else valid
    keys = jax.random.split(jax.random.key(0), 3)
    q = jax.random.normal(keys[0], (B, H, K), BF16)
    k = jax.random.normal(keys[1], (B, T, N, K), BF16)
    mla = shape["kind"] == "mla-absorbed"
    v = k[..., :V] if mla else jax.random.normal(keys[2], (B, T, N, V), BF16)  # MLA: the values ARE the latent
    scale = shape["scale"]
    must_read = B * valid * N * (K if mla else K + V) * 2  # bytes: the written cache, each value once
    roofline_s = must_read / bandwidth
    flops = 2 * B * valid * H * (K + V)  # scores and context
    timing = dict(blocks=2, inner=2) if quick else dict(blocks=5, inner=20)
    base = {**{k_: shape[k_] for k_ in ("model", "kind", "heads", "kv_heads", "k_dim", "v_dim")}, "batch": B,
            "cache": valid, "slots": T, "bytes_must_read": must_read, "roofline_ms": roofline_s * 1e3,
            "flops": flops, "compute_floor_ms": flops / BF16_PEAK * 1e3}
    ref_f = jax.jit(lambda q, k, v: einsum_decode(q, k, v, scale, valid))
    ref = ref_f(q, k, v)
    rows = []

    def attempt(path, thunk):
        if time.monotonic() > DEADLINE[0]:  # --max-s: the rest is skipped, so the table is still written
            rows.append({**base, "path": path, "error": "skipped: --max-s reached"})
            return
        try:
            f, args, extra = thunk()
            out = f(*args)
            t = timed(f, *args, **timing)
            row = {**base, "path": path, "ms": t * 1e3, "fraction_of_roofline": roofline_s / t,
                   "achieved_tb_s": must_read / t / 1e12, "err": rel_err(out[..., :V], ref), **extra}
        except Exception as error:  # noqa: BLE001 - a failed path is a result
            traceback.print_exc(limit=2)
            row = {**base, "path": path, "error": f"{type(error).__name__}: {error}"[:400]}
        rows.append(row)
        print(json.dumps(row), flush=True)

    attempt("einsum", lambda: (ref_f, (q, k, v), {}))
    if jax.default_backend() == "gpu" and valid == T:
        def cudnn():
            f = jax.jit(lambda q, k, v: jax.nn.dot_product_attention(q[:, None], k, v, scale=scale,
                                                                    implementation="cudnn")[:, 0])
            return f, (q, k, v), {}
        attempt("cudnn", cudnn)
    if mla:  # nets stores the latent and the RoPE key as two arrays: time them so, not slices of one
        latent, rope = k[:, :, 0, :V], k[:, :, 0, V:]
        q_lat, q_rope = q[..., :V], q[..., V:]

        def mla_path(implementation):
            picked = nets.decode_implementation("mla", BF16, V, implementation, slots=T, rope_dim=K - V)
            if picked == "einsum":  # latent_decode returns None: nets runs its einsum form
                f = jax.jit(lambda ql, qr, c, r: mla_einsum(ql, qr, c, r, valid, scale))
            else:
                f = jax.jit(lambda ql, qr, c, r: nets.latent_decode(ql, qr, c, r, valid, scale=scale,
                                                                    implementation=implementation))
            return f, (q_lat, q_rope, latent, rope), {"picked": picked}
        for implementation in ("einsum", "folded", "auto", "pallas"):
            attempt(f"nets {implementation}", functools.partial(mla_path, implementation))
        for tiles in (MLA_SWEEP[:2] if quick else MLA_SWEEP) if sweep else []:
            def mla_tile(tiles=tiles):
                f = jax.jit(lambda ql, qr, c, r: nets.mla_decode(ql, qr, c, r, valid, scale=scale, tiles=tiles))
                return f, (q_lat, q_rope, latent, rope), dict(tiles._asdict())
            attempt("mla h{} k{} s{} w{} st{}".format(*tiles), mla_tile)
    else:
        for implementation in ("folded", "cudnn", "pallas", "auto"):
            def through_nets(implementation=implementation):
                picked = nets.decode_implementation(shape["kind"], BF16, K, implementation, slots=T)
                if picked == "einsum":  # grouped_decode returns None: nets runs its einsum form
                    return ref_f, (q, k, v), {"picked": picked}
                f = jax.jit(lambda q, k, v: nets.grouped_decode(q, k, v, valid, scale=scale, kind=shape["kind"],
                                                                implementation=implementation))
                return f, (q, k, v), {"picked": picked}
            attempt(f"nets {implementation}", through_nets)
        if sweep and N == 1:
            fits = [tile for tile in MFA_SWEEP if T % (tile[0] * tile[1]) == 0]
            for block_k, k_splits, warps, stages in fits[:2] if quick else fits:
                def gqa_tile(block_k=block_k, k_splits=k_splits, warps=warps, stages=stages):
                    from jax.experimental.pallas.ops.gpu import decode_attention
                    f = jax.jit(lambda q, k, v: decode_attention.gqa(
                        q, k, v, kv_seq_len=jnp.full((B,), valid, jnp.int32), sm_scale=scale, block_h=max(16, H),
                        block_k=block_k, k_splits=k_splits, num_warps=warps, num_stages=stages,
                        interpret=jax.default_backend() != "gpu"))
                    return f, (q, k, v), {"block_k": block_k, "k_splits": k_splits, "num_warps": warps,
                                          "num_stages": stages}
                attempt(f"gqa k{block_k} s{k_splits} w{warps} st{stages}", gqa_tile)
    if not raw_tiles or valid != T:
        return rows
    k_t = jnp.swapaxes(k, 1, 2)
    v_t = k_t if mla else jnp.swapaxes(v, 1, 2)  # MLA: keys and values the same latent array, read through L2
    configs = [(16, 128, 16)] if quick else [(16, 128, 16), (16, 64, 32), (16, 256, 8), (16, 128, 64)]
    if H // N >= 64 and not quick:  # every query head of a K/V head in one block: the cache is read once
        configs += [(64, 64, 16), (64, 32, 32), (64, 64, 8)]
    if quick:
        T_ok = [c for c in configs if T % c[2] == 0 and T // c[2] >= 16]
        configs = T_ok or [(16, 16, 1)]
    best = None
    for block_h, block_k, k_splits in configs:
        def pallas(block_h=block_h, block_k=block_k, k_splits=k_splits):
            f = jax.jit(lambda q, k, v: pallas_decode(q, k, v, scale, block_h, block_k, k_splits))
            return f, (q, k_t, v_t), {"block_h": block_h, "block_k": block_k, "k_splits": k_splits}
        attempt(f"pallas h{block_h} k{block_k} s{k_splits}", pallas)
        if "ms" in rows[-1] and (best is None or rows[-1]["ms"] < best["ms"]):
            best = rows[-1]
    if best is not None:
        rows.append({**best, "path": "pallas best"})
    return rows


# What each shape's decode took before this change (the auto rule then) and takes now; see summary().
BEFORE = {"mha": "nets cudnn", "gqa": "nets cudnn", "mfa": "nets pallas", "mla-absorbed": "nets einsum"}
AFTER = {"mha": "nets auto", "gqa": "nets auto", "mfa": "nets auto", "mla-absorbed": "nets pallas"}


def summary(rows: list[dict]) -> list[str]:
    """Markdown: per shape, the path before and after (fraction of the roofline), and the best row measured."""
    lines = ["| model | kind | cache (slots) | before | after | best measured |", "| --- | --- | --- | --- | --- | --- |"]

    def cell(r):
        return "-" if r is None else f"{r['path']}: {r['fraction_of_roofline']:.1%} ({r['ms']:.3f} ms)"

    groups = {}
    for r in rows:
        groups.setdefault((r["model"], r["cache"]), []).append(r)
    for (model, cache), group in groups.items():
        ok = [r for r in group if "ms" in r and r["path"] != "pallas best"]
        kind = group[0]["kind"]
        exact = [r for r in ok if r["slots"] == cache]
        rounded = [r for r in ok if r["slots"] != cache]
        # before: the rule then, on a cache of exactly the requested length; after: the rule now, on nets.cache_slots
        before = next((r for r in exact if r["path"] == BEFORE[kind]), None)
        if rounded:  # an odd length: before, auto refused pallas there (einsum); after, the rounded cache
            before = next((r for r in exact if r["path"] == "nets auto"), before)
        after = next((r for r in (rounded or exact) if r["path"] == AFTER[kind]), None)
        best = max(ok, key=lambda r: r["fraction_of_roofline"], default=None)
        slots = ", ".join(sorted({str(r["slots"]) for r in group}))
        lines.append(f"| {model} | {kind} | {cache} ({slots}) | {cell(before)} | {cell(after)} | {cell(best)} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/bench/decode_attention.json")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--cache", type=int, default=8192)
    parser.add_argument("--tiny", "--quick", dest="tiny", action="store_true",
                        help="tiny shapes (CPU smoke run, Pallas in interpret mode)")
    parser.add_argument("--sweep", action="store_true", help="also sweep the MLA kernel's and MFA kernel's tiles")
    parser.add_argument("--raw-tiles", action=argparse.BooleanOptionalAction, default=True,
                        help="the Pallas kernel on a transposed cache over its own tiles (the first exploration)")
    parser.add_argument("--odd", action=argparse.BooleanOptionalAction, default=True,
                        help="Step-3 MFA at cache + 1 tokens: exact slots (before) and nets.cache_slots (after)")
    parser.add_argument("--max-s", type=float, default=0,
                        help="skip the rows left after this many seconds (0: no limit), so the table is written")
    args = parser.parse_args()
    if args.max_s > 0:
        DEADLINE[0] = time.monotonic() + args.max_s
    batch, cache = (2, 256) if args.tiny else (args.batch, args.cache)
    device = jax.devices()[0]
    kind = getattr(device, "device_kind", str(device))
    bandwidth = 4.8e12 if "H200" in kind else 3.35e12
    rows = []
    for shape in shapes(args.tiny):
        sweep = args.sweep and (not args.tiny or shape["kind"] in ("mfa", "mla-absorbed"))
        rows.extend(bench_shape(shape, batch, cache, bandwidth, args.tiny, args.raw_tiles, sweep))
        if args.odd and shape["kind"] == "mfa":
            for slots in (cache + 1, nets.cache_slots(cache + 1)):
                rows.extend(bench_shape(shape, batch, slots, bandwidth, args.tiny, False, sweep and slots != cache + 1,
                                        valid=cache + 1))
    report = {"device": kind, "jax": jax.__version__, "hbm_bytes_per_s": bandwidth, "bf16_peak": BF16_PEAK,
              "rows": rows}
    out = Path(args.out)
    nets.atomic_write_json(out, report)
    table = [f"# Decode attention vs its roofline: {kind}, HBM {bandwidth / 1e12} TB/s, batch {batch}, jax {jax.__version__}",
             "", *summary(rows), "", "| model | kind | cache | slots | path | ms | roofline ms | compute floor ms | "
             "fraction | err |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        head = f"| {r['model']} | {r['kind']} | {r['cache']} | {r['slots']} | {r['path']} | "
        if "error" in r:
            table.append(head + f"ERROR {r['error'][:100]} | | | | |")
        else:
            table.append(head + f"{r['ms']:.4f} | {r['roofline_ms']:.4f} | {r['compute_floor_ms']:.4f} | "
                         f"{r['fraction_of_roofline']:.1%} | {r['err']:.1e} |")
    nets.atomic_write(out.with_suffix(".md"), "\n".join(table) + "\n")
    print("\n".join(table))
    print(f"written: {out} and {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
