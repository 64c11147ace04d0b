"""codesign: joint accuracy/hardware-cost optimisation of LLMs (what joins nets and hwcost).

    import codesign
    result = codesign.run()                                  # the default joint run, into runs/run-*
    result = codesign.sweep(codesign.SweepConfig(lams=(0, 0.1), target="h100-sxm"), "runs/mine")
    checks = codesign.verify("runs/mine/deployment.json")    # rebuild the export, recheck loss and cost

The public API, by part (each part is a subpackage with its own `__all__`; the names are
re-exported here so user code needs only `import codesign`):
- `codesign.training`: `TrainConfig`, `train`, `Trainer` (the one training loop), `TrainResult`,
  `resolve_model`, `training_flops_per_token`, `compute_dtype`, `Checkpointer`, `MetricsWriter`,
  `read_metrics`, `fresh_run_dir` (the default output folder, `runs/<kind>-<time>`)
- `codesign.joint`: `JointConfig`, `JointTrainer`, `METRICS`, `cost_metric`, `check_budget`, `DesignSpace`,
  `soft_width_gate`, `check_hardened`, `full_widths`, `make_target`, `DesignTrainer` (a hardened design as an
  argument of one compiled step), the pruning space
  (`PruningSpace`, `PruningJointTrainer`, `HardenedPruningTrainer`, `pruned_params`) and deployment
  (`HardenedTrainer`, `design_cost`, `harden_and_recover`, `write_deployment`, `load_deployment`,
  `verify` (= `verify_deployment`), `Check`)
- `codesign.search`: `SweepConfig`, `SweepResult`, `sweep`, `run`, `summary_table`, `front_and_volume`,
  `pareto_mask`, `hypervolume`, `plot_front`, and the black-box baselines (`Evaluator`, `random_search`,
  `tpe_search`, `gradient_path`, `timed_sweep`, `hv_curve`, `common_reference`, `speedup`, `time_to_reach`, ...)
- reliability: `output_lock` (one writer per output folder), `IntegrityError` (a deployment file or its
  checkpoint modified after export)
- `codesign.data` (embedded data sets), `codesign.atts` (conformal test-time scaling),
  `codesign.cli` (the command line).
"""

from codesign import data
from codesign._integrity import IntegrityError
from codesign._lock import output_lock
from codesign.joint import (METRICS, SCHEMA_VERSION, SEED_STRIDE, WIDTH_MULTIPLE, Check, DesignSpace, DesignTrainer,
                            HardenedPruningTrainer,
                            HardenedTrainer, JointConfig, JointTrainer, PruningJointTrainer, PruningSpace, check_budget,
                            check_hardened, cost_metric, design_cost, full_widths, harden_and_recover, load_deployment,
                            make_target, pruned_params, soft_width_gate, verify_deployment, write_deployment)
from codesign.search import (Evaluator, PathTrainer, RecoveryTrainer, SweepConfig, SweepResult, beyond_noise,
                             candidate_key, common_reference, design_knobs, distinct_pairs, front_and_volume,
                             gradient_path, hv_curve, hypervolume, noise_marks, pareto_mask, path_points, plot_front,
                             random_candidate, random_search, run, settings_of, speedup, spread_for, spread_of,
                             summary_table, sweep, time_to_reach, timed_sweep, tpe_search, width_choices)
from codesign.training import (Checkpointer, MetricsWriter, NonFiniteError, TrainConfig, TrainResult, Trainer,
                               compute_dtype, fresh_run_dir, init_guard, read_metrics, resolve_model, train,
                               training_flops_per_token)

verify = verify_deployment

__all__ = [
    # train
    "TrainConfig", "TrainResult", "Trainer", "train", "resolve_model", "training_flops_per_token", "compute_dtype",
    "Checkpointer", "NonFiniteError", "init_guard",
    "MetricsWriter", "read_metrics",
    # joint
    "JointConfig", "JointTrainer", "METRICS", "cost_metric", "check_budget", "DesignSpace", "WIDTH_MULTIPLE",
    "soft_width_gate", "check_hardened", "full_widths", "make_target",
    "PruningSpace", "PruningJointTrainer", "HardenedPruningTrainer", "pruned_params", "DesignTrainer", "SEED_STRIDE",
    # deploy
    "SCHEMA_VERSION", "Check", "HardenedTrainer", "design_cost", "harden_and_recover", "write_deployment",
    "load_deployment", "verify_deployment", "verify",
    # sweep, Pareto and search
    "SweepConfig", "SweepResult", "sweep", "run", "summary_table", "front_and_volume", "pareto_mask", "hypervolume",
    "plot_front", "Evaluator", "PathTrainer", "candidate_key", "common_reference", "gradient_path", "hv_curve",
    "random_candidate", "random_search", "speedup", "time_to_reach", "timed_sweep", "tpe_search", "width_choices",
    "RecoveryTrainer", "design_knobs", "path_points", "beyond_noise", "distinct_pairs", "noise_marks", "settings_of",
    "spread_for", "spread_of",
    # outputs and subpackages
    "fresh_run_dir", "output_lock", "IntegrityError", "data",
]
