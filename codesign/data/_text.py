"""Byte-level text corpora built from installed Python sources, and their batches.

Why this corpus: nothing can be downloaded, yet every machine that runs this package
has a Python installation, and its standard library is a few megabytes of real,
varied, human-written text (code, comments, docstrings). Bytes are the tokens
(vocabulary 256), so no tokenizer has to be shipped either.

What is taken (`STDLIB_EXCLUDED_DIRS` lists what is not):
- every ``*.py`` file under ``sysconfig.get_paths()["stdlib"]``;
- except any file with a directory component in `STDLIB_EXCLUDED_DIRS`: third-party
  packages (``site-packages``, ``dist-packages``), the test suites (``test``,
  ``tests``, ``idle_test``), applications and demos (``idlelib``, ``turtledemo``),
  deprecated tooling whose many fixers repeat one pattern (``lib2to3``), generated
  tables and embedded blobs (``encodings``: codec charmaps; ``pydoc_data``: one
  huge string of HTML-derived help text; ``ensurepip``; ``__phello__``), and the
  build directory (``config-*``), so what remains is ordinary library code.

Determinism:
- files are visited in sorted order of their relative POSIX path;
- each file goes to validation when ``crc32(relative_path) % 100 < VALID_PERCENT``
  and to training otherwise, so a file's split depends on its name only, never on
  the order of the walk or on how many files a machine has;
- within each split, files are taken in sorted order while they fit the byte cap
  (a file that would overflow the cap is skipped, the next ones are still tried);
- files are joined with the ASCII file-separator byte ``0x1C`` (`FILE_SEPARATOR`)
  so a model can tell where one file ends.
Different Python versions ship different standard libraries, so the corpus can
differ between machines; `ByteCorpus` records a SHA-256 of each split so that a run
names exactly what it was trained and validated on.

Named corpora (`CORPORA`; `load_byte_corpus(corpus=...)`):
- ``"stdlib"`` (the default): the standard library as above, capped at 8 MB of training
  and 0.5 MB of validation text.
- ``"stdlib+deps"``: the standard library followed by every ``*.py`` file of the
  installed packages named in `DEP_PACKAGES` (the project's own dependencies that
  ship Python sources), in that order, capped at 64 MB / 4 MB. A package file's
  relative path is ``"<package>/<path inside the package>"`` (dots of the import name
  become slashes, e.g. ``"orbax/checkpoint/..."``), so its split is again a function
  of its name; the same `STDLIB_EXCLUDED_DIRS` apply inside each package (their
  ``tests`` folders are dropped). Packages are found with ``importlib`` (nothing is
  downloaded); one that is not installed is skipped and listed in
  ``ByteCorpus.missing_packages``, and ``ByteCorpus.packages`` records the version of
  each one that went in. Since the standard-library files come first and all of them
  fit the larger cap, every training file of ``"stdlib"`` is a training file here too.

Batches are windows of ``seq_len + 1`` consecutive bytes: inputs are the first
``seq_len``, targets the last ``seq_len`` (next-byte prediction).
`sample_batch` draws random windows from a JAX PRNG key (pure, jit-able: the
training loop calls it with ``fold_in(key, step)`` and so resumes exactly);
`eval_batches` returns a fixed set of evenly spaced windows, so a validation loss
is comparable between runs.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.metadata
import importlib.util
import sysconfig
import zlib
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import nets

__all__ = ["ByteCorpus", "load_byte_corpus", "sample_batch", "eval_batches", "split_of",
           "STDLIB_EXCLUDED_DIRS", "VALID_PERCENT", "FILE_SEPARATOR", "CORPORA", "DEP_PACKAGES"]

STDLIB_EXCLUDED_DIRS: frozenset[str] = frozenset({
    "site-packages", "dist-packages", "test", "tests", "idle_test", "idlelib", "turtledemo", "lib2to3",
    "encodings", "pydoc_data", "ensurepip", "__phello__", "__pycache__"})
VALID_PERCENT = 5
FILE_SEPARATOR = b"\x1c"
DEFAULT_MAX_TRAIN_BYTES = 8_000_000
DEFAULT_MAX_VALID_BYTES = 500_000
# import names of the dependencies (pyproject.toml) whose Python sources join the standard library in
# "stdlib+deps", in corpus order; jaxlib (compiled code and generated MLIR bindings) is not among them
DEP_PACKAGES: tuple[str, ...] = ("numpy", "jax", "flax", "optax", "equinox", "jaxtyping", "ml_dtypes",
                                 "orbax.checkpoint", "matplotlib", "typer", "tqdm", "safetensors")
_DISTRIBUTIONS = {"orbax.checkpoint": "orbax-checkpoint"}  # where the distribution name is not the import name
# corpus name -> (default training cap, default validation cap), bytes
_CORPUS_CAPS: dict[str, tuple[int, int]] = {"stdlib": (DEFAULT_MAX_TRAIN_BYTES, DEFAULT_MAX_VALID_BYTES),
                                            "stdlib+deps": (64_000_000, 4_000_000)}
CORPORA: tuple[str, ...] = tuple(_CORPUS_CAPS)
_MIN_SPLIT_BYTES = 1024  # below this a split cannot hold even one batch of sensible windows


def _error(field: str, value: object, allowed: str) -> ValueError:
    return ValueError(f"{field}={value!r} is invalid: {allowed}")


@dataclasses.dataclass(frozen=True, eq=False)
class ByteCorpus:
    """A byte-level corpus split by file into training and validation.

    Attributes:
        train: uint8 array [train_bytes], read-only; the training files joined by
            `FILE_SEPARATOR`.
        valid: uint8 array [valid_bytes], read-only; the validation files likewise.
        train_files: relative POSIX paths of the training files, in corpus order.
        valid_files: relative POSIX paths of the validation files, in corpus order.
        train_sha256: hex SHA-256 of ``train``'s bytes (provenance of a run).
        valid_sha256: hex SHA-256 of ``valid``'s bytes.
        source: the directory the standard-library files were read from.
        corpus: the corpus name (one of `CORPORA`).
        packages: ``(import name, version)`` of each `DEP_PACKAGES` entry that went in
            (empty for ``"stdlib"``).
        missing_packages: the `DEP_PACKAGES` entries that were not installed (skipped).
    """

    train: np.ndarray
    valid: np.ndarray
    train_files: tuple[str, ...]
    valid_files: tuple[str, ...]
    train_sha256: str
    valid_sha256: str
    source: str
    corpus: str = "stdlib"
    packages: tuple[tuple[str, str], ...] = ()
    missing_packages: tuple[str, ...] = ()

    @property
    def n_train_files(self) -> int:
        return len(self.train_files)

    @property
    def n_valid_files(self) -> int:
        return len(self.valid_files)


def split_of(relative_path: str) -> str:
    """``"valid"`` or ``"train"``: the split a file belongs to, from its relative path only.

    Uses CRC-32 (stable across machines and Python versions, unlike ``hash``) of the
    UTF-8 bytes of the POSIX relative path.
    """
    return "valid" if zlib.crc32(relative_path.encode("utf-8")) % 100 < VALID_PERCENT else "train"


def _is_excluded(relative: Path) -> bool:
    dirs = relative.parts[:-1]
    return any(d in STDLIB_EXCLUDED_DIRS or d.startswith("config-") for d in dirs)


def _candidate_files(root: Path, prefix: str = "") -> list[tuple[str, Path]]:
    """``(prefix + relative POSIX path, path)`` of the ``*.py`` files under `root` outside the exclusions, sorted."""
    files = []
    for path in root.rglob("*.py"):
        relative = path.relative_to(root)
        if path.is_file() and not _is_excluded(relative):
            files.append((prefix + relative.as_posix(), path))
    return sorted(files)


def _take(files: list[tuple[str, Path]], max_bytes: int) -> tuple[np.ndarray, tuple[str, ...]]:
    """Read `files` in order, skipping any that would push the total past `max_bytes`."""
    chunks: list[bytes] = []
    taken: list[str] = []
    used = 0
    for name, path in files:
        cost = path.stat().st_size + (len(FILE_SEPARATOR) if chunks else 0)
        if used + cost > max_bytes:
            continue
        blob = path.read_bytes()
        cost = len(blob) + (len(FILE_SEPARATOR) if chunks else 0)  # the file may have changed since stat
        if used + cost > max_bytes:
            continue
        if chunks:
            chunks.append(FILE_SEPARATOR)
        chunks.append(blob)
        taken.append(name)
        used += cost
    array = np.frombuffer(b"".join(chunks), dtype=np.uint8).copy()
    array.setflags(write=False)
    return array, tuple(taken)


def _package_root(name: str) -> Path | None:
    """The directory of the installed package `name` (an import name), or None when it is not installed."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):  # a dotted name whose parent is missing
        return None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    return Path(locations[0]).resolve() if locations and Path(locations[0]).is_dir() else None


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(_DISTRIBUTIONS.get(name, name))
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


