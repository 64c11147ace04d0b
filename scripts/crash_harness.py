"""Crash-safety harness: SIGKILL long `codesign` commands at random instants, rerun them, compare with a clean run.

For each command (train, sweep, calibrate, atts-calibrate) with tiny settings:

1. a reference run, uninterrupted, in OUT/<command>/ref;
2. `--kills N` trials, each in its own folder: start the command, SIGKILL it at a seeded
   random instant, check that no file that looks complete is partial (every .json parses,
   every .npz loads, every checkpoint step orbax lists restores), rerun the same command
   to completion, and compare its results with the reference bit for bit.

Kill instants: a fraction `--aim` of the trials wait for the k-th `start checkpoint` or
`start file` line of the command's phase log (`CODESIGN_PHASE_LOG`, written by the
library) and kill a random few milliseconds later, so that kills land inside writes; the
others kill at a uniform random time in (0, reference duration). The phase each kill hit
is the last unfinished phase of the log (compile, step, checkpoint, file), or `startup`
before the first (imports, compiles outside a step). All commands share one persistent
JAX compilation cache (OUT/jax-cache), so after the reference the kills land in the work.

Compared bit for bit: every checkpoint array of the last step (orbax), every JSON output
with wall-clock fields (tokens_per_s*, seconds, created_utc, ...) removed, metrics.jsonl
records without tokens_per_s, bank.npz arrays. Prints and writes a JSON report:

    python scripts/crash_harness.py --commands train --kills 3 --out /tmp/crash --json results.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# wall-clock fields, and the deployment's digests (orbax's checkpoint metadata holds save times; the
# checkpoint arrays themselves are compared)
WALL_CLOCK = {"tokens_per_s", "tokens_per_s_median", "seconds", "created_utc", "git_commit", "sha256", "integrity"}
WRITE_PHASES = ("checkpoint", "file")



def _tiny_model() -> str:
    import nets

    return nets.zoo.default_config().replace(
        name="crash-tiny", d_model=32, n_layers=2, max_seq_len=32,
        attention={"n_heads": 2, "head_dim": 16, "q_rank": 16},
        ffn={"d_ff": 64, "n_experts": 2, "top_k": 1, "d_expert": 16}).to_json()


def _argv(command: str, out: Path, work: Path) -> list[str]:
    """The command line of one command's tiny run into `out` (inputs made once under `work`)."""
    model = work / "model.json"
    if command == "train":
        return ["train", "--model", str(model), "--steps", "12", "--batch", "4", "--seq-len", "16",
                "--eval-every", "6", "--ckpt-every", "3", "--quiet", "--out", str(out)]
    if command == "sweep":
        return ["sweep", "--model", str(model), "--lams", "0,0.1", "--pretrain-steps", "2", "--steps", "2",
                "--recovery-steps", "2", "--batch", "4", "--seq-len", "16", "--quiet", "--out", str(out)]
    if command == "calibrate":
        return ["calibrate", str(work / "kernels.json"), "--target", "h100-sxm", "--steps", "50",
                "--out", str(out / "preset.json")]
    if command == "atts-calibrate":
        return ["atts", "calibrate", "--ckpt", str(work / "pair"), "--n", "4", "--m", "2", "--max-turns", "3",
                "--max-chunk", "4", "--buf-len", "32", "--out", str(out / "bank.npz")]
    raise SystemExit(f"crash_harness: error: command={command!r}: must be train, sweep, calibrate or atts-calibrate")


def _prepare(work: Path, commands: list[str], env: dict) -> None:
    work.mkdir(parents=True, exist_ok=True)
    (work / "model.json").write_text(_tiny_model())
    if "calibrate" in commands and not (work / "kernels.json").exists():
        gemm = lambda m: {"type": "gemm", "m": m, "n": 256, "k": 256, "bits_in": 16, "bits_out": 16}  # noqa: E731
        items = [{"id": f"gemm/bf16/m{m}", "kind": "gemm", "dtype": "bf16", "describe": gemm(m),
                  "timing": {"median_s": 2e-6 + 1e-9 * m}} for m in (16, 32, 64, 128, 256, 512, 1024, 2048)]
        (work / "kernels.json").write_text(json.dumps({"schema": "codesign.kernels/1", "device": {"kind": "harness"},
                                                       "items": items}))
    if "atts-calibrate" in commands and not (work / "pair" / "target" / "config.json").exists():
        subprocess.run([sys.executable, str(ROOT / "scripts" / "atts_train.py"), "--out", str(work / "pair"),
                        "--size", "tiny"], check=True, env=env, cwd=work)


