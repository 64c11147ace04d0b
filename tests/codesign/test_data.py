"""Embedded data: the byte corpus (split by file, caps, batches) and the arithmetic task."""

import dataclasses
import hashlib
import importlib.metadata
import importlib.util
import json
import re
import zlib

import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nets
from codesign import TrainConfig, Trainer
from codesign import data
from codesign.data import (END, FILE_SEPARATOR, PAD, ArithProblem, arith_dataset, check_step, decode, encode,
                           eval_batches, format_example, format_problem, format_solution, is_correct,
                           load_byte_corpus, make_problem, parse_answer, problem_split, sample_batch,
                           solution_steps, split_of, split_steps)

_PY_OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}
_STEP = re.compile(r"^(\d)([+*-])(\d)([+-])(\d)=(\d) c(\d)$")


# ---------------------------------------------------------------- byte corpus


def _write_tree(root, names, size=1500):
    for i, name in enumerate(names):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        body = "".join(f"def f_{i}_{j}(x):\n    return x * {j}  # {name}\n" for j in range(size // 40))
        path.write_text(body)


def _names_with_both_splits(n_valid=4, n_train=30):
    valid, train, i = [], [], 0
    while len(valid) < n_valid or len(train) < n_train:
        name = f"pkg{i % 3}/mod_{i:04d}.py"
        (valid if split_of(name) == "valid" else train).append(name)
        i += 1
    return valid[:n_valid] + train[:n_train]


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("stdlib")
    names = _names_with_both_splits()
    _write_tree(root, names)
    excluded = ["test/test_x.py", "site-packages/foo/bar.py", "pkg0/tests/test_y.py", "config-3.11-x86_64/m.py",
                "idlelib/run.py"]
    _write_tree(root, excluded)
    (root / "notes.txt").write_text("not python")
    return root, sorted(names), excluded


def test_split_is_by_file_disjoint_and_follows_the_path_hash(tree):
    root, names, excluded = tree
    corpus = load_byte_corpus("stdlib", 10**7, 10**7, root=root)
    assert set(corpus.train_files).isdisjoint(corpus.valid_files)
    assert sorted(corpus.train_files + corpus.valid_files) == names  # nothing lost, nothing excluded kept
    assert all(split_of(f) == "train" for f in corpus.train_files)
    assert all(split_of(f) == "valid" for f in corpus.valid_files)
    assert all(zlib.crc32(f.encode()) % 100 < data.VALID_PERCENT for f in corpus.valid_files)
    assert list(corpus.train_files) == sorted(corpus.train_files)
    assert not set(excluded) & set(corpus.train_files + corpus.valid_files)


def test_split_of_a_file_does_not_depend_on_the_other_files(tree, tmp_path):
    root, names, _ = tree
    _write_tree(tmp_path, names[::2] + ["extra/zzz_new.py", "aaa_new.py"])
    full = load_byte_corpus("stdlib", 10**7, 10**7, root=root)
    partial = load_byte_corpus("stdlib", 10**7, 10**7, root=tmp_path)
    for split in ("train_files", "valid_files"):
        kept = set(names[::2]) & set(getattr(full, split))
        assert kept <= set(getattr(partial, split))


def test_corpus_bytes_are_the_files_joined_and_fingerprinted(tree):
    root, _, _ = tree
    corpus = load_byte_corpus("stdlib", 10**7, 10**7, root=root)
    expected = FILE_SEPARATOR.join((root / f).read_bytes() for f in corpus.train_files)
    assert corpus.train.tobytes() == expected
    assert corpus.train.dtype == np.uint8 and corpus.valid.dtype == np.uint8
    assert corpus.train_sha256 == hashlib.sha256(expected).hexdigest()
    assert corpus.valid_sha256 == hashlib.sha256(corpus.valid.tobytes()).hexdigest()
    assert corpus.n_train_files == len(corpus.train_files) and corpus.n_valid_files == len(corpus.valid_files)
    with pytest.raises(ValueError):
        corpus.train[0] = 1  # read-only: the cached object is shared


def test_caps_are_respected_and_files_are_taken_in_sorted_order(tree):
    root, _, _ = tree
    full = load_byte_corpus("stdlib", 10**7, 10**7, root=root)
    capped = load_byte_corpus("stdlib", 10_000, 4_000, root=root)
    assert 0 < capped.train.size <= 10_000 and 0 < capped.valid.size <= 4_000
    assert capped.train.size < full.train.size and capped.valid.size < full.valid.size
    assert list(capped.train_files) == list(full.train_files[: capped.n_train_files])  # equal-size files: a prefix


def test_stdlib_corpus_within_default_caps_cached_and_disjoint():
    corpus = load_byte_corpus()
    assert load_byte_corpus() is corpus
    assert 1_000_000 < corpus.train.size <= 8_000_000
    assert 10_000 < corpus.valid.size <= 500_000
    assert set(corpus.train_files).isdisjoint(corpus.valid_files)
    assert all(split_of(f) == "valid" for f in corpus.valid_files)
    every = corpus.train_files + corpus.valid_files
    assert not [f for f in every if set(f.split("/")[:-1]) & data.STDLIB_EXCLUDED_DIRS]


def test_bad_corpus_arguments_raise_naming_the_field(tmp_path):
    with pytest.raises(ValueError, match="max_train_bytes"):
        load_byte_corpus(max_train_bytes=0)
    with pytest.raises(ValueError, match="root"):
        load_byte_corpus(root=tmp_path / "missing")
    with pytest.raises(ValueError, match="bytes of train"):
        load_byte_corpus(root=tmp_path)  # empty directory


@pytest.fixture(scope="module")
def enlarged():
    return load_byte_corpus("stdlib+deps")


def test_enlarged_corpus_is_the_stdlib_plus_the_installed_dependencies(enlarged):
    stdlib = load_byte_corpus()
    assert load_byte_corpus("stdlib+deps") is enlarged and enlarged.corpus == "stdlib+deps"
    assert stdlib.corpus == "stdlib" and stdlib.packages == () and stdlib.missing_packages == ()
    assert set(stdlib.train_files) <= set(enlarged.train_files)  # every stdlib training file is still there
    assert set(stdlib.valid_files) <= set(enlarged.valid_files)
    names = dict(enlarged.packages)
    assert set(names) | set(enlarged.missing_packages) == set(data.DEP_PACKAGES)
    assert names["jax"] == jax.__version__ and names["numpy"] == np.__version__
    for name, version in enlarged.packages:
        assert version == importlib.metadata.version({"orbax.checkpoint": "orbax-checkpoint"}.get(name, name))
    jax_files = [f for f in enlarged.train_files if f.startswith("jax/")]
    assert "jax/__init__.py" in jax_files and len(jax_files) > 100
    jax_init = (importlib.util.find_spec("jax").submodule_search_locations[0] + "/__init__.py")
    assert open(jax_init, "rb").read() in enlarged.train.tobytes()
    assert enlarged.train.size > 4 * stdlib.train.size and enlarged.train.size <= 64_000_000
    assert stdlib.valid.size < enlarged.valid.size <= 4_000_000
    assert enlarged.train_sha256 == hashlib.sha256(enlarged.train.tobytes()).hexdigest()
    every = enlarged.train_files + enlarged.valid_files
    assert not [f for f in every if set(f.split("/")[:-1]) & data.STDLIB_EXCLUDED_DIRS]  # no tests folders
    assert set(enlarged.train_files).isdisjoint(enlarged.valid_files)


def test_enlarged_split_of_a_file_is_a_function_of_its_prefixed_name(enlarged):
    assert all(split_of(f) == "train" for f in enlarged.train_files)
    assert all(split_of(f) == "valid" for f in enlarged.valid_files)
    valid_deps = [f for f in enlarged.valid_files if f.split("/")[0] in {p.split(".")[0] for p in data.DEP_PACKAGES}]
    assert valid_deps  # the dependencies reach the validation split too, by the same rule
    # the package name is part of the name that is hashed: jax/x.py and x.py can fall on different sides
    assert any(split_of(f) != split_of(f.split("/", 1)[1]) for f in valid_deps)


def test_a_missing_dependency_is_skipped_and_recorded(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tqdm" else real(name, *a))
    corpus = load_byte_corpus("stdlib+deps", 9_000_000, 600_000)  # other caps: not the cached corpus
    assert corpus.missing_packages == ("tqdm",) and "tqdm" not in dict(corpus.packages)
    assert not [f for f in corpus.train_files + corpus.valid_files if f.startswith("tqdm/")]
    assert corpus.train.size <= 9_000_000 and corpus.valid.size <= 600_000


def test_unknown_corpus_name_names_the_field_and_the_choices(tiny_json):
    for bad in ("web", 3):
        with pytest.raises(nets.InputError, match=r"^corpus=.*must be one of stdlib, stdlib\+deps"):
            load_byte_corpus(bad)
    with pytest.raises(nets.InputError, match=r"^corpus='pile': must be one of stdlib, stdlib\+deps"):
        TrainConfig(model=tiny_json, corpus="pile")


def test_train_config_round_trips_its_corpus_and_the_trainer_reads_it(tiny_json, enlarged):
    tc = TrainConfig(model=tiny_json, steps=2, batch=4, seq_len=16, warmup_steps=0, eval_batches=1,
                     corpus="stdlib+deps")
    assert TrainConfig(**json.loads(json.dumps(dataclasses.asdict(tc)))) == tc
    old = {k: v for k, v in dataclasses.asdict(tc).items() if k != "corpus"}  # a file written before the field
    assert TrainConfig(**old).corpus == "stdlib"
    trainer = Trainer(tc)
    assert trainer.corpus is enlarged and trainer.train_data.shape == enlarged.train.shape


# ---------------------------------------------------------------- batches


def _windows(data_u8, length):
    return np.lib.stride_tricks.sliding_window_view(data_u8, length)


def test_sample_batch_is_a_pure_function_of_the_key_and_shifted_by_one():
    data_u8 = np.random.default_rng(0).integers(0, 256, 3000).astype(np.uint8)
    key = jax.random.key(3)
    inputs, targets = sample_batch(data_u8, key, 16, 32)
    again = jax.jit(sample_batch, static_argnums=(2, 3))(data_u8, key, 16, 32)
    other = sample_batch(data_u8, jax.random.fold_in(key, 1), 16, 32)
    assert inputs.shape == targets.shape == (16, 32) and inputs.dtype == np.int32
    np.testing.assert_array_equal(inputs, again[0])
    np.testing.assert_array_equal(targets, again[1])
    assert not np.array_equal(inputs, other[0])
    np.testing.assert_array_equal(inputs[:, 1:], targets[:, :-1])
    full = _windows(data_u8, 33).astype(np.int32)
    joined = np.concatenate([np.asarray(inputs), np.asarray(targets)[:, -1:]], axis=1)
    for row in joined:  # every window is a real slice of the data
        assert (full == row).all(axis=1).any()


def test_sample_batch_reaches_both_ends_and_never_past_them():
    seq_len = 8
    data_u8 = np.arange(seq_len + 4, dtype=np.uint8)  # 4 possible windows, starts 0..3
    inputs, targets = sample_batch(data_u8, jax.random.key(0), 512, seq_len)
    starts = np.asarray(inputs)[:, 0]
    assert set(starts.tolist()) == {0, 1, 2, 3}
    assert int(np.asarray(targets).max()) == data_u8[-1]


def test_sample_batch_rejects_a_window_longer_than_the_data():
    with pytest.raises(ValueError, match="seq_len"):
        sample_batch(np.zeros(10, np.uint8), jax.random.key(0), 2, 10)
    with pytest.raises(ValueError, match="batch"):
        sample_batch(np.zeros(100, np.uint8), jax.random.key(0), 0, 10)


def test_eval_batches_are_fixed_evenly_spaced_and_span_the_split():
    data_u8 = np.random.default_rng(1).integers(0, 256, 5000).astype(np.uint8)
    x, y = eval_batches(data_u8, 4, 16, 3)
    x2, y2 = eval_batches(data_u8, 4, 16, 3)
    assert x.shape == y.shape == (3, 4, 16) and x.dtype == np.int32
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)
    np.testing.assert_array_equal(x[..., 1:], y[..., :-1])
    np.testing.assert_array_equal(x[0, 0], data_u8[:16])
    np.testing.assert_array_equal(y[-1, -1], data_u8[-16:])
    full = _windows(data_u8, 16).astype(np.int32)
    starts = np.array([np.flatnonzero((full == w).all(axis=1))[0] for w in x.reshape(-1, 16)])
    gaps = np.diff(starts)
    assert gaps.min() >= 1 and gaps.max() - gaps.min() <= 1


# ---------------------------------------------------------------- arithmetic

_problems = st.one_of(
    st.tuples(st.integers(0, 10**12 - 1), st.integers(0, 10**12 - 1)).map(lambda ab: ArithProblem(*ab, "+")),
    st.tuples(st.integers(0, 10**12 - 1), st.integers(0, 10**12 - 1)).map(
        lambda ab: ArithProblem(max(ab), min(ab), "-")),
    st.tuples(st.integers(0, 10**12 - 1), st.integers(0, 9)).map(lambda ab: ArithProblem(*ab, "*")),
)


@settings(max_examples=300, deadline=None)
@given(_problems)
def test_every_solution_gives_the_integer_result_and_every_step_is_sound(problem):
    text = format_example(problem)
    assert parse_answer(text) == _PY_OPS[problem.op](problem.a, problem.b)
    assert is_correct(problem, text) and text.endswith(f"\n{END}")
    steps = solution_steps(problem)
    assert split_steps(text) == steps and len(steps) == problem.n_steps
    n = problem.n_steps
    a_digits = str(problem.a).rjust(n, "0")[::-1]
    b_digits = str(problem.b) * n if problem.op == "*" else str(problem.b).rjust(n, "0")[::-1]
    carry = 0
    for i, line in enumerate(steps):
        x, op, y, op2, c, d, k = _STEP.match(line).groups()
        x, y, c, d, k = map(int, (x, y, c, d, k))
        assert (x, y, c, op) == (int(a_digits[i]), int(b_digits[i]), carry, problem.op)
        value = _PY_OPS[op](x, y) + (c if op2 == "+" else -c)
        assert value == d + 10 * k if op2 == "+" else value == d - 10 * k
        carry = k


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(3, 12), st.sampled_from(data.OPS), st.data())
def test_check_step_accepts_true_steps_and_rejects_corrupted_ones(seed, n_digits, op, draw):
    problem = make_problem(seed, n_digits, op)
    steps = solution_steps(problem)
    assert all(check_step(problem, i, s) for i, s in enumerate(steps))
    assert all(check_step(problem, i, s + "\n") for i, s in enumerate(steps))
    index = draw.draw(st.integers(0, len(steps) - 1))
    position = draw.draw(st.integers(0, len(steps[index]) - 1))
    replacement = draw.draw(st.sampled_from("0123456789+-*= c").filter(lambda ch: ch != steps[index][position]))
    corrupted = steps[index][:position] + replacement + steps[index][position + 1:]
    assert not check_step(problem, index, corrupted)
    assert not check_step(problem, index, steps[index][:-1])  # truncated
    neighbour = steps[(index + 1) % len(steps)]
    if neighbour != steps[index]:  # a right line in the wrong place is a wrong step
        assert not check_step(problem, index, neighbour)
    assert not check_step(problem, len(steps), steps[-1])  # past the end of the chain
    with pytest.raises(ValueError, match="step_index"):
        check_step(problem, -1, steps[0])


@given(st.integers(0, 10**15))
def test_parse_answer_round_trip(value):
    assert parse_answer(f"Q:1+1=\n1+1+0=2 c0\nA:{value}\n{END}") == value
    assert parse_answer(f"A:{value}{END}") == value
    assert parse_answer(f"A:{value}") is None  # unterminated: the model may still be writing it


def test_parse_answer_without_an_answer_and_is_correct_on_a_wrong_answer():
    problem = ArithProblem(4821, 937)
    assert parse_answer(format_problem(problem) + "1+7+0=8 c0\n") is None
    assert not is_correct(problem, format_solution(problem).replace("A:5758", "A:5768"))
    assert is_correct(problem, format_solution(problem))


def test_make_problem_digit_counts_and_ops():
    rng = np.random.default_rng(0)
    for n_digits in range(3, 13):
        for _ in range(20):
            plus = make_problem(rng, n_digits, "+")
            assert len(str(plus.a)) == n_digits and 3 <= len(str(plus.b)) <= n_digits
            minus = make_problem(rng, n_digits, "-")
            assert minus.a >= minus.b and len(str(minus.a)) == n_digits and 3 <= len(str(minus.b)) <= n_digits
            times = make_problem(rng, n_digits, "*")
            assert len(str(times.a)) == n_digits and 2 <= times.b <= 9
    assert make_problem(7, 5) == make_problem(7, 5)
    with pytest.raises(ValueError, match="n_digits"):
        make_problem(rng, 0)
    with pytest.raises(ValueError, match="op"):
        make_problem(rng, 3, "/")
    with pytest.raises(ValueError, match="b="):
        ArithProblem(3, 5, "-")


def test_dataset_digit_counts_chain_lengths_padding_and_mask():
    ds = arith_dataset(400, seed=0, ops=("+", "-", "*"))
    n, width = ds.tokens.shape
    assert n == 400 and ds.tokens.dtype == np.int32 and ds.loss_mask.dtype == np.float32
    assert ds.inputs.shape == ds.targets.shape == ds.target_mask.shape == (400, width - 1)
    assert width >= data.max_text_len(12, data.OPS) and (width - 1) % 8 == 0
    digits = np.array([len(str(p.a)) for p in ds.problems])
    assert digits.min() == 3 and digits.max() == 12
    assert len(set(ds.n_steps.tolist())) == 10  # chains of every length 3..12
    assert {p.op for p in ds.problems} == set(data.OPS)
    for row, problem in enumerate(ds.problems[:50]):
        text = format_example(problem)
        assert decode(ds.tokens[row]) == text
        assert ds.lengths[row] == len(text) and ds.prompt_lens[row] == len(format_problem(problem))
        assert (ds.tokens[row, len(text):] == PAD).all()
        mask = ds.loss_mask[row]
        assert mask[: ds.prompt_lens[row]].sum() == 0 and mask[len(text):].sum() == 0
        assert mask.sum() == len(format_solution(problem))
        assert ds.target_mask[row].sum() == mask.sum()  # the first completion byte is predicted, too


def test_dataset_is_deterministic_by_seed_and_splits_are_disjoint():
    a = arith_dataset(50, seed=1, max_digits=4)
    b = arith_dataset(50, seed=1, max_digits=4)
    c = arith_dataset(50, seed=2, max_digits=4)
    np.testing.assert_array_equal(a.tokens, b.tokens)
    assert not np.array_equal(a.tokens, c.tokens)
    prompts = {}
    for split in data.SPLITS:  # 3-digit sums: collisions would be common if the split were by seed alone
        ds = arith_dataset(300, seed=0, split=split, min_digits=3, max_digits=3)
        assert all(problem_split(p) == split for p in ds.problems)
        prompts[split] = {format_problem(p) for p in ds.problems}
    assert not prompts["train"] & prompts["valid"]
    assert not prompts["train"] & prompts["test"]
    assert not prompts["valid"] & prompts["test"]


def test_dataset_rejects_bad_arguments_naming_the_field(monkeypatch):
    with pytest.raises(ValueError, match="seq_len"):
        arith_dataset(2, 0, seq_len=100)
    with pytest.raises(ValueError, match="max_digits"):
        arith_dataset(2, 0, min_digits=5, max_digits=4)
    with pytest.raises(ValueError, match="split"):
        arith_dataset(2, 0, split="dev")
    with pytest.raises(ValueError, match="ops"):
        arith_dataset(2, 0, ops=("/",))
    monkeypatch.setattr("codesign.data._arith.problem_split", lambda problem: "train")  # an empty test split
    with pytest.raises(ValueError, match="n=5"):
        arith_dataset(5, 0, split="test", max_digits=3)


@given(st.text(alphabet=st.characters(min_codepoint=1, max_codepoint=255), max_size=50))
def test_encode_decode_round_trip(text):
    tokens = encode(text)
    assert tokens.dtype == np.int32 and decode(tokens) == text
    assert decode(np.concatenate([tokens, [PAD, 65]])) == text
