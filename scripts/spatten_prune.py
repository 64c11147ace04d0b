"""SpAtten pruning on the embedded data: validation loss against SpAtten DRAM traffic.

Two tasks built from the embedded byte corpus (`codesign.data`):
  decoder  byte-LM, SpAtten's GPT-2 setting in miniature: each window is a prompt of
           `prompt` bytes (prunable) and a continuation (never pruned); the loss is the
           next-byte loss on the continuation; DRAM = SpAtten decode traffic per generated
           token (context = the prompt, `seq - prompt` generated).
  encoder  bidirectional masked-byte prediction (BERT-like): 15% of the bytes replaced by
           byte 0; loss on the masked positions (a pruned token predicts from the state it
           had when pruned); DRAM = SpAtten prefill traffic of one window.
For each task one small model is pretrained unpruned, then three arms are fine-tuned for
the same number of steps from it: no pruning; the paper's fixed schedule (tokens after
15% of layers, heads after 30%, linear ramps) at several average keeps; learned per-layer
token and head keep ratios (soft masks, `PrunedLM.soft`, temperature annealed, plus
lambda * DRAM(keep)/DRAM(unpruned) from the differentiable SpAtten target) at several
lambdas, hardened to static counts and fine-tuned hard like the paper arm. Every arm is
evaluated hard with progressive quantization (8+4 bits, threshold 0.1), which gives the
fraction of attention rows that needed the LSBs.

    PYTHONPATH=. python scripts/spatten_prune.py            # ~5-10 min on 2 CPUs
    PYTHONPATH=. python scripts/spatten_prune.py --quick    # a smoke run
Writes OUT/spatten_prune.json, OUT/spatten_prune.md (table) and OUT/spatten_prune.png.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from codesign import TrainConfig, Trainer
from codesign.data import eval_batches, load_byte_corpus, sample_batch
from hwcost import Scenario, SpAtten, pruning_knobs, spatten_workload, Knobs
from nets import ModelConfig, PrunedLM, PrunePlan, monotone_keep, ProgressiveQuant, temperature_schedule

MASK_BYTE, MASK_RATE = 0, 0.15
PQ = ProgressiveQuant(msb_bits=8, lsb_bits=4, threshold=0.1)


def model_config(causal: bool, seq: int) -> ModelConfig:
    """A small MFA model in the shape of `codesign-default` (low-rank query, one shared K/V head)."""
    return ModelConfig().replace(
        name="spatten-" + ("decoder" if causal else "encoder"), vocab_size=256, d_model=64, n_layers=4,
        max_seq_len=seq, causal=causal,
        attention=dict(kind="mfa", n_heads=4, n_kv_heads=1, head_dim=16, q_rank=32), ffn=dict(d_ff=128))


# ---- task data and loss --------------------------------------------------------------------------
def make_batch(task: str, data, key, batch: int, seq: int):
    inputs, targets = sample_batch(data, key, batch, seq)
    if task == "decoder":
        return inputs, targets
    mask = jax.random.bernoulli(jax.random.fold_in(key, 1), MASK_RATE, inputs.shape)
    return jnp.where(mask, MASK_BYTE, inputs), jnp.where(mask, inputs, -1)


def task_loss(task: str, logits, targets, prompt: int):
    """Mean cross-entropy: decoder on the continuation (positions >= prompt), encoder on masked bytes."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), -1)
    safe = jnp.maximum(targets, 0)
    nll = -jnp.take_along_axis(logp, safe[..., None], -1)[..., 0]
    if task == "decoder":
        weight = (jnp.arange(targets.shape[1]) >= prompt).astype(jnp.float32)[None, :] * jnp.ones_like(nll)
    else:
        weight = (targets >= 0).astype(jnp.float32)
    return jnp.sum(nll * weight) / jnp.maximum(jnp.sum(weight), 1.0)


