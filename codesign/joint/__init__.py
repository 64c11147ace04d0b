"""The joint loop: the design space, the accuracy-cost objective, targets, and hardening for deployment.

`DesignSpace` (per-layer formats and FFN widths) and `PruningSpace` (SpAtten keep ratios on
top) are the knobs the network and the workload both read; `JointTrainer` moves weights,
knobs and learnable hardware parameters in one jitted step; `harden_and_recover` fixes the
choices, fine-tunes and prices the result, and `write_deployment` / `verify_deployment`
export it and check it again.
"""

from codesign.joint._deploy import (SCHEMA_VERSION, Check, HardenedTrainer, design_cost, harden_and_recover,
                                    load_deployment, rebuild_deployment, Rebuilt,
                                    verify_deployment, write_deployment)
from codesign.joint._retrain import SEED_STRIDE, DesignTrainer
from codesign.joint._prune_space import HardenedPruningTrainer, PruningJointTrainer, PruningSpace, pruned_params
from codesign.joint._space import WIDTH_MULTIPLE, DesignSpace, check_hardened, design_knobs, full_widths, soft_width_gate
from codesign.joint._targets import make_target
from codesign.joint._trainer import METRICS, JointConfig, JointTrainer, check_budget, cost_metric

__all__ = [
    "JointConfig", "JointTrainer", "METRICS", "cost_metric", "check_budget",
    "DesignSpace", "WIDTH_MULTIPLE", "soft_width_gate", "check_hardened", "design_knobs", "full_widths", "make_target",
    "PruningSpace", "PruningJointTrainer", "HardenedPruningTrainer", "pruned_params",
    "DesignTrainer", "SEED_STRIDE",
    "SCHEMA_VERSION", "Check", "HardenedTrainer", "design_cost", "harden_and_recover", "write_deployment",
    "load_deployment", "rebuild_deployment", "Rebuilt", "verify_deployment",
]
