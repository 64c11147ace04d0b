"""Expert parallelism for `nets.MoE`: experts split over the mesh's "expert" axis, tokens sent by all-to-all.

Taken when the active `nets.sharding_rules` map the logical "expert" name to a mesh axis
of size ep > 1 that divides n_experts, and the tokens are split over that axis too (the
"activation_batch" rule includes it, as in `codesign.parallel.RULES`). Otherwise the MoE
runs its one-device code and XLA's SPMD partitioner gathers what it needs.

Inside ONE `jax.shard_map` over the mesh, each shard holds T_l tokens (T_l*k slots) and
n_experts/ep experts (and, with "mlp" over "tensor", 1/tp of each expert's width):
  1. slots sorted by expert; a slot for expert e goes to shard e // (n_experts/ep);
  2. a send buffer (ep, T_l*k, D): row [j, r] is the r-th slot this shard sends to shard j,
     zero rows pad the rest; `jax.lax.all_to_all` over "expert" exchanges the buffers;
  3. the received rows are sorted by local expert and multiplied with nets' grouped matmul
     (`nets.grouped_matmul`, the same kernel choice as one device); zero padding
     rows go to the last local expert and give zero (no biases; SwiGLU/GELU/ReLU of 0 is 0);
     with a tensor-split width the down projection's partial sums are `psum`med over "tensor";
  4. the results travel back by the inverse all-to-all and are combined with the gates in
     float32 exactly as on one device.
The buffers are sized for the worst case (every slot of a shard to one expert shard), so
the dispatch is DROPLESS like the one-device layer, at ep times the memory of a capacity-1
buffer. Routing (router, top-k, gates, the load-balance statistics) runs outside, on the
global token array, so it is the one-device routing by construction.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import Array
from jax.sharding import PartitionSpec as P

from nets.grouped import grouped_matmul
from nets._layers import activation_fn
from nets._sharding import active_rules

try:
    _shard_map = jax.shard_map
except AttributeError:  # jax before shard_map moved out of experimental
    from jax.experimental.shard_map import shard_map as _shard_map


def _axes(entry) -> tuple[str, ...]:
    return () if entry is None else (entry,) if isinstance(entry, str) else tuple(entry)


def expert_parallel_routed(moe, x_TxD: Array, experts_TxK: Array, gates_TxK: Array) -> Array | None:
    """The routed experts' output (T, D) by expert-parallel dispatch, or None where it does not apply."""
    rules = active_rules()
    if rules is None or not rules.mesh_axes("expert"):
        return None
    token_axes = _axes(rules.spec(("activation_batch", None), x_TxD.shape)[0])
    up_spec = rules.spec(("expert", "embed", "mlp"), moe.expert_up.shape)
    expert_axes = _axes(up_spec[0])
    if len(expert_axes) != 1 or expert_axes[0] not in token_axes:
        return None
    expert_axis, width_axes = expert_axes[0], _axes(up_spec[2])
    ep = rules.mesh.shape[expert_axis]
    w_in = P(expert_axis, None, width_axes or None)
    w_out = P(expert_axis, width_axes or None, None)
    tokens = P(token_axes, None)
    gated = moe.activation == "swiglu"
    weights = ((moe.expert_gate[...],) if gated else ()) + (moe.expert_up[...], moe.expert_down[...])
    weights = tuple(w.astype(moe.dtype) for w in weights)
    specs = ((w_in,) if gated else ()) + (w_in, w_out)
    local = functools.partial(_dispatch, activation=moe.activation, n_local=moe.n_experts // ep, ep=ep,
                              expert_axis=expert_axis, width_axes=width_axes)
    mapped = _shard_map(local, mesh=rules.mesh, in_specs=(tokens, tokens, tokens, specs), out_specs=tokens)
    return mapped(x_TxD, experts_TxK, gates_TxK, weights)


def _dispatch(x_TxD, experts_TxK, gates_TxK, weights, *, activation, n_local, ep, expert_axis, width_axes):
    """One shard's part: send slots to their experts' shards, grouped matmuls, send results back."""
    T, D = x_TxD.shape
    k = experts_TxK.shape[1]
    N = T * k
    expert_N = experts_TxK.reshape(N)
    order_N = jnp.argsort(expert_N, stable=True)
    sorted_expert_N = expert_N[order_N]
    dest_N = sorted_expert_N // n_local  # non-decreasing: each destination's slots are contiguous
    count_S = jnp.bincount(dest_N, length=ep)
    rank_N = jnp.arange(N) - (jnp.cumsum(count_S) - count_S)[dest_N]
    send_SxNxD = jnp.zeros((ep, N, D), x_TxD.dtype).at[dest_N, rank_N].set(x_TxD[order_N // k])
    send_id_SxN = jnp.full((ep, N), n_local - 1, jnp.int32).at[dest_N, rank_N].set(sorted_expert_N % n_local)
    recv_SxNxD = jax.lax.all_to_all(send_SxNxD, expert_axis, 0, 0)
    recv_id_M = jax.lax.all_to_all(send_id_SxN, expert_axis, 0, 0).reshape(ep * N)
    local_order_M = jnp.argsort(recv_id_M, stable=True)
    group_sizes_G = jnp.bincount(recv_id_M, length=n_local).astype(jnp.int32)
    xs_MxD = recv_SxNxD.reshape(ep * N, D)[local_order_M]
    act = activation_fn(activation)
    if activation == "swiglu":
        gate, up, down = weights
        h_MxF = act(grouped_matmul(xs_MxD, gate, group_sizes_G)) * grouped_matmul(xs_MxD, up, group_sizes_G)
    else:
        up, down = weights
        h_MxF = act(grouped_matmul(xs_MxD, up, group_sizes_G))
    ys_MxD = grouped_matmul(h_MxF, down, group_sizes_G)
    if width_axes:
        ys_MxD = jax.lax.psum(ys_MxD, width_axes)
    inverse_M = jnp.zeros_like(local_order_M).at[local_order_M].set(jnp.arange(ep * N, dtype=local_order_M.dtype))
    back_SxNxD = jax.lax.all_to_all(ys_MxD[inverse_M].reshape(ep, N, D), expert_axis, 0, 0)
    y_sorted_NxD = back_SxNxD[dest_N, rank_N]
    inverse_N = jnp.zeros_like(order_N).at[order_N].set(jnp.arange(N, dtype=order_N.dtype))
    y_TxKxD = y_sorted_NxD[inverse_N].reshape(T, k, D)
    return jnp.einsum("tk,tkd->td", gates_TxK, y_TxKxD.astype(jnp.float32)).astype(x_TxD.dtype)