# ---- SpAtten DRAM traffic of a plan ------------------------------------------------------------------
def scenario_of(task: str, seq: int, prompt: int) -> Scenario:
    if task == "decoder":
        return Scenario(phase="decode", batch=1, context_len=prompt, gen_len=seq - prompt, kv_bits=12)
    return Scenario(phase="prefill", batch=1, context_len=seq, kv_bits=12)


def dram_bytes(task, cfg, seq, prompt, token_keep, head_keep, lsb_fraction=0.0):
    """SpAtten DRAM bytes (decoder: per generated token; encoder: per window) for per-layer keep ratios."""
    sc = scenario_of(task, seq, prompt)
    token_keep = jnp.asarray(token_keep, jnp.float32)
    if task == "decoder":
        # keep is a fraction of the prompt; the generated tokens (on average (G-1)/2 of them) are never pruned
        gen = (sc.gen_len - 1) / 2
        token_keep = (token_keep * prompt + gen) / (prompt + gen)
    knobs = pruning_knobs(Knobs.default(cfg.n_layers, sc), token_keep, jnp.asarray(head_keep, jnp.float32))
    return jnp.sum(spatten_workload(cfg, sc, knobs, lsb_fraction=lsb_fraction, lsb_bits=PQ.lsb_bits).dram_bytes)


# ---- training: codesign's one training step (`codesign.Trainer`), with this script's model, data and loss -----
class FineTuner(Trainer):
    """One arm's training: the PrunedLM `model` under a fixed `plan` (hard), or, with `lam`, its weights AND
    per-layer token/head keep logits under soft masks (temperature annealed) plus lam * DRAM(keep)/DRAM(unpruned).

    Batches come from `make_batch` with `fold_in(key, step)`; Adam(W) without clipping or warm-up, the
    network's rate `lr` (cosine decay when hard), the knobs' `opts.lr_knobs`.
    """

    def __init__(self, model, task, data, opts, steps, key, lr, *, plan=None, lam=None, dram_full=None):
        self.model, self.task, self.data, self.opts, self.key = model, task, data, opts, key
        self.plan, self.lam, self.dram_full = plan, lam, dram_full
        self.n_prunable = opts.prompt if task == "decoder" else None
        tc = TrainConfig(steps=steps, batch=opts.batch, seq_len=opts.seq, lr=lr, warmup_steps=0, weight_decay=0.0,
                         aux_weight=0.0, seed=opts.seed, dtype="float32")
        super().__init__(tc, cfg=model.cfg)

    def build_model(self, key):
        return self.model

    def load_data(self):
        return jax.device_put(self.data, self.replicated), None

    def sample(self, train_data, step):
        return make_batch(self.task, train_data, jax.random.fold_in(self.key, step), self.opts.batch, self.opts.seq)

    def init_trainable(self, net_params):
        if self.lam is None:
            return net_params
        init_logit = math.log(0.95 / 0.05)
        n_layers = self.cfg.n_layers
        return net_params, {"token": jnp.full((n_layers,), init_logit), "head": jnp.full((n_layers,), init_logit)}

    def build_optimizer(self):
        if self.lam is None:
            return optax.adamw(optax.cosine_decay_schedule(self.tc.lr, self.tc.steps), weight_decay=0.0)
        return optax.multi_transform({"net": optax.adam(self.tc.lr), "knobs": optax.adam(self.opts.lr_knobs)},
                                     ("net", "knobs"))

    def objective(self, params, tokens, targets, step):
        opts = self.opts
        if self.lam is None:
            logits, _ = self.model_from(params)(tokens, plan=self.plan, n_prunable=self.n_prunable)
            loss = task_loss(self.task, logits, targets, opts.prompt)
            return loss, {"loss": loss}
        net, knobs = params
        token_keep, head_keep = keeps(knobs)
        temperature = temperature_schedule(step, self.tc.steps, 0.5, 0.02)
        logits, _ = self.model_from(net).soft(tokens, token_keep=token_keep, head_keep=head_keep,
                                              temperature=temperature, n_prunable=self.n_prunable)
        cost = dram_bytes(self.task, self.cfg, opts.seq, opts.prompt, token_keep, head_keep) / self.dram_full
        loss = task_loss(self.task, logits, targets, opts.prompt) + self.lam * cost
        return loss, {"loss": loss}


