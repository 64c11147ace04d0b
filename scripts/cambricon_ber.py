"""Cambricon-LLM's on-die ECC on a real model: validation loss under flash bit errors.

    PYTHONPATH=. python scripts/cambricon_ber.py [--steps 300] [--ckpt RUN_DIR] [--granularity channel]
                                                 [--out-dir runs/cambricon_ber]

Trains `codesign-default` briefly on the embedded byte corpus (codesign.train) or restores the
checkpoint of a `codesign train` run directory, quantises every transformer-block weight matrix
to int8 (per output channel, or per matrix with --granularity tensor), then for each raw
bit-error rate injects flips (hwcost.inject_bit_flips, int8 stored as --encoding) with and
without the on-die ECC,
dequantises and measures the validation loss (mean over --seeds draws). The crossover rate of
each variant is the smallest BER whose loss exceeds the clean int8 loss by --tolerance nats.
Writes ber.json, ber_table.txt and ber.png to --out-dir.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from codesign import Checkpointer, TrainConfig, Trainer, train
from hwcost import dequantize, ecc_corruption, inject_bit_flips, quantize_int8

DEFAULT_BERS = (1e-7, 1e-6, 1e-5, 1e-4, 2e-4, 5e-4, 1e-3, 3e-3, 1e-2, 2e-2, 5e-2)


def _is_block_matrix(path, leaf) -> bool:
    return "segments" in jax.tree_util.keystr(path) and jnp.ndim(leaf) >= 3


def ber_experiment(trainer: Trainer, bers, seeds: int, per_channel: bool, tolerance: float,
                   page_weights: int = 16384, encoding: str = "twos") -> dict:
    """Validation loss per BER with and without protection; crossover rates (see module docstring)."""
    params = trainer.params
    paths_leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    treedef = jax.tree_util.tree_structure(params)
    block = [i for i, (p, leaf) in enumerate(paths_leaves) if _is_block_matrix(p, leaf)]
    quantised = {i: quantize_int8(paths_leaves[i][1], per_channel=per_channel) for i in block}
    leaves = [leaf for _, leaf in paths_leaves]

    # the weights are arguments, never closed over: XLA would constant-fold top_k over them
    q_list = [quantised[i][0] for i in block]
    s_list = [quantised[i][1] for i in block]

    def rebuild(dequantised, all_leaves):
        new = list(all_leaves)
        for j, i in enumerate(block):
            new[i] = dequantised[j].astype(all_leaves[i].dtype)
        return jax.tree_util.tree_unflatten(treedef, new)

    @jax.jit
    def clean_int8(qs, scales, all_leaves):
        return rebuild([dequantize(q, s) for q, s in zip(qs, scales)], all_leaves)

    def corrupt(protect):
        @jax.jit
        def run(key, ber, qs, scales, all_leaves):
            flipped = [inject_bit_flips(jax.random.fold_in(key, j), q, ber, protect=protect, page_weights=page_weights,
                                        encoding=encoding)
                       for j, q in enumerate(qs)]
            return rebuild([dequantize(f, s) for f, s in zip(flipped, scales)], all_leaves)
        return run

    float_loss = trainer.evaluate(params)
    int8_loss = trainer.evaluate(clean_int8(q_list, s_list, leaves))
    runs = {False: corrupt(False), True: corrupt(True)}
    rows = []
    for ber in bers:
        row = {"ber": float(ber)}
        for protect, name in ((False, "unprotected"), (True, "protected")):
            losses = [trainer.evaluate(runs[protect](jax.random.key(1000 * seed + 17), jnp.asarray(ber, jnp.float32), q_list,
                                                      s_list, leaves)) for seed in range(seeds)]
            row[f"{name}_loss"] = float(np.mean(losses))
            row[f"{name}_loss_std"] = float(np.std(losses))
        analytic = ecc_corruption(ber)
        row["changed_unprotected"] = float(analytic["changed_unprotected"])
        row["changed_protected"] = float(analytic["changed_protected"])
        rows.append(row)
        print(f"BER {ber:8.1e}: unprotected {row['unprotected_loss']:.4f}  protected {row['protected_loss']:.4f}",
              flush=True)

    def crossover(name):
        over = [r["ber"] for r in rows if r[f"{name}_loss"] > int8_loss + tolerance]
        return min(over) if over else None
    n_weights = int(sum(np.size(quantised[i][0]) for i in block))
    return {"float_loss": float_loss, "int8_loss": int8_loss, "rows": rows, "tolerance_nats": tolerance,
            "crossover_unprotected": crossover("unprotected"), "crossover_protected": crossover("protected"),
            "block_weights_int8": n_weights, "granularity": "channel" if per_channel else "tensor",
            "seeds": seeds, "page_weights": page_weights, "encoding": encoding}


def format_table(result: dict) -> str:
    lines = [f"codesign-default, {result['block_weights_int8']:,} int8 block weights ({result['granularity']} scales, "
             f"{result['encoding']} storage); "
             f"float loss {result['float_loss']:.4f}, clean int8 loss {result['int8_loss']:.4f} nats",
             f"{'BER':>9} {'unprotected':>12} {'protected':>10} {'changed w/o':>12} {'changed w/':>11}"]
    for r in result["rows"]:
        lines.append(f"{r['ber']:>9.1e} {r['unprotected_loss']:>12.4f} {r['protected_loss']:>10.4f} "
                     f"{r['changed_unprotected']:>12.2e} {r['changed_protected']:>11.2e}")
    fmt = lambda x: "none in range" if x is None else f"{x:.1e}"  # noqa: E731
    lines.append(f"crossover (loss > clean + {result['tolerance_nats']} nats): unprotected at BER "
                 f"{fmt(result['crossover_unprotected'])}, protected at BER {fmt(result['crossover_protected'])}")
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    bers = [r["ber"] for r in result["rows"]]
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, style in (("unprotected", "o-"), ("protected", "s-")):
        ax.errorbar(bers, [r[f"{name}_loss"] for r in result["rows"]], yerr=[r[f"{name}_loss_std"] for r in
                    result["rows"]], fmt=style, label=f"int8, {name}", capsize=2)
    ax.axhline(result["int8_loss"], color="gray", ls="--", label="int8, no errors")
    ax.axhline(result["int8_loss"] + result["tolerance_nats"], color="gray", ls=":", label="crossover threshold")
    ax.set_xscale("log")
    ax.set_xlabel("raw bit-error rate")
    ax.set_ylabel("validation loss [nats/byte]")
    ax.set_title("Cambricon-LLM on-die ECC, codesign-default")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=300, help="training steps (ignored with --ckpt)")
    ap.add_argument("--ckpt", type=str, default=None, help="a codesign train run directory to restore")
    ap.add_argument("--bers", type=float, nargs="+", default=list(DEFAULT_BERS))
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--granularity", choices=("channel", "tensor"), default="channel")
    ap.add_argument("--encoding", choices=("twos", "sign_magnitude"), default="twos")
    ap.add_argument("--tolerance", type=float, default=0.01, help="nats above the clean int8 loss")
    ap.add_argument("--out-dir", type=str, default="runs/cambricon_ber")
    args = ap.parse_args()
    if args.seeds < 1:
        raise ValueError(f"seeds={args.seeds}: must be a positive integer")
    if not all(0 <= b <= 0.5 for b in args.bers):
        raise ValueError(f"bers={args.bers}: each must be a bit-error rate in [0, 0.5]")
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    print(f"running on {jax.default_backend()} ({jax.device_count()} x {jax.devices()[0].device_kind}), "
          f"host {platform.node()}", flush=True)
    start = time.perf_counter()
    tc = TrainConfig(model="codesign-default", steps=max(args.steps, 2), warmup_steps=min(20, max(args.steps, 2) - 1),
                     eval_every=max(args.steps, 2), ckpt_every=max(args.steps, 2))
    trainer = Trainer(tc)
    if args.ckpt:
        ckpt = Checkpointer(Path(args.ckpt) / "checkpoints")
        step = ckpt.latest_step()
        if step is None:
            raise ValueError(f"ckpt={args.ckpt!r}: no checkpoint under {args.ckpt}/checkpoints")
        trainer.params = ckpt.restore(step, trainer.state())["params"]
        ckpt.close()
        source = f"checkpoint {args.ckpt} step {step}"
    else:
        train(tc, out / "train", resume=False, progress=False, trainer=trainer)
        source = f"trained {tc.steps} steps"
    result = ber_experiment(trainer, args.bers, args.seeds, args.granularity == "channel", args.tolerance,
                            encoding=args.encoding)
    result.update(model_source=source, backend=jax.default_backend(), device=str(jax.devices()[0]),
                  host=platform.node(), seconds=time.perf_counter() - start)
    table = format_table(result)
    print(table)
    (out / "ber.json").write_text(json.dumps(result, indent=2))
    (out / "ber_table.txt").write_text(table + "\n")
    plot(result, out / "ber.png")
    print(f"wrote {out / 'ber.json'}, {out / 'ber_table.txt'}, {out / 'ber.png'} ({result['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
