"""Continuous batching: steps that mix decode tokens of running requests with prefills of new ones.

Under continuous (iteration-level, Orca-style) batching a device holds `batch` request slots.
Every step each running request decodes one token; a request that has produced its L_out
tokens leaves and a new one is admitted in the same step, which prefills its L_in prompt
tokens (and emits its first token). Steps with an admission are "mixed" (prefill + decode),
the others "decode-only". This is the setting of Duplex (Yun et al., MICRO 2024, arXiv
2409.01141, sections II-C and III): with T tokens in a step the
MoE layer's Op/B is ~ T*k / (E * (1 - (1 - k/E)^T)), so it follows the batch in decode-only
steps (T = B) and jumps in mixed ones (T = B - 1 + L_in); decode attention's Op/B is the
GQA group size whatever the batch.

`ContinuousBatching(...).simulate()` draws request lengths from a seeded distribution and
runs the slot simulation, returning `BatchSteps` (per-step token counts, numpy). `step_work`
turns those into per-step FLOPs and bytes per operation (`StepWork`, jax arrays) using the
coefficients of `hwcost.workload` itself (one decode token attending one cached token, one
prefill token), so no FLOP or byte formula is repeated here: every linear operation scales
with the tokens in the step, attention with the (query, key) pairs and KV rows read, and
the routed experts with the tokens each expert receives (sampled with `expert_token_counts`).
"""

from __future__ import annotations

from dataclasses import dataclass

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from nets import ModelConfig, fail
from hwcost._scenario import Scenario
from hwcost._workload import ATTENTION_CORE, OPS, Knobs, experts_touched, workload

# Operation classes that always run on the host processor (the xPU): everything except the
# attention core and the routed experts, which `StepWork` keeps apart.
LINEAR_OPS = tuple(op for op in OPS if op not in ATTENTION_CORE + ("moe_routed", "comm"))
_BYTE_KINDS = ("weights", "kv", "activations")


@dataclass(frozen=True)
class BatchSteps:
    """Per-step token counts of a continuous-batching run (numpy arrays of length n_steps).

    decode_tokens      running requests that decode one token in the step
    decode_context     sum over those requests of the tokens each attends (prompt + generated) [tokens]
    prefill_requests   requests admitted (prefilled) in the step
    prefill_tokens     sum of their prompt lengths [tokens]
    prefill_pairs      sum of their attended (query, key) pairs: L(L+1)/2 causal, L^2 bidirectional
    """

    decode_tokens: np.ndarray
    decode_context: np.ndarray
    prefill_requests: np.ndarray
    prefill_tokens: np.ndarray
    prefill_pairs: np.ndarray

    @property
    def n_steps(self) -> int:
        return int(self.decode_tokens.shape[0])

    @property
    def tokens(self) -> np.ndarray:
        """Tokens processed per step (decode + prefill)."""
        return self.decode_tokens + self.prefill_tokens

    @property
    def generated(self) -> np.ndarray:
        """Output tokens per step: one per decoding request, one per prefilled request."""
        return self.decode_tokens + self.prefill_requests

    @property
    def mixed(self) -> np.ndarray:
        """True where the step prefills at least one request."""
        return self.prefill_requests > 0


