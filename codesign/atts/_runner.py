"""Running the ATTS engine: a batch of questions through one compiled program, and the result.

`run_pipeline` prefills the prompts, compiles the engine's loop once per shape and setting (the
compile time is reported apart from the run time), runs it and decodes the texts; `run_batched`
runs it over chunks of a long list of questions, carrying an online calibrator's state from chunk
to chunk; `majority_vote` is the answer of a question from its m samples.
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import nets
from nets import InputError
from codesign.atts._calibrators import ACI, ACIState, BankState, Mondrian, SlidingWindow, StaticBank
from codesign.atts._calls import prefill, role_mesh, row_buckets
from codesign.atts._engine import _run
from codesign.atts._state import CALL_KINDS, Counters, PipelineConfig, _Out, _Slots
from codesign.data import ArithProblem, ChainProblem, decode, encode, parse_answer

_COMPILED: dict = {}


def compiled_pipelines() -> tuple:
    """The pipeline programs compiled in this process so far, oldest first (`jax.stages.Compiled`: their
    `as_text()`, `memory_analysis()` and `cost_analysis()` show what a run executes). One per distinct
    configuration, models and batch shape; `run_pipeline` reuses them."""
    return tuple(_COMPILED.values())


@dataclass
class RunResult:
    """What a run produced and what it cost.

    answers: (Q, m) parsed answers (None if none); voted: (Q,) majority answers; correct: (Q,)
    exact match of the vote; texts: (Q, m) completions; scores / levels: (Q, m, T) per-turn target
    NLL of the draft chunk (NaN: not scored) and decision level (-1: not scored); counts: tick and
    token counters (`Counters`, by name); wall_s: seconds of the device run (compiled, prompts prefilled).
    latency_ticks: (Q,) ticks from a question's first admitted sample to its last finished one
    (-1: cut by max_ticks). calls_by_rows: with `PipelineConfig.count_rows`, the model calls of the
    loop by kind (`CALL_KINDS`) and by the rows of the bucket they ran on, {kind: {rows: calls}}; else None.
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
    calls_by_rows: dict[str, dict[int, int]] | None = None

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


