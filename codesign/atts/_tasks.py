"""The tasks an ATTS pair is trained and evaluated on: the arithmetic scratchpad and the chain task.

A task is a frozen dataclass with `seq_len` (the training context) and `dataset(n, seed, split)`;
its problems have ``prompt``, ``n_steps`` and ``answer``, and their completions end with an
``"A:<answer>"`` line, so every mode of the pipeline runs on either task unchanged.
`dataclasses.asdict(task)` names it in banks and checkpoints (`task_from_dict` reads it back).

- `ArithTask`: 3-12 digit addition, one scratchpad line per digit; every line is 11 bytes and a
  ~100M target solves nearly all problems.
- `ChainTask`: a running value through 2-12 one-line computations (`codesign.data`'s chain task):
  chains of widely varying length, lines of 3-15 bytes, and a difficulty knob (`level`: the value's
  width in digits) that sets where the target's accuracy lands; `chain_level_for` picks the level
  whose measured accuracy is a given aim.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from nets import InputError
from codesign.data import (ArithDataset, arith_dataset, chain_dataset, max_chain_text_len, max_text_len,
                           round_seq_len)

__all__ = ["ArithTask", "ChainTask", "TASKS", "task_for", "task_from_dict", "chain_level_for", "pipeline_buf_len"]

SIZES = ("full", "large", "tiny")
TASKS = ("arith", "chain")


def _check_size(size: str) -> None:
    if size not in SIZES:
        raise InputError("size", size, f"must be one of {', '.join(SIZES)}")


class _Task:
    """What every task derives from its longest example (`max_text_len`, bytes)."""

    @property
    def seq_len(self) -> int:
        """Training context (bytes): the longest example, rounded up to a multiple of 8."""
        return round_seq_len(self.max_text_len)


@dataclass(frozen=True)
class ArithTask(_Task):
    """Which arithmetic problems: first-operand digits in [min_digits, max_digits], ops."""

    min_digits: int = 3
    max_digits: int = 12
    ops: tuple[str, ...] = ("+",)

    def __post_init__(self):
        if not isinstance(self.min_digits, int) or self.min_digits < 1:
            raise InputError("min_digits", self.min_digits, "must be an integer >= 1")
        if not isinstance(self.max_digits, int) or self.max_digits < self.min_digits:
            raise InputError("max_digits", self.max_digits, f"must be an integer >= min_digits={self.min_digits}")
        object.__setattr__(self, "ops", tuple(self.ops))

    @property
    def max_text_len(self) -> int:
        return max_text_len(self.max_digits, self.ops)

    def dataset(self, n: int, seed: int, split: str) -> ArithDataset:
        return arith_dataset(n, seed, split=split, min_digits=self.min_digits, max_digits=self.max_digits,
                             seq_len=self.seq_len, ops=self.ops)


@dataclass(frozen=True)
class ChainTask(_Task):
    """Chain problems: min_steps..max_steps instructions on a value of min_digits..max_digits digits.

    level: None draws the width uniformly (the training mixture); a number in [min_digits, max_digits]
    fixes the difficulty (`chain_dataset`'s ``level``: a fractional level mixes the two widths around
    it). `seq_len` covers every level, so one model serves them all.
    """

    min_steps: int = 2
    max_steps: int = 12
    min_digits: int = 1
    max_digits: int = 6
    level: float | None = None

    def __post_init__(self):
        for name, low in (("min_steps", 1), ("max_steps", self.min_steps), ("min_digits", 1),
                          ("max_digits", self.min_digits)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise InputError(name, value, f"must be an integer >= {low}")
        level = self.level
        if level is not None and (isinstance(level, bool) or not isinstance(level, (int, float))
                                  or not self.min_digits <= level <= self.max_digits):
            raise InputError("level", level, f"must be None or a number in [{self.min_digits}, {self.max_digits}]")
        if level is not None:
            object.__setattr__(self, "level", float(level))

    @property
    def max_text_len(self) -> int:
        return max_chain_text_len(self.max_steps, self.max_digits)

    @property
    def widths(self) -> range:
        return range(self.min_digits, self.max_digits + 1)

    def at_level(self, level: float | None) -> "ChainTask":
        """The same task at another difficulty (None: the uniform mixture)."""
        return dataclasses.replace(self, level=level)

    def dataset(self, n: int, seed: int, split: str) -> ArithDataset:
        return chain_dataset(n, seed, split=split, min_steps=self.min_steps, max_steps=self.max_steps,
                             min_digits=self.min_digits, max_digits=self.max_digits, level=self.level,
                             seq_len=self.seq_len)


def task_for(size: str, kind: str = "arith") -> ArithTask | ChainTask:
    """The task of a size. arith: 3-12 digit addition ("full", "large"), 3-5 digits ("tiny"). chain: 2-12
    instructions on 1-6 digit values ("full", "large"), 2-6 instructions on 1-3 digits ("tiny")."""
    _check_size(size)
    if kind not in TASKS:
        raise InputError("kind", kind, f"must be one of {', '.join(TASKS)}")
    if kind == "chain":
        return ChainTask(2, 6, 1, 3) if size == "tiny" else ChainTask()
    return ArithTask(3, 5) if size == "tiny" else ArithTask(3, 12)


def task_from_dict(fields: dict) -> ArithTask | ChainTask:
    """The task `dataclasses.asdict` wrote (a checkpoint's or a bank's meta)."""
    if "max_steps" in fields:
        return ChainTask(**fields)
    return ArithTask(**{**fields, "ops": tuple(fields.get("ops", ("+",)))})


def chain_level_for(accuracy_by_width: dict[int, float], aim: float) -> float:
    """The level whose accuracy is `aim`, from the accuracy measured at each integer width.

    A level between widths d and d + 1 draws width d + 1 with probability ``level - d``, so its expected
    accuracy is the linear interpolation of the two; the first crossing of `aim` from the easy end is
    returned. If even the easiest width is below `aim`, the easiest; if even the hardest is above, the hardest.
    """
    if not accuracy_by_width:
        raise InputError("accuracy_by_width", accuracy_by_width, "must hold at least one width")
    if not 0 < aim < 1:
        raise InputError("aim", aim, "must lie in (0, 1)")
    widths = sorted(int(w) for w in accuracy_by_width)
    acc = [float(accuracy_by_width[w]) for w in widths]
    if acc[0] <= aim:
        return float(widths[0])
    for (w0, a0), (w1, a1) in zip(zip(widths, acc), zip(widths[1:], acc[1:])):
        if a1 <= aim:
            share = (a0 - aim) / (a0 - a1)
            return float(w0 + share * (w1 - w0))
    return float(widths[-1])


def pipeline_buf_len(task: ArithTask | ChainTask, max_chunk: int) -> int:
    """The pipeline's context per slot (`PipelineConfig.buf_len`) that holds the task's longest example: its
    bytes plus the two chunks of scratch space the engine keeps at the end, rounded up to a multiple of 32."""
    need = task.max_text_len + 2 * (max_chunk + 1) + 2
    return int(math.ceil(need / 32) * 32)
