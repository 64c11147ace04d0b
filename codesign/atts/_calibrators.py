"""Calibrators: how the ATTS calibration bank evolves while test-time scaling runs.

ATTS (arXiv 2509.15148) calls its bank "online", but the update rule is not published and
the released code keeps a static bank of turn-0 scores; its achieved rejection rate then
drifts on later turns. These are the explicit variants, all with one functional interface
(optax-style: a frozen config object plus a small pytree state):

    state = cal.init_state(scores=None, *, valid=None, turn_ids=None)
    state = cal.update(state, scores, *, valid=None, turn_ids=None, rejected=None)
    p     = cal.p_values(state, scores, *, key=None, uniforms=None, turn_ids=None,
                         randomized=True)

Config objects are frozen, hashable dataclasses validated on construction; they are
static under `jax.jit` (`jax.jit(cal.update)` works) and states are NamedTuples of
fixed-size arrays, so a whole stream can run inside `lax.scan`. Methods check their
inputs eagerly on concrete arrays (names, values, ranges) and skip the value checks on
tracers, as `conformal_p_values` does.

| calibrator | bank used for a turn-t score | guarantee |
| --- | --- | --- |
| StaticBank | fixed scores given at init (ATTS' released code: turn 0) | exact only if the test score is exchangeable with the bank |
| SlidingWindow(W) | last W scores seen, any turn | tracks slow drift; exact only under exchangeability within the window |
| Mondrian(T, C) | last C scores of the same turn t | exact per turn when scores of one turn are exchangeable (Vovk et al. 2003, Mondrian conformal) |
| ACI(alpha, gamma, bank) | any bank, with an adapted level alpha_t | long-run rate -> alpha for ANY sequence (Gibbs & Candes 2021) |

`PooledMondrian` (`codesign.atts._pooled`) is Mondrian with a turn of few scores pooled with its
neighbouring turns; it shares Mondrian's state and update.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple, Union

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from codesign.atts._conformal import (_p_values_batched, check_finite, check_tie_break, concrete,
                                      conformal_p_values, draw_tie_break)

__all__ = ["ACI", "ACIState", "BankState", "Calibrator", "Mondrian", "SlidingWindow", "StaticBank"]


class BankState(NamedTuple):
    """A fixed-size bank (ring buffer). Shapes (C,) or, for Mondrian, (T, C) and (T,)."""

    scores: Float[Array, "*turns C"]
    valid: Bool[Array, "*turns C"]
    next_index: Int[Array, "*turns"]  # ring position the next score is written to


class ACIState(NamedTuple):
    """ACI's bank state plus its running significance level alpha_t (float32 scalar)."""

    bank: BankState
    alpha_t: Float[Array, ""]


def _positive_int(owner: str, name: str, value) -> None:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{owner}.{name}={value!r}: must be an integer >= 1")


def _vector(name: str, x, dtype) -> jax.Array:
    arr = jnp.asarray(x, dtype=dtype)
    if arr.ndim != 1:
        raise ValueError(f"{name}.shape={arr.shape}: must be one-dimensional (K,)")
    return arr


def _stream_inputs(scores, valid, turn_ids=None, n_turns=None):
    """Validate a batch of K incoming scores (+ mask, + turn ids) and return jnp arrays."""
    scores = _vector("scores", scores, jnp.float32)
    valid = jnp.ones(scores.shape, bool) if valid is None else _vector("valid", valid, bool)
    if valid.shape != scores.shape:
        raise ValueError(f"valid.shape={valid.shape}: must equal scores.shape={scores.shape}")
    check_finite("scores", scores, valid)
    if n_turns is None:
        return scores, valid, None
    if turn_ids is None:
        raise ValueError("turn_ids=None: Mondrian needs the turn index of every score")
    turn_ids = _vector("turn_ids", turn_ids, jnp.int32)
    if turn_ids.shape != scores.shape:
        raise ValueError(f"turn_ids.shape={turn_ids.shape}: must equal scores.shape={scores.shape}")
    ids = concrete(turn_ids)
    if ids is not None and ((ids < 0) | (ids >= n_turns)).any():
        bad = ids[(ids < 0) | (ids >= n_turns)][0]
        raise ValueError(f"turn_ids contains {int(bad)}: turn ids must lie in [0, {n_turns - 1}]")
    return scores, valid, turn_ids


def _ring_write(buf_C, valid_C, next_index, new_K, new_valid_K):
    """Append the valid new scores in order to a ring buffer of capacity C.

    Only the last C valid ones can survive, so earlier ones are dropped before the scatter:
    XLA leaves the winner of duplicate scatter indices unspecified.
    """
    capacity = buf_C.shape[0]
    rank_K = jnp.cumsum(new_valid_K, dtype=jnp.int32) - 1
    n_new = new_valid_K.sum(dtype=jnp.int32)
    keep_K = new_valid_K & (rank_K >= n_new - capacity)
    pos_K = jnp.where(keep_K, (next_index + rank_K) % capacity, capacity)  # capacity: dropped
    return BankState(buf_C.at[pos_K].set(new_K, mode="drop"),
                     valid_C.at[pos_K].set(True, mode="drop"),
                     (next_index + n_new) % capacity)