def keeps(knobs):
    """Per-layer (token, head) keep ratios from their logits, non-increasing over the layers."""
    return monotone_keep(jax.nn.sigmoid(knobs["token"])), monotone_keep(jax.nn.sigmoid(knobs["head"]))


def train_hard(model, plan, task, data, opts, steps, key, lr):
    """Fine-tune `model`'s weights under the fixed `plan`; returns the last step's loss."""
    trainer = FineTuner(model, task, data, opts, steps, key, lr, plan=plan)
    for i in range(steps):
        metrics = trainer.advance(i)
    nnx.update(model, trainer.params)
    return float(metrics["loss"])


def train_learned(model, task, data, opts, steps, key, lam, dram_full):
    """Soft-mask fine-tuning of the weights AND per-layer token/head keep logits with a DRAM cost term;
    returns the learned (token, head) keep ratios."""
    trainer = FineTuner(model, task, data, opts, steps, key, opts.lr_finetune, lam=lam, dram_full=dram_full)
    for i in range(steps):
        trainer.advance(i)
    net, knobs = trainer.params
    nnx.update(model, net)
    token_keep, head_keep = keeps(knobs)
    return np.asarray(token_keep), np.asarray(head_keep)


def evaluate(model, plan, task, valid_batches, opts):
    graphdef, state = nnx.split(model)
    n_prunable = opts.prompt if task == "decoder" else None

    @jax.jit
    def one(tokens, targets):
        logits, aux = nnx.merge(graphdef, state)(tokens, plan=plan, n_prunable=n_prunable)
        return task_loss(task, logits, targets, opts.prompt), aux["lsb_rows"], aux["rows"]

    losses, lsb, rows = [], 0.0, 0.0
    for tokens, targets in zip(*valid_batches):
        loss, l, r = one(jnp.asarray(tokens), jnp.asarray(targets))
        losses.append(float(loss))
        lsb, rows = lsb + float(l), rows + float(r)
    return float(np.mean(losses)), lsb / max(rows, 1.0)


def valid_set(task, corpus, opts):
    tokens, targets = eval_batches(corpus.valid, opts.batch, opts.seq, opts.eval_batches)
    if task == "encoder":
        key = jax.random.key(12345)
        mask = np.asarray(jax.random.bernoulli(key, MASK_RATE, tokens.shape))
        tokens, targets = np.where(mask, MASK_BYTE, tokens), np.where(mask, tokens, -1)
    return tokens, targets


