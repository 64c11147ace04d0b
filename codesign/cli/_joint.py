"""`codesign run`, `codesign sweep` and `codesign verify`: the joint co-design job and its export."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import typer

from codesign.cli._options import (json_option, mesh_option, on_nonfinite_option, out_dir, out_option, parse_list,
                                   quiet_option, seed_option, target_option)

TARGETS_HELP = ("a hwcost target name or calibrated preset file (hwcost.target_names() lists them: GPU and TPU "
                "presets, afd, duplex, cambricon, spatten, xrnpe)")


def run(
    out: Path = out_option("the run (default: a fresh runs/run-* folder, printed)"),
    quiet: bool = quiet_option(),
    as_json: bool = json_option(),
) -> None:
    """The main job: the default MFA + MoE model co-designed with the XR-NPE target for four lambdas."""
    from codesign.search._sweep import SweepConfig

    _sweep(SweepConfig(), out_dir(out, "run"), quiet=quiet, as_json=as_json)


def sweep(
    model: str = typer.Option("codesign-default", help="Zoo name or ModelConfig JSON path."),
    lams: str = typer.Option("0,0.01,0.03,0.1", help="Comma-separated lambda values (penalty form)."),
    budgets: str = typer.Option("", help="Comma-separated cost budgets (constrained form; replaces --lams)."),
    metric: str = typer.Option("edap", help="latency, energy, dollars, edp or edap."),
    target: str = target_option("xrnpe", TARGETS_HELP),
    hardware: str = typer.Option("n_macs", help="Comma-separated learnable hardware parameters ('' for none)."),
    pretrain_steps: int = typer.Option(150, help="Steps of plain training shared by every point (0: none)."),
    steps: int = typer.Option(40, help="Joint optimisation steps per point."),
    recovery_steps: int = typer.Option(10, help="Fine-tuning steps after hardening."),
    batch: int = typer.Option(16, help="Sequences per step."),
    seq_len: int = typer.Option(64, help="Bytes per sequence."),
    seed: int = seed_option(),
    on_nonfinite: str = on_nonfinite_option(),
    mesh: str = mesh_option("the training mesh; data=* (the default) takes the devices the other axes leave"),
    out: Path = out_option("the sweep (default: a fresh runs/sweep-* folder, printed)"),
    quiet: bool = quiet_option(),
    as_json: bool = json_option(),
) -> None:
    """A lambda (or budget) sweep: one joint run per point, the Pareto front, its hypervolume and the plot."""
    from codesign.search._sweep import SweepConfig

    sc = SweepConfig(model=model, lams=parse_list(lams, "lams", float) if not budgets else (),
                     budgets=parse_list(budgets, "budgets", float), metric=metric, target=target,
                     hardware=parse_list(hardware, "hardware"), pretrain_steps=pretrain_steps, steps=steps,
                     recovery_steps=recovery_steps, batch=batch, seq_len=seq_len, seed=seed,
                     on_nonfinite=on_nonfinite, mesh=mesh)
    _sweep(sc, out_dir(out, "sweep"), quiet=quiet, as_json=as_json)


def _sweep(sc, out: Path, *, quiet: bool, as_json: bool) -> None:
    from codesign.search._sweep import summary_table, sweep as run_sweep

    log = (lambda *_: None) if as_json else (lambda msg: print(msg, flush=True))
    log(f"codesign: {len(sc.points())} joint runs of {sc.model} against {sc.target} ({sc.metric}) -> {out}")
    from codesign.training._trainer import NonFiniteError

    from codesign._lock import output_lock

    try:
        with output_lock(out):  # a second command writing here refuses (exit 2)
            result = run_sweep(sc, out, progress=not quiet and not as_json, log=log)
    except NonFiniteError as err:
        print(f"codesign: error: {err}", file=sys.stderr)
        sys.exit(3)
    if as_json:
        print(json.dumps(json.loads((out / "summary.json").read_text()), indent=2, sort_keys=True))
        return
    print(summary_table(result))
    print(f"outputs: {out}/ (metrics.jsonl, point-*/checkpoints, pareto.png, front.json, deployment.json); "
          f"{result.seconds:.0f} s")


def verify(
    deployment: Path = typer.Argument(..., help="A deployment.json written by codesign run / sweep."),
    as_json: bool = json_option(),
) -> None:
    """Rebuild a deployment from its file and checkpoint; exit 1 if its loss or cost no longer holds, exit 2 if the
    file or its checkpoint was modified after export (SHA-256 digests recorded in the file)."""
    from codesign.joint._deploy import verify_deployment

    checks = verify_deployment(deployment)
    ok = all(c.ok for c in checks)
    if as_json:
        print(json.dumps({"ok": ok, "checks": [c.to_dict() for c in checks]}, indent=2))
    else:
        for c in checks:
            print(f"{'ok ' if c.ok else 'BAD'} {c.name:<22} recorded {c.recorded:<14.8g} measured {c.measured:<14.8g}"
                  f" (rtol {c.rtol:g})")
        print(f"codesign: {deployment}: {'verified' if ok else 'MISMATCH'}")
    if not ok:
        sys.exit(1)


def register(app: typer.Typer) -> None:
    app.command("run")(run)
    app.command("sweep")(sweep)
    app.command("verify")(verify)