def _empty_bank(shape) -> BankState:
    return BankState(jnp.zeros(shape, jnp.float32), jnp.zeros(shape, bool),
                     jnp.zeros(shape[:-1], jnp.int32))


def _bank_p_values(state: BankState, scores, key, uniforms, randomized):
    scores = _vector("scores", scores, jnp.float32)
    return conformal_p_values(state.scores, scores, key=key, uniforms=uniforms,
                              valid=state.valid, randomized=randomized)


@dataclasses.dataclass(frozen=True)
class StaticBank:
    """A bank fixed at `init_state` (up to `capacity` scores); `update` leaves it unchanged.

    What ATTS' released code does (bank = turn-0 calibration scores). Valid exactly when
    the test scores are exchangeable with the bank; on a drifting stream it is not.
    """

    capacity: int

    def __post_init__(self):
        _positive_int("StaticBank", "capacity", self.capacity)

    def init_state(self, scores=None, *, valid=None, turn_ids=None) -> BankState:
        state = _empty_bank((self.capacity,))
        if scores is None:
            return state
        scores, valid, _ = _stream_inputs(scores, valid)
        if scores.shape[0] > self.capacity:
            raise ValueError(f"scores.shape={scores.shape}: StaticBank(capacity="
                             f"{self.capacity}) holds at most {self.capacity} scores")
        return _ring_write(state.scores, state.valid, state.next_index, scores, valid)

    def update(self, state: BankState, scores, *, valid=None, turn_ids=None, rejected=None) -> BankState:
        _stream_inputs(scores, valid)
        return state

    def p_values(self, state: BankState, scores, *, key=None, uniforms=None, turn_ids=None,
                 randomized: bool = True):
        return _bank_p_values(state, scores, key, uniforms, randomized)


@dataclasses.dataclass(frozen=True)
class SlidingWindow:
    """Ring buffer of the last `window` valid scores seen (any turn), oldest overwritten.

    Follows drift with a lag of about `window` scores; within the window the scores must be
    exchangeable with the test score for the guarantee to hold exactly.
    """

    window: int

    def __post_init__(self):
        _positive_int("SlidingWindow", "window", self.window)

    def init_state(self, scores=None, *, valid=None, turn_ids=None) -> BankState:
        state = _empty_bank((self.window,))
        return state if scores is None else self.update(state, scores, valid=valid)

    def update(self, state: BankState, scores, *, valid=None, turn_ids=None, rejected=None) -> BankState:
        scores, valid, _ = _stream_inputs(scores, valid)
        return _ring_update(state, scores, valid)

    def p_values(self, state: BankState, scores, *, key=None, uniforms=None, turn_ids=None,
                 randomized: bool = True):
        return _bank_p_values(state, scores, key, uniforms, randomized)


_ring_update = jax.jit(lambda s, x, v: _ring_write(s.scores, s.valid, s.next_index, x, v))


@dataclasses.dataclass(frozen=True)
class Mondrian:
    """One ring-buffer bank of the last `capacity` scores per turn index 0..n_turns-1.

    A score of turn t is compared only with earlier scores of turn t (Mondrian conformal
    prediction, Vovk, Lindsay, Nouretdinov & Gammerman 2003), so P(reject | turn t) = alpha
    holds on every turn as long as the scores of one turn are exchangeable, however the
    score distribution shifts from turn to turn.
    """

    n_turns: int
    capacity: int

    def __post_init__(self):
        _positive_int(type(self).__name__, "n_turns", self.n_turns)
        _positive_int(type(self).__name__, "capacity", self.capacity)

    def init_state(self, scores=None, *, valid=None, turn_ids=None) -> BankState:
        state = _empty_bank((self.n_turns, self.capacity))
        return state if scores is None else self.update(state, scores, valid=valid, turn_ids=turn_ids)

    def update(self, state: BankState, scores, *, valid=None, turn_ids=None, rejected=None) -> BankState:
        scores, valid, turn_ids = _stream_inputs(scores, valid, turn_ids, self.n_turns)
        return _mondrian_update(state, scores, valid, turn_ids)

    def p_values(self, state: BankState, scores, *, key=None, uniforms=None, turn_ids=None,
                 randomized: bool = True):
        scores = _vector("scores", scores, jnp.float32)
        _, _, turn_ids = _stream_inputs(scores, None, turn_ids, self.n_turns)
        uniforms = check_tie_break(scores, key, uniforms, randomized)
        n_valid = concrete(state.valid.sum(-1))
        ids = concrete(turn_ids)
        if n_valid is not None and ids is not None and (n_valid[ids] == 0).any():
            turn = int(ids[n_valid[ids] == 0][0])
            raise ValueError(f"turn_ids: the Mondrian bank of turn {turn} has 0 valid scores; "
                             "calibrate every turn that is queried (>= 1 score)")
        check_finite("scores", scores)
        uniforms = draw_tie_break(scores, key, uniforms, randomized)
        # Score all M against every turn's bank (T sorts, not M) and keep each one's own turn.
        tile = lambda x: jnp.broadcast_to(x, (self.n_turns,) + x.shape)
        p_TxM = _p_values_batched(state.scores, state.valid, tile(scores), tile(uniforms),
                                  bool(randomized))
        return jnp.take_along_axis(p_TxM, turn_ids[None, :], axis=0)[0]


