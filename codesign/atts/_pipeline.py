"""The ATTS three-stage per-turn pipeline and its schedulers (arXiv 2509.15148, section 3).

One turn = one scratchpad line of the arithmetic task (`codesign.data._arith`), or a paragraph of a
geometric number of lines (`PipelineConfig.turn_end_prob` < 1). Per turn:

1. the draft writes the chunk (sampled, one byte per tick, up to `max_chunk` bytes or a newline);
2. the target scores it: the mean NLL (nats/byte) of the chunk from ONE prefill-only pass of the
   target over its KV cache (the history is already cached, only the chunk is fed);
3. on rejection the target takes the turn over: "append" keeps the draft chunk and the target
   writes the next line after it (ATTS' released code), "regenerate" discards the chunk and the
   target rewrites the turn, "ordinal" picks per candidate from its graded level
   (level 1 append = target continues, level 2 regenerate).

All samples live in a pool of S = questions x m slots and advance in "ticks" inside ONE
`jax.lax.while_loop`: per tick the draft decodes one byte for every slot that is drafting (or
ingests one target byte it has not seen), the target prefills the chunks that are ready to be
scored, and the target decodes one byte for every slot it has taken over. Each model call is
skipped (`lax.cond`) when no slot needs it. Slots hold their own positions (the models run
vmapped per row), so nothing forces samples into lockstep. Modes (`PipelineConfig.mode`):

| mode | what decides a takeover | barrier |
| --- | --- | --- |
| "atts" | the sample's own conformal p-value against the calibrator (`codesign.atts`) | none: each sample decides alone |
| "sync" | the top-B scores of the question's m samples, B = round(alpha x #scored) | per turn: every sample of a question waits until all its siblings have drafted, and again until the target has finished the chosen ones |
| "target_only" | the target writes every turn | none |
| "draft_only" | the draft writes every turn, nothing is scored | none |
| "calibrate" | as draft_only, but every chunk is scored (collects a calibration bank) | none |

Slots and admission (`PipelineConfig.slots`): by default every sample has its own slot and all start
at once (the latency of a batch). With `slots` = S smaller than questions x m, S is the device's
capacity, as in a serving engine with a fixed number of decode slots: a sample's slot is freed the
tick it finishes, and waiting samples are admitted into free slots (their prompts prefilled in one
call of at most `_admit_capacity` rows). "atts", "target_only" and "draft_only" admit sample by sample;
"sync" admits a question when m slots are free, since its m samples advance turn by turn together.
Each model call runs on the smallest bucket of rows (S, S/2, S/4 or S/8) that holds the slots it
serves (`_forward_some`), so its cost follows those slots, as in a serving engine with padded batch
buckets: a slot that is free or held at a barrier costs little; this is the regime of ATTS'
throughput claim. `bench` part "serve" measures it.

Placement (`PipelineConfig.overlap`, `devices`): the paper runs the draft and the target on separate
servers, so an asynchronous tick costs the slower of the two calls, not their sum. With `overlap` the
target's calls of a tick read only the tick's starting state; with `devices=2` the loop runs under
`jax.shard_map` over two devices, the draft's calls on device 0 and the target's on device 1, every
other step computed on both alike, and one all-reduce per tick hands each model's new bytes (and the
target's scores) to both. On one GPU the calls cannot overlap usefully (results/atts/session15/).

The answer of a question is the majority vote of its m samples' parsed answers (self-consistency,
Wang et al. 2023, ICLR); ties go to the smallest answer. The ATTS notes do not fix how the m samples
are aggregated, so this is our choice; `RunResult.answers` keeps every sample for other rules.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import hashlib
import io
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import nets
from nets import InputError
from codesign.atts._calibrators import ACI, ACIState, BankState, Mondrian, SlidingWindow, StaticBank
from codesign.atts._ordinal import OrdinalThresholds, ordinal_levels
from codesign.data import ArithProblem, decode, encode, format_problem, parse_answer

__all__ = ["PipelineConfig", "RunResult", "run_pipeline", "run_batched", "majority_vote", "collect_bank",
           "bank_settings", "save_bank", "load_bank", "make_calibrator", "paired_bootstrap", "bench", "format_bench",
           "MODES", "TAKEOVERS", "CALIBRATORS", "BENCH_PARTS", "row_forward"]

MODES = ("atts", "sync", "target_only", "draft_only", "calibrate")
TAKEOVERS = ("regenerate", "append", "ordinal")
CALIBRATORS = ("static", "window", "mondrian", "aci")
BENCH_PARTS = ("accuracy", "speed", "serve")
DRAFT, SCORE, TGEN, WAIT, DONE = 0, 1, 2, 3, 4
_NEWLINE, _END, _ANSWER = 10, ord("$"), ord("A")


@dataclass(frozen=True)
class PipelineConfig:
    """How a batch of questions is solved.

    mode: see the module table. takeover: "regenerate", "append" or "ordinal".
    m: samples per question. max_turns: T, turns per sample (one line each).
    alpha: rejection level in (0, 1) (ATTS budget form alpha = B / m; "sync" takes over the
      top round(alpha x #scored) of each question per turn). alpha_regenerate: the second,
      smaller ordinal threshold (takeover "ordinal" only; default alpha / 2).
    max_chunk: bytes per chunk at most (a line is 11 bytes). temperatures: sampling
      temperature of the draft and the target (0 = greedy). buf_len: context per slot (bytes),
      the last max_chunk + 1 positions are scratch space.
    turn_end_prob: the chance that a turn ends at a line end (1: a turn is one line). Below 1 a
      turn is a paragraph of a geometric number of lines (mean 1 / turn_end_prob, capped by
      max_chunk), drawn per sample and per turn from the sample's own key, in every mode alike.
      It stands in for the blank-line-delimited paragraphs of real reasoning, whose lengths vary
      (ATTS' chunks run up to 500 tokens); on the arithmetic task every line has the same length,
      so with one-line turns the m samples of a question never straggle.
    slots: the pool size S (a multiple of m), or None for one slot per sample (module docstring).
    overlap: the target's calls of a tick read the tick's starting state (a chunk is scored the tick
      after it ends, a taken-over turn is written from the tick after the decision), so the draft's
      call is independent of the target's and the two can run at once, as the paper's draft and
      target servers do. Same decisions and texts; one more tick per scored turn. On ONE GPU this
      buys nothing: XLA runs the calls one after the other (a draft call annotated for a second
      CUDA stream overlapped by only 1.04-1.11x on the H200, and XLA rejects the annotation inside
      the tick's conditionals; scripts/bench/atts_streams.py, results/atts/session15/).
    devices: 1, or 2 to put the draft on device 0 and the target on device 1 (needs overlap): the
      tick runs under `jax.shard_map` over the two devices, each runs its own model's calls, and one
      all-reduce per tick hands the draft's bytes and the target's scores and bytes to both.
    """

    mode: str = "atts"
    takeover: str = "regenerate"
    m: int = 16
    max_turns: int = 16
    alpha: float = 0.25
    alpha_regenerate: float | None = None
    max_chunk: int = 16
    draft_temperature: float = 0.7
    target_temperature: float = 0.7
    buf_len: int = 256
    turn_end_prob: float = 1.0
    slots: int | None = None
    overlap: bool = False
    devices: int = 1

    def __post_init__(self):
        if self.mode not in MODES:
            raise InputError("mode", self.mode, f"must be one of {', '.join(MODES)}")
        if self.takeover not in TAKEOVERS:
            raise InputError("takeover", self.takeover, f"must be one of {', '.join(TAKEOVERS)}")
        for name in ("m", "max_turns", "max_chunk", "buf_len"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InputError(name, value, "must be an integer >= 1")
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)) or not 0 < self.alpha < 1:
            raise InputError("alpha", self.alpha, "must lie in the open interval (0, 1)")
        if self.alpha_regenerate is not None and not 0 < self.alpha_regenerate < self.alpha:
            raise InputError("alpha_regenerate", self.alpha_regenerate, f"must lie in (0, alpha={self.alpha})")
        for name in ("draft_temperature", "target_temperature"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 100:
                raise InputError(name, value, "must be a number in [0, 100) (0 = greedy)")
        p = self.turn_end_prob
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 < p <= 1:
            raise InputError("turn_end_prob", p, "must lie in (0, 1] (1 = one line per turn)")
        if self.slots is not None and (not isinstance(self.slots, int) or isinstance(self.slots, bool)
                                       or self.slots < self.m or self.slots % self.m):
            raise InputError("slots", self.slots, f"must be None or a positive multiple of m={self.m}")
        if not isinstance(self.overlap, bool):
            raise InputError("overlap", self.overlap, "must be True or False")
        if self.devices not in (1, 2) or isinstance(self.devices, bool):
            raise InputError("devices", self.devices, "must be 1 (both models on one device) or 2 (draft and target apart)")
        if self.devices == 2 and not (self.overlap and self.mode in ("atts", "sync", "calibrate")):
            raise InputError("devices", self.devices, "2 needs overlap=True and a mode that runs both models "
                        "(atts, sync, calibrate): the draft's and the target's calls of a tick must be independent")
        if self.buf_len < 4 * (self.max_chunk + 1):
            raise InputError("buf_len", self.buf_len, f"must be at least 4 * (max_chunk + 1) = {4 * (self.max_chunk + 1)}")

    @property
    def thresholds(self) -> OrdinalThresholds:
        second = self.alpha / 2 if self.alpha_regenerate is None else self.alpha_regenerate
        return OrdinalThresholds((float(self.alpha), float(second)))


class _Out(NamedTuple):
    """Per-sample results (N = questions x m), written the tick a sample finishes."""

    buf: jax.Array          # int32 (N, buf_len)
    length: jax.Array       # committed bytes (the text is buf[prompt length:length])
    scores: jax.Array       # float32 (N, T)
    levels: jax.Array       # int32 (N, T)
    admit: jax.Array        # tick the sample entered a slot
    done: jax.Array         # tick it finished (-1: never)


class _Slots(NamedTuple):
    """Per-slot state of the pool (S slots); positions index the byte buffer."""

    buf: jax.Array          # int32 (S, buf_len): prompt, committed lines, the chunk in progress
    length: jax.Array       # committed bytes
    frontier: jax.Array     # index of the last written byte
    line_start: jax.Array   # first byte of the line being written
    fed_draft: jax.Array    # bytes the draft cache holds (positions < fed_draft are valid)
    phase: jax.Array
    turn: jax.Array
    scores: jax.Array       # float32 (S, T): target mean NLL of the draft chunk of each turn (NaN: not scored)
    levels: jax.Array       # int32 (S, T): decision level of each turn (-1: not scored)
    draft_cache: Any
    target_cache: Any
    cal_state: Any
    key: jax.Array
    counts: jax.Array       # int32: see _COUNTS
    sid: jax.Array          # int32 (S,): the sample (question x m + index) a slot serves, -1 if free
    n_next: jax.Array       # int32 (): samples admitted so far (the next one to admit)
    out: _Out


_COUNTS = ("ticks", "draft_calls", "score_calls", "target_gen_calls", "draft_tokens", "target_tokens",
           "active_slot_ticks", "waiting_slot_ticks", "idle_slot_ticks", "prefill_calls")


def row_forward(graphdef, state, tokens_SxW, cache, start_S):
    """Run the model on W tokens per slot, each slot at its own cache position (rows vmapped;
    `nnx.vmap` broadcasts the weights, which plain `jax.vmap` cannot lift into nnx's scan)."""

    def one(model, tokens_W, cache_row, start):
        cache_1 = jax.tree.map(lambda c: c[:, :, None], cache_row)
        logits, aux = model(tokens_W[None], cache=cache_1, cache_index=start)
        return logits[0], jax.tree.map(lambda c: c[:, :, 0], aux["cache"])

    model = nnx.merge(graphdef, state)
    return nnx.vmap(one, in_axes=(None, 0, 2, 0), out_axes=(0, 2))(model, tokens_SxW, cache, start_S)


def _sample(logits_SxV, key, temperature: float):
    if temperature == 0:
        return jnp.argmax(logits_SxV, -1).astype(jnp.int32)
    return jax.random.categorical(key, logits_SxV.astype(jnp.float32) / temperature, -1).astype(jnp.int32)


def _window(buf_SxL, start_S, width: int):
    return jax.vmap(lambda row, s: jax.lax.dynamic_slice(row, (s,), (width,)))(buf_SxL, start_S)


def _put(buf_SxL, pos_S, tok_S, mask_S):
    rows = jnp.arange(buf_SxL.shape[0])
    return buf_SxL.at[rows, jnp.where(mask_S, pos_S, buf_SxL.shape[1])].set(tok_S, mode="drop")


def _line_done(buf_SxL, line_start_S, last_S):
    """Whether the committed line [line_start, last] ends the sample (answer line or END byte)."""
    rows = jnp.arange(buf_SxL.shape[0])
    first = buf_SxL[rows, line_start_S]
    return (first == _ANSWER) | (buf_SxL[rows, last_S] == _END)


def _group_all(flag_S, group_S, n_groups):
    return jax.ops.segment_min(flag_S.astype(jnp.int32), group_S, n_groups)[group_S] > 0


def _group_any(flag_S, group_S, n_groups):
    return jax.ops.segment_max(flag_S.astype(jnp.int32), group_S, n_groups)[group_S] > 0


def _decide_sync(score_S, scoring_S, group_S, alpha, n_groups: int):
    """Top-B scores among the scoring slots of each group, B = round(alpha * #scoring in the group).

    Rank within a group by sorting (group, -score, slot): O(S log S), no S x S matrix.
    """
    S = score_S.shape[0]
    idx = jnp.arange(S)
    key_S = jnp.where(scoring_S, -score_S, jnp.inf)
    order = jnp.lexsort((idx, key_S, group_S))
    sorted_group = group_S[order]
    rank_sorted = idx - jnp.searchsorted(sorted_group, sorted_group, side="left")
    rank_S = jnp.zeros(S, jnp.int32).at[order].set(rank_sorted.astype(jnp.int32))
    n_group_S = jax.ops.segment_sum(scoring_S.astype(jnp.int32), group_S, n_groups)[group_S]
    budget_S = jnp.floor(alpha * n_group_S + 0.5).astype(jnp.int32)
    return scoring_S & (rank_S < budget_S)


def _admit_capacity(cfg: PipelineConfig, S: int) -> int:
    """Rows one admission prefill serves (static): an eighth of the pool, at least a question."""
    return min(S, max(cfg.m, S // 8))


def _flush(out: _Out, fin_S, sid_S, buf, length, scores, levels, tick) -> _Out:
    """Write the finished slots' samples into the per-sample results."""
    at = jnp.where(fin_S, sid_S, out.length.shape[0])   # out of range: dropped
    return _Out(out.buf.at[at].set(buf, mode="drop"), out.length.at[at].set(length, mode="drop"),
                out.scores.at[at].set(scores, mode="drop"), out.levels.at[at].set(levels, mode="drop"),
                out.admit, out.done.at[at].set(tick, mode="drop"))


def _rows(cache, idx_A):
    return jax.tree.map(lambda c: c[:, :, jnp.minimum(idx_A, c.shape[2] - 1)], cache)


def _set_rows(cache, idx_A, rows):
    return jax.tree.map(lambda c, r: c.at[:, :, idx_A].set(r, mode="drop"), cache, rows)


def _buckets(S: int) -> tuple[int, ...]:
    """Row counts a model call may run on, ascending: S, S/2, S/4, S/8 (those of at least 16 rows)."""
    return tuple(sorted({S >> k for k in range(4) if S % (1 << k) == 0 and (S >> k) >= 16} | {S}))


def _forward_some(gd, state, buf, cache, mask_S, pos_S, width: int, scratch: int):
    """The model on `width` bytes from pos_S for the slots in mask_S: (logits (S, width, V), cache).

    The call runs on the smallest bucket of `_buckets(S)` rows that holds every masked slot (rows
    gathered, cache rows gathered and scattered back), so its cost follows the slots it serves, as
    in a serving engine; unmasked slots get zero logits and keep their cache. With all S rows the
    unmasked slots compute on scratch positions instead (no gather).
    """
    S = buf.shape[0]

    def every(args):
        cache, state = args
        pos = jnp.where(mask_S, pos_S, scratch)
        return row_forward(gd, state, _window(buf, pos, width), cache, pos)

    def some(C, args):
        cache, state = args
        idx = jnp.nonzero(mask_S, size=C, fill_value=S)[0]
        at = jnp.minimum(idx, S - 1)
        logits_C, rows = row_forward(gd, state, _window(buf[at], pos_S[at], width), _rows(cache, idx), pos_S[at])
        logits = jnp.zeros((S,) + logits_C.shape[1:], logits_C.dtype).at[idx].set(logits_C, mode="drop")
        return logits, _set_rows(cache, idx, rows)

    sizes = _buckets(S)
    if len(sizes) == 1:
        return every((cache, state))
    n = mask_S.sum(dtype=jnp.int32)
    pick = (jnp.asarray(sizes[:-1], jnp.int32) < n).sum(dtype=jnp.int32)
    return jax.lax.switch(pick, [functools.partial(some, C) for C in sizes[:-1]] + [every], (cache, state))


_DRAFT_ROLE, _TARGET_ROLE = 0, 1
_ROLE_AXIS = "role"


def _role_mesh() -> jax.sharding.Mesh:
    """The first two devices: the draft's (role 0) and the target's (role 1)."""
    return jax.sharding.Mesh(np.asarray(jax.devices()[:2]), (_ROLE_AXIS,))


def _on_role(cfg: PipelineConfig, role: int, pred, fn, skip, args):
    """`fn(args)` if `pred`, else `skip(args)`; with two devices only on the device of `role` (the other skips)."""
    if cfg.devices == 2:
        pred = pred & (jax.lax.axis_index(_ROLE_AXIS) == role)
    return jax.lax.cond(pred, fn, skip, args)


def _exchange(d_tok, score_out, g_tok):
    """Each device's results of its own model's calls to both devices: ONE all-reduce of (4, S) int32 (the
    device that did not compute a row holds zeros there, so the sum is exact; scores travel as bits)."""
    role = jax.lax.axis_index(_ROLE_AXIS)
    score_S, first_tok = score_out
    target_rows = jnp.stack([first_tok, g_tok, jax.lax.bitcast_convert_type(score_S, jnp.int32)])
    packed = jnp.concatenate([jnp.where(role == _DRAFT_ROLE, d_tok, 0)[None],
                              jnp.where(role == _TARGET_ROLE, target_rows, 0)])
    packed = jax.lax.psum(packed, _ROLE_AXIS)
    return packed[0], (jax.lax.bitcast_convert_type(packed[3], jnp.float32), packed[1]), packed[2]


def _scoring(cfg: PipelineConfig, phase, group_S, n_groups: int):
    """The slots whose chunk the target scores this tick (sync: only once every active sibling has drafted)."""
    scoring = phase == SCORE
    if cfg.mode == "sync":  # barrier: every still-active sibling must have finished its chunk
        scoring = scoring & _group_all((phase == SCORE) | (phase == DONE), group_S, n_groups)
    return scoring


def _score_call(cfg: PipelineConfig, target_gd, target_state, buf, tcache, scoring, length, frontier, key):
    """The target's prefill of [length-1, length-1+W) for the scoring slots: ((mean NLL of the chunk, the
    target's own first byte), cache); zeros and the cache untouched where nothing is scored."""
    S, L = buf.shape
    W = cfg.max_chunk + 1
    scratch = L - W

    def score_step(args):
        buf, tcache, target_state = args
        logits, tcache = _forward_some(target_gd, target_state, buf, tcache, scoring, length - 1, W, scratch)
        chunk = _window(buf, jnp.where(scoring, length, scratch), W)
        logp = jax.nn.log_softmax(logits.astype(jnp.float32), -1)
        nll_SxW = -jnp.take_along_axis(logp, chunk[..., None], -1)[..., 0]
        n_chunk = frontier - length + 1
        inside = jnp.arange(W)[None, :] < n_chunk[:, None]
        mean_nll = (nll_SxW * inside).sum(-1) / jnp.maximum(n_chunk, 1)
        first_tok = _sample(logits[:, 0], key, cfg.target_temperature)
        return (jnp.where(scoring, mean_nll, 0.0), first_tok), tcache

    zero = lambda a: ((jnp.zeros(S, jnp.float32), jnp.zeros(S, jnp.int32)), a[1])
    return _on_role(cfg, _TARGET_ROLE, scoring.any(), score_step, zero, (buf, tcache, target_state))


def _gen_call(cfg: PipelineConfig, target_gd, target_state, buf, tcache, gen, frontier, key):
    """The target's next byte for every slot it has taken over: (bytes, cache)."""
    S, L = buf.shape
    scratch = L - cfg.max_chunk - 1

    def gen_step(args):
        buf, tcache, target_state = args
        logits, tcache = _forward_some(target_gd, target_state, buf, tcache, gen, frontier, 1, scratch)
        return _sample(logits[:, 0], key, cfg.target_temperature), tcache

    return _on_role(cfg, _TARGET_ROLE, gen.any(), gen_step, lambda a: (jnp.zeros(S, jnp.int32), a[1]),
                    (buf, tcache, target_state))


def _tick(carry, *, cfg: PipelineConfig, calibrator, draft_gd, target_gd, n_groups: int, prompts, plen):
    slots, draft_state, target_state = carry
    S, L = slots.buf.shape
    W = cfg.max_chunk + 1
    scratch = L - W
    key, k_draft, k_score, k_gen, k_unif = jax.random.split(slots.key, 5)
    (buf, length, frontier, line_start, fed_draft, phase, turn, scores, levels, dcache, tcache, cal_state,
     _, counts, sid, n_next, out) = slots
    rows = jnp.arange(S)
    # overlap: the target's calls read the tick's starting state, never the draft's output
    overlap = cfg.overlap and cfg.mode in ("atts", "sync", "calibrate")
    buf0, frontier0, phase0 = buf, frontier, phase
    group_S = jnp.maximum(sid, 0) // cfg.m   # a free slot is DONE: it never holds a barrier back
    active = phase != DONE
    counts = counts.at[0].add(1)
    # a line end closes the turn with probability turn_end_prob (one coin per slot and tick)
    if cfg.turn_end_prob < 1:
        turn_break = jax.random.uniform(jax.random.fold_in(k_unif, 1), (S,)) < cfg.turn_end_prob
    else:
        turn_break = jnp.ones(S, bool)

    def turn_ends(tok_S, n_S):
        return ((tok_S == _NEWLINE) & turn_break) | (tok_S == _END) | (n_S >= cfg.max_chunk)

    # ---- overlap: the target's calls read only the tick's starting state, so they run first (and, on two
    # devices, at the same time as the draft's call on the other device)
    if overlap:
        scoring0 = _scoring(cfg, phase0, group_S, n_groups)
        score_out, tcache = _score_call(cfg, target_gd, target_state, buf0, tcache, scoring0, length, frontier0,
                                        k_score)
        gen0 = phase0 == TGEN
        g_tok, tcache = _gen_call(cfg, target_gd, target_state, buf0, tcache, gen0, frontier0, k_gen)

    # ---- draft: one byte per slot (generate while drafting, else ingest what the target wrote)
    uses_draft = cfg.mode != "target_only"
    if uses_draft:
        # A drafting slot whose cache already holds its last byte re-feeds it for the logits.
        generating = active & (phase == DRAFT) & (fed_draft >= frontier)
        feeding = generating | (active & (fed_draft <= frontier))
        feed_pos = jnp.minimum(fed_draft, frontier)

        def draft_step(args):
            # the weights ride along as an operand so the merged module lives at the branch's trace level
            buf, dcache, draft_state = args
            logits, dcache = _forward_some(draft_gd, draft_state, buf, dcache, feeding, feed_pos, 1, L - 1)
            return _sample(logits[:, 0], k_draft, cfg.draft_temperature), dcache

        d_tok, dcache = _on_role(cfg, _DRAFT_ROLE, feeding.any(), draft_step,
                                 lambda a: (jnp.zeros(S, jnp.int32), a[1]), (buf, dcache, draft_state))
    if cfg.devices == 2:   # one exchange per tick: the draft's bytes, the target's scores and bytes
        d_tok, score_out, g_tok = _exchange(d_tok, score_out, g_tok)
    if uses_draft:
        buf = _put(buf, frontier + 1, d_tok, generating)
        frontier = jnp.where(generating, frontier + 1, frontier)
        fed_draft = jnp.where(feeding, feed_pos + 1, fed_draft)
        counts = counts.at[1].add(feeding.any().astype(jnp.int32)).at[4].add(generating.sum(dtype=jnp.int32))
        last = buf[rows, frontier]
        chunk_end = generating & turn_ends(last, frontier - line_start + 1)
        if cfg.mode == "draft_only":
            done = chunk_end & _line_done(buf, line_start, frontier)
            length = jnp.where(chunk_end, frontier + 1, length)
            line_start = jnp.where(chunk_end, frontier + 1, line_start)
            turn = jnp.where(chunk_end, turn + 1, turn)
            phase = jnp.where(done, DONE, phase)
        else:
            phase = jnp.where(chunk_end, SCORE, phase)

    # ---- target scores the ready chunks: one prefill of [length-1, length-1+W) per slot
    if cfg.mode in ("atts", "sync", "calibrate"):
        if overlap:
            scoring = scoring0
            score_S, first_tok = score_out
        else:
            scoring = _scoring(cfg, phase, group_S, n_groups)
            (score_S, first_tok), tcache = _score_call(cfg, target_gd, target_state, buf, tcache, scoring, length,
                                                       frontier, k_score)
        counts = counts.at[2].add(scoring.any().astype(jnp.int32))
        turn_idx = jnp.clip(turn, 0, cfg.max_turns - 1)

        # Deciding (p-values against the bank, or the top-B ranking) runs only on ticks that score a
        # chunk: a Mondrian bank sorts T banks per call, far too much to pay on every tick.
        no_level = jnp.zeros(S, jnp.int32)
        if cfg.mode == "calibrate":
            level = no_level
        elif cfg.mode == "sync":
            def decide_sync(score_S):
                chosen = _decide_sync(score_S, scoring, group_S, cfg.alpha, n_groups)
                return jnp.where(chosen, 1 if cfg.takeover == "append" else 2, 0).astype(jnp.int32)

            level = jax.lax.cond(scoring.any(), decide_sync, lambda _: no_level, score_S)
        else:
            def decide(args):
                score_S, state = args
                uniforms = jax.random.uniform(k_unif, (S,), jnp.float32)
                p = calibrator.p_values(state, score_S, uniforms=uniforms, turn_ids=turn_idx)
                if isinstance(calibrator, ACI):
                    a_t = calibrator.level(state)
                    if cfg.takeover == "ordinal":
                        ratio = cfg.thresholds.alphas[1] / cfg.thresholds.alphas[0]
                        level = (p <= a_t).astype(jnp.int32) + (p <= a_t * ratio).astype(jnp.int32)
                    else:
                        level = jnp.where(p <= a_t, 1 if cfg.takeover == "append" else 2, 0)
                elif cfg.takeover == "ordinal":
                    level = ordinal_levels(p, cfg.thresholds)
                else:
                    level = jnp.where(p <= cfg.alpha, 1 if cfg.takeover == "append" else 2, 0)
                level = jnp.where(scoring, level, 0).astype(jnp.int32)
                state = calibrator.update(state, score_S, valid=scoring, turn_ids=turn_idx, rejected=level > 0)
                return level, state

            level, cal_state = jax.lax.cond(scoring.any(), decide, lambda a: (no_level, a[1]), (score_S, cal_state))
        scores = scores.at[rows, turn_idx].set(jnp.where(scoring, score_S, scores[rows, turn_idx]))
        levels = levels.at[rows, turn_idx].set(jnp.where(scoring, level, levels[rows, turn_idx]))

        accept = scoring & (level == 0)
        append = scoring & (level == 1)
        regen = scoring & (level == 2)
        # accepted or appended: the chunk is committed
        committed = accept | append
        done = committed & _line_done(buf, line_start, frontier)
        length = jnp.where(committed, frontier + 1, length)
        line_start = jnp.where(committed, frontier + 1, line_start)
        turn = jnp.where(accept, turn + 1, turn)
        after_accept = WAIT if cfg.mode == "sync" else DRAFT
        phase = jnp.where(accept, jnp.where(done, DONE, after_accept), phase)
        # an appended chunk that already ended the sample needs no target line
        turn = jnp.where(append & done, turn + 1, turn)
        phase = jnp.where(append, jnp.where(done, DONE, TGEN), phase)
        # regenerate: the chunk is discarded, the target's first byte comes from the scoring pass
        buf = _put(buf, length, first_tok, regen)
        frontier = jnp.where(regen, length, frontier)
        fed_draft = jnp.where(regen, jnp.minimum(fed_draft, length), fed_draft)
        phase = jnp.where(regen, TGEN, phase)
        counts = counts.at[5].add(regen.sum(dtype=jnp.int32))
        # a regenerated first byte may already end the line (e.g. END)
        first_end = regen & turn_ends(first_tok, jnp.ones(S, jnp.int32))
    else:
        first_end = jnp.zeros(S, bool)

    # ---- target writes: one byte for every slot it has taken over (or every slot: target_only)
    if cfg.mode == "target_only":
        phase = jnp.where(phase == DRAFT, TGEN, phase)
    if overlap:   # the slots taken over before this tick (their last byte is the same in buf0 and buf)
        gen, tok = gen0, g_tok
    else:
        gen = (phase == TGEN) & ~first_end
        tok, tcache = _gen_call(cfg, target_gd, target_state, buf, tcache, gen, frontier, k_gen)
    counts = counts.at[3].add(gen.any().astype(jnp.int32)).at[5].add(gen.sum(dtype=jnp.int32))
    buf = _put(buf, frontier + 1, tok, gen)
    frontier = jnp.where(gen, frontier + 1, frontier)
    last = buf[rows, frontier]
    line_end = (gen & turn_ends(last, frontier - line_start + 1)) | first_end   # gen: the slots that wrote a byte
    done = line_end & _line_done(buf, line_start, frontier)
    length = jnp.where(line_end, frontier + 1, length)
    line_start = jnp.where(line_end, frontier + 1, line_start)
    turn = jnp.where(line_end, turn + 1, turn)
    after_line = WAIT if cfg.mode == "sync" else DRAFT
    phase = jnp.where(line_end, jnp.where(done, DONE, after_line), phase)

    # ---- sync: release a question's samples once none of them is drafting, scored or taken over
    if cfg.mode == "sync":
        busy = (phase == DRAFT) | (phase == SCORE) | (phase == TGEN)
        release = (phase == WAIT) & ~_group_any(busy, group_S, n_groups)
        phase = jnp.where(release, DRAFT, phase)

    # ---- stop rules: T turns, buffer full
    full = frontier + cfg.max_chunk + 2 >= scratch
    phase = jnp.where((turn >= cfg.max_turns) | full, DONE, phase)
    waiting = (phase == WAIT) | ((phase == SCORE) & (cfg.mode == "sync"))
    counts = counts.at[6].add(active.sum(dtype=jnp.int32)).at[7].add((waiting & active).sum(dtype=jnp.int32))
    counts = counts.at[8].add((sid < 0).sum(dtype=jnp.int32))

    # ---- finished samples leave their slots (results written out, the slot is free)
    fin = (phase == DONE) & (sid >= 0)
    out = jax.lax.cond(fin.any(), lambda a: _flush(*a), lambda a: a[0],
                       (out, fin, sid, buf, length, scores, levels, counts[0]))
    sid = jnp.where(fin, -1, sid)

    # ---- admission: waiting samples take free slots (static: only when the pool is smaller than the queue)
    N = out.length.shape[0]
    if S < N:
        A = _admit_capacity(cfg, S)
        free = sid < 0
        rank = jnp.cumsum(free, dtype=jnp.int32) - 1
        n_free, left = free.sum(dtype=jnp.int32), N - n_next
        if cfg.mode == "sync":   # a whole question, m slots, at once
            k = cfg.m * jnp.minimum(jnp.minimum(n_free, A) // cfg.m, left // cfg.m)
        else:
            k = jnp.minimum(jnp.minimum(n_free, A), left)
        admit = free & (rank < k)
        new_sid = n_next + rank
        q_S = jnp.clip(new_sid // cfg.m, 0, prompts.shape[0] - 1)
        p_S = plen[q_S]

        def prefill(args):
            buf, dcache, tcache, draft_state, target_state = args
            idx = jnp.nonzero(admit, size=A, fill_value=S)[0]
            tokens = prompts[q_S[jnp.minimum(idx, S - 1)]]                     # (A, width)
            row = jnp.zeros((A, L), jnp.int32).at[:, :tokens.shape[1]].set(tokens)
            buf = buf.at[idx].set(row, mode="drop")
            start = jnp.zeros(A, jnp.int32)

            def fill(gd):   # one model's prefill of the admitted rows (on its own device when there are two)
                def go(args):
                    cache, state = args
                    _, rows_new = row_forward(gd, state, tokens, _rows(cache, idx), start)
                    return _set_rows(cache, idx, rows_new)
                return go

            if cfg.mode != "target_only":
                dcache = _on_role(cfg, _DRAFT_ROLE, True, fill(draft_gd), lambda a: a[0], (dcache, draft_state))
            if cfg.mode != "draft_only":
                tcache = _on_role(cfg, _TARGET_ROLE, True, fill(target_gd), lambda a: a[0], (tcache, target_state))
            return buf, dcache, tcache

        buf, dcache, tcache = jax.lax.cond(admit.any(), prefill, lambda a: a[:3],
                                           (buf, dcache, tcache, draft_state, target_state))
        counts = counts.at[9].add(admit.any().astype(jnp.int32))
        length = jnp.where(admit, p_S, length)
        frontier = jnp.where(admit, p_S - 1, frontier)
        line_start = jnp.where(admit, p_S, line_start)
        fed_draft = jnp.where(admit, p_S - 1, fed_draft)
        phase = jnp.where(admit, DRAFT, phase)
        turn = jnp.where(admit, 0, turn)
        scores = jnp.where(admit[:, None], jnp.nan, scores)
        levels = jnp.where(admit[:, None], -1, levels)
        out = out._replace(admit=out.admit.at[jnp.where(admit, new_sid, N)].set(counts[0], mode="drop"))
        sid = jnp.where(admit, new_sid, sid)
        n_next = n_next + k
    new = _Slots(buf, length, frontier, line_start, fed_draft, phase, turn, scores, levels, dcache, tcache,
                 cal_state, key, counts, sid, n_next, out)
    return new, draft_state, target_state


@functools.partial(jax.jit, static_argnames=("cfg", "calibrator", "draft_gd", "target_gd", "n_groups", "max_ticks"))
def _run(slots, draft_state, target_state, prompts, plen, *, cfg, calibrator, draft_gd, target_gd, n_groups,
         max_ticks):
    N = slots.out.length.shape[0]
    cond = lambda c: (((c[0].phase != DONE).any() | (c[0].n_next < N)) & (c[0].counts[0] < max_ticks))

    def loop(slots, draft_state, target_state, prompts, plen):   # every array an argument (shard_map needs it)
        body = functools.partial(_tick, cfg=cfg, calibrator=calibrator, draft_gd=draft_gd, target_gd=target_gd,
                                 n_groups=n_groups, prompts=prompts, plen=plen)
        return jax.lax.while_loop(cond, body, (slots, draft_state, target_state))[0]

    if cfg.devices == 2:
        # the draft's calls on device 0, the target's on device 1; everything else is computed on both
        # alike (replicated), and each tick ends in one exchange (`_exchange`). A device's copy of the
        # other model's cache is never read, so only the replicated fields of the result are used.
        loop = jax.shard_map(loop, mesh=_role_mesh(), in_specs=jax.sharding.PartitionSpec(),
                             out_specs=jax.sharding.PartitionSpec(), check_vma=False)
    s = loop(slots, draft_state, target_state, prompts, plen)
    # stopped by max_ticks: what the unfinished samples have committed so far (done stays -1)
    left = s.sid >= 0
    out = _flush(s.out, left, s.sid, s.buf, s.length, s.scores, s.levels, -1)
    return s._replace(out=out)


@functools.partial(jax.jit, static_argnames=("graphdef", "width"))
def _prefill(graphdef, state, buf, cache, *, width: int):
    start = jnp.zeros(buf.shape[0], jnp.int32)
    _, cache = row_forward(graphdef, state, buf[:, :width], cache, start)
    return cache


_COMPILED: dict = {}


@dataclass
class RunResult:
    """What a run produced and what it cost.

    answers: (Q, m) parsed answers (None if none); voted: (Q,) majority answers; correct: (Q,)
    exact match of the vote; texts: (Q, m) completions; scores / levels: (Q, m, T) per-turn target
    NLL of the draft chunk (NaN: not scored) and decision level (-1: not scored); counts: tick and
    token counters (`_COUNTS`); wall_s: seconds of the device run (compiled, prompts prefilled).
    latency_ticks: (Q,) ticks from a question's first admitted sample to its last finished one
    (-1: cut by max_ticks).
    """

    config: PipelineConfig
    answers: list[list[int | None]]
    voted: list[int | None]
    correct: np.ndarray
    texts: list[list[str]]
    scores: np.ndarray
    levels: np.ndarray
    counts: dict[str, int]
    wall_s: float
    compile_s: float
    cal_state: Any = None
    latency_ticks: np.ndarray | None = None

    @property
    def accuracy(self) -> float:
        return float(self.correct.mean())

    def rejection_by_turn(self) -> np.ndarray:
        """(T,) fraction of the scored draft chunks of each turn that were taken over (NaN if none)."""
        scored = self.levels >= 0
        n = scored.sum((0, 1))
        with np.errstate(invalid="ignore"):
            return np.where(n > 0, ((self.levels > 0) & scored).sum((0, 1)) / np.maximum(n, 1), np.nan)

    def scored_by_turn(self) -> np.ndarray:
        return (self.levels >= 0).sum((0, 1))

    def summary(self) -> dict:
        c = self.counts
        q = len(self.voted)
        tokens = c["draft_tokens"] + c["target_tokens"]
        return {"mode": self.config.mode, "takeover": self.config.takeover, "m": self.config.m,
                "questions": q, "accuracy": self.accuracy, "wall_s": self.wall_s,
                "wall_s_per_question": self.wall_s / q, "tokens": tokens,
                "tokens_per_s": tokens / self.wall_s if self.wall_s > 0 else float("nan"),
                "takeover_rate": float(((self.levels > 0).sum()) / max((self.levels >= 0).sum(), 1)),
                "barrier_wait_fraction": c["waiting_slot_ticks"] / max(c["active_slot_ticks"], 1),
                "idle_slot_fraction": c["idle_slot_ticks"] / max(c["idle_slot_ticks"] + c["active_slot_ticks"], 1),
                "latency_s_mean": (float(np.mean(self.latency_ticks)) * self.wall_s / max(c["ticks"], 1)
                                   if self.latency_ticks is not None and (self.latency_ticks >= 0).all()
                                   else float("nan")),
                "sync_time_s": self.wall_s * c["waiting_slot_ticks"] / max(c["active_slot_ticks"], 1),
                "compile_s": self.compile_s, **c}


def majority_vote(answers: list[int | None]) -> int | None:
    """Most frequent non-None answer (smallest on ties); None if every sample failed to answer."""
    counts = collections.Counter(a for a in answers if a is not None)
    if not counts:
        return None
    best = max(counts.values())
    return min(a for a, n in counts.items() if n == best)


def _check_models(draft, target):
    for name, model in (("draft", draft), ("target", target)):
        if not isinstance(model, nets.TransformerLM) or not model.cfg.causal:
            raise InputError(name, type(model).__name__, "must be a causal nets.TransformerLM")
        if model.cfg.vocab_size != 256:
            raise InputError(f"{name}.cfg.vocab_size", model.cfg.vocab_size, "must be 256 (byte tokens)")


def run_pipeline(draft: nets.TransformerLM, target: nets.TransformerLM, problems: list[ArithProblem],
                 cfg: PipelineConfig, *, key: jax.Array, calibrator=None, cal_state=None,
                 max_ticks: int | None = None) -> RunResult:
    """Solve `problems`, m samples each, all in one pool, under `cfg` (see the module docstring).

    calibrator / cal_state: a `codesign.atts` calibrator and its initial state (mode "atts" only;
    e.g. `StaticBank(n).init_state(bank_scores)`). The state evolves during the run (online
    calibrators); a run with a fresh state is independent of earlier runs.
    """
    _check_models(draft, target)
    if not isinstance(cfg, PipelineConfig):
        raise InputError("cfg", cfg, "must be a PipelineConfig")
    if not problems or not all(isinstance(p, ArithProblem) for p in problems):
        raise InputError("problems", type(problems).__name__, "must be a non-empty list of ArithProblem")
    if cfg.mode == "atts":
        if not isinstance(calibrator, (StaticBank, SlidingWindow, Mondrian, ACI)):
            raise InputError("calibrator", calibrator, "mode atts needs a StaticBank, SlidingWindow, Mondrian or ACI")
        if cal_state is None:
            raise InputError("cal_state", None, "mode atts needs the calibrator's initial state (calibrator.init_state(bank))")
        bank_cal = calibrator.bank if isinstance(calibrator, ACI) else calibrator
        if isinstance(bank_cal, Mondrian) and bank_cal.n_turns != cfg.max_turns:
            raise InputError("calibrator.n_turns", bank_cal.n_turns, f"must equal max_turns={cfg.max_turns} (one bank per turn)")
        bank_state = cal_state.bank if isinstance(cal_state, ACIState) else cal_state
        if not isinstance(bank_state, BankState):
            raise InputError("cal_state", type(cal_state).__name__, "must be the calibrator's state (calibrator.init_state)")
        if not np.asarray(bank_state.valid).any():
            raise InputError("cal_state", "empty", "the calibration bank holds no score; calibrate first")
    else:
        calibrator, cal_state = None, jnp.zeros(())
    if cfg.devices > jax.device_count():
        raise InputError("devices", cfg.devices, f"must be at most the {jax.device_count()} device(s) jax sees here")
    Q, m, T = len(problems), cfg.m, cfg.max_turns
    N, L = Q * m, cfg.buf_len
    S = N if cfg.slots is None else min(cfg.slots, N)
    prompts = [encode(format_problem(p)) for p in problems]
    width = max(len(p) for p in prompts)
    if width + 2 * (cfg.max_chunk + 1) >= L:
        raise InputError("buf_len", L, f"too short for a prompt of {width} bytes plus two chunks")
    table = np.zeros((Q, width), np.int32)
    plen = np.asarray([len(p) for p in prompts], np.int32)
    for q, prompt in enumerate(prompts):
        table[q, :len(prompt)] = prompt
    # the first S samples (question-major) take the S slots; the rest wait for free slots
    buf = np.zeros((S, L), np.int32)
    buf[:, :width] = table[np.arange(S) // m]
    lengths = plen[np.arange(S) // m]
    draft_gd, draft_state = nnx.split(draft)
    target_gd, target_state = nnx.split(target)
    buf = jnp.asarray(buf)
    dcache = _prefill(draft_gd, draft_state, buf, nets.init_cache(draft, S, L), width=width)
    tcache = _prefill(target_gd, target_state, buf, nets.init_cache(target, S, L), width=width)
    length = jnp.asarray(lengths)
    slots = _Slots(buf, length, length - 1, length, length - 1, jnp.zeros(S, jnp.int32), jnp.zeros(S, jnp.int32),
                   jnp.full((S, T), jnp.nan, jnp.float32), jnp.full((S, T), -1, jnp.int32), dcache, tcache,
                   cal_state, key, jnp.zeros(len(_COUNTS), jnp.int32), jnp.arange(S, dtype=jnp.int32),
                   jnp.asarray(S, jnp.int32),
                   _Out(jnp.zeros((N, L), jnp.int32), jnp.zeros(N, jnp.int32), jnp.full((N, T), jnp.nan, jnp.float32),
                        jnp.full((N, T), -1, jnp.int32), jnp.zeros(N, jnp.int32), jnp.full(N, -1, jnp.int32)))
    # a sample needs at most T * 3 * (max_chunk + 2) ticks; the pool serves ceil(N / S) of them in turn
    max_ticks = max_ticks or -(-N // S) * T * 3 * (cfg.max_chunk + 2) + 8
    kwargs = dict(cfg=cfg, calibrator=calibrator, draft_gd=draft_gd, target_gd=target_gd, n_groups=Q,
                  max_ticks=max_ticks)
    args = (slots, draft_state, target_state, jnp.asarray(table), jnp.asarray(plen))
    if cfg.devices == 2:   # a copy of everything on both devices (the loop runs under shard_map)
        args = jax.device_put(args, jax.sharding.NamedSharding(_role_mesh(), jax.sharding.PartitionSpec()))
    jax.block_until_ready(args)
    cache_key = (tuple(sorted((k, v) for k, v in kwargs.items())),
                 jax.tree.structure(args), tuple((x.shape, str(x.dtype)) for x in jax.tree.leaves(args)))
    start = time.perf_counter()
    compiled = _COMPILED.get(cache_key)
    if compiled is None:  # explicit cache: compile time is reported apart from run time
        compiled = _COMPILED[cache_key] = _run.lower(*args, **kwargs).compile()
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    out = jax.block_until_ready(compiled(*args))
    wall_s = time.perf_counter() - start
    res = out.out
    out_buf, out_len = np.asarray(res.buf), np.asarray(res.length)
    texts = [[decode(out_buf[q * m + i, len(prompts[q]):out_len[q * m + i]]) for i in range(m)] for q in range(Q)]
    answers = [[parse_answer(t) for t in row] for row in texts]
    voted = [majority_vote(row) for row in answers]
    correct = np.asarray([v is not None and v == p.answer for v, p in zip(voted, problems)])
    counts = dict(zip(_COUNTS, (int(c) for c in np.asarray(out.counts))))
    done, admitted = np.asarray(res.done).reshape(Q, m), np.asarray(res.admit).reshape(Q, m)
    latency = np.where((done >= 0).all(1), done.max(1) - admitted.min(1), -1)
    return RunResult(cfg, answers, voted, correct, texts, np.asarray(res.scores).reshape(Q, m, T),
                     np.asarray(res.levels).reshape(Q, m, T), counts, wall_s, compile_s,
                     out.cal_state if cfg.mode == "atts" else None, latency)


def run_batched(draft, target, problems, cfg: PipelineConfig, *, key: jax.Array, calibrator=None, cal_state=None,
                batch_questions: int = 128) -> RunResult:
    """`run_pipeline` over chunks of `batch_questions` questions (one compiled program; the last chunk
    is padded with repeats of its first problem, dropped from the result). An online calibrator's
    state carries from chunk to chunk, as it would in a stream of questions."""
    if not isinstance(batch_questions, int) or batch_questions < 1:
        raise InputError("batch_questions", batch_questions, "must be an integer >= 1")
    problems = list(problems)
    if not problems:
        raise InputError("problems", problems, "must be a non-empty list of ArithProblem")
    parts = []
    for i, start in enumerate(range(0, len(problems), batch_questions)):
        chunk = problems[start:start + batch_questions]
        n_real = len(chunk)
        chunk = chunk + [chunk[0]] * (min(batch_questions, len(problems)) - n_real)
        r = run_pipeline(draft, target, chunk, cfg, key=jax.random.fold_in(key, i), calibrator=calibrator,
                         cal_state=cal_state)
        cal_state = r.cal_state if cfg.mode == "atts" else cal_state
        parts.append((r, n_real))
    first = parts[0][0]
    counts = {k: sum(r.counts[k] for r, _ in parts) for k in first.counts}
    return RunResult(cfg, [a for r, n in parts for a in r.answers[:n]], [v for r, n in parts for v in r.voted[:n]],
                     np.concatenate([r.correct[:n] for r, n in parts]), [t for r, n in parts for t in r.texts[:n]],
                     np.concatenate([r.scores[:n] for r, n in parts]), np.concatenate([r.levels[:n] for r, n in parts]),
                     counts, sum(r.wall_s for r, _ in parts), first.compile_s, cal_state,
                     np.concatenate([r.latency_ticks[:n] for r, n in parts]))


def collect_bank(draft, target, problems, *, m: int, max_turns: int, key: jax.Array,
                 batch_questions: int = 128, **config) -> np.ndarray:
    """Calibration scores (Q, m, T): the target's mean NLL of every draft chunk of `problems` when the
    draft writes alone (mode "calibrate"); NaN where a sample had no such turn."""
    cfg = PipelineConfig(mode="calibrate", m=m, max_turns=max_turns, **config)
    return run_batched(draft, target, problems, cfg, key=key, batch_questions=batch_questions).scores


def bank_settings(draft, target, *, max_turns: int, turn_end_prob: float, max_chunk: int, buf_len: int,
                  **extra) -> dict:
    """What a calibration bank depends on: the turns' settings and the pair (a short hash of both models'
    parameters), plus `extra` (e.g. questions, m, seed). Stored with the bank by `save_bank`."""
    digest = hashlib.sha256()
    for model in (draft, target):
        for leaf in jax.tree.leaves(nnx.state(model, nnx.Param)):
            digest.update(np.asarray(leaf).tobytes())
    return dict(max_turns=max_turns, turn_end_prob=turn_end_prob, max_chunk=max_chunk, buf_len=buf_len,
                models=digest.hexdigest()[:16], **extra)


def save_bank(path, scores_QxmxT, settings: dict) -> None:
    """Write calibration scores and the settings they were collected with (npz: 'scores', 'settings')."""
    buffer = io.BytesIO()
    np.savez(buffer, scores=np.asarray(scores_QxmxT, np.float32), settings=json.dumps(settings, sort_keys=True))
    nets.atomic_write(path, buffer.getvalue())


def load_bank(path, settings: dict | None = None) -> np.ndarray:
    """Calibration scores (Q, m, T) from `save_bank` (or any npz with 'scores'). With `settings`, every one
    the file recorded must match (a bank collected with other turns or models would give wrong rates)."""
    from codesign.atts._bank_file import read_bank_file  # sizes and dtype checked before loading

    scores, saved = read_bank_file(path)
    here = json.loads(json.dumps(settings or {}))   # as the file holds them (tuples become lists)
    differ = {k: (saved[k], v) for k, v in here.items() if k in saved and saved[k] != v}
    if differ:
        detail = "; ".join(f"{k}: file {a!r}, here {b!r}" for k, (a, b) in sorted(differ.items()))
        raise InputError("bank", str(path), f"was collected with other settings ({detail}); collect a new one")
    return scores



def make_calibrator(name: str, bank_QxmxT, *, alpha: float, max_turns: int, window: int = 512,
                    gamma: float = 0.005):
    """A calibrator of `CALIBRATORS` and its initial state from calibration scores (Q, m, T).

    static: the turn-0 scores only, never updated (ATTS' released code). window: the last `window`
    scores in turn order, then every new score. mondrian: one bank per turn (capacity: the largest
    count of any turn), updated per turn. aci: Gibbs & Candes' adaptive level over the static bank.
    """
    bank = np.asarray(bank_QxmxT, np.float32)
    if bank.ndim != 3:
        raise InputError("bank.shape", bank.shape, "must be (questions, m, turns)")
    if bank.shape[2] > max_turns:
        raise InputError("bank.shape", bank.shape, f"has more turns than max_turns={max_turns}")
    if np.isinf(bank).any():
        raise InputError("bank", "inf", "calibration scores must be finite (NaN marks a missing turn)")
    if not np.isfinite(bank[:, :, 0]).any():
        raise InputError("bank", "empty", "needs at least one finite turn-0 score")
    turn0 = bank[:, :, 0][np.isfinite(bank[:, :, 0])]
    by_turn = [bank[:, :, t][np.isfinite(bank[:, :, t])] for t in range(bank.shape[2])]
    if name == "static":
        cal = StaticBank(int(turn0.size))
        return cal, cal.init_state(jnp.asarray(turn0))
    if name == "aci":
        cal = ACI(float(alpha), float(gamma), StaticBank(int(turn0.size)))
        return cal, cal.init_state(jnp.asarray(turn0))
    if name == "window":
        flat = np.concatenate(by_turn)
        cal = SlidingWindow(int(window))
        return cal, cal.init_state(jnp.asarray(flat[-window:]))
    if name == "mondrian":
        flat = np.concatenate(by_turn)
        ids = np.concatenate([np.full(x.size, t, np.int32) for t, x in enumerate(by_turn)])
        cal = Mondrian(int(max_turns), int(max(x.size for x in by_turn)))
        return cal, cal.init_state(jnp.asarray(flat), turn_ids=jnp.asarray(ids))
    raise InputError("calibrator", name, f"must be one of {', '.join(CALIBRATORS)}")


def paired_bootstrap(a, b, *, n_boot: int = 10000, seed: int = 0) -> tuple[float, float, float]:
    """Mean of a - b over paired items and its 95% percentile bootstrap interval (Efron &
    Tibshirani 1993, ch. 13), resampling items with replacement. a, b: per-question 0/1 scores."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise InputError("a.shape", a.shape, f"must be a non-empty vector of the shape of b {b.shape}")
    diff = a - b
    rng = np.random.default_rng(seed)
    boots = diff[rng.integers(0, diff.size, (n_boot, diff.size))].mean(1)
    return float(diff.mean()), float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))


def _turn_rates(levels_QxmxT, alpha: float, min_n: int) -> dict:
    """Takeover rate per turn against alpha. "holds_within_0.02": every judged turn (n >= min_n) within
    0.02 of alpha, as measured. With n chunks a rate has a binomial standard error sqrt(a(1-a)/n)
    (0.031 at n = 200, alpha 0.25), so a turn is also tested: "turns_drifting" counts the judged
    turns whose distance beyond the 0.02 band exceeds 2 standard errors (a drift the sample size
    can resolve)."""
    scored = levels_QxmxT >= 0
    n_T = scored.sum((0, 1))
    rej_T = ((levels_QxmxT > 0) & scored).sum((0, 1))
    rate_T = np.where(n_T > 0, rej_T / np.maximum(n_T, 1), np.nan)
    judged = n_T >= min_n
    worst = float(np.nanmax(np.abs(rate_T[judged] - alpha))) if judged.any() else float("nan")
    se_T = np.sqrt(alpha * (1 - alpha) / np.maximum(n_T, 1))
    drifting = judged & (np.abs(rate_T - alpha) - 0.02 > 2 * se_T)
    return {"rate_by_turn": [None if np.isnan(r) else float(r) for r in rate_T], "n_by_turn": n_T.tolist(),
            "se_by_turn": se_T.tolist(), "overall": float(rej_T.sum() / max(n_T.sum(), 1)), "max_abs_dev": worst,
            "turns_judged": int(judged.sum()), "holds_within_0.02": bool(judged.any() and worst <= 0.02),
            "turns_drifting": int(drifting.sum())}


def bench(draft, target, task, *, ms=(4, 8, 16, 32, 64), n_accuracy: int = 500, m_accuracy: int = 16,
          n_speed: int = 8, n_calibration: int = 200, alpha: float = 0.25, takeover: str = "regenerate",
          speed_calibrator: str = "mondrian", max_turns: int = 16, batch_questions: int = 128, seed: int = 0,
          min_turn_n: int = 200, parts=BENCH_PARTS, turn_end_prob: float = 1.0, max_chunk: int = 16,
          buf_len: int = 256, pool_slots: int = 256, serve_samples: int = 2048, overlap: bool = False,
          devices: int = 1, bank_file: str | Path | None = None, log=print,
          save=None) -> dict:
    """The ATTS experiments on a trained pair; returns a JSON-ready report.

    1. Calibration bank: draft-only chunks of `n_calibration` validation problems x `m_accuracy`.
    2. Accuracy on `n_accuracy` held-out test problems (m = `m_accuracy`, majority vote): target-only,
       draft-only, synchronous top-B and ATTS with each calibrator; paired bootstrap 95% CI of
       ATTS (each calibrator) minus target-only; the takeover rate per turn of each calibrator
       against alpha (turns with at least `min_turn_n` scored chunks are judged).
    3. Speed: for every m in `ms`, `n_speed` test questions solved one at a time by ATTS
       (`speed_calibrator`), synchronous and target-only; wall-clock per question (s), tokens/s
       (every generated byte, discarded draft chunks included), and the synchronisation time
       (wall-clock x share of the active slot-ticks spent waiting at a barrier).
    4. Serve (throughput): for every m in `ms`, serve_samples // m test questions through a pool of
       `pool_slots` slots (`PipelineConfig.slots`: a freed slot takes the next waiting sample; sync
       admits a question when m slots are free), ATTS vs sync vs target-only; wall-clock per question
       = run wall / questions (the inverse of throughput), tokens/s, mean latency per question, the
       share of slot time held at a barrier or free.
    `parts` picks among 2, 3 and 4 (1 always runs), so a long run can be split over several commands.
    turn_end_prob, max_chunk, buf_len, overlap: `PipelineConfig` settings, the same in every run.
    bank_file: an .npz the calibration bank is read from if it was collected with the same settings and
    models (else an error), or written to after collecting it: later invocations skip the collection.
    devices: `PipelineConfig.devices` of the timed ATTS and sync runs (2: draft and target on two devices;
    needs overlap); target-only runs on one device.
    save: called with the report after every run (its "complete" is False until the end), so a
    caller can write it out and an interrupted bench keeps what it measured.
    """
    if not set(parts) <= set(BENCH_PARTS) or not parts:
        raise InputError("parts", parts, f"must be a non-empty selection of {', '.join(BENCH_PARTS)}")
    key = jax.random.key(seed)
    k_cal, k_acc, k_speed = jax.random.split(key, 3)
    turns = dict(max_turns=max_turns, turn_end_prob=turn_end_prob, max_chunk=max_chunk, buf_len=buf_len, overlap=overlap)
    common = dict(turns, alpha=alpha, takeover=takeover)
    PipelineConfig(mode="atts", devices=devices, **common)   # a bad combination fails now, not after calibrating

    def placed(mode):   # the timed runs of both models on `devices`; one model needs one device
        return dict(common, devices=devices if mode in ("atts", "sync") else 1)
    report = {"turn_end_prob": turn_end_prob, "max_chunk": max_chunk, "buf_len": buf_len, "overlap": overlap,
              "devices": devices,
              "device": str(jax.devices()[0]), "backend": jax.default_backend(), "alpha": alpha,
              "takeover": takeover, "task": dataclasses.asdict(task), "max_turns": max_turns,
              "draft_params": nets.param_count(draft), "target_params": nets.param_count(target)}
    start = time.perf_counter()
    settings = bank_settings(draft, target, max_turns=max_turns, turn_end_prob=turn_end_prob, max_chunk=max_chunk,
                             buf_len=buf_len, questions=n_calibration, m=m_accuracy, seed=seed,
                             task=dataclasses.asdict(task))
    bank = load_bank(bank_file, settings) if bank_file is not None and Path(bank_file).exists() else None
    if bank is None:
        cal_problems = list(task.dataset(n_calibration, seed + 11, "valid").problems)
        bank = collect_bank(draft, target, cal_problems, m=m_accuracy, key=k_cal, batch_questions=batch_questions,
                            **turns)
        if bank_file is not None:
            save_bank(bank_file, bank, settings)
    report["calibration"] = {"questions": n_calibration, "m": m_accuracy,
                             "file": None if bank_file is None else str(bank_file),
                             "scores_by_turn": int(np.isfinite(bank).sum()),
                             "median_by_turn": [float(np.nanmedian(bank[:, :, t])) if np.isfinite(bank[:, :, t]).any()
                                                else None for t in range(bank.shape[2])]}
    if log:
        log(f"calibration bank: {int(np.isfinite(bank).sum())} scores ({time.perf_counter() - start:.0f} s)")
    n_serve = max(serve_samples // m for m in ms) if "serve" in parts else 0
    test = list(task.dataset(max(n_accuracy, n_speed, n_serve), seed + 13, "test").problems)
    report.update(accuracy={}, speed=[], serve=[], complete=False)

    def progress():   # the report so far, after every run: an interrupted bench keeps what it measured
        report["total_s"] = time.perf_counter() - start
        if save:
            save(report)

    progress()

    def finish(section: str, row: dict, head: str) -> None:   # a speed or serve row: speedups, save, log
        row = _with_speedups(row)
        report[section].append(row)
        progress()
        if log:
            log(f"{head} atts {row['atts']['wall_s_per_question'] * 1e3:.2f} ms/q, sync "
                f"{row['sync']['wall_s_per_question'] * 1e3:.2f} ms/q, speedup {row['speedup_vs_sync']:.2f}x")

    def speed_calibrator_for(mode):   # a fresh calibrator for every speed / serve run of ATTS
        return make_calibrator(speed_calibrator, bank, alpha=alpha, max_turns=max_turns) if mode == "atts" else (None, None)

    base = None
    arms = [(mode, None) for mode in ("target_only", "draft_only", "sync")] + [("atts", c) for c in CALIBRATORS]
    for mode, name in (arms if "accuracy" in parts else ()):
        label = f"atts_{name}" if name else mode
        cal, state = make_calibrator(name, bank, alpha=alpha, max_turns=max_turns) if name else (None, None)
        cfg = PipelineConfig(mode=mode, m=m_accuracy, **common)
        r = run_batched(draft, target, test[:n_accuracy], cfg, key=k_acc, calibrator=cal, cal_state=state,
                        batch_questions=batch_questions)
        base = r.correct if mode == "target_only" else base
        entry = {"accuracy": r.accuracy, "questions": len(r.voted), "m": m_accuracy,
                 "takeover_rate": r.summary()["takeover_rate"], "wall_s": r.wall_s}
        if mode in ("atts", "sync"):
            diff, lo, hi = paired_bootstrap(r.correct, base, seed=seed)
            entry.update(diff_vs_target=diff, ci95=[lo, hi], non_inferior_1pt=lo > -0.01,
                         rejection=_turn_rates(r.levels, alpha, min_turn_n))
        report["accuracy"][label] = entry
        progress()
        if log:
            log(f"accuracy {label:<14} {r.accuracy:.4f}")
    for m in (ms if "speed" in parts else ()):
        row = {"m": m}
        for mode in ("atts", "sync", "target_only"):
            cfg = PipelineConfig(mode=mode, m=m, **placed(mode))
            cal, state = speed_calibrator_for(mode)
            walls, tokens, sync_s, compile_s = [], 0, 0.0, 0.0
            for i, problem in enumerate(test[:n_speed]):
                r = run_pipeline(draft, target, [problem], cfg, key=jax.random.fold_in(k_speed, i),
                                 calibrator=cal, cal_state=state)
                state = r.cal_state if mode == "atts" else None
                summary = r.summary()
                walls.append(r.wall_s)
                tokens += summary["tokens"]
                sync_s += summary["sync_time_s"]
                compile_s += r.compile_s
            row[mode] = {"wall_s_per_question": float(np.mean(walls)), "tokens_per_s": tokens / sum(walls),
                         "sync_time_s_per_question": sync_s / len(walls), "compile_s": compile_s}
        finish("speed", row, f"speed m={m:<3}")
    for m in (ms if "serve" in parts else ()):
        n_q = max(1, serve_samples // m)
        row = {"m": m, "questions": n_q, "slots": pool_slots}
        for mode in ("atts", "sync", "target_only"):
            cfg = PipelineConfig(mode=mode, m=m, slots=max(m, pool_slots // m * m), **placed(mode))
            cal, state = speed_calibrator_for(mode)
            r = run_pipeline(draft, target, test[:n_q], cfg, key=jax.random.fold_in(k_speed, 1000 + m),
                             calibrator=cal, cal_state=state)
            sm = r.summary()
            row[mode] = {"wall_s": r.wall_s, "wall_s_per_question": r.wall_s / n_q, "tokens_per_s": sm["tokens_per_s"],
                         "latency_s_mean": sm["latency_s_mean"], "sync_time_s_per_question": sm["sync_time_s"] / n_q,
                         "barrier_wait_fraction": sm["barrier_wait_fraction"],
                         "idle_slot_fraction": sm["idle_slot_fraction"], "accuracy": r.accuracy,
                         "takeover_rate": sm["takeover_rate"], "ticks": sm["ticks"], "compile_s": r.compile_s,
                         "counts": r.counts}
        finish("serve", row, f"serve m={m:<3} ({n_q} questions, {pool_slots} slots)")
    report["complete"] = True
    progress()
    return report


def _with_speedups(row: dict) -> dict:
    atts = row["atts"]["wall_s_per_question"]
    return {**row, "speedup_vs_sync": row["sync"]["wall_s_per_question"] / atts,
            "speedup_vs_target_only": row["target_only"]["wall_s_per_question"] / atts}


_TIMING_HEAD = (f"{'atts ms/q':>10} {'sync ms/q':>10} {'target ms/q':>11} {'speedup':>8} "
                f"{'atts tok/s':>11} {'sync tok/s':>11}")


def _timing_cells(row: dict, digits: int) -> str:
    """The columns of `_TIMING_HEAD` for a speed or serve row: ms per question, speedup, tokens/s."""
    a, s_, t = row["atts"], row["sync"], row["target_only"]
    ms = " ".join(f"{r['wall_s_per_question'] * 1e3:>{w}.{digits}f}" for r, w in ((a, 10), (s_, 10), (t, 11)))
    return f"{ms} {row['speedup_vs_sync']:>7.2f}x {a['tokens_per_s']:>11.0f} {s_['tokens_per_s']:>11.0f}"


def _turns_line(report: dict) -> str:
    p = report.get("turn_end_prob", 1.0)
    kind = "one line each" if p >= 1 else f"paragraphs of a geometric number of lines, mean {1 / p:.3g}"
    ticks = "; overlapped ticks" if report.get("overlap") else ""
    ticks += "; draft on device 0, target on device 1 (atts, sync)" if report.get("devices", 1) == 2 else ""
    return f"turns: {kind}, max_chunk {report.get('max_chunk', 16)} bytes{ticks}"


def format_bench(report: dict) -> str:
    """A human-readable table of a `bench` report."""
    lines = [f"ATTS bench on {report['device']} ({report['backend']}): draft {report['draft_params']:,} params, "
             f"target {report['target_params']:,} params, alpha {report['alpha']}, takeover {report['takeover']}",
             _turns_line(report),
             "", f"{'run':<15} {'accuracy':>8} {'takeover':>8} {'diff vs target':>14} {'95% CI':>18}  non-inferior"]
    for name, e in report["accuracy"].items():
        ci = f"[{e['ci95'][0]:+.4f}, {e['ci95'][1]:+.4f}]" if "ci95" in e else ""
        diff = f"{e['diff_vs_target']:+.4f}" if "diff_vs_target" in e else ""
        ok = ("yes" if e["non_inferior_1pt"] else "NO") if "non_inferior_1pt" in e else ""
        lines.append(f"{name:<15} {e['accuracy']:>8.4f} {e['takeover_rate']:>8.3f} {diff:>14} {ci:>18}  {ok}")
    lines += ["", "takeover rate per turn (alpha = %g; turns with n >= judged)" % report["alpha"]]
    for name, e in report["accuracy"].items():
        if "rejection" in e:
            rj = e["rejection"]
            rates = " ".join("  -  " if r is None else f"{r:.3f}" for r in rj["rate_by_turn"])
            lines.append(f"{name:<15} {rates}  max|dev| {rj['max_abs_dev']:.3f} "
                         f"({'holds' if rj['holds_within_0.02'] else 'outside 0.02'}; "
                         f"{rj.get('turns_drifting', '?')}/{rj['turns_judged']} turns beyond 0.02 + 2 SE)")
    lines += ["", f"{'m':>3} {_TIMING_HEAD} {'sync wait ms/q':>14}"]
    for row in report["speed"]:
        lines.append(f"{row['m']:>3} {_timing_cells(row, 2)} "
                     f"{row['sync']['sync_time_s_per_question'] * 1e3:>14.2f}")
    if report.get("serve"):
        lines += ["", f"serving: a pool of {report['serve'][0]['slots']} slots, freed slots admit waiting samples "
                      "(sync: a question when m slots are free); ms/q = run wall / questions",
                  f"{'m':>3} {'questions':>9} {_TIMING_HEAD} {'atts lat ms':>11} {'sync lat ms':>11} "
                  f"{'sync held':>9} {'sync free':>9} {'acc a/s/t':>16}"]
        for row in report["serve"]:
            a, s_, t = row["atts"], row["sync"], row["target_only"]
            lines.append(f"{row['m']:>3} {row['questions']:>9} {_timing_cells(row, 3)} "
                         f"{a['latency_s_mean'] * 1e3:>11.1f} {s_['latency_s_mean'] * 1e3:>11.1f} "
                         f"{s_['barrier_wait_fraction']:>9.1%} {s_['idle_slot_fraction']:>9.1%} "
                         f"{a['accuracy']:.3f}/{s_['accuracy']:.3f}/{t['accuracy']:.3f}")
    lines.append(f"total {report['total_s']:.0f} s" + ("" if report.get("complete", True)
                                                      else " (PARTIAL: the bench was still running or was cut)"))
    return "\n".join(lines)
