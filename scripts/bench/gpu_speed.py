"""Grouped matmul, MoE layer and attention on the GPU: every implementation, their errors and the PyTorch peer.

    PYTHONPATH=. python scripts/bench/gpu_speed.py --out results/gpu_speed/options.json
    PYTHONPATH=. python scripts/bench/gpu_speed.py --quick --out /tmp/gpu_speed_cpu.json   # CPU smoke run

Shapes are codesign-100m's training step (batch 32 x 1024 tokens, bf16): the routed experts'
grouped matmul (T*k = 65536 rows, d_model 768, d_expert 384, 8 experts), the whole MoE layer,
and the attention core (12 query heads, 1 K/V head of 64, causal) plus GQA/MHA variants.
Each item is timed forward+backward (the vjp of a random cotangent) as the median of
`blocks` blocks of `inner` calls closed by `block_until_ready` after two warm-up calls;
errors are ||x - ref|| / ||ref|| against the reference path (ragged_dot / einsum) on the
same random inputs. The router+dispatch share is (layer time with free grouped matmuls -
shared-expert time) / layer time. PyTorch items (torch._grouped_mm, scaled_dot_product_attention)
run in the same process on the same GPU; an item that fails records its error and the run goes on.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import traceback
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import nets
from nets import grouped as _grouped, moe as _moe
from nets.grouped import triton_grouped_matmul

BF16 = jnp.bfloat16


def timed(fn, *args, blocks=5, inner=10) -> float:
    """Median seconds per call of a jitted `fn` (compile and two warm-ups excluded)."""
    for _ in range(2):
        jax.block_until_ready(fn(*args))
    samples = []
    for _ in range(blocks):
        start = time.perf_counter()
        for _ in range(inner):
            out = fn(*args)
        jax.block_until_ready(out)
        samples.append((time.perf_counter() - start) / inner)
    return statistics.median(samples)


def timed_carrying_cache(call, cache, reps: int) -> float:
    """Median seconds of `call(cache) -> (out, cache)` (its cache donated), each call handed the last one's cache,
    as the pipeline's loop carries it (compile and two warm-up calls excluded)."""
    for _ in range(2):
        _, cache = jax.block_until_ready(call(cache))
    samples = []
    for _ in range(reps):
        t0 = time.perf_counter()
        _, cache = jax.block_until_ready(call(cache))
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def rel_err(x, ref) -> float:
    x, ref = (np.asarray(jnp.asarray(a, jnp.float32), np.float64) for a in (x, ref))
    return float(np.linalg.norm(x - ref) / max(np.linalg.norm(ref), 1e-30))


def vjp_fn(f):
    """jit of (args..., cotangent) -> (out, grads of <f(args), cotangent> w.r.t. the float args)."""
    def run(*args_and_cot):
        *args, cot = args_and_cot
        out, pullback = jax.vjp(f, *args)
        return out, pullback(cot)
    return jax.jit(run)


def attempt(rows: list, name: str, thunk) -> None:
    try:
        row = thunk()
        row["item"] = name
        rows.append(row)
        print(json.dumps(row), flush=True)
    except Exception as error:  # noqa: BLE001 - a failed option is a result, the others still run
        rows.append({"item": name, "error": f"{type(error).__name__}: {error}"[:600]})
        print(f"{name}: FAILED {type(error).__name__}: {str(error)[:300]}", flush=True)
        traceback.print_exc(limit=2)