@functools.lru_cache(maxsize=8)
def _load(corpus: str, root: str, max_train_bytes: int, max_valid_bytes: int) -> ByteCorpus:
    base = Path(root)
    if not base.is_dir():
        raise _error("root", root, "must be an existing directory holding .py files")
    files = _candidate_files(base)
    packages, missing = [], []
    for name in DEP_PACKAGES if corpus == "stdlib+deps" else ():
        package_root = _package_root(name)
        if package_root is None:
            missing.append(name)
            continue
        files += _candidate_files(package_root, prefix=name.replace(".", "/") + "/")
        packages.append((name, _version(name)))
    train, train_files = _take([f for f in files if split_of(f[0]) == "train"], max_train_bytes)
    valid, valid_files = _take([f for f in files if split_of(f[0]) == "valid"], max_valid_bytes)
    for split, array in (("train", train), ("valid", valid)):
        if array.size < _MIN_SPLIT_BYTES:
            raise ValueError(
                f"root={root!r} gives only {array.size} bytes of {split} text (at least {_MIN_SPLIT_BYTES} "
                f"needed): the directory holds too few .py files outside {sorted(STDLIB_EXCLUDED_DIRS)}, "
                "or the byte caps are too small")
    return ByteCorpus(train=train, valid=valid, train_files=train_files, valid_files=valid_files,
                      train_sha256=hashlib.sha256(train.tobytes()).hexdigest(),
                      valid_sha256=hashlib.sha256(valid.tobytes()).hexdigest(), source=str(base),
                      corpus=corpus, packages=tuple(packages), missing_packages=tuple(missing))


