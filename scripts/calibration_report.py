"""Predicted against measured kernel and step times: the GPU cost model's validation.

    PYTHONPATH=. python scripts/calibration_report.py results/kernels_h200.json --out-dir results/calibration
    ... --transfer-data results/cost_suite/kernels_<h100 file>.json --transfer-target h100-sxm
    PYTHONPATH=. python scripts/calibration_report.py results/kernels_h200_<new>.json \
        results/kernels_h200.json:gemm,gemm_fp8 ...        # several files of one GPU, merged (hwcost.merge_data)

Fits our software profile (efficiency curves and step composition, `hwcost.Software`) for
the target on the training split of the data file (`hwcost.calibrate`; a hash-chosen quarter
of the shape families of each kind, whole zoo models among them, is held out by rule before
the fit) and writes, into --out-dir:
  calibration_<target>.png   predicted vs measured time on log axes: the uncalibrated roofline
                             (hollow, must lie on or below the diagonal) and the calibrated model
                             (filled; held-out items outlined in black), coloured by kind;
  calibration_<target>.txt   the error table (MAPE by kind, train and held-out, and end to end);
  calibration_<target>.json  the same numbers, every item's measured and predicted times, and the fit;
  calibration_<target>_items.txt  per item: measured, roofline and calibrated times, the dominant roofline
                             term, the launch floor's share, the implied rates (the diagnosis of each kind);
  <target>-calibrated.json   the calibrated preset (`codesign cost --target` reads it).
With --transfer-data, the fitted profile also predicts another GPU's data file on that GPU's
datasheet hardware (`hwcost.transfer`), and the transfer errors are added to the table.
The fit runs on the CPU (no GPU needed); it prints where the data was measured and where it ran.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from hwcost import calibrate, format_errors, load_data, save_preset, transfer, transfer_errors  # noqa: E402

COLOURS = {"gemm": "tab:blue", "gemm_fp8": "tab:cyan", "attention": "tab:orange", "moe": "tab:green",
           "norm": "tab:gray", "ceiling": "tab:olive", "decode_step": "tab:red", "prefill_step": "tab:purple"}


def plot(data, report: dict, path: Path, title: str) -> None:
    measured = data.measured_s
    roof = np.asarray(report["roofline"]["predicted_s"])
    cal = np.asarray(report["calibrated"]["predicted_s"])
    kinds = np.asarray(data.kinds)
    fig, ax = plt.subplots(figsize=(7.5, 6.5))
    low, high = min(measured.min(), roof.min(), cal.min()) / 2, max(measured.max(), cal.max()) * 2
    ax.plot([low, high], [low, high], color="black", lw=0.8)
    ax.fill_between([low, high], [low / 1.1, high / 1.1], [low * 1.1, high * 1.1], color="black", alpha=0.07,
                    label="within 10%")
    for kind in sorted(set(data.kinds)):
        m = kinds == kind
        c = COLOURS.get(kind, "tab:brown")
        ax.scatter(measured[m], roof[m], s=22, facecolors="none", edgecolors=c, alpha=0.6)
        train, held = m & ~data.heldout, m & data.heldout
        ax.scatter(measured[train], cal[train], s=22, color=c, label=f"{kind} ({m.sum()})")
        ax.scatter(measured[held], cal[held], s=34, color=c, edgecolors="black", linewidths=1.0)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(low, high)
    ax.set_ylim(low, high)
    ax.set_xlabel("measured time [s]")
    ax.set_ylabel("predicted time [s]")
    e2e, ker = report["calibrated"]["end_to_end"], report["calibrated"]["kernels_heldout"]
    fmt = lambda v: "-" if v is None else f"{100 * v:.1f}%"  # noqa: E731
    ax.set_title(f"{title}\nheld-out MAPE: kernels {fmt(ker['mape'])}, end to end {fmt(e2e['mape'])}; "
                 "hollow = roofline, outlined = held out", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(True, which="both", lw=0.3, alpha=0.5)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)


def item_table(data, report: dict, device, software) -> str:
    """Per item: measured and predicted times, the roofline's compute and memory terms, the fitted launch share.

    The diagnosis of each kind's error: which term dominates (compute, memory or the launch
    floor), the rates the measurement implies, and for an FP8 or other non-bf16 GEMM its time
    over the bf16 GEMM's of the same shape where the data has one.
    """
    k, owner, n = data.kernels, data.item_of_row, len(data.ids)
    launches = k["launches"] * (k["copy"] == 0)
    flops = np.bincount(owner, weights=k["flops"] * launches, minlength=n)
    moved = np.bincount(owner, weights=k["bytes"] * launches, minlength=n)
    spf = np.asarray(device.seconds_per_flop(jnp.asarray(k["bits"], jnp.float32)))
    t_compute = np.bincount(owner, weights=k["flops"] * spf * launches, minlength=n)
    t_memory = moved / float(device.mem_bandwidth)
    eff = software.efficiency
    launch = np.asarray(eff.launch_s)[k["group"].astype(int)] if eff is not None else np.zeros_like(k["flops"])
    t_launch = np.bincount(owner, weights=launch * launches, minlength=n)
    roof, cal = np.asarray(report["roofline"]["predicted_s"]), np.asarray(report["calibrated"]["predicted_s"])
    bf16 = {i.split("/", 2)[2]: m for i, m in zip(data.ids, data.measured_s) if i.startswith("gemm/bf16/")}
    lines = [f"{'item':<72} {'split':<5} {'meas us':>9} {'roof us':>8} {'calib us':>9} {'err':>7} {'bound':>7} "
             f"{'launch':>6} {'TFLOP/s':>8} {'TB/s':>6} {'/bf16':>6}"]
    for i in np.argsort([f"{kind}/{id_}" for kind, id_ in zip(data.kinds, data.ids)]):
        m = data.measured_s[i]
        bound = "compute" if t_compute[i] >= t_memory[i] else "memory"
        ratio = bf16.get(data.ids[i].split("/", 2)[-1]) if data.ids[i].startswith("gemm/") else None
        lines.append(f"{data.ids[i][:72]:<72} {'held' if data.heldout[i] else 'train':<5} {m * 1e6:>9.1f} "
                     f"{roof[i] * 1e6:>8.1f} {cal[i] * 1e6:>9.1f} {100 * (cal[i] / m - 1):>+6.1f}% {bound:>7} "
                     f"{100 * t_launch[i] / cal[i]:>5.0f}% {flops[i] / m / 1e12:>8.1f} {moved[i] / m / 1e12:>6.2f} "
                     f"{'' if ratio is None or data.ids[i].startswith('gemm/bf16/') else f'{m / ratio:.2f}':>6}")
    return "\n".join(lines)


def _source(parts: list[str]):
    """load_data's source: one file as given, several (or a PATH:KINDS part) merged."""
    return parts[0] if len(parts) == 1 and Path(parts[0]).is_file() else list(parts)


