"""Training: the one training loop of the project, its checkpoints, metrics and output folders.

`Trainer` is the loop every trainer in codesign builds on (the joint trainer, hardening and
recovery, the pruning trainers, ATTS's draft/target models, the SpAtten pruning script): one
jitted step sharded over a device mesh (`codesign.parallel`; one or several processes), orbax
checkpoints with exact resume, metrics as JSON lines and a numerics guard. `train(TrainConfig, out)` is plain language-model
training of a `nets.ModelConfig` on the embedded byte corpus.
"""

from codesign.training._checkpoint import Checkpointer
from codesign.training._io import fresh_run_dir
from codesign.training._metrics import MetricsWriter, read_metrics
from codesign.training._trainer import (NonFiniteError, TrainConfig, TrainResult, Trainer, compute_dtype, init_guard,
                                        resolve_model, train, training_flops_per_token)

__all__ = [
    "TrainConfig", "TrainResult", "Trainer", "train", "NonFiniteError", "init_guard", "resolve_model",
    "training_flops_per_token", "compute_dtype", "Checkpointer", "MetricsWriter", "read_metrics", "fresh_run_dir",
]
