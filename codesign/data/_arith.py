"""A synthetic, verifiable arithmetic task with one scratchpad line per digit.

Why: the ATTS reproduction (arXiv 2509.15148, scaled down to a
faithful small-scale reproduction) needs a reasoning task whose every step can be
checked exactly and whose chains vary in length, so a small draft model and a
larger target model can be trained from scratch and their steps scored.

Text format (bytes, vocabulary 256; one problem per example)::

    Q:4821+937=\\n          prompt: operands in decimal, no leading zeros
    1+7+0=8 c0\\n           step 0: least significant digit first
    2+3+0=5 c0\\n           step 1
    8+9+0=7 c1\\n           step 2
    4+0+1=5 c0\\n           step 3: the shorter operand is padded with 0
    A:5758\\n               the answer, read off the step digits (+ final carry)
    $                      end marker (`END`); padding after it is byte 0 (`PAD`)

There is one step per digit of the longer operand (``n_steps``), so a problem with
``n``-digit operands has a chain of ``n`` steps. Each step line is, for the digit
``x`` of the first operand, ``y`` of the second, incoming carry ``c`` and produced
digit ``d`` with outgoing carry ``k``:

- addition ``"+"``:        ``"{x}+{y}+{c}={d} c{k}"`` with ``x + y + c = d + 10 k``;
- subtraction ``"-"``:     ``"{x}-{y}-{c}={d} c{k}"`` with ``x - y - c = d - 10 k``
  (``k`` is the borrow; the first operand is never smaller, so answers are >= 0
  and the answer drops leading zeros);
- multiplication by one digit ``m`` (``"*"``, ``m`` in 2..9): ``"{x}*{m}+{c}={d} c{k}"``
  with ``x m + c = d + 10 k``; the chain has one step per digit of the first operand.

A step is verifiable on its own: given the problem and its index, exactly one line
is right (`check_step`). The answer line is what exact-match accuracy reads
(`parse_answer`, `is_correct`); it counts only once terminated by a newline or `END`.

Dataset split: a problem belongs to train, valid or test by the CRC-32 of its
prompt text (``% 100``: below 90 train, 90-94 valid, 95-99 test), so the three
splits are disjoint whatever the seed and size; the seed picks which problems of a
split are drawn (an independent NumPy stream per split).
"""

from __future__ import annotations

import dataclasses
import re
import zlib
from collections.abc import Sequence

import numpy as np

__all__ = ["ArithProblem", "ArithDataset", "make_problem", "format_problem", "solution_steps", "format_solution",
           "format_example", "split_steps", "check_step", "parse_answer", "is_correct", "encode", "decode",
           "max_text_len", "arith_dataset", "pack_examples", "problem_split", "OPS", "SPLITS", "PAD", "END"]

OPS: tuple[str, ...] = ("+", "-", "*")
SPLITS: tuple[str, ...] = ("train", "valid", "test")
_SPLIT_PERCENT = {"train": (0, 90), "valid": (90, 95), "test": (95, 100)}
PAD = 0
END = "$"
_ANSWER = re.compile(r"(?m)^A:(\d+)(?=\n|\$)")


def _error(field: str, value: object, allowed: str) -> ValueError:
    return ValueError(f"{field}={value!r} is invalid: {allowed}")


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


@dataclasses.dataclass(frozen=True)
class ArithProblem:
    """One problem ``a op b`` on non-negative integers.

    Invariants: ``op`` in `OPS`; ``a, b >= 0``; for ``"-"``, ``a >= b``; for
    ``"*"``, ``b`` is a single digit 0..9.
    """

    a: int
    b: int
    op: str = "+"

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise _error("op", self.op, f"must be one of {OPS}")
        for field in ("a", "b"):
            value = getattr(self, field)
            if not _is_int(value) or value < 0:
                raise _error(field, value, "must be a non-negative integer")
            object.__setattr__(self, field, int(value))
        if self.op == "-" and self.a < self.b:
            raise _error("b", self.b, f"must be at most a={self.a} for subtraction (answers are non-negative)")
        if self.op == "*" and self.b > 9:
            raise _error("b", self.b, "must be a single digit 0..9 for multiplication")

    @property
    def n_steps(self) -> int:
        """Scratchpad lines: digits of the longer operand (of ``a`` alone for ``"*"``)."""
        if self.op == "*":
            return len(str(self.a))
        return max(len(str(self.a)), len(str(self.b)))

    @property
    def answer(self) -> int:
        """The exact result by Python integer arithmetic (the ground truth)."""
        return {"+": self.a + self.b, "-": self.a - self.b, "*": self.a * self.b}[self.op]

    @property
    def prompt(self) -> str:
        """The prompt line (`format_problem`); every task's problems have one, so a pipeline needs no task."""
        return format_problem(self)