@dataclass(frozen=True)
class ContinuousBatching:
    """A continuous-batching workload: `batch` slots, lengths drawn around (prompt_len, gen_len).

    batch: concurrent requests (slots). prompt_len, gen_len: mean L_in, L_out [tokens].
    spread: each length is drawn uniformly in [(1 - spread) * mean, (1 + spread) * mean] and
      rounded (0 = fixed lengths, the Duplex paper's setting). n_steps: steps simulated in
      steady state (0 = max(1024, 2 * gen_len), enough for every slot to turn over twice).
    seed: seeds the lengths, the initial progress of each slot and the expert routing.
    weight_bits, kv_bits, act_bits: storage precisions (Duplex: FP16).
    """

    batch: int = 64
    prompt_len: int = 1024
    gen_len: int = 1024
    spread: float = 0.0
    n_steps: int = 0
    seed: int = 0
    weight_bits: float = 16.0
    kv_bits: float = 16.0
    act_bits: float = 16.0

    def __post_init__(self) -> None:
        for name in ("batch", "prompt_len", "gen_len"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                fail(name, value, "must be a positive integer")
        if isinstance(self.n_steps, bool) or not isinstance(self.n_steps, int) or self.n_steps < 0:
            fail("n_steps", self.n_steps, "must be a non-negative integer (0 = automatic)")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            fail("seed", self.seed, "must be an integer")
        if not isinstance(self.spread, (int, float)) or not (0.0 <= self.spread < 1.0):
            fail("spread", self.spread, "must be a number in [0, 1)")
        # the per-step Scenario carries the precisions and validates them
        self.scenario("decode")

    def scenario(self, phase: str, batch: int = 1, context_len: int = 1) -> Scenario:
        return Scenario(phase=phase, batch=batch, context_len=context_len, weight_bits=self.weight_bits,
                        kv_bits=self.kv_bits, act_bits=self.act_bits)

    @property
    def steps_simulated(self) -> int:
        return self.n_steps or max(1024, 2 * self.gen_len)

    def _lengths(self, rng: np.random.Generator, mean: int, n: int) -> np.ndarray:
        if self.spread == 0:
            return np.full(n, mean, np.int64)
        low, high = (1 - self.spread) * mean, (1 + self.spread) * mean
        return np.maximum(1, np.rint(rng.uniform(low, high, n))).astype(np.int64)

    def simulate(self, causal: bool = True) -> BatchSteps:
        """Run the slot simulation for `steps_simulated` steady-state steps (see the module docstring).

        Each slot starts with a request part-way through its generation (progress uniform over
        its output length), which is the steady state of a full continuous batch; from then
        on a finished request is replaced in the same step by a new one that is prefilled.
        """
        rng = np.random.default_rng(self.seed)
        b, n = self.batch, self.steps_simulated
        prompt = self._lengths(rng, self.prompt_len, b)
        output = self._lengths(rng, self.gen_len, b)
        produced = rng.integers(1, output + 1)  # tokens already generated by each slot's request
        cols = {k: np.zeros(n, np.float64) for k in ("dt", "dc", "pr", "pt", "pp")}
        for step in range(n):
            done = produced >= output
            n_new = int(done.sum())
            if n_new:
                prompt[done] = self._lengths(rng, self.prompt_len, n_new)
                output[done] = self._lengths(rng, self.gen_len, n_new)
            running = ~done
            new_prompt = prompt[done].astype(np.float64)
            cols["dt"][step] = running.sum()
            cols["dc"][step] = float(np.sum(prompt[running] + produced[running]))
            cols["pr"][step] = n_new
            cols["pt"][step] = new_prompt.sum()
            cols["pp"][step] = np.sum(new_prompt * (new_prompt + 1) / 2 if causal else new_prompt ** 2)
            produced = np.where(done, 1, produced + 1)
        return BatchSteps(decode_tokens=cols["dt"], decode_context=cols["dc"], prefill_requests=cols["pr"],
                          prefill_tokens=cols["pt"], prefill_pairs=cols["pp"])


def expert_token_counts(tokens: np.ndarray, n_experts: int, top_k: int, seed: int = 0) -> np.ndarray:
    """Tokens each routed expert receives per step under uniform routing, sorted ascending.

    tokens: [steps] tokens in each step. Returns [steps, n_experts] float counts, each row
    summing to tokens * top_k: a multinomial draw of the tokens * top_k expert slots over
    the experts (uniform routing, Duplex's setting; two picks of one token may coincide, which
    the top-k-without-replacement law forbids, a difference of O(k/E) in the variance only).
    Sorted so that column j is the j-th least-loaded expert: expert co-processing moves
    experts to Logic-PIM in that order.
    """
    if n_experts <= 0 or not 0 < top_k <= n_experts:
        raise ValueError(f"top_k={top_k!r}: must be between 1 and n_experts={n_experts!r}")
    rng = np.random.default_rng(seed)
    picks = np.asarray(tokens, np.int64) * top_k
    counts = rng.multinomial(picks, np.full(n_experts, 1.0 / n_experts))
    return np.sort(counts, axis=-1).astype(np.float64)


class StepWork(eqx.Module):
    """FLOPs and bytes of every step of a continuous-batching run, whole model (all layers).

    `flops[op]`, `bytes[kind][op]`: [steps] arrays for the host-side classes (LINEAR_OPS) and for
      "attn_decode" / "attn_prefill" (the attention core of the decode and prefill tokens);
      kinds are weights, kv, activations.
    expert_tokens: [steps, experts] tokens per routed expert, ascending (see expert_token_counts).
    expert_weight_bytes: bytes of one routed expert over all MoE layers [bytes].
    expert_flops_per_token, expert_act_per_token: per token routed to one expert, all MoE layers.
    comm_bytes: [steps] hidden-state bytes a tensor-parallel all-reduce carries (2 per layer).
    generated: [steps] output tokens; mixed: [steps] 1.0 where the step prefills.
    """

    flops: dict[str, Float[Array, " step"]]
    bytes: dict[str, dict[str, Float[Array, " step"]]]
    expert_tokens: Float[Array, "step expert"]
    expert_weight_bytes: Float[Array, ""]
    expert_flops_per_token: Float[Array, ""]
    expert_act_per_token: Float[Array, ""]
    comm_bytes: Float[Array, " step"]
    generated: Float[Array, " step"]
    mixed: Float[Array, " step"]
    n_experts: int = eqx.field(static=True)

    @property
    def has_moe(self) -> bool:
        return self.n_experts > 0

    def expert_bytes(self) -> Float[Array, "step expert"]:
        """Weight bytes each expert reads per step: its weights if it received any token."""
        return jnp.where(self.expert_tokens > 0, self.expert_weight_bytes, 0.0)

    def op_intensity(self) -> dict[str, Float[Array, " step"]]:
        """Op/B per step per operation: FLOPs per byte of weights + KV cache read (Duplex's Op/B).

        "moe_routed" is the whole routed-expert layer (all experts); an op without such bytes
        (e.g. prefill attention in a decode-only step) gets NaN.
        """
        out = {}
        for op, flops in self.flops.items():
            dram = self.bytes["weights"].get(op, 0.0) + self.bytes["kv"].get(op, 0.0)
            out[op] = jnp.where(dram > 0, flops / jnp.where(dram > 0, dram, 1.0), jnp.nan)
        if self.has_moe:
            flops = jnp.sum(self.expert_tokens, -1) * self.expert_flops_per_token
            out["moe_routed"] = flops / jnp.sum(self.expert_bytes(), -1)
        return out


def _per_unit(cfg: ModelConfig, batching: ContinuousBatching, phase: str, knobs: Knobs | None):
    """Workload of one token attending one token (decode) or a one-token prompt (prefill)."""
    return workload(cfg, batching.scenario(phase), knobs)


def step_work(cfg: ModelConfig, steps: BatchSteps, batching: ContinuousBatching, knobs: Knobs | None = None,
              seed: int | None = None) -> StepWork:
    """Per-step FLOPs and bytes of `steps` on `cfg`, scaled from `hwcost.workload` unit workloads.

    Decode coefficients come from a decode workload with batch 1 attending one token, prefill
    ones from a one-token prefill: every class is linear in tokens (projections, FFN, norms),
    in attended pairs (attention FLOPs) or in KV rows read, except the weights, read once per
    step, and the LM head, run once per output token. Routed experts are costed per expert
    from `expert_token_counts` (seed defaults to the batching's).
    """
    if not isinstance(steps, BatchSteps):
        raise ValueError(f"steps={type(steps).__name__}: must be a hwcost BatchSteps (ContinuousBatching.simulate())")
    dec, pre = _per_unit(cfg, batching, "decode", knobs), _per_unit(cfg, batching, "prefill", knobs)
    as_array = lambda x: jnp.asarray(x, dec.tokens.dtype)  # noqa: E731
    n_dec, ctx = as_array(steps.decode_tokens), as_array(steps.decode_context)
    n_pre, pairs, n_req = as_array(steps.prefill_tokens), as_array(steps.prefill_pairs), as_array(steps.prefill_requests)
    out_tokens = n_dec + n_req

    def total(w, kind, op):
        if kind == "flops":
            v = w.op_flops.get(op)
        else:
            v = w.op_bytes.get(kind, {}).get(op)
        return None if v is None else jnp.sum(v)

    flops: dict[str, Array] = {}
    nbytes: dict[str, dict[str, Array]] = {k: {} for k in _BYTE_KINDS}
    for op in LINEAR_OPS:
        per_step = op == "lm_head"  # logits once per output token
        scale_dec, scale_pre = (out_tokens, 0.0) if per_step else (n_dec, n_pre)
        f_dec, f_pre = total(dec, "flops", op), total(pre, "flops", op)
        if f_dec is not None:
            flops[op] = f_dec * scale_dec + f_pre * scale_pre
        elif total(dec, "weights", op) is not None or total(dec, "activations", op) is not None:
            flops[op] = 0.0 * n_dec  # moves bytes only (the embedding lookup)
        for kind in _BYTE_KINDS:
            b_dec, b_pre = total(dec, kind, op), total(pre, kind, op)
            if b_dec is None:
                continue
            if kind == "weights" and op != "embedding":  # read once per step (embedding: per lookup)
                nbytes[kind][op] = jnp.maximum(b_dec, b_pre) + 0.0 * n_dec
            else:
                nbytes[kind][op] = b_dec * scale_dec + b_pre * scale_pre
    # attention core: decode attends ctx pairs and reads ctx KV rows; prefill attends `pairs`, reads its rows
    for name, w, n_pairs, n_rows, n_tok in (("attn_decode", dec, ctx, ctx, n_dec),
                                            ("attn_prefill", pre, pairs, n_pre, n_pre)):
        flops[name] = w.total_flops(ATTENTION_CORE) * n_pairs
        nbytes["kv"][name] = w.total_bytes("kv", ATTENTION_CORE) * n_rows
        nbytes["weights"][name] = 0.0 * n_tok
        nbytes["activations"][name] = w.total_bytes("activations", ATTENTION_CORE) * n_tok

    f = cfg.ffn
    n_experts = f.n_experts if f.kind == "moe" else 0
    if n_experts:
        seed = batching.seed if seed is None else seed
        counts = expert_token_counts(steps.tokens, f.n_experts, f.top_k, seed)
        expert_bytes = jnp.sum(dec.op_resident["moe_routed"]) / f.n_experts
        expert_flops = jnp.sum(dec.op_flops["moe_routed"]) / f.top_k
        expert_act = jnp.sum(dec.op_bytes["activations"]["moe_routed"]) / f.top_k
    else:
        counts = np.zeros((steps.n_steps, 0))
        expert_bytes = expert_flops = expert_act = jnp.zeros((), dec.tokens.dtype)
    comm = 2.0 * cfg.n_layers * (n_dec + n_pre) * cfg.d_model * batching.act_bits / 8
    return StepWork(flops=flops, bytes=nbytes, expert_tokens=as_array(counts), expert_weight_bytes=expert_bytes,
                    expert_flops_per_token=expert_flops, expert_act_per_token=expert_act, comm_bytes=comm,
                    generated=out_tokens, mixed=as_array(steps.mixed), n_experts=n_experts)


def moe_intensity(n_experts: int, top_k: int, tokens: float) -> float:
    """Op/B of a routed-expert layer (FP16) with `tokens` tokens under uniform routing.

    FLOPs per weight byte = tokens * k / (distinct experts touched): the Duplex note's
    B*k / (E * (1 - (1 - k/E)^B)) (reference/duplex.md). Used by tests as the closed form that
    `StepWork.op_intensity()["moe_routed"]` must approach.
    """
    return tokens * top_k / experts_touched(n_experts, top_k, tokens)


__all__ = ["LINEAR_OPS", "BatchSteps", "ContinuousBatching", "StepWork", "expert_token_counts", "moe_intensity",
           "step_work"]
