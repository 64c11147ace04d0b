"""`codesign calibrate`: fit a GPU target's efficiency curves to measured kernel times."""

from __future__ import annotations

import json
from pathlib import Path

import typer

import hwcost
from codesign._phase import phase
from codesign.cli._options import json_option, out_option, target_option


def calibrate(
    data: Path = typer.Argument(..., help="Kernel data file from scripts/bench/kernels.py (JSON)."),
    target: str = target_option("h200", f"the base GPU preset ({', '.join(hwcost.PRESETS)})"),
    out: Path = out_option("the calibrated preset (default: runs/calibrate/TARGET-calibrated.json); "
                           "`codesign cost --target OUT` reads it"),
    steps: int = typer.Option(3000, help="Adam steps of the fit."),
    as_json: bool = json_option(),
) -> None:
    """Fit TARGET's efficiency curves to DATA's training split; print held-out errors; write the preset."""
    from codesign._lock import output_lock

    kernels = hwcost.load_data(data)  # a bad file fails before anything is written
    out = Path(out) if out else Path("runs/calibrate") / f"{hwcost.gpu(target).name}-calibrated.json"
    with output_lock(out.parent, f".{out.name}.lock"):  # one writer of this preset at a time
        with phase("fit"):
            device, report = hwcost.calibrate(kernels, target, steps=steps)
        with phase("file"):
            hwcost.save_preset(device, out, report)
    report["preset"] = str(out)
    if as_json:
        print(json.dumps({k: v for k, v in report.items() if k != "heldout_ids"} | {
            split: {k: v for k, v in report[split].items() if k != "predicted_s"} for split in ("calibrated", "roofline")},
            indent=2))
        return
    where = report["device"].get("kind", "?")
    print(f"calibrated {report['base']} on {data} (measured on {where}): {report['fit']['train_items']} training items, "
          f"loss {report['fit']['loss'][0]:.3g} -> {report['fit']['loss'][1]:.3g}")
    print(hwcost.format_errors(report))
    print(f"wrote {out}  (use: codesign cost MODEL --target {out})")


def register(app: typer.Typer) -> None:
    app.command("calibrate")(calibrate)