# ---- grouped matmul -------------------------------------------------------------------------
def grouped_items(rows, n_rows, d_in, d_out, n_groups, blocks_sweep, quick, reference_only=False,
                  mosaic_sweep=((_grouped.MOSAIC_FORWARD, _grouped.MOSAIC_TRANSPOSED),)):
    keys = jax.random.split(jax.random.key(0), 4)
    lhs = jax.random.normal(keys[0], (n_rows, d_in), BF16)
    rhs = (jax.random.normal(keys[1], (n_groups, d_in, d_out), jnp.float32) / np.sqrt(d_in)).astype(BF16)
    sizes = jnp.bincount(jax.random.randint(keys[2], (n_rows,), 0, n_groups), length=n_groups).astype(jnp.int32)
    if n_groups == 5:  # the ragged probe: an empty group, a group of one row, sizes off every tile
        sizes = jnp.asarray([n_rows - 543, 0, 300, 1, 242], jnp.int32)
    cot = jax.random.normal(keys[3], (n_rows, d_out), BF16)
    flops = 3 * 2 * n_rows * d_in * d_out  # forward + d lhs + d rhs
    shape = {"rows": n_rows, "d_in": d_in, "d_out": d_out, "groups": n_groups}
    ref_f = vjp_fn(lambda a, b: jax.lax.ragged_dot(a, b, sizes))
    ref_out, (ref_dl, ref_dr) = ref_f(lhs, rhs, cot)
    timing = dict(blocks=3, inner=3) if quick else {}

    def row(fn, **extra):
        out, (dl, dr) = fn(lhs, rhs, cot)
        t = timed(fn, lhs, rhs, cot, **timing)
        return {**shape, **extra, "fwd_bwd_ms": t * 1e3, "useful_tflops": flops / t / 1e12,
                "err_out": rel_err(out, ref_out), "err_dlhs": rel_err(dl, ref_dl), "err_drhs": rel_err(dr, ref_dr)}

    tag = f"{n_rows}x{d_in}x{d_out}/{n_groups}"
    attempt(rows, f"grouped reference ragged_dot {tag}", lambda: row(ref_f))
    dense = vjp_fn(lambda a, b: a @ b[0])
    attempt(rows, f"grouped dense-gemm ceiling {tag}", lambda: {
        **shape, "fwd_bwd_ms": timed(dense, lhs, rhs, cot, **timing) * 1e3,
        "useful_tflops": flops / timed(dense, lhs, rhs, cot, **timing) / 1e12})
    if reference_only:
        return
    if jax.default_backend() == "gpu":
        from jax._src import config as jax_config

        def flagged():
            with jax_config.jax_ragged_dot_use_gpu_pallas_triton_lowering(True):
                f = vjp_fn(lambda a, b: jax.lax.ragged_dot(a, b, sizes))
                return row(f, note="jax_ragged_dot_use_gpu_pallas_triton_lowering=True")
        attempt(rows, f"grouped ragged_dot+triton-flag {tag}", flagged)
        if _grouped._triton_kernels() is not None:
            for blocks in blocks_sweep:
                f = vjp_fn(lambda a, b, blocks=blocks: triton_grouped_matmul(blocks)(a, b, sizes))
                attempt(rows, f"grouped pallas_triton {blocks} {tag}", lambda f=f, blocks=blocks: row(f, blocks=blocks))
        fwd0, tr0 = _grouped.MOSAIC_FORWARD, _grouped.MOSAIC_TRANSPOSED
        for fwd_cfg, tr_cfg in mosaic_sweep:
            f = vjp_fn(lambda a, b, c=fwd_cfg, t=tr_cfg: _grouped.mosaic_grouped_matmul(c, t)(a, b, sizes))
            attempt(rows, f"grouped mosaic_gpu fwd{fwd_cfg} dW{tr_cfg} {tag}",
                    lambda f=f, c=fwd_cfg, t=tr_cfg: row(f, forward_cfg=c, transposed_cfg=t,
                                                         default=(c == fwd0 and t == tr0)))

        def mgpu_forward():
            from jax.experimental.pallas.ops.gpu import ragged_dot_mgpu
            best = None
            for bm, bn, steps in ((128, 128, 4), (64, 128, 4), (128, 192, 3)):
                if d_out % bn:
                    continue
                f = jax.jit(lambda a, b, bm=bm, bn=bn, steps=steps: ragged_dot_mgpu.ragged_dot(
                    a, b, group_sizes=sizes, block_m=bm, block_n=bn, block_k=64, max_concurrent_steps=steps,
                    grid_block_n=1))
                t = timed(f, lhs, rhs)
                if best is None or t < best[0]:
                    best = (t, (bm, bn, steps), rel_err(f(lhs, rhs), ref_out))
            return {**shape, "fwd_only_ms": best[0] * 1e3, "fwd_useful_tflops": flops / 3 / best[0] / 1e12,
                    "blocks_m_n_steps": best[1], "err_out": best[2], "note": "forward only: no VJP in jax"}
        attempt(rows, f"grouped mgpu(hopper) {tag}", mgpu_forward)
        attempt(rows, f"grouped torch._grouped_mm {tag}",
                lambda: torch_grouped(lhs, rhs, sizes, cot, flops, shape, ref_out, ref_dl, ref_dr))
    else:
        f = vjp_fn(lambda a, b: _grouped.megablox_grouped_matmul(a, b, sizes, interpret=True))
        attempt(rows, f"grouped megablox(interpret) {tag}", lambda: row(f))