def load_byte_corpus(corpus: str = "stdlib", max_train_bytes: int | None = None, max_valid_bytes: int | None = None,
                     *, root: str | Path | None = None) -> ByteCorpus:
    """Load (once per process; later calls hit a cache) a named byte corpus.

    Args:
        corpus: ``"stdlib"`` (the standard library) or ``"stdlib+deps"`` (it, then the
            Python sources of the installed `DEP_PACKAGES`); see `CORPORA`.
        max_train_bytes: cap on the training split, bytes (separators included); None:
            the corpus's default (8 MB for ``"stdlib"``, 64 MB for ``"stdlib+deps"``).
        max_valid_bytes: cap on the validation split, bytes; None: the corpus's default
            (0.5 MB, 4 MB).
        root: directory to read instead of the standard library (tests use a
            temporary tree); the same exclusions and split rule apply.

    Returns:
        A `ByteCorpus` whose arrays are read-only (the cached object is shared).
    """
    if not isinstance(corpus, str) or corpus not in _CORPUS_CAPS:
        nets.fail("corpus", corpus, f"must be one of {', '.join(CORPORA)}")
    default_train, default_valid = _CORPUS_CAPS[corpus]
    max_train_bytes = default_train if max_train_bytes is None else max_train_bytes
    max_valid_bytes = default_valid if max_valid_bytes is None else max_valid_bytes
    for field, value in (("max_train_bytes", max_train_bytes), ("max_valid_bytes", max_valid_bytes)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < _MIN_SPLIT_BYTES:
            raise _error(field, value, f"must be an integer number of bytes >= {_MIN_SPLIT_BYTES}")
    base = Path(sysconfig.get_paths()["stdlib"] if root is None else root).resolve()
    return _load(corpus, str(base), int(max_train_bytes), int(max_valid_bytes))


def _check_window(n_bytes: int, batch: int, seq_len: int) -> None:
    for field, value in (("batch", batch), ("seq_len", seq_len)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise _error(field, value, "must be a positive Python integer (a static shape)")
    if n_bytes < seq_len + 1:
        raise _error("seq_len", seq_len, f"a window of seq_len + 1 bytes must fit in the data ({n_bytes} bytes)")


def window_starts(n_bytes: int, key: jax.Array, batch: int, seq_len: int) -> jax.Array:
    """The first byte of each of `sample_batch`'s windows (int32 [batch]): uniform on ``[0, n_bytes - seq_len - 1]``.

    Cheap to draw for the whole batch, so a process that holds only some rows of it (several
    processes: each builds the rows its devices hold) reads just those windows of the data.
    """
    _check_window(n_bytes, batch, seq_len)
    return jax.random.randint(key, (batch,), 0, n_bytes - seq_len, dtype=jnp.int32)


def sample_batch(data: jax.Array | np.ndarray, key: jax.Array, batch: int,
                 seq_len: int) -> tuple[jax.Array, jax.Array]:
    """Random next-byte windows: a pure function of ``(data, key)``, safe under ``jax.jit``.

    Args:
        data: uint8 [n_bytes], the corpus split.
        key: a JAX PRNG key; the training loop passes ``fold_in(key, step)`` so that
            a resumed run sees the very same batches.
        batch: windows per batch (static).
        seq_len: tokens per window (static).

    Returns:
        ``(inputs, targets)``, int32 [batch, seq_len] each, with
        ``targets[:, t] == inputs[:, t + 1]``: window start ``s`` is uniform on
        ``[0, n_bytes - seq_len - 1]``, inputs are bytes ``s .. s+seq_len-1`` and
        targets bytes ``s+1 .. s+seq_len``.
    """
    if data.ndim != 1:
        raise _error("data.shape", tuple(data.shape), "must be one-dimensional (a byte stream)")
    data = jnp.asarray(data)
    starts_B = window_starts(data.shape[0], key, batch, seq_len)
    index_BxL1 = starts_B[:, None] + jnp.arange(seq_len + 1, dtype=jnp.int32)[None, :]
    window_BxL1 = data[index_BxL1].astype(jnp.int32)
    return window_BxL1[:, :-1], window_BxL1[:, 1:]


def eval_batches(data: np.ndarray | jax.Array, batch: int, seq_len: int,
                 n_batches: int) -> tuple[np.ndarray, np.ndarray]:
    """A fixed, deterministic set of evenly spaced validation windows.

    The ``n_batches * batch`` window starts are ``floor(linspace(0, n_bytes -
    seq_len - 1, n_batches * batch))``: they cover the whole split and depend only
    on the data and the shapes, so validation losses are comparable across runs.

    Returns:
        ``(inputs, targets)``: numpy int32 [n_batches, batch, seq_len] each,
        targets shifted by one byte as in `sample_batch`.
    """
    data = np.asarray(data)
    if data.ndim != 1:
        raise _error("data.shape", tuple(data.shape), "must be one-dimensional (a byte stream)")
    _check_window(data.shape[0], batch, seq_len)
    if isinstance(n_batches, bool) or not isinstance(n_batches, (int, np.integer)) or n_batches < 1:
        raise _error("n_batches", n_batches, "must be a positive integer")
    n_windows = n_batches * batch
    starts_W = np.floor(np.linspace(0, data.shape[0] - seq_len - 1, n_windows)).astype(np.int64)
    window_WxL1 = data[starts_W[:, None] + np.arange(seq_len + 1)[None, :]].astype(np.int32)
    window = window_WxL1.reshape(n_batches, batch, seq_len + 1)
    return np.ascontiguousarray(window[..., :-1]), np.ascontiguousarray(window[..., 1:])
