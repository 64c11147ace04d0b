"""Pruning-aware attention pieces (SpAtten, Wang, Zhang & Han, HPCA 2021, arXiv 2012.09852).

Pure functions on arrays; `nets._pruned_model` composes them into a network.

- Cascade token pruning (SpAtten section III-A): the importance of key token j is the
  attention probability it receives, summed over heads and query rows and accumulated
  over layers (and decode steps): s[j] += sum_{h,i} P[h, i, j]. After a layer the top
  k tokens survive (`select_tokens`, `jax.lax.top_k`) and a pruned token is gone for
  every later layer. The kept counts are static (`kept_count`) so shapes stay fixed
  under `jit`.
- Cascade head pruning (section III-A): s_h[h] += sum |attention output of head h|;
  the top k_h heads survive (`head_mask`), pruned heads stay pruned.
- Local value pruning (section III-B): per query row and head only the largest
  probabilities fetch their V row (`local_value_prune`); no effect on later layers.
- Progressive quantization (section III-C): Q and K are split in MSB and LSB parts;
  scores from the MSBs first, and where the row's largest probability is below a
  threshold the LSBs are added and the row recomputed (`progressive_scores`).
  A score error ds changes the probabilities by sum_j |dp_j| <= (max ds - min ds)/2
  (`softmax_l1_bound`, section III-C's bound).
- Training (this project, not the paper): a differentiable relaxation of the top-k,
  `soft_keep_mask`, a sigmoid over the importance RANK with a learnable keep ratio and a
  temperature; at temperature -> 0 it is the hard top-k of `kept_count`. The paper's
  fixed schedule is `paper_schedule`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from nets._errors import fail as _fail

NEG_INF = -1e30  # finite "minus infinity": masked logits stay finite under soft masks and gradients


def _fraction(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not 0.0 < value <= 1.0:
        _fail(name, value, "must be a kept fraction in (0, 1]")
    return float(value)


# ---- static counts and the paper's schedule -----------------------------------------------
def kept_count(n: int, keep: float) -> int:
    """Tokens (or heads) kept out of `n` at kept fraction `keep`: round(keep*n), at least 1.

    Rounding (not the paper's floor) matches the hard limit of `soft_keep_mask`, whose
    threshold sits at rank keep*n - 0.5.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
        _fail("n", n, "must be a positive integer")
    keep = _fraction("keep", keep)
    return max(1, min(n, int(math.floor(keep * n + 0.5))))


def cascade_keep(keep_per_layer) -> tuple[float, ...]:
    """Per-layer kept fractions made non-increasing (a pruned token never comes back)."""
    values = [_fraction(f"keep[{i}]", float(v)) for i, v in enumerate(np.asarray(keep_per_layer, float).ravel())]
    if not values:
        _fail("keep", keep_per_layer, "must have one entry per layer")
    return tuple(float(v) for v in np.minimum.accumulate(values))


def paper_schedule(n_layers: int, average_keep: float, *, start_fraction: float = 0.15,
                   start_prune: float | None = None) -> np.ndarray:
    """SpAtten's token schedule (section V-A): cumulative kept fraction per layer.

    No pruning in the first ceil(start_fraction * n_layers) layers (15% for tokens; the
    paper uses 30% for heads), then the pruned fraction ramps linearly from r_start to
    r_end over the remaining layers with r_start + r_end = 2 * r_avg, r_avg = 1 - average_keep,
    so the ramp's mean pruned fraction is r_avg. The paper does not give r_start; the
    default here is r_avg / 2 (clipped so that r_end <= 1 - 1/64).
    """
    if isinstance(n_layers, bool) or not isinstance(n_layers, int) or n_layers <= 0:
        _fail("n_layers", n_layers, "must be a positive integer")
    average_keep = _fraction("average_keep", average_keep)
    if not 0.0 <= start_fraction < 1.0:
        _fail("start_fraction", start_fraction, "must be in [0, 1)")
    r_avg = 1.0 - average_keep
    r_start = r_avg / 2 if start_prune is None else float(start_prune)
    if not 0.0 <= r_start <= r_avg:
        _fail("start_prune", start_prune, f"must be in [0, r_avg={r_avg:.4g}]")
    r_end = 2 * r_avg - r_start
    if r_end > 1 - 1 / 64:
        r_end = 1 - 1 / 64
        r_start = 2 * r_avg - r_end
    first = min(n_layers - 1, math.ceil(start_fraction * n_layers))
    ramp = n_layers - first
    pruned = np.zeros(n_layers)
    pruned[first:] = np.linspace(r_start, r_end, ramp) if ramp > 1 else r_avg
    return 1.0 - np.clip(pruned, 0.0, 1.0 - 1 / 64)


def attended_keep(keep_after_L: Array) -> Array:
    """Fraction of tokens layer l attends (and whose K/V it reads): kept after layer l-1, 1 for layer 0.

    `keep_after[l]` is the network's knob (kept after layer l's attention); a workload
    (`hwcost.Knobs.token_keep`) counts what each layer attends, i.e. the knob shifted by one.
    """
    keep = jnp.asarray(keep_after_L)
    return jnp.concatenate([jnp.ones(keep.shape[:-1] + (1,), keep.dtype), keep[..., :-1]], axis=-1)


# ---- importance and hard selection ------------------------------------------------------
def token_importance(probs_BxHxLxT: Array, row_weight_BxL: Array | None = None,
                     head_weight_BxH: Array | None = None) -> Array:
    """sum_{h, i} P[h, i, j] (SpAtten eq. in section III-A), shape (batch, T); no gradient.

    `row_weight` (1 = a query row that counts, e.g. an alive prompt token) and
    `head_weight` (1 = an unpruned head) weight the sum.
    """
    p = jax.lax.stop_gradient(probs_BxHxLxT.astype(jnp.float32))
    if row_weight_BxL is not None:
        p = p * jax.lax.stop_gradient(row_weight_BxL)[:, None, :, None]
    if head_weight_BxH is not None:
        p = p * jax.lax.stop_gradient(head_weight_BxH)[:, :, None, None]
    return p.sum(axis=(1, 2))


def head_importance(out_BxLxHxK: Array, row_weight_BxL: Array | None = None) -> Array:
    """sum over rows and features of |output of head h| (SpAtten section III-A), shape (batch, H)."""
    a = jnp.abs(jax.lax.stop_gradient(out_BxLxHxK.astype(jnp.float32)))
    if row_weight_BxL is not None:
        a = a * jax.lax.stop_gradient(row_weight_BxL)[:, :, None, None]
    return a.sum(axis=(1, 3))


def select_tokens(importance_BxT: Array, k: int, protect_BxT: Array | None = None) -> Array:
    """Indices (batch, k) of the k most important tokens, in ascending original order.

    `protect` tokens (e.g. the not-prunable continuation of a prompt) rank above all
    others. Ties go to the lower index (`jax.lax.top_k`); the indices are sorted so the
    survivors keep their order, as SpAtten's zero eliminator does (section IV-B).
    """
    T = importance_BxT.shape[-1]
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= T:
        _fail("k", k, f"must be an integer in [1, {T}]")
    key = jax.lax.stop_gradient(importance_BxT.astype(jnp.float32))
    if protect_BxT is not None:
        key = jnp.where(protect_BxT, jnp.inf, key)
    _, idx_BxK = jax.lax.top_k(key, k)
    return jnp.sort(idx_BxK, axis=-1)


def gather_rows(x_BxTx: Array, idx_BxK: Array) -> Array:
    """x[b, idx[b, k], ...]: the rows of the kept tokens."""
    idx = idx_BxK.reshape(idx_BxK.shape + (1,) * (x_BxTx.ndim - 2))
    return jnp.take_along_axis(x_BxTx, idx, axis=1)


def head_mask(importance_BxH: Array, k: int, alive_BxH: Array | None = None) -> Array:
    """0/1 mask (batch, H) of the k most important heads among the alive ones (cascade)."""
    H = importance_BxH.shape[-1]
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= H:
        _fail("k", k, f"must be an integer in [1, {H}]")
    key = jax.lax.stop_gradient(importance_BxH)
    if alive_BxH is not None:
        key = jnp.where(alive_BxH > 0, key, -jnp.inf)
    _, idx_BxK = jax.lax.top_k(key, k)
    return jnp.zeros_like(key).at[jnp.arange(key.shape[0])[:, None], idx_BxK].set(1.0)


def local_value_prune(probs_BxHxLxT: Array, keep: float, visible: Array | None = None) -> Array:
    """Keep the ceil(keep * n) largest probabilities of each row, n = its visible keys (SpAtten III-B).

    The pruned V rows are simply not fetched; the remaining probabilities are NOT
    renormalised (the hardware multiplies the kept ones by their V rows). Counting n per
    row (not the padded length) makes a causal row and a cached decode row agree.
    """
    keep = _fraction("value_keep", keep)
    if keep == 1.0:
        return probs_BxHxLxT
    T = probs_BxHxLxT.shape[-1]
    if visible is None:
        n_visible = jnp.full(probs_BxHxLxT.shape[:-1], T, jnp.float32)
    else:
        n_visible = jnp.broadcast_to(visible, probs_BxHxLxT.shape).sum(-1).astype(jnp.float32)
    k = jnp.clip(jnp.ceil(keep * n_visible), 1, T).astype(jnp.int32)
    sorted_desc = -jnp.sort(-jax.lax.stop_gradient(probs_BxHxLxT), axis=-1)
    kth = jnp.take_along_axis(sorted_desc, (k - 1)[..., None], axis=-1)
    return jnp.where(probs_BxHxLxT >= kth, probs_BxHxLxT, 0.0)


# ---- progressive quantization -------------------------------------------------------------
@dataclass(frozen=True)
class ProgressiveQuant:
    """MSB/LSB split of Q and K (SpAtten section III-C: 6+4, 8+4 and 4+4 bits) and the threshold.

    msb_bits + lsb_bits is the stored fixed-point width (sign included, symmetric, one
    scale per vector of a head). threshold: a row whose largest MSB-only probability is
    below it re-fetches the LSBs (the paper uses ~0.1).
    """

    msb_bits: int = 8
    lsb_bits: int = 4
    threshold: float = 0.1

    def __post_init__(self) -> None:
        for name in ("msb_bits", "lsb_bits"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 16:
                _fail(name, v, "must be an integer number of bits in [1, 16]")
        if self.msb_bits < 2:
            _fail("msb_bits", self.msb_bits, "must be at least 2 (sign and one magnitude bit)")
        if isinstance(self.threshold, bool) or not isinstance(self.threshold, (int, float)) \
                or not 0.0 <= self.threshold <= 1.0:
            _fail("threshold", self.threshold, "must be a probability in [0, 1]")

    @property
    def total_bits(self) -> int:
        return self.msb_bits + self.lsb_bits


def quantize_split(x: Array, msb_bits: int, lsb_bits: int) -> tuple[Array, Array]:
    """(MSB-only value, full value) of symmetric fixed point with msb+lsb bits, scale per last-axis vector.

    full = round(x / s) * s with s = max|x| / (2^(b-1) - 1); MSB-only drops the low
    `lsb_bits` of the integer (floor towards -inf, an arithmetic right shift), so
    |full - msb| < 2^lsb_bits * s. Straight-through gradient (identity).
    """
    bits = msb_bits + lsb_bits
    top = 2.0 ** (bits - 1) - 1
    scale = jnp.max(jnp.abs(x), axis=-1, keepdims=True) / top
    scale = jnp.where(scale > 0, scale, 1.0)
    q_int = jnp.clip(jnp.round(x / scale), -top, top)
    step = 2.0 ** lsb_bits
    msb_int = jnp.floor(q_int / step) * step
    full = x + jax.lax.stop_gradient(q_int * scale - x)
    msb = x + jax.lax.stop_gradient(msb_int * scale - x)
    return msb, full


def progressive_probs(scores_fn, q_parts: tuple[Array, ...], k_parts: tuple[Array, ...], visible: Array,
                      pq: ProgressiveQuant) -> tuple[Array, Array]:
    """Attention probabilities under progressive quantization, and the per-row recompute flag.

    `scores_fn(q_parts, k_parts)` gives scores (..., L, T); `visible` broadcasts to them.
    Rows whose max MSB-only probability is below `pq.threshold` use the full-precision
    (MSB+LSB) probabilities. Both are computed (static shapes); the hardware fetches the
    LSBs only for the flagged rows, which is what the returned flag (..., L) counts.
    """
    split = lambda parts: tuple(zip(*(quantize_split(p, pq.msb_bits, pq.lsb_bits) for p in parts)))  # noqa: E731
    q_msb, q_full = split(q_parts)
    k_msb, k_full = split(k_parts)
    p_msb = masked_softmax(scores_fn(q_msb, k_msb), visible)
    p_full = masked_softmax(scores_fn(q_full, k_full), visible)
    recompute = jnp.max(p_msb, axis=-1) < pq.threshold
    return jnp.where(recompute[..., None], p_full, p_msb), recompute


def masked_softmax(scores: Array, visible: Array, log_mask: Array | None = None) -> Array:
    """softmax over the last axis of float32 scores, invisible entries excluded, plus an optional log-mask."""
    s = scores.astype(jnp.float32)
    if log_mask is not None:
        s = s + log_mask
    return jax.nn.softmax(jnp.where(visible, s, NEG_INF), axis=-1)


def softmax_l1_bound(ds: Array) -> Array:
    """Upper bound on sum_j |softmax(s + ds)_j - softmax(s)_j|: (max_j ds_j - min_j ds_j) / 2.

    SpAtten section III-C bounds the probability change by half the score error. Proof
    sketch: d p_j = p_j (ds_j - sum_i p_i ds_i) dt along s + t ds; the mean absolute
    deviation of a variable confined to an interval of width w is at most w/2; integrate
    over t in [0, 1].
    """
    return (jnp.max(ds, axis=-1) - jnp.min(ds, axis=-1)) / 2


# ---- the differentiable relaxation ---------------------------------------------------------
def importance_ranks(importance_BxT: Array, candidate_BxT: Array) -> Array:
    """Rank (0 = most important) of each candidate among the candidates; non-candidates get -1.

    Ties go to the lower index, as in `select_tokens`. No gradient (ranks are integers).
    """
    key = jnp.where(candidate_BxT, jax.lax.stop_gradient(importance_BxT), -jnp.inf)
    order = jnp.argsort(-key, axis=-1, stable=True)
    ranks = jnp.argsort(order, axis=-1, stable=True)
    return jnp.where(candidate_BxT, ranks, -1).astype(jnp.float32)


def soft_keep_mask(importance_BxT: Array, keep: Array, temperature: Array | float, candidate_BxT: Array,
                   n_candidates: int) -> Array:
    """Soft top-k: m_j = sigmoid((keep*n - rank_j - 0.5) / (temperature*n)) over candidates, 1 elsewhere.

    `n` = `n_candidates` (the prunable tokens, static); the rank is that of the
    importance among candidates. The gradient reaches `keep` (the learnable knob); at
    temperature -> 0 the mask is 1 exactly on the kept_count(n, keep) most important
    candidates, i.e. the hard `select_tokens`. Non-candidates (rank -1) are always kept.
    """
    ranks = importance_ranks(importance_BxT, candidate_BxT)
    n = float(n_candidates)
    t = jnp.asarray(temperature, jnp.float32)
    m = jax.nn.sigmoid((jnp.asarray(keep, jnp.float32) * n - ranks - 0.5) / (t * n))
    return jnp.where(candidate_BxT, m, 1.0)


def soft_head_mask(importance_BxH: Array, keep: Array, temperature: Array | float) -> Array:
    """Soft top-k over heads, the head analogue of `soft_keep_mask` (all heads are candidates)."""
    H = importance_BxH.shape[-1]
    return soft_keep_mask(importance_BxH, keep, temperature, jnp.ones(importance_BxH.shape, bool), H)


def temperature_schedule(step: Array | int, total_steps: int, start: float = 1.0, end: float = 0.02) -> Array:
    """Geometric annealing from `start` to `end` over `total_steps` (then constant)."""
    if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps <= 0:
        _fail("total_steps", total_steps, "must be a positive integer")
    if not 0 < end <= start:
        _fail("end", end, f"must be in (0, start={start}]")
    frac = jnp.clip(jnp.asarray(step, jnp.float32) / total_steps, 0.0, 1.0)
    return start * (end / start) ** frac