# ---- one task ---------------------------------------------------------------------------------------
def run_task(task: str, corpus, opts) -> list[dict]:
    cfg = model_config(causal=task == "decoder", seq=opts.seq)
    key = jax.random.key(opts.seed)
    data = jnp.asarray(corpus.train)
    valid = valid_set(task, corpus, opts)
    none = PrunePlan.none(cfg.n_layers)
    base = PrunedLM(cfg, rngs=nnx.Rngs(opts.seed))
    t0 = time.time()
    train_hard(base, none, task, data, opts, opts.pretrain_steps, jax.random.fold_in(key, 0), opts.lr)
    print(f"[{task}] pretrained {opts.pretrain_steps} steps in {time.time() - t0:.0f} s", flush=True)
    base_state = nnx.state(base)
    dram_full = float(dram_bytes(task, cfg, opts.seq, opts.prompt, np.ones(cfg.n_layers), np.ones(cfg.n_layers)))

    def fresh():
        m = PrunedLM(cfg, rngs=nnx.Rngs(0))
        nnx.update(m, jax.tree.map(jnp.array, base_state))
        return m

    def record(arm, setting, plan, model):
        loss, lsb_fraction = evaluate(model, plan, task, valid, opts)
        tk, hk = np.asarray(plan.token_keep), np.asarray(plan.head_keep)
        dram = float(dram_bytes(task, cfg, opts.seq, opts.prompt, tk, hk, lsb_fraction))
        row = {"task": task, "arm": arm, "setting": setting, "valid_loss": loss, "dram_bytes": dram,
               "dram_vs_unpruned": dram / float(dram_bytes(task, cfg, opts.seq, opts.prompt, np.ones_like(tk),
                                                           np.ones_like(hk), lsb_fraction)),
               "lsb_fraction": lsb_fraction, "token_keep": tk.round(4).tolist(), "head_keep": hk.round(4).tolist()}
        print(f"[{task}] {arm:8s} {setting:12s} loss {loss:.4f}  DRAM {dram / 1e3:8.1f} kB "
              f"({row['dram_vs_unpruned']:.3f} of unpruned)  LSB rows {lsb_fraction:.3f}", flush=True)
        return row

    rows = []
    fine = jax.random.fold_in(key, 1)
    m = fresh()
    train_hard(m, none, task, data, opts, opts.finetune_steps, fine, opts.lr_finetune)
    rows.append(record("none", "keep=1", PrunePlan(none.token_keep, none.head_keep, progressive=PQ), m))
    for avg in opts.paper_keeps:
        plan = PrunePlan.paper(cfg.n_layers, avg, opts.paper_head_keep, progressive=PQ)
        m = fresh()
        train_hard(m, PrunePlan(plan.token_keep, plan.head_keep), task, data, opts, opts.finetune_steps, fine,
                   opts.lr_finetune)
        rows.append(record("paper", f"avg={avg}", plan, m))
    for lam in opts.lambdas:
        m = fresh()
        soft_steps = opts.finetune_steps // 2
        token_keep, head_keep = train_learned(m, task, data, opts, soft_steps, fine, lam, dram_full)
        plan = PrunePlan.from_keep(token_keep, head_keep)
        train_hard(m, plan, task, data, opts, opts.finetune_steps - soft_steps, jax.random.fold_in(fine, 7),
                   opts.lr_finetune)
        rows.append(record("learned", f"lambda={lam}", PrunePlan.from_keep(token_keep, head_keep, progressive=PQ), m))
    return rows


def compare(rows: list[dict]) -> list[dict]:
    """For each learned point: the least DRAM the paper schedule (or no pruning) needs for a loss at least as low.

    The fine-tuned losses are noisy and the paper arm's loss is not monotone in its keep,
    so no interpolation: the paper's best point with loss <= the learned loss (its lower
    envelope). ratio < 1: the learned keep ratios need less DRAM at equal or better loss.
    """
    out = []
    for task in sorted({r["task"] for r in rows}):
        paper = [r for r in rows if r["task"] == task and r["arm"] in ("paper", "none")]
        for r in (r for r in rows if r["task"] == task and r["arm"] == "learned"):
            as_good = [p["dram_bytes"] for p in paper if p["valid_loss"] <= r["valid_loss"]]
            paper_dram = min(as_good) if as_good else float("nan")
            out.append({"task": task, "setting": r["setting"], "valid_loss": r["valid_loss"],
                        "learned_dram": r["dram_bytes"], "paper_dram_at_equal_loss": paper_dram,
                        "learned_over_paper": r["dram_bytes"] / paper_dram if as_good else float("nan"),
                        "note": "" if as_good else "no paper/unpruned point reaches this loss"})
    return out


