"""The model calls of the ATTS engine: each model on a pool of slots, every slot at its own position.

Each row has its own cache position (`row_forward`), so the slots of a pool never move in lockstep. A call serves the
slots in a mask on the smallest bucket of rows that holds them (`row_buckets`: S, S/2, S/4, S/8),
as a serving engine with padded batch buckets does, so its cost follows the slots it serves. With
two devices (`PipelineConfig.devices`) the draft's calls run on device 0 and the target's on
device 1 (`on_role`), and `exchange` hands each model's results to both in one all-reduce.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from codesign.atts._state import PipelineConfig


def row_forward(graphdef, state, tokens_SxW, cache, start_S):
    """Run the model on W tokens per slot, each slot at its own cache position: one call with one
    `cache_index` per row, which writes each row's tokens into the cache in place (vmapping rows
    instead made XLA transpose the whole cache in and out of every call)."""
    logits, aux = nnx.merge(graphdef, state)(tokens_SxW, cache=cache, cache_index=start_S)
    return logits, aux["cache"]


def sample(logits_SxV, key, temperature: float):
    if temperature == 0:
        return jnp.argmax(logits_SxV, -1).astype(jnp.int32)
    return jax.random.categorical(key, logits_SxV.astype(jnp.float32) / temperature, -1).astype(jnp.int32)


def window(buf_SxL, start_S, width: int):
    return jax.vmap(lambda row, s: jax.lax.dynamic_slice(row, (s,), (width,)))(buf_SxL, start_S)


def cache_rows(cache, idx_A):
    return jax.tree.map(lambda c: c[:, :, jnp.minimum(idx_A, c.shape[2] - 1)], cache)


def set_cache_rows(cache, idx_A, rows):
    return jax.tree.map(lambda c, r: c.at[:, :, idx_A].set(r, mode="drop"), cache, rows)


def row_buckets(S: int) -> tuple[int, ...]:
    """Row counts a model call may run on, ascending: S, S/2, S/4, S/8 (those of at least 16 rows)."""
    return tuple(sorted({S >> k for k in range(4) if S % (1 << k) == 0 and (S >> k) >= 16} | {S}))


def bucket_index(mask_S, sizes: tuple[int, ...]):
    """Index into `sizes` of the smallest bucket that holds every slot in mask_S (int32 scalar)."""
    n = mask_S.sum(dtype=jnp.int32)
    return (jnp.asarray(sizes[:-1], jnp.int32) < n).sum(dtype=jnp.int32)


def forward_some(gd, state, buf, cache, mask_S, pos_S, width: int, scratch: int, sizes: tuple[int, ...]):
    """The model on `width` bytes from pos_S for the slots in mask_S: (logits (S, width, V), cache).

    The call runs on the smallest of `sizes` (`row_buckets(S)`, or `(S,)`) rows that holds every masked slot, so
    its cost follows the slots it serves, as in a serving engine; unmasked slots get zero logits and keep their
    cache. With all S rows the unmasked slots compute on scratch positions instead (no gather). A bucket of C
    rows gathers its rows' caches, runs on them and hands back only the tokens it wrote, which are written into
    the cache after the branch: XLA copies a buffer that several branches of a conditional write in place (once
    per branch), so only the all-rows branch writes the cache itself.
    """
    S = buf.shape[0]

    def every(args):
        cache, state = args
        pos = jnp.where(mask_S, pos_S, scratch)
        return row_forward(gd, state, window(buf, pos, width), cache, pos)

    if len(sizes) == 1:
        return every((cache, state))

    def some(C, cache, state):   # reads the cache only
        idx = jnp.nonzero(mask_S, size=C, fill_value=S)[0]
        at = jnp.minimum(idx, S - 1)
        logits_C, rows = row_forward(gd, state, window(buf[at], pos_S[at], width), cache_rows(cache, idx), pos_S[at])
        logits = jnp.zeros((S,) + logits_C.shape[1:], logits_C.dtype).at[idx].set(logits_C, mode="drop")
        slots_CxW = pos_S[at][:, None] + jnp.arange(width)
        written = jax.tree.map(lambda r: r[:, :, jnp.arange(C)[:, None], slots_CxW], rows)
        pad = lambda x: jnp.zeros(x.shape[:2] + (S,) + x.shape[3:], x.dtype).at[:, :, :C].set(x)  # noqa: E731
        return logits, jnp.full((S,), S, jnp.int32).at[:C].set(idx), jax.tree.map(pad, written)

    def bucket(args):
        cache, state = args
        logits, idx_S, written = jax.lax.switch(jnp.minimum(choice, len(sizes) - 2),
                                                [functools.partial(some, C) for C in sizes[:-1]], cache, state)
        return logits, cache, idx_S, written

    def all_rows(args):
        logits, cache = every(args)
        return logits, cache, jnp.full((S,), S, jnp.int32), jax.tree.map(
            lambda c: jnp.zeros(c.shape[:2] + (S, width) + c.shape[4:], c.dtype), cache)

    choice = bucket_index(mask_S, sizes)
    logits, cache, idx_S, written = jax.lax.cond(choice == len(sizes) - 1, all_rows, bucket, (cache, state))
    slots_SxW = pos_S[jnp.minimum(idx_S, S - 1)][:, None] + jnp.arange(width)
    cache = jax.tree.map(lambda c, w: c.at[:, :, idx_S[:, None], slots_SxW].set(w, mode="drop"), cache, written)
    return logits, cache


DRAFT_ROLE, TARGET_ROLE = 0, 1
_ROLE_AXIS = "role"


def role_mesh() -> jax.sharding.Mesh:
    """The first two devices: the draft's (role 0) and the target's (role 1)."""
    return jax.sharding.Mesh(np.asarray(jax.devices()[:2]), (_ROLE_AXIS,))


def on_role(cfg: PipelineConfig, role: int, pred, fn, skip, args):
    """`fn(args)` if `pred`, else `skip(args)`; with two devices only on the device of `role` (the other skips)."""
    if cfg.devices == 2:
        pred = pred & (jax.lax.axis_index(_ROLE_AXIS) == role)
    return jax.lax.cond(pred, fn, skip, args)


def exchange(d_tok, score_out, g_tok):
    """Each device's results of its own model's calls to both devices: ONE all-reduce of (4, S) int32 (the
    device that did not compute a row holds zeros there, so the sum is exact; scores travel as bits)."""
    role = jax.lax.axis_index(_ROLE_AXIS)
    score_S, first_tok = score_out
    target_rows = jnp.stack([first_tok, g_tok, jax.lax.bitcast_convert_type(score_S, jnp.int32)])
    packed = jnp.concatenate([jnp.where(role == DRAFT_ROLE, d_tok, 0)[None],
                              jnp.where(role == TARGET_ROLE, target_rows, 0)])
    packed = jax.lax.psum(packed, _ROLE_AXIS)
    return packed[0], (jax.lax.bitcast_convert_type(packed[3], jnp.float32), packed[1]), packed[2]


def score_call(cfg: PipelineConfig, target_gd, target_state, buf, tcache, scoring, length, frontier, key,
               sizes: tuple[int, ...]):
    """The target's prefill of [length-1, length-1+W) for the scoring slots: ((mean NLL of the chunk, the
    target's own first byte), cache); zeros and the cache untouched where nothing is scored."""
    S, L = buf.shape
    W = cfg.max_chunk + 1
    scratch = L - W

    def score_step(args):
        buf, tcache, target_state = args
        logits, tcache = forward_some(target_gd, target_state, buf, tcache, scoring, length - 1, W, scratch,
                                       sizes)
        chunk = window(buf, jnp.where(scoring, length, scratch), W)
        logp = jax.nn.log_softmax(logits.astype(jnp.float32), -1)
        nll_SxW = -jnp.take_along_axis(logp, chunk[..., None], -1)[..., 0]
        n_chunk = frontier - length + 1
        inside = jnp.arange(W)[None, :] < n_chunk[:, None]
        mean_nll = (nll_SxW * inside).sum(-1) / jnp.maximum(n_chunk, 1)
        first_tok = sample(logits[:, 0], key, cfg.target_temperature)
        return (jnp.where(scoring, mean_nll, 0.0), first_tok), tcache

    zero = lambda a: ((jnp.zeros(S, jnp.float32), jnp.zeros(S, jnp.int32)), a[1])
    return on_role(cfg, TARGET_ROLE, scoring.any(), score_step, zero, (buf, tcache, target_state))


def gen_call(cfg: PipelineConfig, target_gd, target_state, buf, tcache, gen, frontier, key, sizes: tuple[int, ...]):
    """The target's next byte for every slot it has taken over: (bytes, cache)."""
    S, L = buf.shape
    scratch = L - cfg.max_chunk - 1

    def gen_step(args):
        buf, tcache, target_state = args
        logits, tcache = forward_some(target_gd, target_state, buf, tcache, gen, frontier, 1, scratch, sizes)
        return sample(logits[:, 0], key, cfg.target_temperature), tcache

    return on_role(cfg, TARGET_ROLE, gen.any(), gen_step, lambda a: (jnp.zeros(S, jnp.int32), a[1]),
                    (buf, tcache, target_state))


@functools.partial(jax.jit, static_argnames=("graphdef", "width"))
def prefill(graphdef, state, buf, cache, *, width: int):
    start = jnp.zeros(buf.shape[0], jnp.int32)
    _, cache = row_forward(graphdef, state, buf[:, :width], cache, start)
    return cache
