"""Check the dependency floors: install exactly the lower bounds of pyproject.toml and run tests.

    python scripts/check_floors.py                    # a fresh venv in /tmp/codesign-floors, the quick subset
    python scripts/check_floors.py --reuse -- tests/nets    # keep the venv, run other tests

Every `name>=X` of [project].dependencies is installed as `name==X` into a throwaway virtual
environment (jaxlib is pinned to jax's version, as jax requires), the project is installed
editable with its test extra, the installed versions are printed, and pytest runs the
given tests (default: a quick subset that imports every package, reads and writes safetensors
and takes training steps with checkpoints) from the repository root. The exit status is pytest's.

A floor is right when this passes and pinning the next older release of that package fails;
the docs' install page lists which API sets each floor.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QUICK_TESTS = ("tests/nets/test_config.py", "tests/nets/test_hf_weights.py", "tests/hwcost/test_gpu.py",
               "tests/codesign/test_train.py")
_FLOOR = re.compile(r"^\s*([A-Za-z0-9_.\-]+)\s*>=\s*([0-9][A-Za-z0-9.]*)\s*$")


def floor_pins(pyproject: Path = ROOT / "pyproject.toml") -> dict[str, str]:
    """{package: floor version} from the `name>=X` entries of [project].dependencies (others are skipped)."""
    deps = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    pins = {}
    for dep in deps:
        match = _FLOOR.match(dep)
        if match:
            pins[match.group(1)] = match.group(2)
    if "jax" in pins:
        pins.setdefault("jaxlib", pins["jax"])
    return pins


def _same_version(installed: str | None, pinned: str) -> bool:
    """Equal release numbers, trailing zeros ignored ("0.8" pins "0.8.0", as pip's == does)."""
    if installed is None:
        return False
    def release(version: str) -> list[int]:
        numbers = [int(x) for x in version.split(".")]
        while numbers and numbers[-1] == 0:
            numbers.pop()
        return numbers

    return release(installed) == release(pinned)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--venv", type=Path, default=Path("/tmp/codesign-floors"), help="where to create the venv")
    parser.add_argument("--reuse", action="store_true", help="keep an existing venv (skip creating and installing)")
    parser.add_argument("tests", nargs="*", default=list(QUICK_TESTS), help="pytest arguments (after --)")
    args = parser.parse_args(argv)

    pins = floor_pins()
    python = args.venv / "bin" / "python"
    if not (args.reuse and python.exists()):
        if args.venv.exists():
            shutil.rmtree(args.venv)
        venv.create(args.venv, with_pip=True)
        requirements = [f"{ROOT}[test]"] + [f"{name}=={version}" for name, version in pins.items()]
        print(f"installing into {args.venv}: " + " ".join(requirements[1:]), flush=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "-e", *requirements], check=True)
    listed = subprocess.run([str(python), "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True,
                            check=True).stdout
    installed = dict(line.split("==", 1) for line in listed.splitlines() if "==" in line)
    normalise = lambda name: name.lower().replace("_", "-")
    versions = {normalise(k): v for k, v in installed.items()}
    print("floors installed: " + ", ".join(f"{name}=={versions.get(normalise(name), 'MISSING')}" for name in pins))
    mismatched = [name for name, version in pins.items() if not _same_version(versions.get(normalise(name)), version)]
    if mismatched:
        print(f"check_floors: pip resolved other versions for {mismatched}", file=sys.stderr)
        return 2
    cmd = [str(python), "-m", "pytest", "-p", "no:cacheprovider", *args.tests]
    print("running: " + " ".join(cmd[2:]), flush=True)
    return subprocess.run(cmd, cwd=ROOT).returncode


if __name__ == "__main__":
    sys.exit(main())
