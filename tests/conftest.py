"""Session-wide test setup: a persistent JAX compilation cache for the session, and the in-process command line."""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass

# XLA's cheapest CPU compile for the whole test session (and the subprocesses it starts): the tests
# need numbers, not fast code, and compiling is most of their time. Measured on the 2-core machine:
# tests/nets/test_attention.py 86 -> 60 s of process CPU. Appended, so a user's own XLA_FLAGS win.
# Not used: --xla_cpu_use_fusion_emitters=false (jaxlib 0.10.2) cut compiles ~40% but casts to
# float4_e2m1fn differently from ml_dtypes (tests/nets/test_formats.py fails) and moves training by ulps.
_CHEAP_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{_CHEAP_COMPILE} {os.environ.get('XLA_FLAGS', '')}".strip()

import jax  # noqa: E402  (after XLA_FLAGS: the backend reads them when it starts)
import pytest  # noqa: E402

# Many tests compile the same computation from a fresh `jax.jit` (a new Trainer, a new training run, a
# subprocess of the same code): with an on-disk cache the second compile is a file read. The cache lives
# in a temporary folder of this session only (removed at the end), so no stale entry outlives the code.
# The environment variables carry it to the subprocesses that tests start. Compiles under 0.3 s (the
# eager op-by-op ones) are not worth a file each.
_CACHE_DIR = os.environ.get("JAX_COMPILATION_CACHE_DIR") or tempfile.mkdtemp(prefix="codesign-jax-cache-")
_OWN_CACHE = "JAX_COMPILATION_CACHE_DIR" not in os.environ
_MIN_COMPILE_S = "0.3"
os.environ.update(JAX_COMPILATION_CACHE_DIR=_CACHE_DIR, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=_MIN_COMPILE_S)
jax.config.update("jax_compilation_cache_dir", _CACHE_DIR)
jax.config.update("jax_persistent_cache_min_compile_time_secs", float(_MIN_COMPILE_S))


def pytest_sessionfinish(session, exitstatus):
    if _OWN_CACHE:
        shutil.rmtree(_CACHE_DIR, ignore_errors=True)


@dataclass(frozen=True)
class CliResult:
    """What one in-process `codesign` call left: its exit status, stdout and stderr."""

    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def codesign_main(capsys):
    """Run `codesign.cli.main(argv)` in this process (no new Python, no second JAX import or compile).

    The console script itself is exercised by one subprocess test per command family; every other CLI
    test goes through here, and sees the same exit status and streams as the console would.
    """
    from codesign.cli import main

    def call(*argv: str) -> CliResult:
        capsys.readouterr()
        code = 0
        try:
            main(list(argv))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        out = capsys.readouterr()
        return CliResult(code, out.out, out.err)

    return call