def _digits_lsb_first(value: int, n: int) -> list[int]:
    return [int(ch) for ch in reversed(str(value).rjust(n, "0"))]


def _operand(rng: np.random.Generator, n_digits: int) -> int:
    leading = int(rng.integers(1, 10))
    rest = rng.integers(0, 10, size=n_digits - 1)
    return int(str(leading) + "".join(str(int(d)) for d in rest))


def make_problem(rng: np.random.Generator | int, n_digits: int, op: str = "+") -> ArithProblem:
    """Draw a problem whose first operand has exactly `n_digits` digits.

    Args:
        rng: a NumPy Generator (advanced in place) or an integer seed. Host-side
            NumPy, not a JAX key: problems are strings built on the host.
        n_digits: digits of the first (longer) operand, >= 1; it is the chain length.
        op: ``"+"``, ``"-"`` or ``"*"``.

    For ``"+"`` and ``"-"`` the second operand has a uniform number of digits in
    ``[min(3, n_digits), n_digits]`` (so with 3..12-digit problems both operands
    have 3..12 digits); for ``"-"`` the operands are swapped if needed so the
    result is non-negative; for ``"*"`` the second operand is a digit in 2..9.
    """
    if not _is_int(n_digits) or n_digits < 1:
        raise _error("n_digits", n_digits, "must be an integer >= 1")
    if op not in OPS:
        raise _error("op", op, f"must be one of {OPS}")
    if _is_int(rng):
        rng = np.random.default_rng(int(rng))
    elif not isinstance(rng, np.random.Generator):
        raise _error("rng", rng, "must be a numpy.random.Generator or an integer seed")
    a = _operand(rng, int(n_digits))
    if op == "*":
        return ArithProblem(a, int(rng.integers(2, 10)), op)
    b = _operand(rng, int(rng.integers(min(3, n_digits), n_digits + 1)))
    if op == "-" and b > a:
        a, b = b, a
    return ArithProblem(a, b, op)


def _step_table(problem: ArithProblem) -> tuple[list[tuple[int, int, int, int, int]], int]:
    """Per digit ``(x, y, carry_in, digit, carry_out)`` by the schoolbook rule, and the final carry."""
    n = problem.n_steps
    xs = _digits_lsb_first(problem.a, n)
    ys = [problem.b] * n if problem.op == "*" else _digits_lsb_first(problem.b, n)
    rows, carry = [], 0
    for x, y in zip(xs, ys):
        if problem.op == "+":
            total = x + y + carry
            digit, out = total % 10, total // 10
        elif problem.op == "-":
            total = x - y - carry
            out = 1 if total < 0 else 0
            digit = total + 10 * out
        else:
            total = x * y + carry
            digit, out = total % 10, total // 10
        rows.append((x, y, carry, digit, out))
        carry = out
    return rows, carry


def format_problem(problem: ArithProblem) -> str:
    """The prompt, e.g. ``"Q:4821+937=\\n"``."""
    return f"Q:{problem.a}{problem.op}{problem.b}=\n"


def solution_steps(problem: ArithProblem) -> list[str]:
    """The scratchpad lines (no trailing newline), least significant digit first."""
    rows, _ = _step_table(problem)
    second_op = "+" if problem.op in "+*" else "-"
    return [f"{x}{problem.op}{y}{second_op}{c}={d} c{k}" for x, y, c, d, k in rows]


def _answer_from_steps(problem: ArithProblem) -> str:
    rows, carry = _step_table(problem)
    digits = "".join(str(d) for *_, d, _k in reversed(rows))
    full = (str(carry) if carry else "") + digits
    return full.lstrip("0") or "0"


def format_solution(problem: ArithProblem) -> str:
    """The completion: scratchpad lines, the answer line read off the steps, `END`."""
    steps = "".join(line + "\n" for line in solution_steps(problem))
    return f"{steps}A:{_answer_from_steps(problem)}\n{END}"


def format_example(problem: ArithProblem) -> str:
    """Prompt followed by completion: one full training text."""
    return format_problem(problem) + format_solution(problem)


def split_steps(text: str) -> list[str]:
    """The scratchpad lines of a (possibly partial, possibly model-written) text.

    Skips a leading prompt line (``"Q:..."``) if present, then returns the lines up
    to the first answer line (``"A:"``) or `END`; a last, unterminated line is
    included so a truncated step counts as a step (and fails `check_step`).
    """
    lines = text.split("\n")
    if lines[-1] == "":  # what follows a final newline is not a line
        lines = lines[:-1]
    if lines and lines[0].startswith("Q:"):
        lines = lines[1:]
    steps = []
    for line in lines:
        if line.startswith("A:") or line.startswith(END):
            break
        steps.append(line)
    return steps


