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
serves (`row_buckets`), so its cost follows those slots, as in a serving engine with padded batch
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

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from codesign.atts._calibrators import ACI
from codesign.atts._calls import (DRAFT_ROLE, TARGET_ROLE, bucket_index, cache_rows, exchange, forward_some, gen_call,
                                  on_role, role_mesh, row_buckets, row_forward, sample, score_call, set_cache_rows)
from codesign.atts._ordinal import ordinal_levels
from codesign.atts._state import ANSWER, DONE, DRAFT, END, NEWLINE, SCORE, TGEN, WAIT, PipelineConfig, _Out, _Slots


def _put(buf_SxL, pos_S, tok_S, mask_S):
    rows = jnp.arange(buf_SxL.shape[0])
    return buf_SxL.at[rows, jnp.where(mask_S, pos_S, buf_SxL.shape[1])].set(tok_S, mode="drop")


def _line_done(buf_SxL, line_start_S, last_S):
    """Whether the committed line [line_start, last] ends the sample (answer line or END byte)."""
    rows = jnp.arange(buf_SxL.shape[0])
    first = buf_SxL[rows, line_start_S]
    return (first == ANSWER) | (buf_SxL[rows, last_S] == END)


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


def _tally(counts, cfg: PipelineConfig, kind: str, mask_S, sizes):
    """`counts` with one call of `kind` on mask_S's row bucket, if any slot is masked (only with count_rows)."""
    return counts.tally(kind, mask_S.any(), bucket_index(mask_S, sizes)) if cfg.count_rows else counts