def table(rows, comparisons) -> str:
    lines = ["| task | arm | setting | valid loss | DRAM (kB) | vs unpruned | LSB rows | token keep | head keep |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['task']} | {r['arm']} | {r['setting']} | {r['valid_loss']:.4f} | "
                     f"{r['dram_bytes'] / 1e3:.1f} | {r['dram_vs_unpruned']:.3f} | {r['lsb_fraction']:.3f} | "
                     f"{' '.join(f'{v:.2f}' for v in r['token_keep'])} | {' '.join(f'{v:.2f}' for v in r['head_keep'])} |")
    lines += ["", "| task | learned | loss | learned DRAM (kB) | least paper DRAM at loss <= it (kB) | ratio |",
              "|---|---|---|---|---|---|"]
    for c in comparisons:
        lines.append(f"| {c['task']} | {c['setting']} | {c['valid_loss']:.4f} | {c['learned_dram'] / 1e3:.1f} | "
                     f"{c['paper_dram_at_equal_loss'] / 1e3:.1f} | {c['learned_over_paper']:.3f} {c['note']} |")
    return "\n".join(lines)


def plot(rows, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    tasks = sorted({r["task"] for r in rows})
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.5 * len(tasks), 4))
    for ax, task in zip(np.atleast_1d(axes), tasks):
        for arm, style in (("none", "ks"), ("paper", "o-"), ("learned", "^-")):
            pts = sorted([(r["dram_bytes"] / 1e3, r["valid_loss"]) for r in rows
                          if r["task"] == task and r["arm"] == arm])
            if pts:
                ax.plot(*zip(*pts), style, label={"none": "no pruning", "paper": "paper schedule",
                                                  "learned": "learned keep ratios"}[arm])
        ax.set_xlabel("SpAtten DRAM traffic (kB" + ("/generated token)" if task == "decoder" else "/window)"))
        ax.set_ylabel("validation loss (nats)")
        ax.set_title(f"{task}: loss vs DRAM")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="results/spatten")
    p.add_argument("--tasks", nargs="+", default=["decoder", "encoder"], choices=["decoder", "encoder"])
    p.add_argument("--seq", type=int, default=64)
    p.add_argument("--prompt", type=int, default=48, help="decoder: prunable prompt bytes per window")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--pretrain-steps", type=int, default=300)
    p.add_argument("--finetune-steps", type=int, default=80)
    p.add_argument("--eval-batches", type=int, default=8)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--lr-finetune", type=float, default=1e-3)
    p.add_argument("--lr-knobs", type=float, default=0.1)
    p.add_argument("--paper-keeps", type=float, nargs="+", default=[0.6, 0.3, 0.1])
    p.add_argument("--paper-head-keep", type=float, default=0.9)
    p.add_argument("--lambdas", type=float, nargs="+", default=[0.03, 0.3])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="tiny smoke run")
    opts = p.parse_args(argv)
    if opts.quick:
        opts.pretrain_steps, opts.finetune_steps, opts.eval_batches = 20, 8, 1
        opts.paper_keeps, opts.lambdas = opts.paper_keeps[:1], opts.lambdas[:1]
    if not 0 < opts.prompt < opts.seq:
        p.error(f"prompt={opts.prompt}: must be in (0, seq={opts.seq})")
    return opts


def main(argv=None) -> dict:
    opts = parse(argv)
    t0 = time.time()
    where = f"{jax.devices()[0].platform} ({jax.devices()[0].device_kind}), {platform.node()}"
    print(f"spatten_prune on {where}", flush=True)
    corpus = load_byte_corpus()
    rows = []
    for task in opts.tasks:
        rows += run_task(task, corpus, opts)
    comparisons = compare(rows)
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {"ran_on": where, "seconds": time.time() - t0, "options": vars(opts), "target": "SpAtten (defaults)",
              "target_parameters": {k: float(v) for k, v in SpAtten().__dict__.items()},
              "rows": rows, "learned_vs_paper": comparisons}
    (out / "spatten_prune.json").write_text(json.dumps(result, indent=2))
    md = table(rows, comparisons)
    (out / "spatten_prune.md").write_text(f"# SpAtten pruning: loss vs DRAM ({where})\n\n{md}\n")
    plot(rows, out / "spatten_prune.png")
    print(md)
    print(f"wrote {out}/spatten_prune.json, .md, .png in {time.time() - t0:.0f} s on {where}")
    return result


if __name__ == "__main__":
    main()