def _last_phase(log: Path) -> str:
    """The innermost phase started and not ended when the process died ('startup' if none)."""
    open_phases: list[str] = []
    if log.exists():
        for line in log.read_text().splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[0] == "start":
                open_phases.append(parts[1])
            elif len(parts) == 3 and parts[0] == "end" and parts[1] in open_phases:
                open_phases.remove(parts[1])
    return open_phases[-1] if open_phases else ("startup" if not log.exists() or not log.read_text() else "between")


def _run(argv: list[str], env: dict, log: Path | None = None, kill: tuple | None = None) -> dict[str, Any]:
    """Run `codesign argv`; with `kill` ('time', seconds) or ('phase', k, delay_s), SIGKILL it then."""
    env = dict(env)
    if log is not None:
        env["CODESIGN_PHASE_LOG"] = str(log)
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "codesign", *argv], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    killed = False
    if kill is not None:
        if kill[0] == "time":
            try:
                proc.wait(timeout=kill[1])
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                killed = True
        else:
            _, k, delay = kill
            seen = 0
            while proc.poll() is None:
                text = log.read_text() if log.exists() else ""
                seen = sum(1 for line in text.splitlines() if line.split()[:1] == ["start"]
                           and line.split()[1:2] and line.split()[1] in WRITE_PHASES)
                if seen >= k:
                    time.sleep(delay)
                    if proc.poll() is None:
                        proc.send_signal(signal.SIGKILL)
                        killed = True
                    break
                time.sleep(0.0005)
    _, err = proc.communicate()
    return {"rc": proc.returncode, "killed": killed, "seconds": time.perf_counter() - t0,
            "stderr": err.decode(errors="replace")[-400:]}


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in WALL_CLOCK}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def _steps(folder: Path) -> list[int]:
    """The finished checkpoint steps (orbax renames a step's temporary folder to the bare number when done)."""
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit())


def _checkpoint_arrays(folder: Path, step: int | None = None) -> dict[str, bytes]:
    """{step + leaf path: bytes and dtype} of checkpoint `step` (default: the newest)."""
    import jax
    import orbax.checkpoint as ocp

    steps = _steps(folder)
    if not steps:
        return {}
    step = steps[-1] if step is None else step
    where = folder / str(step)
    where = where / "default" if (where / "default").is_dir() else where
    restored = ocp.StandardCheckpointer().restore(where)
    leaves = jax.tree_util.tree_flatten_with_path(restored)[0]
    return {f"{step}{jax.tree_util.keystr(path)}": np.asarray(leaf).tobytes() + str(np.asarray(leaf).dtype).encode()
            for path, leaf in leaves}


def fingerprint(out: Path) -> dict[str, Any]:
    """Everything a run's results are compared by (module docstring)."""
    result: dict[str, Any] = {}
    for path in sorted(out.rglob("*")):
        rel = path.relative_to(out).as_posix()
        if path.name.startswith(".") or "/." in rel or not path.is_file() and not path.name == "checkpoints":
            continue
        if path.is_dir() and path.name == "checkpoints":
            result[rel] = {k: v.hex() for k, v in _checkpoint_arrays(path).items()}
        elif path.suffix == ".json":
            result[rel] = _strip(json.loads(path.read_text()))
        elif path.suffix == ".jsonl":
            result[rel] = [_strip(json.loads(line)) for line in path.read_text().splitlines() if line.strip()]
        elif path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                result[rel] = {k: data[k].tobytes().hex() for k in data.files}
    return result


def partial_files(out: Path) -> list[str]:
    """Files that look complete but are not: a .json that does not parse, an .npz that does not load,
    a checkpoint step that orbax lists but cannot restore. (Temporary files are hidden: '.name.tmp'.)"""
    bad = []
    for path in out.rglob("*"):
        rel = path.relative_to(out).as_posix()
        if path.name.startswith(".") or ".orbax-checkpoint-tmp" in rel or "/." in rel:
            continue
        try:
            if path.is_file() and path.suffix == ".json" and path.parent.name != "_sharding":
                json.loads(path.read_text())
            elif path.is_file() and path.suffix == ".npz":
                with np.load(path, allow_pickle=False) as data:
                    [data[k] for k in data.files]
            elif path.is_dir() and path.name == "checkpoints":
                for step in _steps(path):
                    _checkpoint_arrays(path, step)
        except Exception as err:  # noqa: BLE001 -- any failure to read a complete-looking file is the finding
            bad.append(f"{rel}: {err.__class__.__name__}: {str(err)[:120]}")
    return bad


