"""`codesign train`: plain training of a config on the embedded byte corpus (no cost term)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from codesign.cli._options import (corpus_option, json_option, mesh_option, on_nonfinite_option, out_dir, out_option,
                                   quiet_option, seed_option)


def train(
    model: str = typer.Option("codesign-default", help="Zoo name or path to a ModelConfig JSON file."),
    steps: int = typer.Option(300, help="Optimiser steps."),
    batch: int = typer.Option(16, help="Global batch (sequences per step; a multiple of the device count)."),
    seq_len: int = typer.Option(128, help="Tokens (bytes) per sequence."),
    lr: float = typer.Option(3e-3, help="Peak learning rate (AdamW, warm-up then cosine decay)."),
    seed: int = seed_option(),
    dtype: str = typer.Option("auto", help="Compute dtype: auto (bfloat16 on GPU/TPU, float32 on CPU), float32 "
                                                  "or bfloat16; parameters and optimiser state stay float32."),
    eval_every: int = typer.Option(100, help="Steps between validation evaluations."),
    log_every: int = typer.Option(10, help="Steps between lines of metrics.jsonl (training loss, throughput)."),
    ckpt_every: int = typer.Option(100, help="Steps between checkpoints."),
    out: Path = out_option("the run (default: a fresh runs/train-* folder); an existing checkpoint there is "
                           "resumed exactly"),
    no_resume: bool = typer.Option(False, "--no-resume", help="Ignore checkpoints in --out."),
    on_nonfinite: str = on_nonfinite_option(),
    mesh: str = mesh_option("the training mesh; data=* (the default) takes the devices the other axes leave"),
    remat: str = typer.Option("none", help="What the backward pass keeps of each layer: none (everything; fastest), "
                                           "dots (the weight matmuls' outputs) or full (only the layer's input)."),
    attention: str = typer.Option("auto", help="Attention kernel: auto (cuDNN on a GPU where it applies, else the "
                                               "einsum reference; CODESIGN_ATTENTION overrides), einsum, xla or cudnn."),
    corpus: str = corpus_option(),
    quiet: bool = quiet_option(),
    as_json: bool = json_option(),
) -> None:
    """Train a model config on the embedded byte corpus (no cost term)."""
    from codesign.training._trainer import TrainConfig
    from codesign.parallel import initialize_distributed

    if initialize_distributed() and out is None:  # several processes: join them before any JAX work
        from nets import fail

        fail("--out", None, "must be given when several processes train together (they share one run folder)")
    tc = TrainConfig(model=model, steps=steps, batch=batch, seq_len=seq_len, lr=lr, seed=seed, dtype=dtype,
                     warmup_steps=min(20, steps // 10), log_every=log_every,
                     eval_every=eval_every, ckpt_every=ckpt_every, on_nonfinite=on_nonfinite, mesh=mesh,
                     remat=remat, attention=attention, corpus=corpus)
    _run(tc, out_dir(out, "train"), resume=not no_resume, quiet=quiet, as_json=as_json)


def _run(tc, out: Path, *, resume: bool, quiet: bool, as_json: bool) -> None:
    import contextlib

    import jax

    primary = jax.process_index() == 0  # several processes: the first one locks the folder, prints and reports
    quiet = quiet or not primary
    if not as_json and primary:
        print(f"codesign: training {tc.model} for {tc.steps} steps -> {out}")
    from codesign.training._trainer import NonFiniteError, train as train_model

    from codesign._lock import output_lock

    try:
        with output_lock(out) if primary else contextlib.nullcontext():  # a second command here refuses (exit 2)
            result = train_model(tc, out, resume=resume, progress=not quiet)
    except NonFiniteError as err:
        print(f"codesign: error: {err}", file=sys.stderr)
        sys.exit(3)
    if not primary:
        return
    summary = json.loads((result.out_dir / "summary.json").read_text())
    if as_json:
        print(json.dumps(summary, indent=2, sort_keys=True))
        return
    print(f"{'model':<22}{summary['model']}")
    print(f"{'validation loss':<22}{summary['first_val_loss']:.4f} -> {summary['final_val_loss']:.4f} nats/byte")
    print(f"{'throughput':<22}{summary['tokens_per_s_median']:.0f} tokens/s on {summary['devices']} "
          f"{summary['backend']} device(s)")
    print(f"{'outputs':<22}{out}/ (metrics.jsonl, checkpoints/, summary.json, config.json)")


def register(app: typer.Typer) -> None:
    app.command("train")(train)
