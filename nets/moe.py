"""Mixture-of-experts FFN of `nets`: top-k router, dropless grouped experts, shared experts.

    y(x) = sum_{e in topk(x)} g_e(x) * FFN_e(x)  +  sum_{s < n_shared} FFN^shared_s(x)

Router (float32 whatever the compute dtype, at HIGHEST matmul precision so that a TF32
default on GPUs cannot flip a selection): p(x) = softmax(x @ W_router) over the
`n_experts` experts; the k largest are chosen with `jax.lax.top_k` (ties go to the
lower expert index) and their gates RENORMALISED over the chosen k:
g_e = p_e / sum_{e' in topk} p_e'. This is DeepSeek-V3's and Qwen3-MoE's choice, and
it equals Mixtral's softmax over the top-k logits (softmax is shift-invariant, so
renormalising the top-k probabilities and re-softmaxing the top-k logits agree). With
top_k == 1 the gate is therefore 1 and the router learns only through the
load-balancing loss (as in Mixtral with k=1; the Switch Transformer instead keeps the
unnormalised p_e, a choice not offered here).

Experts are dropless (no capacity factor, no token dropped): the T*k (token, expert)
assignments are sorted by expert, the tokens gathered in that order, and each expert
matmul is ONE grouped matmul with the per-expert group sizes (`nets.grouped.grouped_matmul`,
which picks the backend's kernel: Pallas-Triton on GPU, megablox on TPU, `jax.lax.ragged_dot`
on CPU; CODESIGN_GROUPED_MATMUL=reference forces the last everywhere). All shapes are
static (T*k rows) so the layer jits once per input shape, differentiates (every
implementation has both gradients), and batches under `nnx.vmap`/`nnx.scan`.
The outputs are un-sorted with the inverse permutation (a gather, so the combination
over the k experts is summed in a fixed order, deterministic on every backend). The two row
gathers (tokens into expert order, outputs back) carry custom VJPs whose backward passes are
gathers through the inverse permutation too, where autodiff would scatter-add: the layer has
no scatter-add and no atomic update in either direction (`_dispatch_rows`, `_permute_rows`).

Parameters (no biases; exactly what `nets._params` counts):
  router_kernel  (d_model, n_experts)
  expert_gate    (n_experts, d_model, d_expert)   SwiGLU only
  expert_up      (n_experts, d_model, d_expert)
  expert_down    (n_experts, d_expert, d_model)
  shared_gate / shared_up / shared_down: the same with n_shared_experts leading,
  present only when n_shared_experts > 0 (always applied to every token).

FLOPs of one forward pass over T tokens (multiply-add = 2 FLOPs; D = d_model,
F = d_expert, E = n_experts, k = top_k, S = n_shared_experts, m = 3 matrices for
SwiGLU and 2 for gelu/relu):
  routed experts (the grouped computation)  2 * T * k * m * D * F
                                            (SwiGLU: 2*T*k*3*D*F, independent of E)
  shared experts                            2 * T * S * m * D * F
  router                                    2 * T * D * E
  gate combination                          2 * T * k * D   (plus O(T*k*F) activations)
These are the mathematical counts the cost model uses. The XLA lowering of
`jax.lax.ragged_dot` (the reference implementation) on CPU (jax 0.10.2) and on GPU (jax 0.11.2, H200, measured:
bf16 T*k=8192, D=2048, F=1024, E=64 runs at ~12 TFLOP/s of useful work, 2.9 ms, where a
dense GEMM of the same FLOPs takes 0.08 ms) expands the groups into dense zero-padded
matmuls, i.e. it executes about E times the routed FLOPs; an implementation detail of
today's XLA, not of the layer (the result and gradients are exact), and the reason the
GPU takes the Pallas-Triton kernels instead.

Auxiliary losses (returned, never added here; the caller weights them):
  load_balance_loss = E * sum_e f_e * P_e  with f_e the fraction of the T*k token-slots
    sent to expert e and P_e the mean router probability of e (Switch Transformer,
    Fedus et al. 2021, arXiv 2101.03961, eq. 4-6, generalised to top-k as in GShard and
    DeepSeek-V2's expert-level balance loss, arXiv 2405.04434, eq. 12-14). It is
    exactly 1 when the router probabilities are uniform. f_e is a count (no gradient);
    the gradient reaches the router through P_e. NOTE: 1 is not a lower bound over
    arbitrary batches (f and P can be anti-correlated, see the tests), only over a
    batch of identical tokens, where it equals (E/k) * (sum of the top-k
    probabilities) >= 1 with equality iff the probabilities are uniform.
  router_z_loss = mean_t (logsumexp_e logits_te)^2 (ST-MoE, Zoph et al. 2022,
    arXiv 2202.08906, eq. 5): keeps router logits small for numerical stability.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax import Array

from nets._config import ModelConfig
from nets.grouped import grouped_matmul
from nets._layers import activation_fn
from nets._moe_ep import expert_parallel_routed

__all__ = ["MoE", "moe_reference", "numpy_activation"]

_ROUTER_PRECISION = jax.lax.Precision.HIGHEST


def _expert_init():
    # LeCun normal over each expert's own fan-in (axis -2), the leading expert axis is a batch axis:
    # each expert is initialised like the nnx.Linear of a dense FFN.
    return nnx.initializers.lecun_normal(in_axis=-2, out_axis=-1, batch_axis=(0,))


# ---- dispatch: row gathers whose backward passes are gathers too (no scatter-add, no atomics) ----
@jax.custom_vjp
def _dispatch_rows(x_TxD: Array, order_N: Array, inverse_N: Array) -> Array:
    """Slot rows in expert order: x[order // k] (N = T*k slots, slot n is token n // k, k = N // T).

    Autodiff of this gather would scatter-add the cotangent into T rows (atomics on GPUs);
    since `order` is a permutation of the slots, the same sum is the gather d[inverse]
    reshaped (T, k, D) and summed over k.
    """
    return x_TxD[order_N // (order_N.shape[0] // x_TxD.shape[0])]


def _dispatch_rows_fwd(x_TxD, order_N, inverse_N):
    return _dispatch_rows(x_TxD, order_N, inverse_N), (order_N, inverse_N, x_TxD.shape[0])


def _dispatch_rows_bwd(residuals, d_NxD):
    order_N, inverse_N, T = residuals
    d_TxKxD = d_NxD[inverse_N].reshape(T, -1, d_NxD.shape[-1])
    return jnp.sum(d_TxKxD.astype(jnp.float32), axis=1).astype(d_NxD.dtype), None, None


_dispatch_rows.defvjp(_dispatch_rows_fwd, _dispatch_rows_bwd)


@jax.custom_vjp
def _permute_rows(x_NxD: Array, perm_N: Array, inverse_N: Array) -> Array:
    """x[perm] for a permutation `perm` with inverse `inverse`; the backward pass is the gather d[inverse].

    Autodiff of a gather would scatter-add the cotangent; for a permutation the same result
    is a plain gather, which GPUs do without atomics.
    """
    return x_NxD[perm_N]


def _permute_rows_fwd(x_NxD, perm_N, inverse_N):
    return x_NxD[perm_N], (perm_N, inverse_N)


def _permute_rows_bwd(residuals, d_NxD):
    _, inverse_N = residuals
    return d_NxD[inverse_N], None, None


_permute_rows.defvjp(_permute_rows_fwd, _permute_rows_bwd)


class MoE(nnx.Module):
    """Routed mixture of `cfg.ffn.n_experts` FFN experts (top `cfg.ffn.top_k`) plus shared experts.

    `dtype` is the compute dtype of the experts (the router always runs in float32),
    `param_dtype` the storage dtype. Call: x (batch, length, d_model) ->
    (y (batch, length, d_model), aux) with aux
      load_balance_loss  f32 scalar (1.0 for uniform router probabilities)
      router_z_loss      f32 scalar
      expert_fraction    f32[E], f_e: fraction of the T*k token-slots routed to e (sums to 1)
      router_probability f32[E], P_e: mean router probability of e over the T tokens
      tokens_per_expert  i32[E], the group sizes of the grouped matmuls (sums to T*k)
    """

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs, dtype=jnp.float32, param_dtype=jnp.float32):
        if not isinstance(cfg, ModelConfig):
            raise ValueError(f"cfg={cfg!r}: must be a nets.ModelConfig")
        f = cfg.ffn
        if f.kind != "moe":
            raise ValueError(f"ffn.kind={f.kind!r}: MoE needs kind 'moe' (with n_experts, top_k, d_expert)")
        activation_fn(f.activation)  # validates the name early
        self.activation = f.activation
        self.n_experts = f.n_experts
        self.top_k = f.top_k
        self.n_shared = f.n_shared_experts
        self.d_model = cfg.d_model
        self.dtype = dtype
        gated = f.activation == "swiglu"
        D, F, E, S = cfg.d_model, f.d_expert, f.n_experts, f.n_shared_experts

        init = _expert_init()
        self.router_kernel = nnx.Param(nnx.initializers.lecun_normal()(rngs.params(), (D, E), param_dtype))
        if gated:
            self.expert_gate = nnx.Param(init(rngs.params(), (E, D, F), param_dtype))
        self.expert_up = nnx.Param(init(rngs.params(), (E, D, F), param_dtype))
        self.expert_down = nnx.Param(init(rngs.params(), (E, F, D), param_dtype))
        if S:
            if gated:
                self.shared_gate = nnx.Param(init(rngs.params(), (S, D, F), param_dtype))
            self.shared_up = nnx.Param(init(rngs.params(), (S, D, F), param_dtype))
            self.shared_down = nnx.Param(init(rngs.params(), (S, F, D), param_dtype))

    def route(self, x_TxD: Array) -> tuple[Array, Array, Array, Array]:
        """(logits f32[T,E], probabilities f32[T,E], chosen experts i32[T,k], renormalised gates f32[T,k])."""
        logits_TxE = jnp.dot(x_TxD.astype(jnp.float32), self.router_kernel[...].astype(jnp.float32),
                             precision=_ROUTER_PRECISION)
        probs_TxE = jax.nn.softmax(logits_TxE, axis=-1)
        top_p_TxK, experts_TxK = jax.lax.top_k(probs_TxE, self.top_k)
        gates_TxK = top_p_TxK / jnp.sum(top_p_TxK, axis=-1, keepdims=True)
        return logits_TxE, probs_TxE, experts_TxK.astype(jnp.int32), gates_TxK

    def _routed(self, x_TxD: Array, experts_TxK: Array, gates_TxK: Array) -> tuple[Array, Array]:
        """Dropless grouped experts: sort slots by expert, ragged matmuls, unsort, gate-weighted sum."""
        T, D = x_TxD.shape
        E, k = self.n_experts, self.top_k
        act = activation_fn(self.activation)
        expert_N = experts_TxK.reshape(T * k)
        y_parallel_TxD = expert_parallel_routed(self, x_TxD, experts_TxK, gates_TxK)  # None: no expert mesh axis
        if y_parallel_TxD is not None:
            return y_parallel_TxD, jnp.bincount(expert_N, length=E).astype(jnp.int32)
        order_N = jnp.argsort(expert_N, stable=True)  # slot indices grouped by expert
        group_sizes_E = jnp.bincount(expert_N, length=E).astype(jnp.int32)
        inverse_N = jnp.zeros_like(order_N).at[order_N].set(jnp.arange(T * k, dtype=order_N.dtype))
        x_sorted_NxD = _dispatch_rows(x_TxD, order_N, inverse_N)  # x[order // k]: slot n is token n // k

        def grouped(lhs, weight):
            return grouped_matmul(lhs, weight[...].astype(self.dtype), group_sizes_E)

        if self.activation == "swiglu":
            h_NxF = act(grouped(x_sorted_NxD, self.expert_gate)) * grouped(x_sorted_NxD, self.expert_up)
        else:
            h_NxF = act(grouped(x_sorted_NxD, self.expert_up))
        y_sorted_NxD = grouped(h_NxF, self.expert_down)
        y_TxKxD = _permute_rows(y_sorted_NxD, inverse_N, order_N).reshape(T, k, D)
        y_TxD = jnp.einsum("tk,tkd->td", gates_TxK, y_TxKxD.astype(jnp.float32))
        return y_TxD.astype(self.dtype), group_sizes_E

    def _shared(self, x_TxD: Array) -> Array:
        act = activation_fn(self.activation)
        up_TxSxF = jnp.einsum("td,sdf->tsf", x_TxD, self.shared_up[...].astype(self.dtype))
        if self.activation == "swiglu":
            h_TxSxF = act(jnp.einsum("td,sdf->tsf", x_TxD, self.shared_gate[...].astype(self.dtype))) * up_TxSxF
        else:
            h_TxSxF = act(up_TxSxF)
        return jnp.einsum("tsf,sfd->td", h_TxSxF, self.shared_down[...].astype(self.dtype))

    def __call__(self, x_BxLxD: Array) -> tuple[Array, dict]:
        if x_BxLxD.ndim != 3 or x_BxLxD.shape[-1] != self.d_model:
            raise ValueError(f"x shape={tuple(x_BxLxD.shape)}: must be (batch, length, d_model={self.d_model})")
        B, L, D = x_BxLxD.shape
        T, k = B * L, self.top_k
        x_TxD = x_BxLxD.reshape(T, D)
        logits_TxE, probs_TxE, experts_TxK, gates_TxK = self.route(x_TxD)
        y_TxD, tokens_per_expert_E = self._routed(x_TxD.astype(self.dtype), experts_TxK, gates_TxK)
        if self.n_shared:
            y_TxD = y_TxD + self._shared(x_TxD.astype(self.dtype))
        fraction_E = tokens_per_expert_E.astype(jnp.float32) / (T * k)
        mean_prob_E = jnp.mean(probs_TxE, axis=0)
        aux = {
            "load_balance_loss": self.n_experts * jnp.sum(fraction_E * mean_prob_E),
            "router_z_loss": jnp.mean(jnp.square(jax.nn.logsumexp(logits_TxE, axis=-1))),
            "expert_fraction": fraction_E,
            "router_probability": mean_prob_E,
            "tokens_per_expert": tokens_per_expert_E,
        }
        return y_TxD.reshape(B, L, D), aux


# ---- naive reference (tests only) ---------------------------------------------------
def numpy_activation(name: str, x: np.ndarray) -> np.ndarray:
    """float64 numpy twins of `nets._layers.activation_fn` (jax.nn.gelu is the tanh approximation)."""
    if name == "swiglu":
        return x / (1.0 + np.exp(-x))
    if name == "gelu":
        return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x ** 3)))
    if name == "relu":
        return np.maximum(x, 0.0)
    raise ValueError(f"ffn.activation={name!r}: must be one of swiglu, gelu, relu")


def moe_reference(moe: MoE, x_BxLxD) -> tuple[np.ndarray, dict]:
    """The MoE computed naively in float64 numpy: a Python loop over tokens and their chosen experts.

    Shares no code path with `MoE.__call__` (no sort, no ragged matmul, no jax): used by
    the tests to check the grouped computation. Returns (y (B, L, D), aux) with aux
    "experts" (T, k) chosen experts, "gates" (T, k), "probabilities" (T, E), and the
    "load_balance_loss" and "expert_fraction" of the module docstring.
    """
    x = np.asarray(x_BxLxD, np.float64)
    B, L, D = x.shape
    x_TxD = x.reshape(B * L, D)
    E, k, name = moe.n_experts, moe.top_k, moe.activation
    params = {key: np.asarray(value[...], np.float64) for key, value in vars(moe).items()
              if isinstance(value, nnx.Param)}

    def ffn(prefix: str, index: int, x_D: np.ndarray) -> np.ndarray:
        up = x_D @ params[prefix + "_up"][index]
        h = numpy_activation(name, x_D @ params[prefix + "_gate"][index]) * up if name == "swiglu" else \
            numpy_activation(name, up)
        return h @ params[prefix + "_down"][index]

    y_TxD = np.zeros_like(x_TxD)
    experts_TxK = np.zeros((len(x_TxD), k), np.int64)
    gates_TxK = np.zeros((len(x_TxD), k))
    probs_TxE = np.zeros((len(x_TxD), E))
    for t, x_D in enumerate(x_TxD):
        logits = x_D @ params["router_kernel"]
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        chosen = np.argsort(-probs, kind="stable")[:k]
        gates = probs[chosen] / probs[chosen].sum()
        for gate, e in zip(gates, chosen):
            y_TxD[t] += gate * ffn("expert", e, x_D)
        for s in range(moe.n_shared):
            y_TxD[t] += ffn("shared", s, x_D)
        experts_TxK[t], gates_TxK[t], probs_TxE[t] = chosen, gates, probs
    fraction_E = np.bincount(experts_TxK.ravel(), minlength=E) / experts_TxK.size
    aux = {"experts": experts_TxK, "gates": gates_TxK, "probabilities": probs_TxE, "expert_fraction": fraction_E,
           "load_balance_loss": E * float(np.sum(fraction_E * probs_TxE.mean(axis=0)))}
    return y_TxD.reshape(B, L, D), aux