def harness(command: str, kills: int, seed: int, aim: float, root: Path, env: dict) -> dict[str, Any]:
    rng = random.Random(f"{command}-{seed}")
    base = root / command
    shutil.rmtree(base, ignore_errors=True)
    ref_out = base / "ref"
    ref = _run(_argv(command, ref_out, root / "inputs"), env, log=base / "ref.phases")
    if ref["rc"] != 0:
        raise SystemExit(f"crash_harness: the reference {command} run failed: {ref['stderr']}")
    ref_print = fingerprint(ref_out)
    writes = sum(1 for line in (base / "ref.phases").read_text().splitlines()
                 if line.startswith("start") and line.split()[1] in WRITE_PHASES)
    trials = []
    trial = 0
    typical = ref["seconds"]  # the reference compiled from scratch; later runs read the cache, so are shorter
    while sum(t["killed"] for t in trials) < kills and trial < 3 * kills:  # a kill drawn after the end is no kill
        trial += 1
        out, log = base / f"kill-{trial}", base / f"kill-{trial}.phases"
        if rng.random() < aim and writes:
            kill = ("phase", rng.randint(1, writes), rng.uniform(0.0, 0.004))
        else:
            kill = ("time", rng.uniform(0.0, 0.9 * typical))
        first = _run(_argv(command, out, root / "inputs"), env, log=log, kill=kill)
        hit = _last_phase(log) if first["killed"] else "after-end"
        partial = partial_files(out) if out.exists() else []
        second = _run(_argv(command, out, root / "inputs"), env)
        if not first["killed"] and first["rc"] == 0:
            typical = first["seconds"]  # a whole run with a warm cache
        equal = second["rc"] == 0 and fingerprint(out) == ref_print
        trials.append({"trial": trial, "kill": list(kill), "killed": first["killed"], "phase": hit,
                       "partial_files": partial, "rerun_rc": second["rc"], "bitwise_equal": equal,
                       "rerun_stderr": "" if second["rc"] == 0 else second["stderr"]})
        print(f"{command} trial {trial}: {kill[0]} -> {hit}; partial {len(partial)}; "
              f"rerun rc {second['rc']}; equal {equal}", flush=True)
        shutil.rmtree(out, ignore_errors=True)
    phases: dict[str, int] = {}
    for t in trials:
        if t["killed"]:
            phases[t["phase"]] = phases.get(t["phase"], 0) + 1
    return {"command": command, "argv": _argv(command, Path("OUT"), Path("INPUTS")), "kills": sum(t["killed"] for t in trials),
            "trials": len(trials), "in_writes": sum(phases.get(p, 0) for p in WRITE_PHASES), "phases": phases,
            "bitwise_equal": sum(t["bitwise_equal"] for t in trials),
            "partial_files": sum(len(t["partial_files"]) for t in trials),
            "reference_s": ref["seconds"], "failures": [t for t in trials if not t["bitwise_equal"] or t["partial_files"]]}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--commands", default="train,sweep,calibrate,atts-calibrate")
    parser.add_argument("--kills", type=int, default=50, help="Kills per command.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--aim", type=float, default=0.4, help="Fraction of kills aimed at checkpoint/file writes.")
    parser.add_argument("--out", type=Path, default=Path("runs/crash-harness"))
    parser.add_argument("--json", type=Path, default=None, help="Write the report here.")
    args = parser.parse_args(argv)
    commands = [c.strip() for c in args.commands.split(",") if c.strip()]
    root = args.out.absolute()
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu"),
           "JAX_COMPILATION_CACHE_DIR": str(root / "jax-cache"), "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
           "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}
    _prepare(root / "inputs", commands, env)
    report = {"seed": args.seed, "aim": args.aim, "commands": [harness(c, args.kills, args.seed, args.aim, root, env)
                                                              for c in commands]}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    for r in report["commands"]:
        print(f"{r['command']}: {r['kills']} kills ({r['in_writes']} in writes; {r['phases']}), "
              f"{r['bitwise_equal']}/{r['trials']} bitwise equal, {r['partial_files']} partial files")
    return report


if __name__ == "__main__":
    main()
