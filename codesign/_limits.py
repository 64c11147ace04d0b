"""Size limits of a training run, checked before anything is allocated.

A config or option can name sizes no machine holds (d_model 10**9, batch 10**12, steps
10**23); each would fail deep in XLA with an out-of-memory traceback, or never end. Before a
`Trainer` allocates, `check_train_limits` bounds:

- counters: steps, log_every, eval_every, ckpt_every, warmup_steps and eval_batches below 2**31
  (the step is an int32 on device);
- memory: a coarse estimate, parameters plus gradients plus two AdamW moments (16 bytes a
  parameter) plus the logits and per-layer activations of one batch (float32), must fit
  the memory of the host (CPU) or of one accelerator. The estimate errs low, so a refusal
  is certain; a run that passes can still be too large.

Each refusal is an `InputError` naming the field, its value and the limit.
"""

from __future__ import annotations

import os
from typing import Any

import nets

MAX_COUNTER = 2**31 - 1
_ACTIVATIONS_PER_LAYER = 8  # d_model-wide float32 tensors kept per layer and token for the backward pass


def device_memory_bytes() -> int:
    """Memory of one accelerator (its reported limit), or of the host for CPU."""
    import jax

    device = jax.devices()[0]
    if device.platform != "cpu":
        try:
            stats = device.memory_stats() or {}
            if stats.get("bytes_limit"):
                return int(stats["bytes_limit"])
        except Exception:  # backends without memory_stats: fall back to the host's memory
            pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def train_bytes(cfg: nets.ModelConfig, batch: int, seq_len: int) -> int:
    """Lower estimate of the bytes one training step holds (module docstring)."""
    params = nets.count_params(cfg).total
    tokens = batch * seq_len
    return 16 * params + 4 * tokens * (cfg.vocab_size + _ACTIVATIONS_PER_LAYER * cfg.d_model * cfg.n_layers)


def check_train_limits(tc: Any, cfg: nets.ModelConfig) -> None:
    """Refuse a TrainConfig whose counters overflow or whose estimated memory exceeds the device's."""
    for name in ("steps", "log_every", "eval_every", "ckpt_every", "warmup_steps", "eval_batches", "batch", "seq_len"):
        value = getattr(tc, name)
        if value > MAX_COUNTER:
            nets.fail(name, value, f"must be at most {MAX_COUNTER}")
    need, have = train_bytes(cfg, tc.batch, tc.seq_len), device_memory_bytes()
    if need > have:
        nets.fail("model", tc.model, f"with batch={tc.batch}, seq_len={tc.seq_len} a training step needs at least "
                                     f"{need / 2**30:.3g} GiB; this device has {have / 2**30:.3g} GiB")
