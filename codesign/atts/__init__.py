"""ATTS: asynchronous test-time scaling via conformal prediction (arXiv 2509.15148).

Part 1, calibration: conformal p-values of draft-chunk scores against a calibration bank,
bank calibrators for a drifting stream (static, sliding window, Mondrian per turn, ACI),
ordinal graded decisions, the budget form alpha = B / m, and the experiments that check the
finite-sample guarantee. Public functions check concrete inputs eagerly (ValueError naming
the argument) and are safe to call under jit, where only shapes are checked.
"""

from codesign.atts._calibrators import ACI, ACIState, BankState, Calibrator, Mondrian, SlidingWindow, StaticBank
from codesign.atts._conformal import conformal_p_values, reject, tail_counts
from codesign.atts._guarantee import drift_experiment, guarantee_experiment, run_stream
from codesign.atts._ordinal import OrdinalThresholds, alpha_from_budget, ordinal_levels
from codesign.atts._pipeline import (PipelineConfig, RunResult, bank_settings, bench, collect_bank, format_bench,
                                     load_bank, majority_vote, make_calibrator, paired_bootstrap, run_batched,
                                     run_pipeline, save_bank)
from codesign.atts._models import ModelPair, draft_config, load_pair, step_accuracy, target_config, train_pair

__all__ = [
    "ModelPair", "PipelineConfig", "RunResult", "bank_settings", "bench", "collect_bank", "draft_config",
    "format_bench", "load_bank",
    "load_pair", "majority_vote", "make_calibrator", "paired_bootstrap", "run_batched", "run_pipeline", "save_bank",
    "step_accuracy", "target_config", "train_pair",
    "ACI",
    "ACIState",
    "BankState",
    "Calibrator",
    "Mondrian",
    "OrdinalThresholds",
    "SlidingWindow",
    "StaticBank",
    "alpha_from_budget",
    "conformal_p_values",
    "drift_experiment",
    "guarantee_experiment",
    "ordinal_levels",
    "reject",
    "run_stream",
    "tail_counts",
]