def _to_torch(x):
    import torch
    return torch.from_numpy(np.asarray(jnp.asarray(x, jnp.float32))).cuda().to(torch.bfloat16)


def torch_timed(fn, blocks=5, inner=10) -> float:
    import torch
    for _ in range(2):
        fn()
    torch.cuda.synchronize()
    samples = []
    for _ in range(blocks):
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        torch.cuda.synchronize()
        samples.append((time.perf_counter() - start) / inner)
    return statistics.median(samples)


def torch_grouped(lhs, rhs, sizes, cot, flops, shape, ref_out, ref_dl, ref_dr):
    import torch
    a = _to_torch(lhs).requires_grad_()
    b_t = _to_torch(jnp.swapaxes(rhs, 1, 2)).contiguous()  # (G, N, K): the column-major B the kernel wants
    b = b_t.transpose(1, 2).detach().requires_grad_()
    offs = torch.from_numpy(np.cumsum(np.asarray(sizes)).astype(np.int32)).cuda()
    g = _to_torch(cot)

    def step():
        a.grad = b.grad = None
        out = torch._grouped_mm(a, b, offs=offs, out_dtype=torch.bfloat16)
        out.backward(g)
        return out
    out = step()
    t = torch_timed(step)
    as_np = lambda x: x.detach().float().cpu().numpy()
    return {**shape, "fwd_bwd_ms": t * 1e3, "useful_tflops": flops / t / 1e12, "torch": torch.__version__,
            "err_out": rel_err(as_np(out), ref_out), "err_dlhs": rel_err(as_np(a.grad), ref_dl),
            "err_drhs": rel_err(as_np(b.grad), ref_dr)}