def _names(parts: list[str]) -> str:
    return " + ".join(Path(p).name for p in parts)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", nargs="+", help="kernel data file(s) of one GPU (scripts/bench/cost_suite.py); "
                        "several are merged (hwcost.merge_data), PATH:KIND,KIND takes only those kinds of a file")
    parser.add_argument("--target", default="h200", help="base GPU preset")
    parser.add_argument("--out-dir", type=Path, default=Path("results/calibration"))
    parser.add_argument("--steps", type=int, default=3000, help="Adam steps of the fit")
    parser.add_argument("--transfer-data", nargs="+", default=None, help="another GPU's data file(s), as for data: "
                        "predict it with the profile fitted here on that GPU's datasheet hardware "
                        "(nothing fitted to it)")
    parser.add_argument("--transfer-target", default="h100-sxm", help="the other GPU's preset (with --transfer-data)")
    args = parser.parse_args(argv)
    data = load_data(_source(args.data))
    device, report = calibrate(data, args.target, steps=args.steps)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"calibration_{args.target}"
    where = f"{jax.devices()[0].device_kind} ({platform.node()})"
    measured_on = data.device.get("kind", "?")
    plot(data, report, args.out_dir / f"{stem}.png", f"{args.target} cost model vs {measured_on} ({_names(args.data)})")
    table = format_errors(report)
    header = (f"data {' + '.join(args.data)} measured on {measured_on} (jax {data.device.get('jax', '?')}); "
              f"fit on {where}; "
              f"{report['fit']['train_items']} training items, loss {report['fit']['loss'][0]:.3g} -> "
              f"{report['fit']['loss'][1]:.3g}")
    items = [{"id": i, "kind": k, "heldout": bool(h), "measured_s": float(m), "roofline_s": r, "calibrated_s": c}
             for i, k, h, m, r, c in zip(data.ids, data.kinds, data.heldout, data.measured_s,
                                         report["roofline"]["predicted_s"], report["calibrated"]["predicted_s"])]
    summary = {k: v for k, v in report.items() if k not in ("calibrated", "roofline", "heldout_ids")}
    summary["errors"] = {s: {k: v for k, v in report[s].items() if k != "predicted_s"} for s in ("calibrated", "roofline")}
    summary.update(fit_ran_on=where, items=items, software=device.software.to_dict())
    if args.transfer_data is not None:
        other = transfer(device, args.transfer_target)
        moved_data = load_data(_source(args.transfer_data))
        errors = transfer_errors(other, moved_data)
        moved = format_errors({"calibrated": errors["calibrated"], "roofline": errors["roofline"]})
        table += (f"\n\ntransfer: the profile fitted on {args.target} data, on {args.transfer_target}'s datasheet "
                  f"hardware, against {' + '.join(args.transfer_data)} (every item held out; nothing fitted to it)"
                  f"\n{moved}")
        moved_data = dataclasses.replace(moved_data, heldout=np.asarray([k != "ceiling" for k in moved_data.kinds]))
        (args.out_dir / f"transfer_{args.transfer_target}_items.txt").write_text(
            f"the {args.target}-fitted profile on {args.transfer_target}'s datasheet against "
            f"{' + '.join(args.transfer_data)} "
            "(every item held out; columns as in the _items.txt of the fit)\n"
            + item_table(moved_data, errors, other.device, other.software) + "\n")
        summary["transfer"] = {"target": args.transfer_target, "data": " + ".join(args.transfer_data),
                               **{s: {k: v for k, v in errors[s].items() if k != "predicted_s"} for s in errors}}
    (args.out_dir / f"{stem}.txt").write_text(header + "\n" + table + "\n")
    (args.out_dir / f"{stem}_items.txt").write_text(
        f"{header}\nbound: the larger roofline term; launch: the fitted launch floor's share of the calibrated time; "
        "TFLOP/s, TB/s: the workload's counts over the measured time; /bf16: measured over the bf16 GEMM of the "
        "same shape\n" + item_table(data, report, device.device, device.software) + "\n")
    (args.out_dir / f"{stem}.json").write_text(json.dumps(summary, indent=1))
    preset = save_preset(device, args.out_dir / f"{device.name}.json", report)
    print(header)
    print(table)
    print(f"wrote {args.out_dir}/{stem}.png, .txt, _items.txt, .json and {preset}")


if __name__ == "__main__":
    main()
