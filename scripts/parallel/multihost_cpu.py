"""Two processes on this machine train through `jax.distributed`; one is killed; the run resumes on another mesh.

    python scripts/parallel/multihost_cpu.py [--steps 24] [--ckpt-every 8] [--out results/parallel/multihost_cpu.json]

Every run is the real command, `python -m codesign train --mesh ... --out DIR`, started with
JAX_COORDINATOR_ADDRESS (127.0.0.1 and a free port), JAX_NUM_PROCESSES and JAX_PROCESS_ID in
its environment (`codesign.parallel.initialize_distributed`; CPU collectives through gloo),
CPU devices forced per process with XLA_FLAGS. A tiny float32 MFA+MoE config; four runs:

  two      2 processes x 4 devices, mesh `--mesh-two`: each process builds only its rows of each
           batch, process 0 writes the metrics, both write their shards of each orbax checkpoint;
  one      1 process x 8 devices, the same mesh: the one-process reference;
  killed   as `two`, into a fresh folder; process 1 is SIGKILLed right after it has written its part
           of checkpoint number `--kill-after` (read from its phase log, `CODESIGN_PHASE_LOG`), then
           process 0 is given `--grace` seconds to end and SIGKILLed if it has not;
  resumed  1 process x 4 devices, mesh `--mesh-resume`, on the killed run's folder: restores the
           latest (sharded) checkpoint onto its own mesh and trains to the end.

Writes the training loss of every step and the validation losses of each run, the largest
differences (two vs one; resumed vs one after the checkpoint it resumed from), the files of a
checkpoint written by two processes, how the killed processes ended, and `ok` (exit status 1 if
any figure misses `--tol`).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import nets  # noqa: E402

_BASE = nets.zoo.default_config()
CONFIG = _BASE.replace(name="tiny-mfa-moe", d_model=64, n_layers=2, max_seq_len=32,
                       attention={"n_heads": 4, "head_dim": 16, "q_rank": 32},
                       ffn={"d_ff": 128, "n_experts": 4, "top_k": 2, "d_expert": 32, "n_shared_experts": 1,
                            "moe_start": 1})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(args, out: Path, n_processes: int, devices: int, mesh: str, logs: Path) -> list[subprocess.Popen]:
    """Start `codesign train` as `n_processes` processes of `devices` CPU devices each, into `out`."""
    command = [sys.executable, "-m", "codesign", "train", "--model", str(args.config_path), "--steps",
               str(args.steps), "--batch", "16", "--seq-len", "32", "--lr", "3e-3", "--dtype", "float32",
               "--log-every", "1", "--eval-every", str(args.ckpt_every), "--ckpt-every", str(args.ckpt_every),
               "--mesh", mesh, "--out", str(out), "--quiet"]
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split()  # the caller's flags kept, the device count ours
             if not f.startswith("--xla_force_host_platform_device_count")]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": " ".join([*flags, f"--xla_force_host_platform_device_count={devices}"])}
    env.setdefault("JAX_COMPILATION_CACHE_DIR", str(logs.parent / "jax-cache"))  # `killed` reuses `two`'s compile
    for name in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        env.pop(name, None)
    if n_processes > 1:
        env.update(JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{free_port()}", JAX_NUM_PROCESSES=str(n_processes))
    procs = []
    logs.mkdir(parents=True, exist_ok=True)
    for i in range(n_processes):
        extra = {"JAX_PROCESS_ID": str(i)} if n_processes > 1 else {}
        phase_log = logs / f"{out.name}-phase-{i}.log"
        phase_log.unlink(missing_ok=True)
        log = open(logs / f"{out.name}-{i}.log", "w")  # noqa: SIM115 -- the child writes it
        procs.append(subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                      env={**env, **extra, "CODESIGN_PHASE_LOG": str(phase_log)}))
    return procs


def wait(procs: list[subprocess.Popen], timeout: float, what: str) -> list[int]:
    deadline = time.monotonic() + timeout
    codes = []
    for p in procs:
        try:
            codes.append(p.wait(timeout=max(1.0, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise SystemExit(f"{what}: did not finish in {timeout:.0f} s") from None
    return codes


def checkpoints_written(phase_log: Path) -> int:
    if not phase_log.exists():
        return 0
    return sum(1 for line in phase_log.read_text().splitlines() if line.startswith("end checkpoint"))


def kill_mid_run(procs: list[subprocess.Popen], phase_log: Path, after: int, grace: float, timeout: float) -> dict:
    """SIGKILL process 1 once its phase log shows `after` checkpoints written; then end process 0."""
    deadline = time.monotonic() + timeout
    while checkpoints_written(phase_log) < after:
        if any(p.poll() is not None for p in procs):
            raise SystemExit(f"the run ended before its checkpoint number {after}: codes "
                             f"{[p.poll() for p in procs]}")
        if time.monotonic() > deadline:
            raise SystemExit(f"no checkpoint number {after} within {timeout:.0f} s")
        time.sleep(0.01)
    procs[1].send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    code1 = procs[1].wait()
    try:
        code0, how0 = procs[0].wait(timeout=grace), "ended by itself"
    except subprocess.TimeoutExpired:
        procs[0].send_signal(signal.SIGKILL)
        code0, how0 = procs[0].wait(), f"SIGKILLed after {grace:.0f} s"
    return {"process_1_exit": code1, "process_0_exit": code0, "process_0_end": how0,
            "process_0_seconds_after_kill": round(time.monotonic() - killed_at, 1)}


def read_run(out: Path) -> dict:
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    loss = {r["step"]: r["loss"] for r in records if "loss" in r}
    val = {r["step"]: r["val_loss"] for r in records if "val_loss" in r}
    summary = out / "summary.json"
    return {"loss": loss, "val_loss": val, "summary": json.loads(summary.read_text()) if summary.exists() else None}


def max_diff(a: dict, b: dict, after: int = 0) -> tuple[float, int]:
    steps = [s for s in a if s in b and s > after]
    return (max(abs(a[s] - b[s]) for s in steps) if steps else float("nan")), len(steps)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--ckpt-every", type=int, default=8)
    parser.add_argument("--kill-after", type=int, default=1, help="Kill once this many checkpoints are written.")
    parser.add_argument("--mesh-two", default="data=2,fsdp=2,expert=2")
    parser.add_argument("--mesh-resume", default="tensor=2,expert=2")
    parser.add_argument("--tol", type=float, default=1e-5, help="Largest loss difference accepted.")
    parser.add_argument("--grace", type=float, default=60.0)
    parser.add_argument("--timeout", type=float, default=1800.0, help="Seconds per run.")
    parser.add_argument("--out", default="results/parallel/multihost_cpu.json")
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args(argv)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="multihost-cpu-")).absolute()
    work.mkdir(parents=True, exist_ok=True)
    args.config_path = work / "tiny-mfa-moe.json"
    args.config_path.write_text(CONFIG.to_json())
    logs = work / "logs"
    results: dict = {"config": CONFIG.name, "steps": args.steps, "ckpt_every": args.ckpt_every, "tol": args.tol,
                     "runs": {}}
    timings = {}

    def run(name: str, n: int, devices: int, mesh: str) -> None:
        t0 = time.perf_counter()
        codes = wait(launch(args, work / name, n, devices, mesh, logs), args.timeout, name)
        timings[name] = round(time.perf_counter() - t0, 1)
        results["runs"][name] = {"processes": n, "devices_per_process": devices, "mesh": mesh, "exit": codes,
                                 "seconds": timings[name]}
        print(f"{name}: {n} process(es) x {devices} devices, mesh {mesh}: exit {codes} ({timings[name]:.0f} s)",
              flush=True)

    run("two", 2, 4, args.mesh_two)
    ckpt_dir = work / "two" / "checkpoints"
    step_dirs = sorted((p for p in ckpt_dir.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    results["two_process_checkpoint_files"] = sorted(
        str(p.relative_to(step_dirs[-1])) for p in step_dirs[-1].rglob("*") if p.is_file())
    run("one", 1, 8, args.mesh_two)

    t0 = time.perf_counter()
    procs = launch(args, work / "killed", 2, 4, args.mesh_two, logs)
    kill = kill_mid_run(procs, logs / "killed-phase-1.log", args.kill_after, args.grace, args.timeout)
    before = read_run(work / "killed")
    kill.update(seconds=round(time.perf_counter() - t0, 1), last_logged_step=max(before["loss"]),
                summary_written=before["summary"] is not None,
                checkpoints=sorted(int(p.name) for p in (work / "killed" / "checkpoints").iterdir()
                                   if p.name.isdigit()))
    results["runs"]["killed"] = {"processes": 2, "devices_per_process": 4, "mesh": args.mesh_two, **kill}
    print(f"killed: process 1 SIGKILLed after checkpoint {kill['checkpoints'][-1]} (logged up to step "
          f"{kill['last_logged_step']}); process 0 {kill['process_0_end']} (exit {kill['process_0_exit']})", flush=True)
    run("resumed", 1, 4, args.mesh_resume)

    runs = {name: read_run(work / name) for name in ("two", "one", "resumed")}
    resumed_from = kill["checkpoints"][-1]
    two_vs_one, n1 = max_diff(runs["two"]["loss"], runs["one"]["loss"])
    two_vs_one_val, _ = max_diff(runs["two"]["val_loss"], runs["one"]["val_loss"], after=-1)
    killed_vs_one, n2 = max_diff(before["loss"], runs["one"]["loss"])
    resumed_vs_one, n3 = max_diff(runs["resumed"]["loss"], runs["one"]["loss"], after=resumed_from)
    resumed_vs_one_val, _ = max_diff(runs["resumed"]["val_loss"], runs["one"]["val_loss"], after=resumed_from)
    summary = runs["resumed"]["summary"] or {}
    results.update({
        "loss": {name: run_["loss"] for name, run_ in runs.items()},
        "val_loss": {name: run_["val_loss"] for name, run_ in runs.items()},
        "resumed_from_step": resumed_from,
        "two_vs_one_loss_max_abs_diff": two_vs_one, "two_vs_one_steps_compared": n1,
        "two_vs_one_val_loss_max_abs_diff": two_vs_one_val,
        "killed_vs_one_loss_max_abs_diff": killed_vs_one, "killed_vs_one_steps_compared": n2,
        "resumed_vs_one_loss_max_abs_diff": resumed_vs_one, "resumed_vs_one_steps_compared": n3,
        "resumed_vs_one_val_loss_max_abs_diff": resumed_vs_one_val,
        "two_summary_processes": (runs["two"]["summary"] or {}).get("processes"),
        "resumed_summary_processes": summary.get("processes"),
    })
    sharded = any("process_1" in f for f in results["two_process_checkpoint_files"])
    results["checkpoint_has_process_1_files"] = sharded
    results["ok"] = bool(
        all(results["runs"][n]["exit"] == [0] * results["runs"][n]["processes"] for n in ("two", "one", "resumed"))
        and results["two_summary_processes"] == 2 and n1 == args.steps and two_vs_one <= args.tol
        and two_vs_one_val <= args.tol and killed_vs_one <= args.tol
        and kill["process_1_exit"] == -signal.SIGKILL and not kill["summary_written"]
        and resumed_from < args.steps and n3 == args.steps - resumed_from and resumed_vs_one <= args.tol
        and resumed_vs_one_val <= args.tol)
    print(f"two vs one process: loss max diff {two_vs_one:.2e} over {n1} steps (val {two_vs_one_val:.2e}); "
          f"resumed on {args.mesh_resume} from step {resumed_from} vs one: {resumed_vs_one:.2e} over {n3} steps "
          f"(val {resumed_vs_one_val:.2e}); {'ok' if results['ok'] else 'MISS'}", flush=True)
    if args.out:
        nets.atomic_write_json(args.out, results)
        print(f"wrote {args.out}")
    return 0 if results["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