def _admit_capacity(cfg: PipelineConfig, S: int) -> int:
    """Rows one admission prefill serves (static): an eighth of the pool, at least a question."""
    return min(S, max(cfg.m, S // 8))


def _flush(out: _Out, fin_S, sid_S, buf, length, scores, levels, tick) -> _Out:
    """Write the finished slots' samples into the per-sample results."""
    at = jnp.where(fin_S, sid_S, out.length.shape[0])   # out of range: dropped
    return _Out(out.buf.at[at].set(buf, mode="drop"), out.length.at[at].set(length, mode="drop"),
                out.scores.at[at].set(scores, mode="drop"), out.levels.at[at].set(levels, mode="drop"),
                out.admit, out.done.at[at].set(tick, mode="drop"))


def _scoring(cfg: PipelineConfig, phase, group_S, n_groups: int):
    """The slots whose chunk the target scores this tick (sync: only once every active sibling has drafted)."""
    scoring = phase == SCORE
    if cfg.mode == "sync":  # barrier: every still-active sibling must have finished its chunk
        scoring = scoring & _group_all((phase == SCORE) | (phase == DONE), group_S, n_groups)
    return scoring


class _Tick(NamedTuple):
    """What the stages of one tick read besides the slots: the run's static setup and the tick's random draws."""

    cfg: PipelineConfig
    calibrator: Any
    draft_gd: Any
    target_gd: Any
    draft_state: Any
    target_state: Any
    n_groups: int
    group_S: jax.Array       # the question of each slot (a free slot is DONE: it never holds a barrier back)
    turn_break: jax.Array    # per slot: whether a line end closes the turn this tick
    sizes: tuple[int, ...]   # the row buckets a model call may run on
    k_draft: jax.Array
    k_score: jax.Array
    k_gen: jax.Array
    k_unif: jax.Array

    @property
    def overlap(self) -> bool:
        """The target's calls read the tick's starting state, never the draft's output."""
        return self.cfg.overlap and self.cfg.mode in ("atts", "sync", "calibrate")

    def turn_ends(self, tok_S, n_S):
        """A line end closes the turn with probability turn_end_prob (one coin per slot and tick)."""
        return ((tok_S == NEWLINE) & self.turn_break) | (tok_S == END) | (n_S >= self.cfg.max_chunk)


class _Early(NamedTuple):
    """The target's calls made on the tick's starting state (overlap): which slots, and what came back."""

    scoring: jax.Array
    score_out: tuple[jax.Array, jax.Array]   # (mean NLL of the chunk, the target's own first byte)
    gen: jax.Array
    g_tok: jax.Array


def _target_first(s: _Slots, t: _Tick) -> tuple[_Slots, _Early]:
    """Overlap: the target scores and writes from the tick's starting state, before the draft's call (and, on
    two devices, at the same time as it on the other device)."""
    cfg = t.cfg
    scoring = _scoring(cfg, s.phase, t.group_S, t.n_groups)
    score_out, tcache = score_call(cfg, t.target_gd, t.target_state, s.buf, s.target_cache, scoring, s.length,
                                   s.frontier, t.k_score, t.sizes)
    gen = s.phase == TGEN
    g_tok, tcache = gen_call(cfg, t.target_gd, t.target_state, s.buf, tcache, gen, s.frontier, t.k_gen, t.sizes)
    return s._replace(target_cache=tcache), _Early(scoring, score_out, gen, g_tok)


def _draft(s: _Slots, t: _Tick, active, early: _Early | None) -> tuple[_Slots, _Early | None]:
    """The draft's byte for every slot: generated while drafting, else the target's byte it has not yet seen."""
    cfg = t.cfg
    if cfg.mode == "target_only":
        return s, early
    S, L = s.buf.shape
    # A drafting slot whose cache already holds its last byte re-feeds it for the logits.
    generating = active & (s.phase == DRAFT) & (s.fed_draft >= s.frontier)
    feeding = generating | (active & (s.fed_draft <= s.frontier))
    feed_pos = jnp.minimum(s.fed_draft, s.frontier)

    def draft_step(args):
        # the weights ride along as an operand so the merged module lives at the branch's trace level
        buf, dcache, draft_state = args
        logits, dcache = forward_some(t.draft_gd, draft_state, buf, dcache, feeding, feed_pos, 1, L - 1, t.sizes)
        return sample(logits[:, 0], t.k_draft, cfg.draft_temperature), dcache

    d_tok, dcache = on_role(cfg, DRAFT_ROLE, feeding.any(), draft_step, lambda a: (jnp.zeros(S, jnp.int32), a[1]),
                            (s.buf, s.draft_cache, t.draft_state))
    if cfg.devices == 2:   # one exchange per tick: the draft's bytes, the target's scores and bytes
        d_tok, score_out, g_tok = exchange(d_tok, early.score_out, early.g_tok)
        early = early._replace(score_out=score_out, g_tok=g_tok)
    buf = _put(s.buf, s.frontier + 1, d_tok, generating)
    frontier = jnp.where(generating, s.frontier + 1, s.frontier)
    counts = s.counts.add(draft_calls=feeding.any().astype(jnp.int32), draft_tokens=generating.sum(dtype=jnp.int32))
    counts = _tally(counts, cfg, "draft_decode", feeding, t.sizes)
    s = s._replace(buf=buf, frontier=frontier, fed_draft=jnp.where(feeding, feed_pos + 1, s.fed_draft),
                   draft_cache=dcache, counts=counts)
    chunk_end = generating & t.turn_ends(buf[jnp.arange(S), frontier], frontier - s.line_start + 1)
    if cfg.mode != "draft_only":
        return s._replace(phase=jnp.where(chunk_end, SCORE, s.phase)), early
    done = chunk_end & _line_done(buf, s.line_start, frontier)
    return s._replace(length=jnp.where(chunk_end, frontier + 1, s.length),
                      line_start=jnp.where(chunk_end, frontier + 1, s.line_start),
                      turn=jnp.where(chunk_end, s.turn + 1, s.turn), phase=jnp.where(done, DONE, s.phase)), early


def _decide(t: _Tick, scoring, score_S, turn_idx, cal_state):
    """The decision level of every scored chunk (0 accept, 1 append, 2 regenerate) and the calibrator's state.

    It runs only on ticks that score a chunk: a Mondrian bank sorts T banks per call, far too much to pay
    on every tick.
    """
    cfg, calibrator = t.cfg, t.calibrator
    S = score_S.shape[0]
    no_level = jnp.zeros(S, jnp.int32)
    if cfg.mode == "calibrate":
        return no_level, cal_state
    if cfg.mode == "sync":
        def decide_sync(score_S):
            chosen = _decide_sync(score_S, scoring, t.group_S, cfg.alpha, t.n_groups)
            return jnp.where(chosen, 1 if cfg.takeover == "append" else 2, 0).astype(jnp.int32)

        return jax.lax.cond(scoring.any(), decide_sync, lambda _: no_level, score_S), cal_state

    def decide(args):
        score_S, state = args
        uniforms = jax.random.uniform(t.k_unif, (S,), jnp.float32)
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

    return jax.lax.cond(scoring.any(), decide, lambda a: (no_level, a[1]), (score_S, cal_state))


def _score(s: _Slots, t: _Tick, early: _Early | None) -> tuple[_Slots, jax.Array]:
    """The target scores the ready chunks (one prefill of [length-1, length-1+W) per slot) and each is accepted,
    appended to or regenerated. Returns the slots and those whose regenerated first byte already ends the turn."""
    cfg = t.cfg
    S = s.buf.shape[0]
    if cfg.mode not in ("atts", "sync", "calibrate"):
        return s, jnp.zeros(S, bool)
    tcache = s.target_cache
    if early is not None:
        scoring = early.scoring
        score_S, first_tok = early.score_out
    else:
        scoring = _scoring(cfg, s.phase, t.group_S, t.n_groups)
        (score_S, first_tok), tcache = score_call(cfg, t.target_gd, t.target_state, s.buf, tcache, scoring, s.length,
                                                  s.frontier, t.k_score, t.sizes)
    counts = _tally(s.counts.add(score_calls=scoring.any().astype(jnp.int32)), cfg, "target_score", scoring, t.sizes)
    turn_idx = jnp.clip(s.turn, 0, cfg.max_turns - 1)
    level, cal_state = _decide(t, scoring, score_S, turn_idx, s.cal_state)
    rows = jnp.arange(S)
    scores = s.scores.at[rows, turn_idx].set(jnp.where(scoring, score_S, s.scores[rows, turn_idx]))
    levels = s.levels.at[rows, turn_idx].set(jnp.where(scoring, level, s.levels[rows, turn_idx]))

    accept = scoring & (level == 0)
    append = scoring & (level == 1)
    regen = scoring & (level == 2)
    buf, frontier, fed_draft, phase, turn = s.buf, s.frontier, s.fed_draft, s.phase, s.turn
    # accepted or appended: the chunk is committed
    committed = accept | append
    done = committed & _line_done(buf, s.line_start, frontier)
    length = jnp.where(committed, frontier + 1, s.length)
    line_start = jnp.where(committed, frontier + 1, s.line_start)
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
    counts = counts.add(target_tokens=regen.sum(dtype=jnp.int32))
    # a regenerated first byte may already end the line (e.g. END)
    first_end = regen & t.turn_ends(first_tok, jnp.ones(S, jnp.int32))
    s = s._replace(buf=buf, length=length, frontier=frontier, line_start=line_start, fed_draft=fed_draft,
                   phase=phase, turn=turn, scores=scores, levels=levels, target_cache=tcache, cal_state=cal_state,
                   counts=counts)
    return s, first_end


def _target_writes(s: _Slots, t: _Tick, early: _Early | None, first_end) -> _Slots:
    """The target's byte for every slot it has taken over (every slot: target_only); a line end closes the turn."""
    cfg = t.cfg
    phase, tcache = s.phase, s.target_cache
    if cfg.mode == "target_only":
        phase = jnp.where(phase == DRAFT, TGEN, phase)
    if early is not None:   # the slots taken over before this tick (their last byte is the same as at its start)
        gen, tok = early.gen, early.g_tok
    else:
        gen = (phase == TGEN) & ~first_end
        tok, tcache = gen_call(cfg, t.target_gd, t.target_state, s.buf, tcache, gen, s.frontier, t.k_gen, t.sizes)
    counts = s.counts.add(target_gen_calls=gen.any().astype(jnp.int32), target_tokens=gen.sum(dtype=jnp.int32))
    counts = _tally(counts, cfg, "target_decode", gen, t.sizes)
    buf = _put(s.buf, s.frontier + 1, tok, gen)
    frontier = jnp.where(gen, s.frontier + 1, s.frontier)
    last = buf[jnp.arange(buf.shape[0]), frontier]
    line_end = (gen & t.turn_ends(last, frontier - s.line_start + 1)) | first_end   # gen: the slots that wrote a byte
    done = line_end & _line_done(buf, s.line_start, frontier)
    after_line = WAIT if cfg.mode == "sync" else DRAFT
    return s._replace(buf=buf, frontier=frontier, length=jnp.where(line_end, frontier + 1, s.length),
                      line_start=jnp.where(line_end, frontier + 1, s.line_start),
                      turn=jnp.where(line_end, s.turn + 1, s.turn),
                      phase=jnp.where(line_end, jnp.where(done, DONE, after_line), phase), target_cache=tcache,
                      counts=counts)


def _release_and_stop(s: _Slots, t: _Tick, active) -> _Slots:
    """Sync releases a question's samples once none of them is drafting, scored or taken over; a sample stops
    after T turns or when its buffer is full. Counts the active, waiting and free slot-ticks."""
    cfg = t.cfg
    phase = s.phase
    if cfg.mode == "sync":
        busy = (phase == DRAFT) | (phase == SCORE) | (phase == TGEN)
        release = (phase == WAIT) & ~_group_any(busy, t.group_S, t.n_groups)
        phase = jnp.where(release, DRAFT, phase)
    scratch = s.buf.shape[1] - (cfg.max_chunk + 1)
    full = s.frontier + cfg.max_chunk + 2 >= scratch
    phase = jnp.where((s.turn >= cfg.max_turns) | full, DONE, phase)
    waiting = (phase == WAIT) | ((phase == SCORE) & (cfg.mode == "sync"))
    counts = s.counts.add(active_slot_ticks=active.sum(dtype=jnp.int32),
                          waiting_slot_ticks=(waiting & active).sum(dtype=jnp.int32),
                          idle_slot_ticks=(s.sid < 0).sum(dtype=jnp.int32))
    return s._replace(phase=phase, counts=counts)


def _free_finished(s: _Slots) -> _Slots:
    """Finished samples leave their slots: results written out, the slot is free."""
    fin = (s.phase == DONE) & (s.sid >= 0)
    out = jax.lax.cond(fin.any(), lambda a: _flush(*a), lambda a: a[0],
                       (s.out, fin, s.sid, s.buf, s.length, s.scores, s.levels, s.counts.ticks))
    return s._replace(out=out, sid=jnp.where(fin, -1, s.sid))


def _admit(s: _Slots, t: _Tick, prompts, plen) -> _Slots:
    """Waiting samples take free slots, their prompts prefilled in one call per model (only when the pool is
    smaller than the queue)."""
    cfg = t.cfg
    S, L = s.buf.shape
    N = s.out.length.shape[0]
    A = _admit_capacity(cfg, S)
    free = s.sid < 0
    rank = jnp.cumsum(free, dtype=jnp.int32) - 1
    n_free, left = free.sum(dtype=jnp.int32), N - s.n_next
    if cfg.mode == "sync":   # a whole question, m slots, at once
        k = cfg.m * jnp.minimum(jnp.minimum(n_free, A) // cfg.m, left // cfg.m)
    else:
        k = jnp.minimum(jnp.minimum(n_free, A), left)
    admit = free & (rank < k)
    new_sid = s.n_next + rank
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
                _, rows_new = row_forward(gd, state, tokens, cache_rows(cache, idx), start)
                return set_cache_rows(cache, idx, rows_new)
            return go

        if cfg.mode != "target_only":
            dcache = on_role(cfg, DRAFT_ROLE, True, fill(t.draft_gd), lambda a: a[0], (dcache, draft_state))
        if cfg.mode != "draft_only":
            tcache = on_role(cfg, TARGET_ROLE, True, fill(t.target_gd), lambda a: a[0], (tcache, target_state))
        return buf, dcache, tcache

    buf, dcache, tcache = jax.lax.cond(admit.any(), prefill, lambda a: a[:3],
                                       (s.buf, s.draft_cache, s.target_cache, t.draft_state, t.target_state))
    out = s.out._replace(admit=s.out.admit.at[jnp.where(admit, new_sid, N)].set(s.counts.ticks, mode="drop"))
    return s._replace(buf=buf, draft_cache=dcache, target_cache=tcache,
                      counts=s.counts.add(prefill_calls=admit.any().astype(jnp.int32)),
                      length=jnp.where(admit, p_S, s.length), frontier=jnp.where(admit, p_S - 1, s.frontier),
                      line_start=jnp.where(admit, p_S, s.line_start), fed_draft=jnp.where(admit, p_S - 1, s.fed_draft),
                      phase=jnp.where(admit, DRAFT, s.phase), turn=jnp.where(admit, 0, s.turn),
                      scores=jnp.where(admit[:, None], jnp.nan, s.scores),
                      levels=jnp.where(admit[:, None], -1, s.levels), out=out,
                      sid=jnp.where(admit, new_sid, s.sid), n_next=s.n_next + k)


def _tick(carry, *, cfg: PipelineConfig, calibrator, draft_gd, target_gd, n_groups: int, prompts, plen):
    """One step of the pool: overlapped target calls, the draft's byte, scoring and decisions, the target's byte,
    barriers and stop rules, finished samples out, waiting samples in."""
    s, draft_state, target_state = carry
    S = s.buf.shape[0]
    key, k_draft, k_score, k_gen, k_unif = jax.random.split(s.key, 5)
    if cfg.turn_end_prob < 1:
        turn_break = jax.random.uniform(jax.random.fold_in(k_unif, 1), (S,)) < cfg.turn_end_prob
    else:
        turn_break = jnp.ones(S, bool)
    t = _Tick(cfg, calibrator, draft_gd, target_gd, draft_state, target_state, n_groups,
              jnp.maximum(s.sid, 0) // cfg.m, turn_break, row_buckets(S) if cfg.buckets else (S,),
              k_draft, k_score, k_gen, k_unif)
    active = s.phase != DONE
    s = s._replace(key=key, counts=s.counts.add(ticks=1))
    early = None
    if t.overlap:
        s, early = _target_first(s, t)
    s, early = _draft(s, t, active, early)
    s, first_end = _score(s, t, early)
    s = _target_writes(s, t, early, first_end)
    s = _release_and_stop(s, t, active)
    s = _free_finished(s)
    if S < s.out.length.shape[0]:
        s = _admit(s, t, prompts, plen)
    return s, draft_state, target_state


@functools.partial(jax.jit, static_argnames=("cfg", "calibrator", "draft_gd", "target_gd", "n_groups", "max_ticks"))
def _run(slots, draft_state, target_state, prompts, plen, *, cfg, calibrator, draft_gd, target_gd, n_groups,
         max_ticks):
    N = slots.out.length.shape[0]
    cond = lambda c: (((c[0].phase != DONE).any() | (c[0].n_next < N)) & (c[0].counts.ticks < max_ticks))

    def loop(slots, draft_state, target_state, prompts, plen):   # every array an argument (shard_map needs it)
        body = functools.partial(_tick, cfg=cfg, calibrator=calibrator, draft_gd=draft_gd, target_gd=target_gd,
                                 n_groups=n_groups, prompts=prompts, plen=plen)
        return jax.lax.while_loop(cond, body, (slots, draft_state, target_state))[0]

    if cfg.devices == 2:
        # the draft's calls on device 0, the target's on device 1; everything else is computed on both
        # alike (replicated), and each tick ends in one exchange (`exchange`). A device's copy of the
        # other model's cache is never read, so only the replicated fields of the result are used.
        loop = jax.shard_map(loop, mesh=role_mesh(), in_specs=jax.sharding.PartitionSpec(),
                             out_specs=jax.sharding.PartitionSpec(), check_vma=False)
    s = loop(slots, draft_state, target_state, prompts, plen)
    # stopped by max_ticks: what the unfinished samples have committed so far (done stays -1)
    left = s.sid >= 0
    out = _flush(s.out, left, s.sid, s.buf, s.length, s.scores, s.levels, -1)
    return s._replace(out=out)