@jax.jit
def _mondrian_update(state, scores_K, valid_K, turn_ids_K):
    n_turns = state.scores.shape[0]
    route_TxK = valid_K[None, :] & (turn_ids_K[None, :] == jnp.arange(n_turns)[:, None])
    return jax.vmap(_ring_write, in_axes=(0, 0, 0, None, 0))(
        state.scores, state.valid, state.next_index, scores_K, route_TxK)


Calibrator = Union[StaticBank, SlidingWindow, Mondrian, "ACI"]


@dataclasses.dataclass(frozen=True)
class ACI:
    """Adaptive conformal inference (Gibbs & Candes 2021, "Adaptive Conformal Inference
    Under Distribution Shift", eq. 2) on top of a bank calibrator.

    Decisions use a running level alpha_t instead of alpha: reject where p <= alpha_t, then

        alpha_{t+1} = alpha_t + gamma * (alpha - err_t),

    err_t the fraction of this step's valid scores that were rejected. For ANY score
    sequence, |mean_t err_t - alpha| <= (max(alpha_1, 1 - alpha_1) + gamma) / (gamma T)
    after T steps (their Proposition 4.1): the long-run rate converges to alpha. No per-turn
    guarantee. Larger gamma adapts faster but makes alpha_t noisier.
    """

    alpha: float
    gamma: float
    bank: Union[StaticBank, SlidingWindow, Mondrian]

    def __post_init__(self):
        if not isinstance(self.alpha, (int, float, np.floating)) or not 0.0 < self.alpha < 1.0:
            raise ValueError(f"ACI.alpha={self.alpha!r}: must lie in the open interval (0, 1)")
        if not isinstance(self.gamma, (int, float, np.floating)) or not 0.0 < self.gamma <= 1.0:
            raise ValueError(f"ACI.gamma={self.gamma!r}: step size must lie in (0, 1]")
        if not isinstance(self.bank, (StaticBank, SlidingWindow, Mondrian)):
            raise ValueError(f"ACI.bank={self.bank!r}: must be a StaticBank, SlidingWindow "
                             "or Mondrian calibrator")

    def init_state(self, scores=None, *, valid=None, turn_ids=None) -> ACIState:
        return ACIState(self.bank.init_state(scores, valid=valid, turn_ids=turn_ids),
                        jnp.asarray(self.alpha, jnp.float32))

    def level(self, state: ACIState) -> Float[Array, ""]:
        """The current level alpha_t (may leave (0, 1): then never / always reject)."""
        return state.alpha_t

    def reject(self, state: ACIState, p_values) -> Bool[Array, "..."]:
        """Decisions at the current level: p <= alpha_t."""
        return jnp.asarray(p_values) <= state.alpha_t

    def update(self, state: ACIState, scores, *, valid=None, turn_ids=None, rejected=None) -> ACIState:
        if rejected is None:
            raise ValueError("rejected=None: ACI.update needs the decisions taken at alpha_t "
                             "(ACI.reject) for the scores it is given")
        scores = _vector("scores", scores, jnp.float32)
        rejected = jnp.asarray(rejected, bool)
        if rejected.shape != scores.shape:
            raise ValueError(f"rejected.shape={rejected.shape}: must equal scores.shape={scores.shape}")
        bank = self.bank.update(state.bank, scores, valid=valid, turn_ids=turn_ids)
        valid = jnp.ones(scores.shape, bool) if valid is None else jnp.asarray(valid, bool)
        return ACIState(bank, _aci_step(state.alpha_t, rejected, valid, self.alpha, self.gamma))

    def p_values(self, state: ACIState, scores, *, key=None, uniforms=None, turn_ids=None,
                 randomized: bool = True):
        return self.bank.p_values(state.bank, scores, key=key, uniforms=uniforms,
                                  turn_ids=turn_ids, randomized=randomized)


@functools.partial(jax.jit, static_argnums=(3, 4))
def _aci_step(alpha_t, rejected_K, valid_K, alpha: float, gamma: float):
    n = valid_K.sum()
    err = (rejected_K & valid_K).sum() / jnp.maximum(n, 1)
    return jnp.where(n > 0, alpha_t + gamma * (alpha - err), alpha_t).astype(jnp.float32)