def check_step(problem: ArithProblem, step_index: int, text: str) -> bool:
    """Whether `text` is exactly scratchpad line `step_index` of `problem`.

    Trailing whitespace (the line's newline) is ignored; any other difference, or an
    index past the end of the chain, makes the step wrong.
    """
    if not _is_int(step_index) or step_index < 0:
        raise _error("step_index", step_index, "must be an integer >= 0")
    steps = solution_steps(problem)
    return step_index < len(steps) and text.rstrip() == steps[step_index]


def parse_answer(text: str) -> int | None:
    """The integer on the first ``"A:<digits>"`` line that is terminated (newline or `END`); else None."""
    match = _ANSWER.search(text)
    return int(match.group(1)) if match else None


def is_correct(problem: ArithProblem, text: str) -> bool:
    """Exact match of the parsed answer with the true result (the scratchpad is not graded here)."""
    return parse_answer(text) == problem.answer


def encode(text: str) -> np.ndarray:
    """Bytes of `text` as int32 token ids in [0, 256)."""
    return np.frombuffer(text.encode("latin-1"), dtype=np.uint8).astype(np.int32)


def decode(tokens: Sequence[int] | np.ndarray) -> str:
    """Text of token ids, stopping at the first `PAD`; every byte decodes (latin-1)."""
    array = np.asarray(tokens).astype(np.int64).ravel()
    if array.size and (array.min() < 0 or array.max() > 255):
        raise _error("tokens", (int(array.min()), int(array.max())), "ids must lie in [0, 255]")
    pads = np.flatnonzero(array == PAD)
    if pads.size:
        array = array[: pads[0]]
    return bytes(array.astype(np.uint8).tolist()).decode("latin-1")


def problem_split(problem) -> str:
    """``"train"``, ``"valid"`` or ``"test"``, from the CRC-32 of the prompt text (``problem.prompt``)."""
    bucket = zlib.crc32(problem.prompt.encode("ascii")) % 100
    return next(name for name, (lo, hi) in _SPLIT_PERCENT.items() if lo <= bucket < hi)


def max_text_len(max_digits: int, ops: Sequence[str] = ("+",)) -> int:
    """Longest example text (bytes) with operands of at most `max_digits` digits.

    The length depends only on the digit counts and on the answer's length, so the
    all-nines operands give the maximum.
    """
    nines = 10 ** max_digits - 1
    worst = {"+": ArithProblem(nines, nines, "+"), "-": ArithProblem(nines, nines, "-"),
             "*": ArithProblem(nines, 9, "*")}
    return max(len(format_example(worst[op])) for op in ops)


@dataclasses.dataclass(frozen=True, eq=False)
class ArithDataset:
    """Tokenised, padded examples of a task of this package (arithmetic, or the chain task's problems).

    Attributes:
        tokens: int32 [n, seq_len + 1]; the example bytes, then `PAD`.
        loss_mask: float32 [n, seq_len + 1]; 1 on completion bytes (scratchpad,
            answer, `END`), 0 on the prompt and the padding.
        prompt_lens: int32 [n]; bytes of each prompt.
        lengths: int32 [n]; bytes of each full example.
        problems: the problems, in row order (`ArithProblem` or `ChainProblem`).
        split: ``"train"``, ``"valid"`` or ``"test"``.
    The model-facing views are `inputs`, `targets` and `target_mask`, each
    [n, seq_len]: ``targets[:, t] = tokens[:, t + 1]``.
    """

    tokens: np.ndarray
    loss_mask: np.ndarray
    prompt_lens: np.ndarray
    lengths: np.ndarray
    problems: tuple
    split: str

    @property
    def inputs(self) -> np.ndarray:
        return self.tokens[:, :-1]

    @property
    def targets(self) -> np.ndarray:
        return self.tokens[:, 1:]

    @property
    def target_mask(self) -> np.ndarray:
        return self.loss_mask[:, 1:]

    @property
    def n_steps(self) -> np.ndarray:
        """int32 [n]: chain length of each problem."""
        return np.asarray([p.n_steps for p in self.problems], dtype=np.int32)


