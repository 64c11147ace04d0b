"""codesign: joint accuracy/hardware-cost optimisation of LLMs (what joins nets and hwcost).

    import codesign
    result = codesign.run()                                  # the default joint run, into runs/run-*
    result = codesign.sweep(codesign.SweepConfig(lams=(0, 0.1), target="h100-sxm"), "runs/mine")
    checks = codesign.verify("runs/mine/deployment.json")    # rebuild the export, recheck loss and cost

The public API, by part:
- train: `TrainConfig`, `train`, `Trainer`, `TrainResult`, `resolve_model`, `training_flops_per_token`, `compute_dtype`,
  `Checkpointer`, `MetricsWriter`, `read_metrics`
- joint: `JointConfig`, `JointTrainer`, `METRICS`, `cost_metric`, `check_budget`, `DesignSpace`,
  `soft_width_gate`, `check_hardened`, `full_widths`, `make_target`, and the pruning space
  (`PruningSpace`, `PruningJointTrainer`, `HardenedPruningTrainer`, `pruned_params`)
- deploy: `HardenedTrainer`, `design_cost`, `harden_and_recover`, `write_deployment`, `load_deployment`,
  `verify` (= `verify_deployment`), `Check`
- search: `SweepConfig`, `SweepResult`, `sweep`, `run`, `summary_table`, `front_and_volume`, `pareto_mask`,
  `hypervolume`, `plot_front`, and the black-box baselines (`Evaluator`, `random_search`, `tpe_search`,
  `gradient_path`, `timed_sweep`, `hv_curve`, `common_reference`, `speedup`, `time_to_reach`, ...)
- `fresh_run_dir`: the default output folder (`runs/<kind>-<time>`); `output_lock`: one writer per output folder;
  `IntegrityError`: a deployment file or its checkpoint modified after export
- subpackages: `codesign.data` (embedded data sets), `codesign.atts` (conformal test-time scaling),
  `codesign.cli` (the command line).
"""

from codesign import data
from codesign._checkpoint import Checkpointer
from codesign._deploy import (SCHEMA_VERSION, Check, HardenedTrainer, design_cost, harden_and_recover, load_deployment,
                              verify_deployment, write_deployment)
from codesign._io import fresh_run_dir
from codesign._integrity import IntegrityError
from codesign._lock import output_lock
from codesign._joint import METRICS, JointConfig, JointTrainer, check_budget, cost_metric
from codesign._metrics import MetricsWriter, read_metrics
from codesign._pareto import hypervolume, pareto_mask, plot_front
from codesign._prune_space import HardenedPruningTrainer, PruningJointTrainer, PruningSpace, pruned_params
from codesign._search import (Evaluator, PathTrainer, candidate_key, common_reference, gradient_path, hv_curve,
                              random_candidate, random_search, speedup, time_to_reach, timed_sweep, tpe_search,
                              width_choices)
from codesign._space import WIDTH_MULTIPLE, DesignSpace, check_hardened, full_widths, soft_width_gate
from codesign._sweep import SweepConfig, SweepResult, front_and_volume, run, summary_table, sweep
from codesign._targets import make_target
from codesign._train import (NonFiniteError, TrainConfig, TrainResult, Trainer, compute_dtype, init_guard,
                             resolve_model, train, training_flops_per_token)

verify = verify_deployment

__all__ = [
    # train
    "TrainConfig", "TrainResult", "Trainer", "train", "resolve_model", "training_flops_per_token", "compute_dtype",
    "Checkpointer", "NonFiniteError", "init_guard",
    "MetricsWriter", "read_metrics",
    # joint
    "JointConfig", "JointTrainer", "METRICS", "cost_metric", "check_budget", "DesignSpace", "WIDTH_MULTIPLE",
    "soft_width_gate", "check_hardened", "full_widths", "make_target",
    "PruningSpace", "PruningJointTrainer", "HardenedPruningTrainer", "pruned_params",
    # deploy
    "SCHEMA_VERSION", "Check", "HardenedTrainer", "design_cost", "harden_and_recover", "write_deployment",
    "load_deployment", "verify_deployment", "verify",
    # sweep, Pareto and search
    "SweepConfig", "SweepResult", "sweep", "run", "summary_table", "front_and_volume", "pareto_mask", "hypervolume",
    "plot_front", "Evaluator", "PathTrainer", "candidate_key", "common_reference", "gradient_path", "hv_curve",
    "random_candidate", "random_search", "speedup", "time_to_reach", "timed_sweep", "tpe_search", "width_choices",
    # outputs and subpackages
    "fresh_run_dir", "output_lock", "IntegrityError", "data",
]
