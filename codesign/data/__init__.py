"""Embedded data sets: nothing is downloaded.

- Byte-level text corpora from the Python standard library's sources (``"stdlib"``), or it plus the
  sources of the project's installed dependencies (``"stdlib+deps"``), split into train / validation
  by file (`load_byte_corpus`, `sample_batch`, `eval_batches`).
- A synthetic, verifiable multi-digit arithmetic task with one scratchpad line per
  digit, for the ATTS reproduction (`arith_dataset`, `check_step`, `is_correct`).
- A verifiable chain task (a running value through 2-12 one-line computations, difficulty set by the
  value's width) whose chains vary widely in length (`chain_dataset`, `check_chain_step`).
"""

from codesign.data._arith import (END, OPS, PAD, SPLITS, ArithDataset, ArithProblem, arith_dataset, check_step,
                                  decode, encode, format_example, format_problem, format_solution, is_correct,
                                  make_problem, max_text_len, pack_examples, parse_answer, problem_split,
                                  round_seq_len, solution_steps, split_steps)
from codesign.data._chain import (CHAIN_OPS, ChainProblem, chain_dataset, chain_solution_steps, check_chain_step,
                                  format_chain_example, format_chain_solution, make_chain_problem, max_chain_text_len)
from codesign.data._text import (CORPORA, DEP_PACKAGES, FILE_SEPARATOR, STDLIB_EXCLUDED_DIRS, VALID_PERCENT,
                                 ByteCorpus, eval_batches, load_byte_corpus, sample_batch, split_of, window_starts)

__all__ = [
    # text corpus
    "ByteCorpus", "load_byte_corpus", "sample_batch", "window_starts", "eval_batches", "split_of", "STDLIB_EXCLUDED_DIRS",
    "VALID_PERCENT", "FILE_SEPARATOR", "CORPORA", "DEP_PACKAGES",
    # arithmetic task
    "ArithProblem", "ArithDataset", "make_problem", "format_problem", "solution_steps", "format_solution",
    "format_example", "split_steps", "check_step", "parse_answer", "is_correct", "encode", "decode",
    "max_text_len", "round_seq_len", "arith_dataset", "pack_examples", "problem_split", "OPS", "SPLITS", "PAD", "END",
    # chain task
    "ChainProblem", "make_chain_problem", "chain_solution_steps", "format_chain_solution", "format_chain_example",
    "check_chain_step", "max_chain_text_len", "chain_dataset", "CHAIN_OPS",
]
