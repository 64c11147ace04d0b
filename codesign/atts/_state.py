"""What the ATTS engine works on: its configuration, the per-slot and per-sample state, the named counters.

The constants name the engine's choices (`MODES`, `TAKEOVERS`) and a slot's phase within a turn
(DRAFT: the draft writes the chunk; SCORE: the chunk waits for the target's score; TGEN: the target
writes; WAIT: a sync sample waits at its question's barrier; DONE: finished, or a free slot).
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from nets import InputError
from codesign.atts._ordinal import OrdinalThresholds

MODES = ("atts", "sync", "target_only", "draft_only", "calibrate")
TAKEOVERS = ("regenerate", "append", "ordinal")
DRAFT, SCORE, TGEN, WAIT, DONE = 0, 1, 2, 3, 4
NEWLINE, END, ANSWER = 10, ord("$"), ord("A")


@dataclass(frozen=True)
class PipelineConfig:
    """How a batch of questions is solved.

    mode: "atts" (each sample's own conformal p-value decides a takeover), "sync" (the top-B scores of
      a question's m samples per turn, behind a per-turn barrier), "target_only", "draft_only", or
      "calibrate" (draft_only with every chunk scored: collects a calibration bank); the engine's
      documentation (`codesign/atts/_engine.py`) has the full table.
    takeover: "regenerate", "append" or "ordinal".
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
    slots: the pool size S (a multiple of m), or None for one slot per sample (admission: see the engine's documentation).
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
    buckets: run each model call on the smallest bucket of rows (`row_buckets`) that holds the slots it
      serves (True, the serving engine's cost), or always on all S rows (False, the reference: same
      texts and decisions).
    count_rows: tally every model call of the loop by its kind and the row bucket it ran on
      (`Counters.calls_by_rows`; a few integer additions per tick, same texts and decisions); off, the
      tally stays zero.
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
    buckets: bool = True
    count_rows: bool = False

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
        for name in ("overlap", "buckets", "count_rows"):
            if not isinstance(getattr(self, name), bool):
                raise InputError(name, getattr(self, name), "must be True or False")
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



# the model calls of the loop that `Counters.calls_by_rows` tallies (rows of its first axis), and the most row
# buckets a call may pick from (`row_buckets`: S, S/2, S/4, S/8; its columns, ascending as the buckets are)
CALL_KINDS = ("draft_decode", "target_score", "target_decode")
MAX_BUCKETS = 4
_COUNTER_NAMES = ("ticks", "draft_calls", "score_calls", "target_gen_calls", "draft_tokens", "target_tokens",
                  "active_slot_ticks", "waiting_slot_ticks", "idle_slot_ticks", "prefill_calls")


@functools.partial(jax.tree_util.register_dataclass, data_fields=[*_COUNTER_NAMES, "calls_by_rows"],
                                   meta_fields=[])
@dataclass(frozen=True)
class Counters:
    """What a run did, counted on the device (int32 scalars), each by its name.

    ticks: loop iterations. draft_calls / score_calls / target_gen_calls / prefill_calls: model calls
    made (a call skipped because no slot needed it is not counted). draft_tokens / target_tokens:
    bytes each model wrote (discarded draft chunks included). active_slot_ticks: slot-ticks of
    samples not finished; waiting_slot_ticks: those held at a sync barrier; idle_slot_ticks: those of
    free slots. calls_by_rows: int32 (len(CALL_KINDS), MAX_BUCKETS), the calls of each kind by the index of
    the row bucket they ran on (`row_buckets(S)`, ascending; filled only with `PipelineConfig.count_rows`).
    """

    ticks: jax.Array
    draft_calls: jax.Array
    score_calls: jax.Array
    target_gen_calls: jax.Array
    draft_tokens: jax.Array
    target_tokens: jax.Array
    active_slot_ticks: jax.Array
    waiting_slot_ticks: jax.Array
    idle_slot_ticks: jax.Array
    prefill_calls: jax.Array
    calls_by_rows: jax.Array

    @classmethod
    def zeros(cls) -> "Counters":
        return cls(**{name: jnp.zeros((), jnp.int32) for name in _COUNTER_NAMES},
                   calls_by_rows=jnp.zeros((len(CALL_KINDS), MAX_BUCKETS), jnp.int32))

    def add(self, **increments) -> "Counters":
        """These counters with `increments` (name=int32 scalar) added."""
        return dataclasses.replace(self, **{name: (getattr(self, name) + n).astype(jnp.int32)
                                            for name, n in increments.items()})

    def tally(self, kind: str, called, bucket) -> "Counters":
        """One call of `kind` (one of CALL_KINDS) on the bucket index `bucket`, if `called` (bool scalar)."""
        row = CALL_KINDS.index(kind)
        return dataclasses.replace(self, calls_by_rows=self.calls_by_rows.at[row, bucket].add(
            called.astype(jnp.int32)))

    def as_dict(self) -> dict[str, int]:
        """The scalar counters by name (`calls_by_rows` apart: `RunResult.calls_by_rows`)."""
        return {name: int(getattr(self, name)) for name in _COUNTER_NAMES}


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
    counts: Counters
    sid: jax.Array          # int32 (S,): the sample (question x m + index) a slot serves, -1 if free
    n_next: jax.Array       # int32 (): samples admitted so far (the next one to admit)
    out: _Out
