"""`codesign cost` (a config's cost on a target) and `codesign reproduce` (a paper's numbers vs ours)."""

from __future__ import annotations

import json

import typer

import hwcost
from hwcost._calibrate import load_target
from hwcost._report import cost_report, load_model


def cost(
    model: str = typer.Argument(..., help="A zoo name (see `codesign zoo`) or a JSON config path."),
    target: str = typer.Option("h800", "--target", "-t", help=f"GPU preset ({', '.join(hwcost.PRESETS)}) or a calibrated "
                                                       "preset JSON written by `codesign calibrate`."),
    phase: str = typer.Option("decode", help="prefill, decode or train."),
    batch: int = typer.Option(1, help="Sequences in the step."),
    context: int = typer.Option(4096, help="Context length (tokens)."),
    gen_len: int = typer.Option(1, help="Generated tokens (decode averages the context over them)."),
    weight_bits: float = typer.Option(16.0, help="Weight precision (bits)."),
    kv_bits: float = typer.Option(16.0, help="KV-cache precision (bits)."),
    act_bits: float = typer.Option(16.0, help="Activation precision (bits)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Per-operation time, FLOPs and bytes of MODEL on a GPU target, and the totals."""
    cfg = load_model(model)
    scenario = hwcost.Scenario(phase=phase, batch=batch, context_len=context, gen_len=gen_len,
                               weight_bits=weight_bits, kv_bits=kv_bits, act_bits=act_bits)
    report = cost_report(cfg, load_target(target), scenario)
    if as_json:
        print(json.dumps(report, indent=2))
        return
    print(f"{cfg.name} on {report['target']}: {phase}, batch {batch}, context {context}, "
          f"bits w/kv/act {weight_bits:g}/{kv_bits:g}/{act_bits:g}")
    print(f"{'op':<11} {'time us':>11} {'share':>6} {'FLOPs':>10} {'weights B':>10} {'KV B':>10} {'act B':>10} {'bound':>8}")
    for r in report["ops"]:
        print(f"{r['op']:<11} {r['latency_s'] * 1e6:>11.2f} {r['share']:>6.1%} {r['flops']:>10.3e} "
              f"{r['bytes_weights']:>10.3e} {r['bytes_kv']:>10.3e} {r['bytes_activations']:>10.3e} {r['bound']:>8}")
    t = report["totals"]
    print(f"{'total':<11} {t['latency_s'] * 1e6:>11.2f} {'':>6} {t['flops']:>10.3e} {t['bytes_weights']:>10.3e} "
          f"{t['bytes_kv']:>10.3e} {t['bytes_activations']:>10.3e}")
    print(f"latency {t['latency_s'] * 1e3:.4g} ms, {t['tokens_per_s']:.4g} tokens/s, energy {t['energy_j']:.4g} J "
          f"({t['joules_per_token']:.3g} J/token), {t['dollars_per_million_tokens']:.4g} USD/1M tokens, "
          f"memory {t['memory_bytes'] / 1e9:.4g} GB ({'fits' if t['fits_in_memory'] else 'does NOT fit'})")
    print("network bytes (AFD hidden-state traffic) are not charged to a single GPU")


def reproduce(
    paper: str = typer.Argument(..., help="Paper to reproduce: " + ", ".join(sorted(hwcost.PAPERS)) + "."),
    as_json: bool = typer.Option(False, "--json", help='Print {"rows": [...]} as JSON.'),
) -> None:
    """A paper's numbers beside ours with the relative error; exit status 1 if any is out of tolerance."""
    rows = hwcost.reproduce(paper)
    failed = [r for r in rows if not r.ok]
    if as_json:
        print(json.dumps({"paper": paper, "rows": [r.to_dict() for r in rows]}, indent=2))
    else:
        width = max(len(r.name) for r in rows)
        print(f"{'':<3} {'name':<{width}} {'paper':>11} {'ours':>11} {'rel_err':>8}  check")
        for r in rows:
            check = {"rel": f"rel<={r.tolerance:g}", "abs": f"abs<={r.tolerance:g}", "at_most": "ours<=paper",
                     "at_least": "ours>=paper"}[r.check]
            print(f"{'ok' if r.ok else 'BAD':<3} {r.name:<{width}} {r.paper:>11.4g} {r.ours:>11.4g} "
                  f"{r.rel_error:>8.2%}  {check} {r.unit}")
        print(f"{len(rows) - len(failed)}/{len(rows)} rows within tolerance")
    if failed:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("cost")(cost)
    app.command("reproduce")(reproduce)
