"""codesign: joint accuracy/hardware-cost optimisation of LLMs (what joins nets and hwcost)."""

from codesign._train import TrainConfig, TrainResult, Trainer, resolve_model, train, training_flops_per_token

__all__ = ["TrainConfig", "TrainResult", "Trainer", "resolve_model", "train", "training_flops_per_token"]
