"""A per-turn calibrator for turns with few scores: Mondrian banks pooled with neighbouring turns.

`Mondrian` compares a turn-t score only with turn-t scores. That is exact per turn, but a turn
reached by few samples has a small bank, and the takeover rate *given* a bank of N scores is
itself random, spread like Beta(alpha (N + 1), (1 - alpha)(N + 1)) (standard deviation about
sqrt(alpha (1 - alpha) / N): 0.1 at N = 20, alpha 0.25). Over one calibration and many test
chunks, a small bank therefore puts a turn's rate far from alpha although the marginal
guarantee holds. `PooledMondrian` keeps Mondrian's per-turn banks and, for a turn whose bank
holds fewer than `min_bank` valid scores, compares its scores with the union of the banks of
turns t - r .. t + r (clipped to the turns that exist), r the smallest radius whose union holds
at least `min_bank` scores (all turns if none does). Turns with a full bank are exactly Mondrian.

Guarantee (randomised p-values; the pools are a function of the bank's per-turn counts only,
so everything below is conditional on those counts):

* Exact: for a turn-t test score and its pool P_t, if the test score and the valid bank scores
  of the turns in P_t are exchangeable (e.g. independent draws of one law: turn t and the turns
  it borrows from share the score law, or r = 0 and turn t's scores are exchangeable), then
  P(reject) = alpha exactly (Vovk, Gammerman & Shafer 2005; Mondrian conformal prediction with
  the taxonomy "pool of turn t").
* Beyond exchangeability: with independent scores, turn t' scores drawn from F_t', and
  n_t' bank scores of turn t' in the pool (N = sum of them),

      |P(reject | turn t) - alpha| <= 2 * sum_{t' in P_t, t' != t} n_t' d_TV(F_t', F_t) / (N + 1),

  Barber, Candes, Ramdas & Tibshirani (2023, "Conformal prediction beyond exchangeability",
  Theorem 2, weights 1 in the pool and 0 outside) with d_TV of a swapped pair of independent
  scores <= 2 d_TV of their laws. The bias is at most twice the borrowed share of the pool
  times how far the borrowed turns' laws are from turn t's: neighbouring turns with similar
  laws cost little, and a turn's own scores cost nothing.

Whole neighbouring banks are borrowed, so a turn just short of `min_bank` next to large banks takes
most of its pool from other turns; where the score law changes sharply between turns that is a large
bias (the bound above), and a larger calibration that fills the turn's own bank is the better cure.

The state is Mondrian's (`BankState` of shape (T, C)), updated the same way (it is a `Mondrian`) (each turn's ring
keeps its last `capacity` scores), so pools shrink back to the turn itself as its bank fills.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Int

from codesign.atts._calibrators import BankState, Mondrian, _positive_int, _stream_inputs, _vector
from codesign.atts._conformal import check_finite, check_tie_break, concrete, draw_tie_break, tail_counts

__all__ = ["PooledMondrian", "pool_windows"]


def pool_windows(counts_T: Int[Array, "T"], min_bank: int) -> Bool[Array, "T T"]:
    """pools[t, t'] = turn t' is in turn t's pool: |t - t'| <= r_t, r_t the smallest radius whose
    window (clipped to 0..T-1) holds >= min_bank of `counts_T` (T - 1, every turn, if none does)."""
    counts_T = jnp.asarray(counts_T, jnp.int32)
    n_turns = counts_T.shape[0]
    cum = jnp.concatenate([jnp.zeros(1, jnp.int32), jnp.cumsum(counts_T)])
    turn, radius = jnp.arange(n_turns)[:, None], jnp.arange(n_turns)[None, :]
    lo, hi = jnp.maximum(turn - radius, 0), jnp.minimum(turn + radius, n_turns - 1)
    enough_TxR = cum[hi + 1] - cum[lo] >= min_bank
    r_T = jnp.where(enough_TxR.any(1), jnp.argmax(enough_TxR, axis=1), n_turns - 1)
    return jnp.abs(turn - radius) <= r_T[:, None]


@jax.jit
def _pooled_counts(state: BankState, pools_TxT, scores_M, turn_ids_M):
    """(G, E, N) of every test score against its turn's pool: #pool scores >, == s, and the pool size."""
    n_turns = state.scores.shape[0]
    tile = jnp.broadcast_to(scores_M, (n_turns,) + scores_M.shape)
    greater_TxM, equal_TxM, n_T = jax.vmap(tail_counts)(state.scores, state.valid, tile)
    pool_MxT = pools_TxT[turn_ids_M].astype(jnp.int32)
    return ((pool_MxT * greater_TxM.T).sum(1), (pool_MxT * equal_TxM.T).sum(1), pool_MxT @ n_T)


@dataclasses.dataclass(frozen=True)
class PooledMondrian(Mondrian):
    """Per-turn banks (last `capacity` scores of each turn 0..n_turns-1), a turn with fewer than
    `min_bank` valid scores pooled with its nearest turns until the pool holds `min_bank`.

    Guarantee (module docstring): exact P(reject | turn t) = alpha when a turn's scores are
    exchangeable with those of the turns in its pool; otherwise off by at most twice the pool's
    borrowed share times the total-variation distance of the borrowed turns' score laws.
    min_bank = 1 is Mondrian on every turn with a score; `bank_size_for` gives the bank that holds
    a turn's rate within a tolerance of alpha with a chosen probability. State and update are
    Mondrian's (so it is a `Mondrian`, and `ACI` accepts it as its bank).
    """

    min_bank: int

    def __post_init__(self):
        super().__post_init__()
        _positive_int("PooledMondrian", "min_bank", self.min_bank)

    def pools(self, state: BankState) -> Bool[Array, "T T"]:
        """pools[t, t']: whether turn t' scores count in turn t's bank (the current state's pools)."""
        return pool_windows(state.valid.sum(-1, dtype=jnp.int32), self.min_bank)

    def p_values(self, state: BankState, scores, *, key=None, uniforms=None, turn_ids=None,
                 randomized: bool = True):
        scores = _vector("scores", scores, jnp.float32)
        _, _, turn_ids = _stream_inputs(scores, None, turn_ids, self.n_turns)
        uniforms = check_tie_break(scores, key, uniforms, randomized)
        valid = concrete(state.valid)
        if valid is not None and not np.asarray(valid).any():
            raise ValueError("state: the PooledMondrian bank holds 0 valid scores; calibrate first (>= 1 score)")
        check_finite("scores", scores)
        uniforms = draw_tie_break(scores, key, uniforms, randomized)
        greater, equal, n_pool = _pooled_counts(state, self.pools(state), scores, turn_ids)
        denom = (n_pool + 1).astype(jnp.float32)
        if randomized:
            return (greater + uniforms * (1 + equal)) / denom
        return (1 + greater + equal).astype(jnp.float32) / denom
