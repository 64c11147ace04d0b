"""A verifiable multi-step task with long chains of widely varying length: a running value, step by step.

Why: on the arithmetic task (`codesign.data._arith`) a trained target solves nearly every problem and
every scratchpad line has the same length, so neither the accuracy nor the turn lengths behave like
real reasoning chains. Here a problem is a short program on one value kept to its last ``digits``
decimal digits; the chain has one line per instruction (2-12 by default, drawn per problem), each line
a whole computation done in one go, so a model's per-line error compounds over the chain, and lines
vary in length with the operand and the result.

Text format (bytes; one problem per example)::

    Q:4821*7-305+96=\\n     prompt: the start value (exactly `digits` digits), then the instructions
    *7=3747\\n              step 0: the instruction and the new value, (4821 * 7) mod 10**4
    -305=3442\\n            step 1: (3747 - 305) mod 10**4
    +96=3538\\n             step 2
    A:3538\\n               the answer: the last value
    $                      end marker (`END`)

The instructions are read left to right (no precedence). Every value is reduced modulo
``10**digits`` (a negative difference wraps around), written without leading zeros; the start
value's length tells the model ``digits``. ``"+"`` and ``"-"`` take an operand of 1..digits digits,
``"*"`` a single digit 2..9. The difficulty knob is ``digits`` (the width of every one-shot
computation); a fractional level mixes two widths per problem (`chain_dataset`'s ``level``).

A step is verifiable on its own (`check_chain_step`); the answer line is read by `parse_answer` and
graded by `is_correct`, as on the arithmetic task. Splits: by the CRC-32 of the prompt, as there.
"""

from __future__ import annotations

import dataclasses
import math
import numpy as np

from codesign.data._arith import END, SPLITS, ArithDataset, _error, _is_int, draw_split, pack_examples, resolve_seq_len

__all__ = ["CHAIN_OPS", "ChainProblem", "make_chain_problem", "chain_solution_steps", "format_chain_solution",
           "format_chain_example", "check_chain_step", "max_chain_text_len", "chain_dataset"]

CHAIN_OPS: tuple[str, ...] = ("+", "-", "*")


@dataclasses.dataclass(frozen=True)
class ChainProblem:
    """A start value and instructions ``(op, operand)`` on a value kept modulo ``10**digits``.

    Invariants: ``digits >= 1``; ``start`` has exactly ``digits`` digits; at least one instruction;
    ``op`` in `CHAIN_OPS`; an operand of ``"+"``/``"-"`` lies in ``[0, 10**digits)``, of ``"*"`` in 0..9.
    """

    start: int
    steps: tuple[tuple[str, int], ...]
    digits: int

    def __post_init__(self) -> None:
        if not _is_int(self.digits) or self.digits < 1:
            raise _error("digits", self.digits, "must be an integer >= 1")
        object.__setattr__(self, "digits", int(self.digits))
        if not _is_int(self.start) or len(str(int(self.start))) != self.digits or self.start < 0:
            raise _error("start", self.start, f"must be a non-negative integer of exactly digits={self.digits} digits")
        object.__setattr__(self, "start", int(self.start))
        steps = tuple((op, operand) for op, operand in self.steps)
        if not steps:
            raise _error("steps", self.steps, "must hold at least one (op, operand) instruction")
        for op, operand in steps:
            if op not in CHAIN_OPS:
                raise _error("op", op, f"must be one of {CHAIN_OPS}")
            bound = 10 if op == "*" else 10 ** self.digits
            if not _is_int(operand) or not 0 <= operand < bound:
                raise _error("operand", operand, f"must be an integer in [0, {bound}) for {op!r}")
        object.__setattr__(self, "steps", tuple((op, int(operand)) for op, operand in steps))

    @property
    def n_steps(self) -> int:
        """Scratchpad lines: one per instruction."""
        return len(self.steps)

    @property
    def values(self) -> list[int]:
        """The value after each instruction (exact Python integers, reduced modulo ``10**digits``)."""
        modulus, value, out = 10 ** self.digits, self.start, []
        for op, operand in self.steps:
            value = {"+": value + operand, "-": value - operand, "*": value * operand}[op] % modulus
            out.append(value)
        return out

    @property
    def answer(self) -> int:
        """The last value (the ground truth)."""
        return self.values[-1]

    @property
    def prompt(self) -> str:
        """The prompt, e.g. ``"Q:4821*7-305+96=\\n"``."""
        return f"Q:{self.start}" + "".join(f"{op}{operand}" for op, operand in self.steps) + "=\n"


def make_chain_problem(rng: np.random.Generator | int, n_steps: int, digits: int) -> ChainProblem:
    """Draw a problem of `n_steps` instructions on a `digits`-digit value.

    Args:
        rng: a NumPy Generator (advanced in place) or an integer seed.
        n_steps: instructions, >= 1: the chain length.
        digits: the value's width, >= 1: the difficulty.

    Instructions are uniform over `CHAIN_OPS`; an operand of ``"+"``/``"-"`` has a uniform number of
    digits in ``1..digits`` (leading digit nonzero), one of ``"*"`` is uniform in 2..9.
    """
    for name, value in (("n_steps", n_steps), ("digits", digits)):
        if not _is_int(value) or value < 1:
            raise _error(name, value, "must be an integer >= 1")
    if _is_int(rng):
        rng = np.random.default_rng(int(rng))
    elif not isinstance(rng, np.random.Generator):
        raise _error("rng", rng, "must be a numpy.random.Generator or an integer seed")
    start = int(rng.integers(10 ** (digits - 1), 10 ** digits)) if digits > 1 else int(rng.integers(1, 10))
    steps = []
    for _ in range(n_steps):
        op = CHAIN_OPS[int(rng.integers(len(CHAIN_OPS)))]
        if op == "*":
            operand = int(rng.integers(2, 10))
        else:
            width = int(rng.integers(1, digits + 1))
            operand = int(rng.integers(10 ** (width - 1) if width > 1 else 1, 10 ** width))
        steps.append((op, operand))
    return ChainProblem(start, tuple(steps), int(digits))