def run_pipeline(draft: nets.TransformerLM, target: nets.TransformerLM, problems: list[ArithProblem | ChainProblem],
                 cfg: PipelineConfig, *, key: jax.Array, calibrator=None, cal_state=None,
                 max_ticks: int | None = None) -> RunResult:
    """Solve `problems`, m samples each, all in one pool, under `cfg` (the engine's documentation, `codesign/atts/_engine.py`, describes a run).

    calibrator / cal_state: a `codesign.atts` calibrator and its initial state (mode "atts" only;
    e.g. `StaticBank(n).init_state(bank_scores)`). The state evolves during the run (online
    calibrators); a run with a fresh state is independent of earlier runs.
    """
    _check_models(draft, target)
    if not isinstance(cfg, PipelineConfig):
        raise InputError("cfg", cfg, "must be a PipelineConfig")
    if not problems or not all(isinstance(p, (ArithProblem, ChainProblem)) for p in problems):
        raise InputError("problems", type(problems).__name__, "must be a non-empty list of ArithProblem or ChainProblem")
    if cfg.mode == "atts":
        if not isinstance(calibrator, (StaticBank, SlidingWindow, Mondrian, ACI)):
            raise InputError("calibrator", calibrator,
                             "mode atts needs a StaticBank, SlidingWindow, Mondrian, PooledMondrian or ACI")
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
    prompts = [encode(p.prompt) for p in problems]
    width = max(len(p) for p in prompts)
    if width + 2 * (cfg.max_chunk + 1) >= L:
        raise InputError("buf_len", L, f"too short for a prompt of {width} bytes plus two chunks")
    # the prompt table's width rounded up to a multiple of 8 (where the buffer allows): batches whose longest
    # prompts differ by a few bytes share one compiled program (a shorter prompt is padded, as in any batch)
    width = max(width, min(-(-width // 8) * 8, L - 2 * (cfg.max_chunk + 1) - 1))
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
    dcache = prefill(draft_gd, draft_state, buf, nets.init_cache(draft, S, L), width=width)
    tcache = prefill(target_gd, target_state, buf, nets.init_cache(target, S, L), width=width)
    length = jnp.asarray(lengths)
    slots = _Slots(buf, length, length - 1, length, length - 1, jnp.zeros(S, jnp.int32), jnp.zeros(S, jnp.int32),
                   jnp.full((S, T), jnp.nan, jnp.float32), jnp.full((S, T), -1, jnp.int32), dcache, tcache,
                   cal_state, key, Counters.zeros(), jnp.arange(S, dtype=jnp.int32),
                   jnp.asarray(S, jnp.int32),
                   _Out(jnp.zeros((N, L), jnp.int32), jnp.zeros(N, jnp.int32), jnp.full((N, T), jnp.nan, jnp.float32),
                        jnp.full((N, T), -1, jnp.int32), jnp.zeros(N, jnp.int32), jnp.full(N, -1, jnp.int32)))
    # a sample needs at most T * 3 * (max_chunk + 2) ticks; the pool serves ceil(N / S) of them in turn
    max_ticks = max_ticks or -(-N // S) * T * 3 * (cfg.max_chunk + 2) + 8
    kwargs = dict(cfg=cfg, calibrator=calibrator, draft_gd=draft_gd, target_gd=target_gd, n_groups=Q,
                  max_ticks=max_ticks)
    args = (slots, draft_state, target_state, jnp.asarray(table), jnp.asarray(plen))
    if cfg.devices == 2:   # a copy of everything on both devices (the loop runs under shard_map)
        args = jax.device_put(args, jax.sharding.NamedSharding(role_mesh(), jax.sharding.PartitionSpec()))
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
    counts = out.counts.as_dict()
    by_rows = None
    if cfg.count_rows:
        sizes, table = row_buckets(S) if cfg.buckets else (S,), np.asarray(out.counts.calls_by_rows)
        by_rows = {kind: {rows: int(table[i, j]) for j, rows in enumerate(sizes)} for i, kind in enumerate(CALL_KINDS)}
    done, admitted = np.asarray(res.done).reshape(Q, m), np.asarray(res.admit).reshape(Q, m)
    latency = np.where((done >= 0).all(1), done.max(1) - admitted.min(1), -1)
    return RunResult(cfg, answers, voted, correct, texts, np.asarray(res.scores).reshape(Q, m, T),
                     np.asarray(res.levels).reshape(Q, m, T), counts, wall_s, compile_s,
                     out.cal_state if cfg.mode == "atts" else None, latency, by_rows)


def run_batched(draft, target, problems, cfg: PipelineConfig, *, key: jax.Array, calibrator=None, cal_state=None,
                batch_questions: int = 128) -> RunResult:
    """`run_pipeline` over chunks of `batch_questions` questions (one compiled program; the last chunk
    is padded with repeats of its first problem, dropped from the result). An online calibrator's
    state carries from chunk to chunk, as it would in a stream of questions."""
    if not isinstance(batch_questions, int) or batch_questions < 1:
        raise InputError("batch_questions", batch_questions, "must be an integer >= 1")
    problems = list(problems)
    if not problems:
        raise InputError("problems", problems, "must be a non-empty list of ArithProblem or ChainProblem")
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
    by_rows = None if first.calls_by_rows is None else {
        kind: {rows: sum(r.calls_by_rows[kind][rows] for r, _ in parts) for rows in table}
        for kind, table in first.calls_by_rows.items()}
    return RunResult(cfg, [a for r, n in parts for a in r.answers[:n]], [v for r, n in parts for v in r.voted[:n]],
                     np.concatenate([r.correct[:n] for r, n in parts]), [t for r, n in parts for t in r.texts[:n]],
                     np.concatenate([r.scores[:n] for r, n in parts]), np.concatenate([r.levels[:n] for r, n in parts]),
                     counts, sum(r.wall_s for r, _ in parts), first.compile_s, cal_state,
                     np.concatenate([r.latency_ticks[:n] for r, n in parts]), by_rows)