# ---- the MoE layer ---------------------------------------------------------------------------
def moe_items(rows, cfg, batch, seq, implementations, quick):
    moe = _moe.MoE(cfg, rngs=nnx.Rngs(0), dtype=BF16)
    graphdef, params = nnx.split(moe)
    x = jax.random.normal(jax.random.key(1), (batch, seq, cfg.d_model), BF16)
    cot = jax.random.normal(jax.random.key(2), x.shape, BF16)
    timing = dict(blocks=3, inner=2) if quick else {}

    def layer(p, x):
        return nnx.merge(graphdef, p)(x)[0]

    def shared_only(p, x):
        m = nnx.merge(graphdef, p)
        return m._shared(x.reshape(-1, cfg.d_model)).reshape(x.shape)

    results = {}
    for name in implementations:
        os.environ[_grouped.ENV_VAR] = name  # read when the layer is traced
        f = vjp_fn(layer)
        out = f(params, x, cot)
        results[name] = out
        t = timed(f, params, x, cot, **timing)
        errs = {} if name == "reference" else {
            "err_out": rel_err(out[0], results["reference"][0]),
            "err_dx": rel_err(out[1][1], results["reference"][1][1]),
            "err_dparams_max": max(rel_err(a, b) for a, b in zip(jax.tree.leaves(out[1][0]),
                                                                 jax.tree.leaves(results["reference"][1][0])))}
        row = {"item": f"moe layer {name}", "model": cfg.name, "batch": batch, "seq": seq, "fwd_bwd_ms": t * 1e3,
               **errs}
        rows.append(row)
        print(json.dumps(row), flush=True)
    if hasattr(_moe, "_permute_rows"):  # the same layer with autodiff's scatter-add backward of the row gathers
        saved = _moe._permute_rows, _moe._dispatch_rows
        _moe._permute_rows = lambda x, perm, inverse: x[perm]
        _moe._dispatch_rows = lambda x, order, inverse: x[order // (order.shape[0] // x.shape[0])]
        try:
            t = timed(vjp_fn(layer), params, x, cot, **timing)
        finally:
            _moe._permute_rows, _moe._dispatch_rows = saved
        row = {"item": f"moe layer {implementations[-1]} (gather backward by scatter-add)", "fwd_bwd_ms": t * 1e3}
        rows.append(row)
        print(json.dumps(row), flush=True)
    os.environ.pop(_grouped.ENV_VAR, None)
    # Router + dispatch: the layer with grouped matmuls that cost nothing (a slice of the rows)
    # minus the shared experts timed alone.
    free = lambda lhs, rhs, sizes: jnp.pad(lhs, ((0, 0), (0, max(0, rhs.shape[2] - lhs.shape[1]))))[:, :rhs.shape[2]]
    saved = _moe.grouped_matmul
    _moe.grouped_matmul = free
    try:
        t_free = timed(vjp_fn(layer), params, x, cot, **timing)
    finally:
        _moe.grouped_matmul = saved
    t_shared = timed(vjp_fn(shared_only), params, x, cot, **timing) if cfg.ffn.n_shared_experts else 0.0
    # The parts of router + dispatch, each alone: the router (logits, softmax, top-k, gates; fwd+bwd),
    # the sort (argsort, group sizes, inverse permutation; no gradient), and the row gathers
    # (tokens into expert order, outputs back, gate-weighted combine; fwd+bwd).
    m = nnx.merge(graphdef, params)
    T, k = batch * seq, cfg.ffn.top_k
    x_TxD = x.reshape(T, cfg.d_model)
    experts = m.route(x_TxD)[2]

    def router_part(p, x):
        _, probs, _, gates = nnx.merge(graphdef, p).route(x)
        return gates, jnp.mean(probs, axis=0)

    def sort_part(experts):
        expert_N = experts.reshape(-1)
        order = jnp.argsort(expert_N, stable=True)
        inverse = jnp.zeros_like(order).at[order].set(jnp.arange(order.shape[0], dtype=order.dtype))
        return order, inverse, jnp.bincount(expert_N, length=cfg.ffn.n_experts)

    order, inverse, _ = jax.jit(sort_part)(experts)
    gates = jax.random.uniform(jax.random.key(4), (T, k))

    def gather_part(x, gates):
        xs = _moe._dispatch_rows(x, order, inverse)
        y = _moe._permute_rows(xs, inverse, order).reshape(T, k, -1)
        return jnp.einsum("tk,tkd->td", gates, y.astype(jnp.float32)).astype(x.dtype)

    parts = {}
    r_f = jax.jit(lambda p, x, c: jax.vjp(router_part, p, x)[1](c))
    r_cot = (jnp.ones((T, k), jnp.float32), jnp.ones((cfg.ffn.n_experts,), jnp.float32))
    parts["router_ms"] = timed(r_f, params, x_TxD, r_cot, **timing) * 1e3
    parts["sort_ms"] = timed(jax.jit(sort_part), experts, **timing) * 1e3
    g_f = jax.jit(lambda x, g, c: jax.vjp(gather_part, x, g)[1](c))
    parts["gathers_combine_ms"] = timed(g_f, x_TxD, gates, cot.reshape(T, -1), **timing) * 1e3
    row = {"item": "moe router+dispatch parts", **parts}
    rows.append(row)
    print(json.dumps(row), flush=True)
    layer_rows = {r["item"]: r for r in rows if r.get("item", "").startswith("moe layer")}
    best = min(v["fwd_bwd_ms"] for v in layer_rows.values())
    row = {"item": "moe router+dispatch", "free_grouped_layer_ms": t_free * 1e3, "shared_experts_ms": t_shared * 1e3,
           "router_dispatch_ms": (t_free - t_shared) * 1e3,
           "share_of_fastest_layer": (t_free - t_shared) * 1e3 / best}
    rows.append(row)
    print(json.dumps(row), flush=True)


# ---- attention core --------------------------------------------------------------------------
def einsum_attention(q, k, v, scale):
    """The einsum reference of nets.Attention (grouped heads, causal, float32 softmax)."""
    B, L, H, K = q.shape
    N = k.shape[2]
    q5 = q.reshape(B, L, N, H // N, K)
    s = jnp.einsum("blngk,btnk->bnglt", q5, k) * scale
    mask = jnp.tril(jnp.ones((L, L), bool))
    p = jax.nn.softmax(jnp.where(mask, s.astype(jnp.float32), jnp.finfo(jnp.float32).min), axis=-1).astype(q.dtype)
    return jnp.einsum("bnglt,btnk->blngk", p, v).reshape(B, L, H, K)


def attention_items(rows, batch, seq, heads, kv_heads, head_dim, quick):
    keys = jax.random.split(jax.random.key(3), 4)
    q = jax.random.normal(keys[0], (batch, seq, heads, head_dim), BF16)
    k = jax.random.normal(keys[1], (batch, seq, kv_heads, head_dim), BF16)
    v = jax.random.normal(keys[2], (batch, seq, kv_heads, head_dim), BF16)
    cot = jax.random.normal(keys[3], q.shape, BF16)
    scale = 1 / np.sqrt(head_dim)
    flops = 3.5 * 2 * 2 * batch * heads * seq * seq * head_dim / 2  # causal fwd (2 GEMMs) + bwd (2.5x fwd)
    shape = {"batch": batch, "seq": seq, "heads": heads, "kv_heads": kv_heads, "head_dim": head_dim}
    timing = dict(blocks=3, inner=2) if quick else {}
    ref_f = vjp_fn(lambda q, k, v: einsum_attention(q, k, v, scale))
    ref = ref_f(q, k, v, cot)
    tag = f"B{batch} L{seq} H{heads}/{kv_heads} K{head_dim}"

    def row(f):
        out = f(q, k, v, cot)
        t = timed(f, q, k, v, cot, **timing)
        return {**shape, "fwd_bwd_ms": t * 1e3, "causal_tflops": flops / t / 1e12, "err_out": rel_err(out[0], ref[0]),
                "err_dq": rel_err(out[1][0], ref[1][0]), "err_dk": rel_err(out[1][1], ref[1][1]),
                "err_dv": rel_err(out[1][2], ref[1][2])}

    attempt(rows, f"attention einsum {tag}", lambda: row(ref_f))
    impls = ("xla", "cudnn") if jax.default_backend() == "gpu" else ("xla",)
    for impl in impls:
        f = vjp_fn(lambda q, k, v, impl=impl: jax.nn.dot_product_attention(q, k, v, scale=scale, is_causal=True,
                                                                            implementation=impl))
        attempt(rows, f"attention dot_product_attention[{impl}] {tag}", lambda f=f: row(f))
    if jax.default_backend() == "gpu":
        attempt(rows, f"attention torch sdpa {tag}", lambda: torch_attention(q, k, v, cot, flops, shape, ref))


def torch_attention(q, k, v, cot, flops, shape, ref):
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel
    tq, tk, tv, tg = (_to_torch(a).transpose(1, 2).contiguous() for a in (q, k, v, cot))  # (B, H, L, K)
    tq.requires_grad_()
    tk.requires_grad_()
    tv.requires_grad_()
    out_rows = {}
    for label, expand in (("flash, K/V repeated to all heads", True), ("default, enable_gqa", False)):
        def step():
            tq.grad = tk.grad = tv.grad = None
            kk, vv = tk, tv
            if expand:
                kk = tk.repeat_interleave(tq.shape[1] // tk.shape[1], dim=1)
                vv = tv.repeat_interleave(tq.shape[1] // tv.shape[1], dim=1)
                with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                    out = torch.nn.functional.scaled_dot_product_attention(tq, kk, vv, is_causal=True)
            else:
                out = torch.nn.functional.scaled_dot_product_attention(tq, kk, vv, is_causal=True, enable_gqa=True)
            out.backward(tg)
            return out
        try:
            out = step()
            t = torch_timed(step)
            out_rows[label] = {"fwd_bwd_ms": t * 1e3, "causal_tflops": flops / t / 1e12,
                               "err_out": rel_err(out.detach().transpose(1, 2).float().cpu().numpy(), ref[0])}
        except Exception as error:  # noqa: BLE001
            out_rows[label] = {"error": f"{type(error).__name__}: {error}"[:300]}
    return {**shape, "torch": torch.__version__, "variants": out_rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/bench/gpu_speed.json")
    parser.add_argument("--quick", action="store_true", help="tiny shapes (CPU smoke run)")
    parser.add_argument("--only", default="grouped,moe,attention", help="comma-separated sections")
    parser.add_argument("--reference-only", action="store_true",
                        help="grouped section: the ragged_dot reference and the dense ceiling only (to test XLA flags)")
    args = parser.parse_args()
    sections = set(args.only.split(","))
    rows: list = []
    cfg = nets.zoo.get("codesign-100m")
    if args.quick:
        cfg = cfg.replace(d_model=64, ffn=dict(d_expert=32, d_ff=128), attention=dict(q_rank=32, n_heads=4))
        batch, seq, sweep = 2, 64, [(16, 16, 16)]
    else:
        batch, seq = 32, 1024
        sweep = [(64, 64, 64), (128, 64, 128), (128, 32, 128), (64, 64, 128), (128, 64, 64), (64, 32, 64)]
    f = cfg.ffn
    n_rows = batch * seq * f.top_k
    if "grouped" in sections:
        only_ref = args.reference_only
        fwd0, tr0 = _grouped.MOSAIC_FORWARD, _grouped.MOSAIC_TRANSPOSED
        mosaic_sweep = [(fwd0, tr0), ((128, 64, 4), tr0), (fwd0, (128, 128, 128, 2)), (fwd0, (64, 128, 64, 4))]
        grouped_items(rows, n_rows, cfg.d_model, f.d_expert, f.n_experts, sweep, args.quick, only_ref, mosaic_sweep)
        grouped_items(rows, n_rows, f.d_expert, cfg.d_model, f.n_experts, sweep[:2], args.quick, only_ref,
                      mosaic_sweep[:2])
        if not args.quick:  # the E=64 shape quoted in nets.moe; a ragged one (an empty group, odd sizes)
            grouped_items(rows, 8192, 2048, 1024, 64, sweep[:2], args.quick, only_ref)
            grouped_items(rows, 1000, 128, 192, 5, sweep[:1], args.quick, only_ref)
    if "moe" in sections:
        auto = _grouped.resolve_implementation("auto", (n_rows, cfg.d_model), (f.n_experts, cfg.d_model, f.d_expert), BF16)
        impls = ["reference"] + ([auto] if auto != "reference" else [])
        moe_items(rows, cfg, batch, seq, impls, args.quick)
    if "attention" in sections:
        a = cfg.attention
        for kv in ((a.n_kv_heads,) if args.quick else (a.n_kv_heads, 4, a.n_heads)):
            attention_items(rows, batch, seq, a.n_heads, kv, a.head_dim, args.quick)
    device = jax.devices()[0]
    report = {"device": getattr(device, "device_kind", str(device)), "backend": jax.default_backend(),
              "jax": jax.__version__, "xla_flags": os.environ.get("XLA_FLAGS", ""), "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"device: {report['device']}  written: {args.out}")
    for r in rows:
        t = r.get("fwd_bwd_ms", r.get("fwd_only_ms", r.get("router_dispatch_ms")))
        rate = r.get("useful_tflops", r.get("causal_tflops", r.get("fwd_useful_tflops", "")))
        print(f"{r['item']:<62} {t if t is None else round(t, 3)!s:>9} ms  {rate if rate == '' else round(rate, 1)!s:>7}"
              f"  {'ERROR' if 'error' in r else ''}")


if __name__ == "__main__":
    main()
