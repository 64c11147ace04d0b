"""Crash-safety harness: SIGKILL long `codesign` commands at random instants, rerun them, compare with a clean run.

For each command (train, sweep, calibrate, atts-calibrate) with tiny settings:

1. a reference run, uninterrupted, as a plain `python -m codesign ...` process (CPU), into
   OUT/<command>/ref; it also fills the persistent JAX compilation cache (OUT/jax-cache) that
   every later run reads, so kills land in the work, not in compiles;
2. `--seeds` chains: for each seed, `--chain` runs of the same command into the same folder,
   each SIGKILLed at a seeded random instant; after each kill every file that looks complete
   must be complete (every .json parses, every .npz loads, every checkpoint step orbax lists
   restores, every line of a .jsonl parses); then one uninterrupted rerun must finish (exit 0)
   and its results must equal the reference's bit for bit. Chains are run until `--kills`
   kills are reached (a kill drawn after the run ended is no kill, and is counted apart; such a
   run completed the folder, so it ends its chain: later runs would only reread finished work).

Kill instants. A fraction `--aim` of the kills are aimed at writes: the harness follows the
run's phase log (`CODESIGN_PHASE_LOG`, written by the library) and kills when the j-th
`start checkpoint` or `start file` line appears plus a random delay drawn within the length
of that write in the warm run (j drawn uniformly among the writes that lasted 2 ms or more in
the warm run: a metrics line's append is over before the harness can react). The others are timed: uniform in (0, T)
with T the length of a whole warm run. The phase each kill hit is read from the log after
the kill: the innermost phase started and not ended (`compile` = the first training step,
`step`, `checkpoint`, `file`, `fit` = calibrate's fit, `generate` = atts calibrate's sampling),
`startup` before the first line (imports, model set-up), `between` outside every phase. Aimed kills are reported apart from timed ones.

Runs other than the reference start from a fork of one process that has already imported
codesign and JAX (no JAX backend started in it), so a kill costs the command's own work and
not ~4 s of imports: the command line, environment and files are those of
`python -m codesign ARGS`; `--no-fork` starts each run as its own process instead. The
reference itself is a plain process, so every comparison is also forked vs plain.

Compared bit for bit: the arrays of the newest checkpoint of every checkpoints/ folder
(orbax's metadata holds save times), every JSON output and metrics.jsonl record with the
wall-clock fields removed (tokens_per_s*, seconds, created_utc, git_commit and the deployment's
digests of those files), .npz arrays, and other files' bytes (pareto.png).

    python scripts/crash_harness.py --commands train --kills 50 --chain 5 --out /tmp/crash --json crash.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
WALL_CLOCK = {"tokens_per_s", "tokens_per_s_median", "seconds", "created_utc", "git_commit", "sha256", "integrity"}
WRITE_PHASES = ("checkpoint", "file")
COMMANDS = ("train", "sweep", "calibrate", "atts-calibrate")
# what a forked run needs already imported (the commands import these lazily)
_ZYGOTE = """
import json, os, sys
import jax, orbax.checkpoint, codesign, codesign.cli, codesign.atts, hwcost
from codesign.training import _trainer
from codesign.search import _sweep
sys.stdout.write("ready\\n"); sys.stdout.flush()
for line in sys.stdin:
    job = json.loads(line)
    pid = os.fork()
    if pid == 0:
        os.environ.clear(); os.environ.update(job["env"]); os.chdir(job["cwd"])
        null = os.open(os.devnull, os.O_RDONLY); os.dup2(null, 0)
        err = os.open(job["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        out = os.open(os.devnull, os.O_WRONLY); os.dup2(out, 1); os.dup2(err, 2)
        sys.argv = ["codesign", *job["argv"]]
        code = 0
        try:
            codesign.cli.main(job["argv"])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:
            import traceback; traceback.print_exc(); code = 1
        sys.stdout.flush(); sys.stderr.flush()
        os._exit(code)
    sys.stdout.write(f"pid {pid}\\n"); sys.stdout.flush()
    _, status = os.waitpid(pid, 0)
    sys.stdout.write(f"rc {os.waitstatus_to_exitcode(status)}\\n"); sys.stdout.flush()
"""


class Launcher:
    """Starts `codesign ARGV` runs: forked from a pre-imported process (default) or as plain processes."""

    def __init__(self, env: dict, fork: bool):
        self.env, self.fork, self.zygote = env, fork, None
        if fork:
            self.zygote = subprocess.Popen([sys.executable, "-c", _ZYGOTE], env=env, cwd=ROOT, text=True,
                                           stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            if self.zygote.stdout.readline().strip() != "ready":
                raise SystemExit("crash_harness: error: the fork server did not start")

    def start(self, argv: list[str], env: dict, stderr: Path, fork: bool | None = None) -> tuple[int, Any]:
        if self.fork if fork is None else fork:
            self.zygote.stdin.write(json.dumps({"argv": argv, "env": env, "cwd": str(ROOT),
                                                "stderr": str(stderr)}) + "\n")
            self.zygote.stdin.flush()
            return int(self.zygote.stdout.readline().split()[1]), None
        with open(stderr, "wb") as err:
            proc = subprocess.Popen([sys.executable, "-m", "codesign", *argv], env=env, cwd=ROOT,
                                    stdout=subprocess.DEVNULL, stderr=err)
        return proc.pid, proc

    def wait(self, proc) -> int:
        return proc.wait() if proc is not None else int(self.zygote.stdout.readline().split()[1])

    def close(self) -> None:
        if self.zygote is not None:
            self.zygote.stdin.close()
            self.zygote.wait()


def _tiny_model() -> str:
    import nets

    return nets.zoo.default_config().replace(
        name="crash-tiny", d_model=32, n_layers=2, max_seq_len=32,
        attention={"n_heads": 2, "head_dim": 16, "q_rank": 16},
        ffn={"d_ff": 64, "n_experts": 2, "top_k": 1, "d_expert": 16}).to_json()


def command_argv(command: str, out: Path, work: Path) -> list[str]:
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
    raise SystemExit(f"crash_harness: error: command={command!r}: must be one of {', '.join(COMMANDS)}")


def prepare(work: Path, commands: list[str], env: dict) -> None:
    work.mkdir(parents=True, exist_ok=True)
    (work / "model.json").write_text(_tiny_model())
    if "calibrate" in commands and not (work / "kernels.json").exists():
        gemm = lambda m: {"type": "gemm", "m": m, "n": 256, "k": 256, "bits_in": 16, "bits_out": 16}  # noqa: E731
        items = [{"id": f"gemm/bf16/m{m}", "kind": "gemm", "dtype": "bf16", "describe": gemm(m),
                  "timing": {"median_s": 2e-6 + 1e-9 * m}} for m in (16, 32, 64, 128, 256, 512, 1024, 2048)]
        (work / "kernels.json").write_text(json.dumps({"schema": "codesign.kernels/1", "device": {"kind": "harness"},
                                                       "items": items}))
    if "atts-calibrate" in commands and not (work / "pair" / "target" / "config.json").exists():
        # a barely trained tiny pair: what is measured here is the bank's file, not the models' quality
        code = ("import sys; from codesign.atts import TrainSpec, train_pair; "
                "spec = TrainSpec(steps=20, batch=16, warmup_steps=2, eval_every=10, eval_n=16); "
                "train_pair('tiny', out=sys.argv[1], target_spec=spec, draft_spec=spec, test_n=16, log=None)")
        subprocess.run([sys.executable, "-c", code, str(work / "pair")], check=True, env=env, cwd=ROOT,
                       stdout=subprocess.DEVNULL)


def phases_of(log: Path) -> list[tuple[str, str, float]]:
    """(start|end, phase, time) lines of a phase log (a torn last line is dropped)."""
    lines = []
    for line in (log.read_text().splitlines() if log.exists() else []):
        parts = line.split()
        if len(parts) == 3 and parts[0] in ("start", "end"):
            lines.append((parts[0], parts[1], float(parts[2])))
    return lines


def last_phase(log: Path) -> str:
    """The innermost phase started and not ended when the process died (module docstring)."""
    lines, open_phases = phases_of(log), []
    for kind, name, _ in lines:
        if kind == "start":
            open_phases.append(name)
        elif name in open_phases:
            del open_phases[len(open_phases) - 1 - open_phases[::-1].index(name)]
    return open_phases[-1] if open_phases else ("between" if lines else "startup")


def write_lengths(log: Path) -> list[float]:
    """Seconds of each checkpoint/file write of a finished run, in order."""
    starts, lengths = [], []
    for kind, name, t in phases_of(log):
        if name in WRITE_PHASES and kind == "start":
            starts.append(t)
        elif name in WRITE_PHASES and kind == "end" and starts:
            lengths.append(t - starts.pop())
    return lengths


def run_once(launcher: Launcher, argv: list[str], log: Path, kill: tuple | None = None,
             fork: bool | None = None) -> dict[str, Any]:
    """Run `codesign argv` with its phase log at `log`; `kill`: ('time', s) or ('write', j, delay_s[, phases]):
    SIGKILL it `delay_s` after the j-th start of a write (of `phases`, default checkpoint and file).

    An aimed run writes its phase log into a named pipe that this process reads (and copies to
    `log`): a blocked read wakes as soon as a line is written, where polling a file lags by
    milliseconds on a loaded machine, longer than a short write lasts."""
    log.unlink(missing_ok=True)
    env = {**launcher.env, "CODESIGN_PHASE_LOG": str(log)}
    stderr = log.with_suffix(".stderr")
    if kill is not None and kill[0] == "write":
        fifo = log.with_suffix(".fifo")
        fifo.unlink(missing_ok=True)
        os.mkfifo(fifo)
        reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        env["CODESIGN_PHASE_LOG"] = str(fifo)
    t0 = time.perf_counter()
    pid, proc = launcher.start(argv, env, stderr, fork)
    killed = False
    if kill is not None and kill[0] == "time":
        time.sleep(kill[1])
        killed = _kill(pid, proc)
    elif kill is not None:
        aimed_at = kill[3] if len(kill) > 3 else WRITE_PHASES
        seen, buffer, poller = 0, b"", select.poll()
        poller.register(reader, select.POLLIN)
        with open(log, "ab") as copy:
            while True:
                if not poller.poll(50):  # nothing written (a pipe never opened for writing reports no hang-up)
                    if not _running(pid, proc):
                        break
                    continue
                try:
                    chunk = os.read(reader, 1 << 16)
                except BlockingIOError:
                    continue
                if not chunk:  # the run closed its end: it ended or was killed
                    break
                copy.write(chunk)
                copy.flush()
                *done, buffer = (buffer + chunk).split(b"\n")
                seen += sum(1 for line in done if line.split()[:1] == [b"start"]
                            and line.split()[1].decode() in aimed_at)
                if seen >= kill[1] and not killed:
                    time.sleep(kill[2])
                    killed = _kill(pid, proc)
        os.close(reader)
        fifo.unlink()
    rc = launcher.wait(proc)
    return {"rc": rc, "killed": killed and rc == -signal.SIGKILL, "seconds": time.perf_counter() - t0,
            "stderr": stderr.read_text(errors="replace")[-600:] if stderr.exists() else ""}


def _running(pid: int, proc) -> bool:
    if proc is not None:
        return proc.poll() is None
    try:  # a forked run: its parent (the fork server) reaps it, so a finished one is gone or a zombie
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _kill(pid: int, proc) -> bool:
    if not _running(pid, proc):
        return False
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    return True


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in WALL_CLOCK}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def _steps(folder: Path) -> list[int]:
    """The finished checkpoint steps (orbax renames a step's temporary folder to the bare number when done)."""
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit())


def _checkpoint_arrays(folder: Path, step: int | None = None) -> dict[str, str]:
    """{step + leaf path: hex of bytes and dtype} of checkpoint `step` (default: the newest)."""
    import jax
    import orbax.checkpoint as ocp

    steps = _steps(folder)
    if not steps:
        return {}
    step = steps[-1] if step is None else step
    where = folder / str(step)
    where = where / "default" if (where / "default").is_dir() else where
    leaves = jax.tree_util.tree_flatten_with_path(ocp.StandardCheckpointer().restore(where))[0]
    return {f"{step}{jax.tree_util.keystr(path)}": (np.asarray(leaf).tobytes() + str(np.asarray(leaf).dtype).encode()).hex()
            for path, leaf in leaves}


def _visible(out: Path, path: Path) -> bool:
    rel = path.relative_to(out).as_posix()
    return not (path.name.startswith(".") or "/." in rel or ".orbax-checkpoint-tmp" in rel or "_sharding" in rel)


def fingerprint(out: Path) -> dict[str, Any]:
    """Everything a run's results are compared by (module docstring)."""
    import hashlib

    result: dict[str, Any] = {}
    for path in sorted(out.rglob("*")):
        rel = path.relative_to(out).as_posix()
        if not _visible(out, path) or "/checkpoints/" in f"/{rel}" or path.name.isdigit():
            continue
        if path.is_dir() and path.name == "checkpoints":
            result[rel] = _checkpoint_arrays(path)
        elif not path.is_file():
            continue
        elif path.suffix == ".json":
            result[rel] = _strip(json.loads(path.read_text()))
        elif path.suffix == ".jsonl":
            result[rel] = [_strip(json.loads(line)) for line in path.read_text().splitlines()]
        elif path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                result[rel] = {k: data[k].tobytes().hex() + str(data[k].dtype) for k in data.files}
        else:
            result[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return result


def partial_files(out: Path) -> list[str]:
    """Files that look complete but are not (module docstring). Temporary files are hidden ('.name.tmp')."""
    bad = []
    for path in sorted(out.rglob("*")) if out.exists() else []:
        if not _visible(out, path):
            continue
        rel = path.relative_to(out).as_posix()
        try:
            if path.is_file() and path.suffix == ".json":
                json.loads(path.read_text())
            elif path.is_file() and path.suffix == ".jsonl":
                [json.loads(line) for line in path.read_text().splitlines()]
            elif path.is_file() and path.suffix == ".npz":
                with np.load(path, allow_pickle=False) as data:
                    [data[k] for k in data.files]
            elif path.is_dir() and path.name == "checkpoints":
                for step in _steps(path):
                    _checkpoint_arrays(path, step)
        except Exception as err:  # noqa: BLE001 -- any failure to read a complete-looking file is the finding
            bad.append(f"{rel}: {err.__class__.__name__}: {str(err)[:160]}")
    return bad


def _diff(a: dict, b: dict) -> list[str]:
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def harness(command: str, kills: int, chain: int, seed: int, aim: float, root: Path,
            launcher: Launcher, budget_s: float = float("inf")) -> dict[str, Any]:
    """Reference run, then chains of kills + a final rerun until `kills` kills (module docstring)."""
    base, inputs = root / command, root / "inputs"
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    ref = run_once(launcher, command_argv(command, base / "ref", inputs), base / "ref.phases", fork=False)
    if ref["rc"] != 0:
        raise SystemExit(f"crash_harness: the reference {command} run failed: {ref['stderr']}")
    ref_print = fingerprint(base / "ref")
    warm = run_once(launcher, command_argv(command, base / "warm", inputs), base / "warm.phases")
    if warm["rc"] != 0 or fingerprint(base / "warm") != ref_print:
        raise SystemExit(f"crash_harness: a clean warm {command} run differs from the reference: {warm['stderr']}"
                         f" {_diff(fingerprint(base / 'warm'), ref_print)}")
    lengths = write_lengths(base / "warm.phases") or [0.0]
    # aimed kills go for the writes long enough to be hit after the harness sees them start (not a metrics
    # line's microseconds); their index j counts every write
    landable = [j for j, t in enumerate(lengths, 1) if t >= 0.002] or list(range(1, len(lengths) + 1))
    print(f"{command}: reference {ref['seconds']:.1f} s (cold, plain process), warm {warm['seconds']:.1f} s, "
          f"{len(lengths)} writes", flush=True)
    chains, n_kills, t0 = [], 0, time.perf_counter()
    for s in range(seed, seed + 10 * kills):
        if n_kills >= kills or time.perf_counter() - t0 > budget_s:
            break
        rng = random.Random(f"{command}-{s}")
        out = base / f"seed-{s}"
        runs = []
        for i in range(chain):
            if rng.random() < aim:
                j = rng.choice(landable)
                kill = ("write", j, rng.uniform(0.0, 0.9 * lengths[j - 1]))
            else:
                kill = ("time", rng.uniform(0.0, warm["seconds"]))
            log = base / f"seed-{s}.{i}.phases"
            r = run_once(launcher, command_argv(command, out, inputs), log, kill)
            hit = last_phase(log) if r["killed"] else "not killed (run ended)"
            partial = partial_files(out)
            runs.append({"kill": list(kill), "killed": r["killed"], "rc": r["rc"], "phase": hit,
                         "partial_files": partial, **({} if r["killed"] or r["rc"] == 0 else {"stderr": r["stderr"]})})
            n_kills += r["killed"]
            if not r["killed"] and r["rc"] == 0:
                break   # the folder is complete: later runs of the chain would only be a few seconds long
        final = run_once(launcher, command_argv(command, out, inputs), base / f"seed-{s}.final.phases")
        got = fingerprint(out) if final["rc"] == 0 else {}
        entry = {"seed": s, "runs": runs, "final_rc": final["rc"], "bitwise_equal": got == ref_print,
                 "final_partial_files": partial_files(out)}
        if not entry["bitwise_equal"]:
            entry["differs"] = _diff(got, ref_print) if got else []
            entry["final_stderr"] = final["stderr"]
        chains.append(entry)
        print(f"{command} seed {s}: " + ", ".join(f"{r['kill'][0]}->{r['phase']}" for r in runs)
              + f"; final rc {final['rc']}, bitwise equal {entry['bitwise_equal']}, partial "
              f"{sum(len(r['partial_files']) for r in runs) + len(entry['final_partial_files'])}", flush=True)
        if entry["bitwise_equal"] and not entry["final_partial_files"] and not any(r["partial_files"] for r in runs):
            shutil.rmtree(out, ignore_errors=True)
    return summarise(command, chains, ref, warm, len(lengths))


def summarise(command: str, chains: list[dict], ref: dict, warm: dict, writes: int) -> dict[str, Any]:
    phases = {"aimed": {}, "timed": {}}
    for c in chains:
        for r in c["runs"]:
            if r["killed"]:
                group = phases["aimed" if r["kill"][0] == "write" else "timed"]
                group[r["phase"]] = group.get(r["phase"], 0) + 1
    killed = [r for c in chains for r in c["runs"] if r["killed"]]
    return {"command": command, "argv": command_argv(command, Path("OUT"), Path("INPUTS")),
            "kills": len(killed), "runs": sum(len(c["runs"]) for c in chains),
            "not_killed": sum(not r["killed"] for c in chains for r in c["runs"]),
            "in_writes": sum(r["phase"] in WRITE_PHASES for r in killed),
            "in_writes_timed": sum(r["phase"] in WRITE_PHASES for r in killed if r["kill"][0] == "time"),
            "phases": phases, "chains": len(chains), "bitwise_equal": sum(c["bitwise_equal"] for c in chains),
            "partial_files": sum(len(r["partial_files"]) for c in chains for r in c["runs"])
            + sum(len(c["final_partial_files"]) for c in chains),
            "reference_s": ref["seconds"], "warm_s": warm["seconds"], "writes_per_run": writes,
            "failures": [c for c in chains if not c["bitwise_equal"] or c["final_partial_files"]
                         or any(r["partial_files"] for r in c["runs"])]}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--commands", default=",".join(COMMANDS))
    parser.add_argument("--kills", type=int, default=50, help="Kills per command (at least).")
    parser.add_argument("--chain", type=int, default=5, help="Kills of one folder before its final rerun.")
    parser.add_argument("--seed", type=int, default=0, help="First seed (seeds seed, seed+1, ... one per chain).")
    parser.add_argument("--aim", type=float, default=0.4, help="Fraction of kills aimed at checkpoint/file writes.")
    parser.add_argument("--budget-s", type=float, default=float("inf"),
                        help="Per command: start no new chain after this many seconds of chains (then fewer kills).")
    parser.add_argument("--no-fork", action="store_true", help="Start every run as a plain process.")
    parser.add_argument("--out", type=Path, default=Path("runs/crash-harness"))
    parser.add_argument("--json", type=Path, default=None,
                        help="Write the report here (after each command); the entries of commands not run now, "
                             "from an earlier report at this path, are kept.")
    args = parser.parse_args(argv)
    commands = [c.strip() for c in args.commands.split(",") if c.strip()]
    for c in commands:
        command_argv(c, Path(), Path())  # an unknown command fails before any work
    root = args.out.absolute()
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu"),
           "JAX_COMPILATION_CACHE_DIR": str(root / "jax-cache"), "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
           "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}
    env.pop("CODESIGN_PHASE_LOG", None)
    prepare(root / "inputs", commands, env)
    launcher = Launcher(env, fork=not args.no_fork)
    report = {"seed": args.seed, "aim": args.aim, "chain": args.chain, "fork": not args.no_fork,
              "command_line": "python scripts/crash_harness.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "commands": []}
    earlier = json.loads(args.json.read_text())["commands"] if args.json and args.json.exists() else []
    try:
        for c in commands:
            t0, load0 = time.perf_counter(), os.getloadavg()[1]
            r = harness(c, args.kills, args.chain, args.seed, args.aim, root, launcher, args.budget_s)
            r.update(command_line=report["command_line"], wall_s=round(time.perf_counter() - t0, 1),
                     machine={"cpus": os.cpu_count(), "loadavg_5min": [load0, os.getloadavg()[1]]})
            r["stopped_by_budget"] = r["kills"] < args.kills
            report["commands"].append(r)
            if args.json:
                kept = [e for e in earlier if e["command"] not in [x["command"] for x in report["commands"]]]
                order = {name: i for i, name in enumerate(COMMANDS)}
                entries = sorted(kept + report["commands"], key=lambda e: order[e["command"]])
                args.json.parent.mkdir(parents=True, exist_ok=True)
                args.json.write_text(json.dumps({**report, "commands": entries}, indent=2) + "\n")
            print(f"{r['command']}: {r['kills']} kills ({r['in_writes']} in writes; {r['phases']}), "
                  f"{r['bitwise_equal']}/{r['chains']} chains bitwise equal, {r['partial_files']} partial files",
                  flush=True)
    finally:
        launcher.close()
    return report


if __name__ == "__main__":
    main()
