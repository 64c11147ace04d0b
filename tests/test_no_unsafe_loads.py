"""Nothing in the packages or scripts loads pickles or evaluates text read from a file.

The syntax tree of every source file is walked for: imports of pickle, marshal, shelve,
dill, cloudpickle or joblib; calls of the builtins eval, exec and compile; `yaml.load`,
`yaml.unsafe_load` and `torch.load`; any `allow_pickle=True`; and `np.load` without an
explicit `allow_pickle=False`.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("codesign", "hwcost", "nets", "scripts")
UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "marshal", "shelve", "dill", "cloudpickle", "joblib"}
UNSAFE_BUILTINS = {"eval", "exec", "compile", "__import__"}
UNSAFE_ATTRS = {("yaml", "load"), ("yaml", "unsafe_load"), ("yaml", "full_load"), ("torch", "load")}
NUMPY_NAMES = {"np", "numpy", "jnp"}


def unsafe_uses(source: str, name: str = "<source>") -> list[str]:
    """`file:line: what` for every unsafe load or evaluation in `source`."""
    found = []
    for node in ast.walk(ast.parse(source, filename=name)):
        where = f"{name}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import):
            found += [f"{where}: import {a.name}" for a in node.names if a.name.split(".")[0] in UNSAFE_MODULES]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in UNSAFE_MODULES:
            found.append(f"{where}: from {node.module} import")
        elif isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name) and func.id in UNSAFE_BUILTINS:
                found.append(f"{where}: {func.id}()")
            if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
                if (func.value.id, func.attr) in UNSAFE_ATTRS:
                    found.append(f"{where}: {func.value.id}.{func.attr}()")
                if func.value.id in NUMPY_NAMES and func.attr == "load" and not any(
                        k.arg == "allow_pickle" and isinstance(k.value, ast.Constant) and k.value.value is False
                        for k in node.keywords):
                    found.append(f"{where}: {func.value.id}.load() without allow_pickle=False")
            for k in node.keywords:
                if k.arg == "allow_pickle" and not (isinstance(k.value, ast.Constant) and k.value.value is False):
                    found.append(f"{where}: allow_pickle={ast.unparse(k.value)}")
    return found


def _files() -> list[Path]:
    return sorted(p for d in SOURCES for p in (ROOT / d).rglob("*.py"))


def test_the_walk_sees_every_package():
    files = _files()
    for d in SOURCES:
        assert any(p.is_relative_to(ROOT / d) for p in files), d


@pytest.mark.parametrize("snippet", [
    "import pickle", "from dill import loads", "eval(text)", "exec(open('x').read())", "compile(s, 'f', 'exec')",
    "yaml.load(f)", "torch.load('x.pt')", "np.load('x.npz')", "np.load(p, allow_pickle=True)",
    "numpy.load(p, allow_pickle=flag)", "f(allow_pickle=True)"])
def test_the_checker_flags_each_unsafe_form(snippet):
    assert unsafe_uses(snippet), snippet


@pytest.mark.parametrize("snippet", ["np.load(p, allow_pickle=False)", "model.eval()", "re.compile('x')",
                                     "json.loads(text)", "jax.jit(f).lower(x).compile()"])
def test_the_checker_passes_safe_forms(snippet):
    assert not unsafe_uses(snippet), snippet


def test_no_source_loads_pickles_or_evaluates_text():
    found = [hit for p in _files() for hit in unsafe_uses(p.read_text(), str(p.relative_to(ROOT)))]
    assert not found, "\n".join(found)