def arith_dataset(n: int, seed: int, *, split: str = "train", min_digits: int = 3, max_digits: int = 12,
                  seq_len: int | None = None, ops: Sequence[str] = ("+",)) -> ArithDataset:
    """`n` problems of one split, tokenised and padded for next-byte training.

    Args:
        n: number of examples.
        seed: picks the problems; the same ``(seed, split, ...)`` gives the same data.
        split: ``"train"``, ``"valid"`` or ``"test"`` (disjoint by construction, see
            the module docstring). Within a split a problem may repeat when the
            problem space is small (few digits).
        min_digits: the first operand's digit count is uniform on
            ``[min_digits, max_digits]``, so chains vary in length.
        max_digits: the largest digit count of the first operand.
        seq_len: model context; rows hold ``seq_len + 1`` bytes. Default: the
            smallest multiple of 8 with ``max_text_len(max_digits, ops) <= seq_len + 1``.
        ops: operations to draw from, uniformly.
    """
    if not _is_int(n) or n < 1:
        raise _error("n", n, "must be an integer >= 1")
    if not _is_int(seed) or seed < 0:
        raise _error("seed", seed, "must be a non-negative integer")
    if split not in SPLITS:
        raise _error("split", split, f"must be one of {SPLITS}")
    if not _is_int(min_digits) or min_digits < 1:
        raise _error("min_digits", min_digits, "must be an integer >= 1")
    if not _is_int(max_digits) or max_digits < min_digits:
        raise _error("max_digits", max_digits, f"must be an integer >= min_digits={min_digits}")
    ops = tuple(ops)
    if not ops or any(op not in OPS for op in ops):
        raise _error("ops", ops, f"must be a non-empty selection from {OPS}")
    space = f"max_digits={max_digits}, ops={ops}"
    seq_len = resolve_seq_len(seq_len, max_text_len(max_digits, ops), space)
    rng = np.random.default_rng([seed, SPLITS.index(split)])

    def draw() -> ArithProblem:
        return make_problem(rng, int(rng.integers(min_digits, max_digits + 1)), ops[int(rng.integers(len(ops)))])

    problems = draw_split(draw, n, split, f"min_digits={min_digits}, {space}")
    return pack_examples(problems, [format_solution(p) for p in problems], seq_len, split)


def round_seq_len(text_len: int) -> int:
    """The smallest multiple of 8 that holds a `text_len`-byte example (rows hold seq_len + 1 bytes)."""
    return -(-(text_len - 1) // 8) * 8


def resolve_seq_len(seq_len: int | None, longest: int, space: str) -> int:
    """`seq_len` checked to hold the longest example of `space` (`longest` bytes); None: `round_seq_len`."""
    if seq_len is None:
        return round_seq_len(longest)
    if not _is_int(seq_len) or seq_len + 1 < longest:
        raise _error("seq_len", seq_len, f"must be an integer >= {longest - 1} to hold the longest example "
                                         f"({longest} bytes) for {space}")
    return seq_len


def draw_split(draw, n: int, split: str, space: str) -> list:
    """`n` problems of `split` from repeated `draw()` calls (each split keeps the problems its hash picks)."""
    problems = []
    max_draws = 200 * n + 10_000  # the test split takes ~5% of draws; this bound is only hit by tiny problem spaces
    for _ in range(max_draws):
        if len(problems) == n:
            break
        problem = draw()
        if problem_split(problem) == split:
            problems.append(problem)
    if len(problems) < n:
        raise _error("n", n, f"only {len(problems)} {split} problems found in {max_draws} draws: the problem space "
                             f"({space}) is too small")
    return problems


def pack_examples(problems: Sequence, completions: Sequence[str], seq_len: int, split: str) -> ArithDataset:
    """Tokenise ``problem.prompt + completion`` per row into a padded `ArithDataset` (the loss on the completion).

    Shared by every task of this package: a problem needs ``prompt`` and ``n_steps``.
    """
    n = len(problems)
    tokens = np.full((n, seq_len + 1), PAD, dtype=np.int32)
    loss_mask = np.zeros((n, seq_len + 1), dtype=np.float32)
    prompt_lens = np.empty(n, dtype=np.int32)
    lengths = np.empty(n, dtype=np.int32)
    for row, (problem, completion) in enumerate(zip(problems, completions)):
        prompt = problem.prompt
        ids = encode(prompt + completion)
        if ids.size > seq_len + 1:
            raise _error("seq_len", seq_len, f"must hold the example of {ids.size} bytes ({prompt!r})")
        tokens[row, : ids.size] = ids
        loss_mask[row, len(prompt): ids.size] = 1.0
        prompt_lens[row], lengths[row] = len(prompt), ids.size
    return ArithDataset(tokens=tokens, loss_mask=loss_mask, prompt_lens=prompt_lens, lengths=lengths,
                        problems=tuple(problems), split=split)
