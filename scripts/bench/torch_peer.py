"""The PyTorch peer of our training step (benchmark-only): the same zoo models, torch.compile, bf16 autocast.

    python3 scripts/bench/torch_peer.py --cases codesign-100m:16:1024,codesign-dense-300m:16:2048 \
        --out runs/bench/torch_peer.json

Each case builds the zoo model's architecture in PyTorch from its `nets` config (decoder with
RMSNorm, RoPE, MHA/GQA/MFA attention through `scaled_dot_product_attention` (flash, causal,
`enable_gqa`), low-rank query where the config has one, SwiGLU FFN; MoE layers with the same
router (float32 softmax, top-k, gates renormalised over the k), tokens sorted by expert and
the routed experts as `torch._grouped_mm` (a loop over experts where that is missing), shared
experts, load-balance loss weighted 0.01) and trains it like `codesign.Trainer` does: float32
master weights, bf16 autocast, cross-entropy in float32, global-norm clipping at 1.0, fused
AdamW; random tokens generated on the device. The parameter count is checked against
`nets.count_params` (the same architecture, not an approximation of it).
Timing: the loss+backward function is `torch.compile`d; warm-up steps (compilation excluded),
then the median of `blocks` blocks of `steps` steps each closed by `torch.cuda.synchronize`.
MFU = (6 x active non-embedding parameters + 6 x layers x heads x qk_head_dim x seq) x tokens/s
/ peak (the causal convention of `train_throughput.py`), peak = 989.4 TFLOP/s (H100/H200 SXM
dense bf16 datasheet).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
import traceback
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import nets

PEAK_TFLOPS = 989.4
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"  # cpu: a smoke run of the code only


def sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


class RMSNorm(nn.Module):
    def __init__(self, width: int, eps: float):
        super().__init__()
        self.weight, self.eps = nn.Parameter(torch.ones(width)), eps

    def forward(self, x):
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)


def rope(x, theta: float):
    """Rotary embedding of x (B, H, L, K), rotate-half pairing."""
    L, K = x.shape[-2], x.shape[-1]
    inv = 1.0 / theta ** (torch.arange(0, K, 2, device=x.device, dtype=torch.float32) / K)
    angles = torch.arange(L, device=x.device, dtype=torch.float32)[:, None] * inv[None]
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    x1, x2 = x[..., : K // 2], x[..., K // 2:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class Attention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        a, d = cfg.attention, cfg.d_model
        if a.kind not in ("mha", "gqa", "mfa") or a.qk_norm:
            raise ValueError(f"attention.kind={a.kind!r} qk_norm={a.qk_norm}: the peer covers mha/gqa/mfa without qk_norm")
        self.a, self.theta = a, cfg.rope_theta
        if a.q_rank:
            self.wq_a, self.q_norm = nn.Linear(d, a.q_rank, bias=False), RMSNorm(a.q_rank, cfg.norm_eps)
            self.wq_b = nn.Linear(a.q_rank, a.n_heads * a.head_dim, bias=False)
        else:
            self.wq = nn.Linear(d, a.n_heads * a.head_dim, bias=False)
        self.wk = nn.Linear(d, a.n_kv_heads * a.head_dim, bias=False)
        self.wv = nn.Linear(d, a.n_kv_heads * a.head_dim, bias=False)
        self.wo = nn.Linear(a.n_heads * a.head_dim, d, bias=False)

    def forward(self, x):
        a, (B, L, _) = self.a, x.shape
        q = self.wq_b(self.q_norm(self.wq_a(x))) if a.q_rank else self.wq(x)
        q = q.view(B, L, a.n_heads, a.head_dim).transpose(1, 2)
        k = self.wk(x).view(B, L, a.n_kv_heads, a.head_dim).transpose(1, 2)
        v = self.wv(x).view(B, L, a.n_kv_heads, a.head_dim).transpose(1, 2)
        q, k = rope(q, self.theta), rope(k, self.theta)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=a.n_kv_heads != a.n_heads)
        return self.wo(out.transpose(1, 2).reshape(B, L, a.n_heads * a.head_dim))


class SwiGLU(nn.Module):
    def __init__(self, d: int, f: int):
        super().__init__()
        self.gate, self.up, self.down = nn.Linear(d, f, bias=False), nn.Linear(d, f, bias=False), nn.Linear(f, d, bias=False)

    def forward(self, x):
        return self.down(F.silu(self.gate(x)) * self.up(x))


class MoE(nn.Module):
    def __init__(self, cfg, grouped: bool):
        super().__init__()
        f, d = cfg.ffn, cfg.d_model
        self.E, self.k, self.grouped = f.n_experts, f.top_k, grouped
        self.router = nn.Linear(d, f.n_experts, bias=False)
        init = lambda *shape: nn.Parameter(torch.randn(*shape) / math.sqrt(shape[-1]))
        # (E, out, in) row-major: w.transpose(1, 2) is the column-major (E, in, out) operand _grouped_mm wants
        self.w_gate, self.w_up, self.w_down = init(self.E, f.d_expert, d), init(self.E, f.d_expert, d), init(self.E, d, f.d_expert)
        self.shared = SwiGLU(d, f.n_shared_experts * f.d_expert) if f.n_shared_experts else None

    def _experts(self, x, w, offsets, counts):
        if self.grouped:
            return torch._grouped_mm(x, w.transpose(1, 2), offs=offsets, out_dtype=x.dtype)
        outs, start = [], 0  # the fallback: one matmul per expert (host-side sizes)
        for e, n in enumerate(counts.tolist()):
            outs.append(x[start:start + n] @ w[e].t())
            start += n
        return torch.cat(outs)

    def forward(self, x):
        B, L, D = x.shape
        x = x.reshape(B * L, D)
        with torch.autocast(DEVICE, enabled=False):
            probs = torch.softmax(x.float() @ self.router.weight.float().t(), dim=-1)
        top_p, experts = torch.topk(probs, self.k, dim=-1)
        gates = top_p / top_p.sum(-1, keepdim=True)
        flat = experts.reshape(-1)
        order = torch.argsort(flat, stable=True)
        counts = torch.zeros(self.E, dtype=torch.int64, device=x.device).scatter_add_(0, flat, torch.ones_like(flat))
        offsets = torch.cumsum(counts, 0).to(torch.int32)
        xs = x.to(torch.bfloat16)[order // self.k]
        h = F.silu(self._experts(xs, self.w_gate.to(torch.bfloat16), offsets, counts)) * \
            self._experts(xs, self.w_up.to(torch.bfloat16), offsets, counts)
        ys = self._experts(h, self.w_down.to(torch.bfloat16), offsets, counts)
        y = torch.empty_like(ys)
        y[order] = ys  # un-sort
        out = torch.einsum("tk,tkd->td", gates, y.view(B * L, self.k, D).float()).to(x.dtype)
        if self.shared is not None:
            out = out + self.shared(x)
        fraction = counts.float() / flat.numel()
        balance = self.E * torch.sum(fraction * probs.mean(0))
        return out.view(B, L, D), balance


class Block(nn.Module):
    def __init__(self, cfg, layer: int, grouped: bool):
        super().__init__()
        self.n1, self.n2 = RMSNorm(cfg.d_model, cfg.norm_eps), RMSNorm(cfg.d_model, cfg.norm_eps)
        self.attn = Attention(cfg)
        self.moe = cfg.is_moe_layer(layer)
        self.ffn = MoE(cfg, grouped) if self.moe else SwiGLU(cfg.d_model, cfg.ffn.d_ff)

    def forward(self, x):
        x = x + self.attn(self.n1(x))
        if self.moe:
            y, balance = self.ffn(self.n2(x))
            return x + y, balance
        return x + self.ffn(self.n2(x)), x.new_zeros((), dtype=torch.float32)


class Decoder(nn.Module):
    def __init__(self, cfg, grouped: bool):
        super().__init__()
        if cfg.tie_embeddings or cfg.norm != "rmsnorm" or cfg.positions != "rope" or cfg.ffn.activation != "swiglu":
            raise ValueError(f"model={cfg.name!r}: the peer covers untied RMSNorm/RoPE/SwiGLU decoders")
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg, i, grouped) for i in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)

    def forward(self, tokens, targets):
        x, balance = self.embed(tokens), 0.0
        for block in self.blocks:
            x, b = block(x)
            balance = balance + b
        logits = self.head(self.norm(x))
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1))
        return loss + 0.01 * balance


def bench(model_name: str, batch: int, seq: int, warmup: int, blocks: int, steps: int, compile_: bool) -> dict:
    cfg = nets.zoo.get(model_name)
    grouped = hasattr(torch, "_grouped_mm")
    torch.manual_seed(0)
    model = Decoder(cfg, grouped).to(DEVICE)
    n_params = sum(p.numel() for p in model.parameters())
    counts = nets.count_params(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.05, fused=DEVICE == "cuda")

    def loss_fn(tokens, targets):
        with torch.autocast(DEVICE, dtype=torch.bfloat16):
            return model(tokens, targets)
    loss_fn = torch.compile(loss_fn) if compile_ else loss_fn
    gen = torch.Generator(device=DEVICE).manual_seed(1)
    data = torch.randint(0, cfg.vocab_size, (batch, seq + 1), device=DEVICE, generator=gen)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(data[:, :-1], data[:, 1:])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, foreach=True)
        opt.step()
        return loss

    t0 = time.perf_counter()
    first = float(step())
    sync()
    t_first = time.perf_counter() - t0
    for _ in range(warmup):
        step()
    sync()
    times = []
    for _ in range(blocks):
        t = time.perf_counter()
        for _ in range(steps):
            loss = step()
        sync()
        times.append((time.perf_counter() - t) / steps)
    step_s = statistics.median(times)
    a = cfg.attention
    flops_tok = 6.0 * counts.active + 6.0 * cfg.n_layers * a.n_heads * a.qk_head_dim * seq
    tokens_s = batch * seq / step_s
    return {"model": model_name, "batch": batch, "seq_len": seq, "params_torch": n_params,
            "params_nets_total": counts.total, "params_equal": n_params == counts.total,
            "experts": "torch._grouped_mm" if grouped else "loop over experts", "compiled": compile_,
            "step_s_median": step_s, "step_s_min": min(times), "step_s_max": max(times), "tokens_per_s": tokens_s,
            "train_flops_per_token_causal": flops_tok, "achieved_tflops_causal": flops_tok * tokens_s / 1e12,
            "mfu_causal_vs_datasheet": flops_tok * tokens_s / 1e12 / PEAK_TFLOPS, "first_step_s_incl_compile": t_first,
            "loss_first": first, "loss_last": float(loss), "max_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if DEVICE == "cuda" else 0.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="codesign-100m:16:1024,codesign-dense-300m:16:2048")
    parser.add_argument("--out", default="runs/bench/torch_peer.json")
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--quick", action="store_true", help="few steps (smoke run)")
    args = parser.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = True
    rows = []
    for case in args.cases.split(","):
        name, b, s = case.split(":")
        try:
            row = bench(name, int(b), int(s), warmup=2 if args.quick else 3, blocks=2 if args.quick else 5,
                        steps=2 if args.quick else 8, compile_=not args.no_compile)
        except Exception as error:  # noqa: BLE001 - a failed case is a result, the next still runs
            traceback.print_exc(limit=3)
            row = {"model": name, "batch": int(b), "seq_len": int(s), "error": f"{type(error).__name__}: {error}"[:600]}
            if not args.no_compile:  # the eager step still gives a peer figure (marked compiled: False)
                try:
                    row = {**bench(name, int(b), int(s), warmup=2, blocks=3, steps=5, compile_=False),
                           "compile_error": row["error"]}
                except Exception as eager_error:  # noqa: BLE001
                    traceback.print_exc(limit=3)
                    row["eager_error"] = f"{type(eager_error).__name__}: {eager_error}"[:600]
        rows.append(row)
        print(json.dumps(row), flush=True)
        if DEVICE == "cuda":
            torch.cuda.empty_cache()
    report = {"device": torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu", "torch": torch.__version__, "peak_tflops": PEAK_TFLOPS,
              "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    for r in rows:
        if "error" in r:
            print(f"{r['model']:<22} ERROR {r['error'][:200]}")
        else:
            print(f"{r['model']:<22}{r['batch']:>4} x{r['seq_len']:>5} {r['step_s_median'] * 1e3:9.2f} ms "
                  f"{r['tokens_per_s']:>10.0f} tok/s  MFU {r['mfu_causal_vs_datasheet']:.1%}  params equal "
                  f"{r['params_equal']}")
    print(f"device: {report['device']}  written: {args.out}")


if __name__ == "__main__":
    main()
