"""The chain task (codesign.data._chain): every line and answer agrees with an independent evaluation of the
program, the verifier rejects corrupted lines, chain lengths and line lengths spread widely, the dataset is
deterministic by seed with disjoint splits, and bad input names its field."""

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from codesign.data import (END, CHAIN_OPS, ChainProblem, chain_dataset, chain_solution_steps, check_chain_step,
                           decode, format_chain_example, format_chain_solution, is_correct, make_chain_problem,
                           max_chain_text_len, parse_answer, problem_split, split_steps)

_LINE = re.compile(r"^([+*-])(\d+)=(\d+)$")
_PROMPT = re.compile(r"^Q:(\d+)((?:[+*-]\d+)+)=\n$")


def _evaluate(prompt: str, digits: int) -> list[int]:
    """The values of a prompt's program, parsed from its text and evaluated with Python's eval (an independent
    reading of the format: left to right, each partial result reduced modulo 10**digits)."""
    start, body = _PROMPT.match(prompt).groups()
    value, values = int(start), []
    for op, operand in re.findall(r"([+*-])(\d+)", body):
        value = eval(f"({value}){op}({operand})") % 10 ** digits
        values.append(value)
    return values


_problems = st.builds(make_chain_problem, st.integers(0, 2**32 - 1), st.integers(1, 14), st.integers(1, 8))


@settings(max_examples=300, deadline=None)
@given(_problems)
def test_every_line_and_the_answer_follow_the_program(problem):
    values = _evaluate(problem.prompt, problem.digits)
    lines = chain_solution_steps(problem)
    assert len(lines) == problem.n_steps == len(values)
    for (op, operand), line, value in zip(problem.steps, lines, values):
        assert _LINE.match(line).groups() == (op, str(operand), str(value))
        assert 0 <= value < 10 ** problem.digits
    text = format_chain_solution(problem)
    assert text.endswith(f"A:{values[-1]}\n{END}") and is_correct(problem, text) and parse_answer(text) == problem.answer
    assert split_steps(problem.prompt + text) == lines
    assert len(problem.prompt) == 2 + problem.digits + sum(1 + len(str(o)) for _, o in problem.steps) + 2
    assert len(format_chain_example(problem)) <= max_chain_text_len(problem.n_steps, problem.digits)


@settings(max_examples=200, deadline=None)
@given(_problems, st.data())
def test_the_verifier_accepts_true_lines_and_rejects_corrupted_ones(problem, draw):
    lines = chain_solution_steps(problem)
    k = draw.draw(st.integers(0, len(lines) - 1))
    assert check_chain_step(problem, k, lines[k] + "\n")
    assert not check_chain_step(problem, len(lines), lines[-1])          # past the chain's end
    op, operand, value = _LINE.match(lines[k]).groups()
    wrong_value = (int(value) + draw.draw(st.integers(1, 10 ** problem.digits - 1))) % 10 ** problem.digits
    assert not check_chain_step(problem, k, f"{op}{operand}={wrong_value}")
    assert not check_chain_step(problem, k, lines[k][:-1])               # a truncated line
    assert not is_correct(problem, f"A:{(problem.answer + 1) % 10 ** problem.digits}\n$")
    assert not is_correct(problem, f"A:{problem.answer}")                # an answer line must be terminated


def test_worked_example_of_the_docstring():
    problem = ChainProblem(4821, (("*", 7), ("-", 305), ("+", 96)), 4)
    assert problem.prompt == "Q:4821*7-305+96=\n"
    assert format_chain_solution(problem) == "*7=3747\n-305=3442\n+96=3538\nA:3538\n$"
    assert ChainProblem(12, (("-", 50),), 2).answer == 62                # a negative difference wraps around
    worst = ChainProblem(999999, (("+", 999999),) * 12, 6)               # every number at its full width
    assert len(format_chain_example(worst)) == max_chain_text_len(12, 6) == 284


def test_chain_lengths_and_line_lengths_spread_widely():
    ds = chain_dataset(3000, 0)
    counts = np.bincount(ds.n_steps, minlength=13)
    assert counts[:2].sum() == 0 and (counts[2:] > 3000 / 11 * 0.7).all()     # 2..12, each about uniform
    line_bytes = np.asarray([len(line) + 1 for p in ds.problems for line in chain_solution_steps(p)])
    assert line_bytes.min() <= 5 and line_bytes.max() >= 15 and line_bytes.std() > 2.0
    text_bytes = ds.lengths
    assert text_bytes.max() / text_bytes.min() > 8                         # whole chains: short and long ones
    assert set(np.unique([p.digits for p in ds.problems])) == set(range(1, 7))
    assert max(len(line) + 1 for p in ds.problems for line in chain_solution_steps(p)) <= 16   # one line, one turn


def test_a_level_mixes_the_two_widths_around_it():
    digits = np.asarray([p.digits for p in chain_dataset(2000, 3, level=3.25).problems])
    assert set(np.unique(digits)) == {3, 4} and abs((digits == 4).mean() - 0.25) < 0.04
    assert {p.digits for p in chain_dataset(200, 3, level=5).problems} == {5}


def test_dataset_is_deterministic_by_seed_and_splits_are_disjoint():
    a, b = chain_dataset(100, 11, split="valid"), chain_dataset(100, 11, split="valid")
    np.testing.assert_array_equal(a.tokens, b.tokens)
    assert a.problems == b.problems
    assert chain_dataset(100, 12, split="valid").problems != a.problems
    prompts = {split: {p.prompt for p in chain_dataset(100, 0, split=split).problems}
               for split in ("train", "valid", "test")}
    assert not (prompts["train"] & prompts["valid"]) and not (prompts["train"] & prompts["test"])
    assert all(problem_split(p) == "valid" for p in a.problems)
    row = 5
    text = decode(a.tokens[row])
    assert text == format_chain_example(a.problems[row]) and a.lengths[row] == len(text)
    assert a.loss_mask[row, :a.prompt_lens[row]].sum() == 0
    assert a.loss_mask[row].sum() == len(format_chain_solution(a.problems[row]))


def test_bad_input_names_the_field():
    with pytest.raises(ValueError, match="^start="):
        ChainProblem(99, (("+", 1),), 3)                                   # not exactly 3 digits
    with pytest.raises(ValueError, match="^operand="):
        ChainProblem(5, (("*", 12),), 1)
    with pytest.raises(ValueError, match="^op="):
        ChainProblem(5, (("/", 2),), 1)
    with pytest.raises(ValueError, match="^steps="):
        ChainProblem(5, (), 1)
    with pytest.raises(ValueError, match="^level="):
        chain_dataset(4, 0, level=7)
    with pytest.raises(ValueError, match="^seq_len="):
        chain_dataset(4, 0, seq_len=100)
    with pytest.raises(ValueError, match="^max_steps="):
        chain_dataset(4, 0, min_steps=5, max_steps=3)
    assert CHAIN_OPS == ("+", "-", "*")
