"""Search over designs: lambda and budget sweeps of the joint loop, Pareto fronts, black-box baselines.

`sweep` / `run` run the gradient path over the lambdas (or one joint run per lambda or budget) and
export every point and the front, marked against the stored seed spread (`spread_for`);
`random_search`, `tpe_search` and `gradient_path` are the baselines the gradient sweep is
measured against, compared by hypervolume over wall-clock time (`hv_curve`, `speedup`).
"""

from codesign.search._baselines import (Evaluator, PathTrainer, candidate_key, common_reference, gradient_path,
                                        hv_curve, random_candidate, random_search, speedup, time_to_reach,
                                        timed_sweep, tpe_search, width_choices)
from codesign.search._noise import beyond_noise, distinct_pairs, noise_marks, settings_of, spread_for, spread_of
from codesign.search._pareto import hypervolume, pareto_mask, plot_front
from codesign.search._path import RecoveryTrainer, design_knobs, path_points
from codesign.search._sweep import SweepConfig, SweepResult, front_and_volume, run, summary_table, sweep

__all__ = [
    "SweepConfig", "SweepResult", "sweep", "run", "summary_table", "front_and_volume",
    "pareto_mask", "hypervolume", "plot_front", "RecoveryTrainer", "design_knobs", "path_points",
    "beyond_noise", "distinct_pairs", "noise_marks", "settings_of", "spread_for", "spread_of",
    "Evaluator", "PathTrainer", "candidate_key", "common_reference", "gradient_path", "hv_curve",
    "random_candidate", "random_search", "speedup", "time_to_reach", "timed_sweep", "tpe_search", "width_choices",
]