def chain_solution_steps(problem: ChainProblem) -> list[str]:
    """The scratchpad lines (no trailing newline): ``"{op}{operand}={new value}"``."""
    return [f"{op}{operand}={value}" for (op, operand), value in zip(problem.steps, problem.values)]


def format_chain_solution(problem: ChainProblem) -> str:
    """The completion: scratchpad lines, the answer line, `END`."""
    return "".join(line + "\n" for line in chain_solution_steps(problem)) + f"A:{problem.answer}\n{END}"


def format_chain_example(problem: ChainProblem) -> str:
    """Prompt followed by completion: one full training text."""
    return problem.prompt + format_chain_solution(problem)


def check_chain_step(problem: ChainProblem, step_index: int, text: str) -> bool:
    """Whether `text` is exactly scratchpad line `step_index` of `problem` (trailing whitespace ignored)."""
    if not _is_int(step_index) or step_index < 0:
        raise _error("step_index", step_index, "must be an integer >= 0")
    steps = chain_solution_steps(problem)
    return step_index < len(steps) and text.rstrip() == steps[step_index]


def max_chain_text_len(max_steps: int, max_digits: int) -> int:
    """Longest example text (bytes): the prompt ``"Q:" + d + n (1 + d) + "=\\n"``, n lines of at most
    ``2 d + 3`` bytes, and ``"A:" + d + "\\n$"``, with d = `max_digits` and n = `max_steps`."""
    for name, value in (("max_steps", max_steps), ("max_digits", max_digits)):
        if not _is_int(value) or value < 1:
            raise _error(name, value, "must be an integer >= 1")
    d, n = max_digits, max_steps
    return (4 + d + n * (1 + d)) + n * (2 * d + 3) + (d + 4)


def _digits_of(rng: np.random.Generator, min_digits: int, max_digits: int, level: float | None) -> int:
    if level is None:
        return int(rng.integers(min_digits, max_digits + 1))
    low = math.floor(level)
    return low + int(rng.random() < level - low)


def chain_dataset(n: int, seed: int, *, split: str = "train", min_steps: int = 2, max_steps: int = 12,
                  min_digits: int = 1, max_digits: int = 6, level: float | None = None,
                  seq_len: int | None = None) -> ArithDataset:
    """`n` chain problems of one split, tokenised and padded for next-byte training.

    Args:
        n: number of examples.
        seed: picks the problems; the same arguments give the same data.
        split: ``"train"``, ``"valid"`` or ``"test"`` (disjoint by the prompt's CRC-32, as `arith_dataset`).
        min_steps: the chain length is uniform on ``[min_steps, max_steps]`` per problem.
        max_steps: the longest chain.
        min_digits: the value's width is uniform on ``[min_digits, max_digits]`` per problem (``level`` None).
        max_digits: the widest value.
        level: a difficulty in ``[min_digits, max_digits]`` instead: width ``floor(level)``, or
            ``floor(level) + 1`` with probability ``level - floor(level)``, so accuracy can be set between
            two integer widths (a mixture's accuracy is the weighted mean of its widths').
        seq_len: model context; default the smallest multiple of 8 with
            ``max_chain_text_len(max_steps, max_digits) <= seq_len + 1``.
    """
    if not _is_int(n) or n < 1:
        raise _error("n", n, "must be an integer >= 1")
    if not _is_int(seed) or seed < 0:
        raise _error("seed", seed, "must be a non-negative integer")
    if split not in SPLITS:
        raise _error("split", split, f"must be one of {SPLITS}")
    for name, value, low in (("min_steps", min_steps, 1), ("max_steps", max_steps, min_steps),
                             ("min_digits", min_digits, 1), ("max_digits", max_digits, min_digits)):
        if not _is_int(value) or value < low:
            raise _error(name, value, f"must be an integer >= {low}")
    if level is not None and (isinstance(level, bool) or not isinstance(level, (int, float))
                              or not min_digits <= level <= max_digits):
        raise _error("level", level, f"must be None or a number in [min_digits={min_digits}, max_digits={max_digits}]")
    space = f"max_steps={max_steps}, max_digits={max_digits}"
    seq_len = resolve_seq_len(seq_len, max_chain_text_len(max_steps, max_digits), space)
    rng = np.random.default_rng([seed, SPLITS.index(split), 7])

    def draw() -> ChainProblem:
        n_steps = int(rng.integers(min_steps, max_steps + 1))
        return make_chain_problem(rng, n_steps, _digits_of(rng, min_digits, max_digits, level))

    problems = draw_split(draw, n, split, space)
    return pack_examples(problems, [format_chain_solution(p) for p in problems], seq_len, split)

