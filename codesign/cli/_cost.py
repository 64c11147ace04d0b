"""`codesign cost` (a config's cost on a target) and `codesign reproduce` (a paper's numbers vs ours)."""

from __future__ import annotations

import json

import typer

import hwcost
from codesign.cli._options import mesh_option, parse_mesh


def _fmt(value, scale: float = 1.0, spec: str = ".4g", unit: str = "") -> str:
    return "not modelled" if value is None else f"{value * scale:{spec}}{unit}"


def cost(
    model: str = typer.Argument(..., help="A zoo name (see `codesign zoo`) or a JSON config path."),
    target: str = typer.Option("h800", "--target", "-t", help="Any hwcost target: " + ", ".join(hwcost.TARGETS)
                               + ", afd-<attention gpu>+<ffn gpu>, or a calibrated preset JSON written by "
                               "`codesign calibrate`."),
    phase: str = typer.Option("decode", help="prefill, decode or train."),
    batch: int = typer.Option(1, help="Sequences in the step (AFD targets: a multiple of 48)."),
    context: int = typer.Option(4096, help="Context length (tokens)."),
    gen_len: int = typer.Option(1, help="Generated tokens (decode averages the context over them)."),
    weight_bits: float = typer.Option(16.0, help="Weight precision (bits)."),
    kv_bits: float = typer.Option(16.0, help="KV-cache precision (bits)."),
    act_bits: float = typer.Option(16.0, help="Activation precision (bits)."),
    mesh: str = mesh_option("also print the step's cost split over that many GPUs of the target (GPU presets; "
                            "the batch is the global batch)"),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Per-operation time, FLOPs and bytes of MODEL on any target, and the totals (None: not modelled)."""
    cfg = hwcost.load_model(model)
    parallel = parse_mesh(mesh) if mesh else None
    scenario = hwcost.Scenario(phase=phase, batch=batch, context_len=context, gen_len=gen_len,
                               weight_bits=weight_bits, kv_bits=kv_bits, act_bits=act_bits)
    device = hwcost.get_target(target)
    report = hwcost.cost_report(cfg, device, scenario)
    if parallel is not None:
        report["parallel"] = hwcost.parallel.parallel_report(cfg, parallel, device, scenario)
    if as_json:
        print(json.dumps(report, indent=2))
        return
    print(f"{cfg.name} on {report['target']}: {phase}, batch {batch}, context {context}, "
          f"bits w/kv/act {weight_bits:g}/{kv_bits:g}/{act_bits:g}")
    print(f"{'op':<11} {'time us':>11} {'share':>6} {'FLOPs':>10} {'weights B':>10} {'KV B':>10} {'act B':>10} {'bound':>8}")
    for r in report["ops"]:
        time_us = "-" if r["latency_s"] is None else f"{r['latency_s'] * 1e6:.2f}"
        share = "-" if r["share"] is None else f"{r['share']:.1%}"
        print(f"{r['op']:<11} {time_us:>11} {share:>6} {r['flops']:>10.3e} "
              f"{r['bytes_weights']:>10.3e} {r['bytes_kv']:>10.3e} {r['bytes_activations']:>10.3e} {r['bound']:>8}")
    t = report["totals"]
    print(f"{'total':<11} {t['latency_s'] * 1e6:>11.2f} {'':>6} {t['flops']:>10.3e} {t['bytes_weights']:>10.3e} "
          f"{t['bytes_kv']:>10.3e} {t['bytes_activations']:>10.3e}")
    fits = {True: "fits", False: "does NOT fit", None: "capacity not modelled"}[t["fits_in_memory"]]
    print(f"latency {_fmt(t['latency_s'], 1e3, unit=' ms')}, {t['tokens_per_s']:.4g} tokens/s, "
          f"energy {_fmt(t['energy_j'], unit=' J')}"
          + ("" if t["energy_j"] is None else f" ({t['joules_per_token']:.3g} J/token)") + ", "
          f"dollars {_fmt(t['dollars_per_million_tokens'], unit=' USD/1M tokens')}, "
          f"memory {_fmt(t['memory_bytes'], 1e-9, unit=' GB')} ({fits}), area {_fmt(t['area_mm2'], unit=' mm^2')}")
    scalars = {k: v for k, v in report["breakdown"].items() if isinstance(v, float)}
    if scalars:
        print("breakdown: " + ", ".join(f"{k} {v:.4g}" for k, v in scalars.items()))
    if parallel is not None:
        par = report["parallel"]
        print(f"parallel {phase} step on {par['devices']} x {report['target']} ({mesh}; topology {par['topology']}): "
              f"{par['latency_s'] * 1e3:.4g} ms, {par['memory_bytes'] * 1e-9:.4g} GB per device, "
              f"{par['dollars']:.4g} USD")
        print("parts (ms): " + ", ".join(f"{k[:-2]} {v * 1e3:.4g}" for k, v in par["parts_s"].items() if v))


def reproduce(
    paper: str = typer.Argument(..., help="Paper to reproduce: " + ", ".join(sorted(hwcost.PAPERS)) + "."),
    as_json: bool = typer.Option(False, "--json", help='Print {"paper", "counts", "failed", "rows"} as JSON.'),
) -> None:
    """A paper's numbers beside ours with the relative error; exit status 1 if a counted row is out of tolerance.

    Identity rows (the paper's arithmetic on its own inputs) and reported rows (an inconsistent
    or absent paper number) are shown with their reason but neither counted nor gated. Each
    row names its tolerance rule (exact, printed digit, simulated, bound).
    """
    rows = hwcost.reproduce(paper)
    failed = [r for r in rows if r.failed]
    counted = [r for r in rows if r.kind == "counted"]
    counts = {"counted_ok": sum(r.ok for r in counted), "counted": len(counted),
              "identity": sum(r.kind == "identity" for r in rows), "reported": sum(r.kind == "reported" for r in rows)}
    if as_json:
        print(json.dumps({"paper": paper, "counts": counts, "failed": [r.name for r in failed],
                          "rows": [r.to_dict() for r in rows]}, indent=2))
    else:
        width = max(len(r.name) for r in rows)
        print(f"{'':<3} {'kind':<8} {'name':<{width}} {'paper':>11} {'ours':>11} {'rel_err':>8}  check")
        for r in rows:
            check = {"rel": f"rel<={r.tolerance:g}", "abs": f"abs<={r.tolerance:g}", "at_most": "ours<=paper",
                     "at_least": "ours>=paper"}[r.check]
            print(f"{'ok' if r.ok else 'BAD':<3} {r.kind:<8} {r.name:<{width}} {r.paper:>11.4g} {r.ours:>11.4g} "
                  f"{r.rel_error:>8.2%}  {check} ({r.rule or 'no rule'}) {r.unit}" + (f"  [{r.why}]" if r.why else ""))
        print(f"{paper}: {counts['counted_ok']}/{counts['counted']} counted rows within tolerance, "
              f"{counts['identity']} identity rows, {counts['reported']} reported-not-gated rows")
    if failed:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("cost")(cost)
    app.command("reproduce")(reproduce)
