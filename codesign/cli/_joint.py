"""`codesign run`, `codesign sweep` and `codesign verify`: the joint co-design job and its export."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from codesign.cli._options import (corpus_option, json_option, mesh_option, on_nonfinite_option, out_dir, out_option,
                                   parse_formats, parse_list, quiet_option, seed_option, target_option)

TARGETS_HELP = ("a hwcost target name or calibrated preset file (hwcost.target_names() lists them: GPU and TPU "
                "presets, afd, duplex, cambricon, spatten, xrnpe)")


METHOD_HELP = ("path: one continuation over the lambdas (one compiled joint step, each point warm-started from "
               "the previous one); independent: one joint run per lambda or budget from the pretrained network")


def run(
    method: str = typer.Option("path", help=METHOD_HELP),
    seed: int = seed_option(),
    out: Path = out_option("the run (default: a fresh runs/run-* folder, printed)"),
    quiet: bool = quiet_option(),
    as_json: bool = json_option(),
) -> None:
    """The main job: the default MFA + MoE model co-designed with the XR-NPE target along a path of four
    lambdas; every point exported (deployment file + checkpoint), the front marked against the seed spread."""
    from codesign.search._sweep import SweepConfig

    _sweep(SweepConfig(method=method, seed=seed), out_dir(out, "run"), quiet=quiet, as_json=as_json)


def sweep(
    model: str = typer.Option(None, help="Zoo name or ModelConfig JSON path [default: codesign-default]."),
    method: str = typer.Option(None, help=METHOD_HELP + " [default: path]"),
    recover_from: str = typer.Option(None, help="Path method: each point's recovery starts from the weights the path "
                                                "started from ('start': equal training budget per point) or from "
                                                "the path's network at that point ('path') [default: start]."),
    lams: str = typer.Option(None, help="Comma-separated lambda values (penalty form) [default: codesign run's]."),
    budgets: str = typer.Option("", help="Comma-separated cost budgets (constrained form; replaces --lams; "
                                         "needs --method independent)."),
    metric: str = typer.Option(None, help="latency, energy, dollars, edp or edap [default: edap]."),
    target: str = target_option("xrnpe", TARGETS_HELP),
    hardware: str = typer.Option(None, help="Comma-separated learnable hardware parameters of the target, '' for "
                                            "none [default: n_macs on xrnpe, none on other targets]."),
    formats: str = typer.Option(None, help="Per-layer weight formats searched, e.g. 'bf16,fp8_e4m3,mxfp4,posit(4,1)' "
                                           "[default: bf16,fp8_e4m3,mxfp4]."),
    kv_formats: str = typer.Option(None, help="Per-layer KV-cache formats searched, '' for none "
                                              "[default: bf16,fp8_e4m3,mxfp4]."),
    act_formats: str = typer.Option(None, help="Per-layer activation formats searched, '' for none [default: none]."),
    widths: bool = typer.Option(True, help="Search the kept FFN / expert hidden width of each layer."),
    pruning: str = typer.Option("", help="SpAtten cascade pruning keep ratios searched per layer: 'tokens', 'heads' "
                                         "or 'tokens,heads' (then no KV/activation formats are searched)."),
    pretrain_steps: int = typer.Option(None, help="Steps of plain training shared by every point (0: none)."),
    steps: int = typer.Option(None, help="Joint optimisation steps per point."),
    recovery_steps: int = typer.Option(None, help="Fine-tuning steps after hardening."),
    batch: int = typer.Option(None, help="Sequences per step."),
    seq_len: int = typer.Option(None, help="Bytes per sequence."),
    scenario_batch: int = typer.Option(None, help="Decode batch of the priced scenario [default: 64; AFD targets "
                                                  "need a multiple of their attention GPUs x micro-batches, e.g. 48]."),
    scenario_context: int = typer.Option(None, help="Context length of the priced scenario [default: 2048]."),
    seed: int = seed_option(),
    on_nonfinite: str = on_nonfinite_option(),
    mesh: str = mesh_option("the training mesh; data=* (the default) takes the devices the other axes leave"),
    corpus: str = corpus_option(),
    out: Path = out_option("the sweep (default: a fresh runs/sweep-* folder, printed)"),
    quiet: bool = quiet_option(),
    as_json: bool = json_option(),
) -> None:
    """A lambda (or budget) sweep: by default the gradient path over the lambdas; every point exported, the
    Pareto front, its hypervolume and the plot. Options left out take `codesign run`'s settings."""
    from codesign.search._sweep import SweepConfig

    given = {"model": model, "method": method, "recover_from": recover_from, "metric": metric, "pretrain_steps": pretrain_steps, "steps": steps,
             "recovery_steps": recovery_steps, "batch": batch, "seq_len": seq_len, "scenario_batch": scenario_batch,
             "scenario_context": scenario_context,
             "lams": None if lams is None else parse_list(lams, "lams", float),
             "hardware": None if hardware is None else parse_list(hardware, "hardware"),
             "formats": None if formats is None else parse_formats(formats, "formats"),
             "kv_formats": None if kv_formats is None else parse_formats(kv_formats, "kv_formats"),
             "act_formats": None if act_formats is None else parse_formats(act_formats, "act_formats")}
    kw = {k: v for k, v in given.items() if v is not None}
    if pruning:
        kw["pruning"] = parse_list(pruning, "pruning", choices=("tokens", "heads"))
        kw.setdefault("kv_formats", ())
        kw.setdefault("act_formats", ())
    if budgets:
        kw.update(budgets=parse_list(budgets, "budgets", float), lams=())
    sc = SweepConfig(**kw, target=target, search_ffn_width=widths, seed=seed, on_nonfinite=on_nonfinite, mesh=mesh,
                     corpus=corpus)
    _sweep(sc, out_dir(out, "sweep"), quiet=quiet, as_json=as_json)


def _sweep(sc, out: Path, *, quiet: bool, as_json: bool) -> None:
    from codesign.search._sweep import summary_table, sweep as run_sweep

    log = (lambda *_: None) if as_json else (lambda msg: print(msg, flush=True))
    how = (f"a path over {len(sc.points())} lambdas" if sc.method == "path"
           else f"{len(sc.points())} independent joint runs")
    log(f"codesign: {how} of {sc.model} against {sc.target} ({sc.metric}) -> {out}")
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
