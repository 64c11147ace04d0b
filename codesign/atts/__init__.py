"""ATTS: asynchronous test-time scaling via conformal prediction (arXiv 2509.15148).

Part 1, calibration: conformal p-values of draft-chunk scores against a calibration bank,
bank calibrators for a drifting stream (static, sliding window, Mondrian per turn, Mondrian pooled
with neighbouring turns where a turn has few scores, ACI), the bank size a per-turn rate needs,
ordinal graded decisions, the budget form alpha = B / m, and the experiments that check the
finite-sample guarantee (with the exact distributions they are tested against). Part 2, the
draft/target pipeline on the embedded arithmetic task or the chain task (`_tasks`): the models and their training
(`_models`, through `codesign.Trainer`), the engine (`_state`: its configuration, slots and
named counters; `_calls`: the model calls on a pool of slots; `_engine`: one tick of the pool,
stage by stage, inside one `jax.lax.while_loop`), the runner (`_runner`), calibration banks on
disk (`_bank`), statistics (`_stats`) and the benchmark (`_bench`). Public functions check
concrete inputs eagerly (ValueError naming the argument) and are safe to call under jit,
where only shapes are checked.
"""

from codesign.atts._calibrators import ACI, ACIState, BankState, Calibrator, Mondrian, SlidingWindow, StaticBank
from codesign.atts._pooled import PooledMondrian, pool_windows
from codesign.atts._turn_guarantee import (TURN_CALIBRATORS, bank_size_for, default_calibration_counts,
                                           joint_min_bank, normal_tv, turn_rate_experiment)
from codesign.atts._conformal import conformal_p_values, reject, tail_counts
from codesign.atts._guarantee import (CATEGORICAL_PROBS, beta_binomial_pmf, binomial_pmf,
                                      categorical_unrandomized_count_pmf, drift_experiment, exact_unrandomized_rate,
                                      guarantee_experiment, kolmogorov_sf, ks_discrete, ks_monte_carlo_p,
                                      randomized_count_pmf, run_stream)
from codesign.atts._ordinal import OrdinalThresholds, alpha_from_budget, ordinal_levels
from codesign.atts._bank import CALIBRATORS, bank_settings, collect_bank, load_bank, make_calibrator, save_bank
from codesign.atts._bench import BENCH_PARTS, bench, format_bench
from codesign.atts._calls import bucket_index, forward_some, row_buckets, row_forward
from codesign.atts._runner import RunResult, compiled_pipelines, majority_vote, run_batched, run_pipeline
from codesign.atts._state import CALL_KINDS, MODES, TAKEOVERS, Counters, PipelineConfig
from codesign.atts._stats import paired_bootstrap, turn_rates
from codesign.atts._models import (DRAFT_VARIANTS, ModelPair, TrainSpec, draft_config, in_draft_band, load_model, load_pair,
                                   save_model, step_accuracy, target_config, train_model, train_pair)
from codesign.atts._tasks import (TASKS, ArithTask, ChainTask, chain_level_for, pipeline_buf_len, task_for,
                                  task_from_dict)

__all__ = [
    # calibration and its guarantee
    "ACI", "ACIState", "BankState", "Calibrator", "Mondrian", "PooledMondrian", "SlidingWindow", "StaticBank",
    "pool_windows", "bank_size_for", "turn_rate_experiment", "TURN_CALIBRATORS", "default_calibration_counts", "joint_min_bank",
    "normal_tv",
    "conformal_p_values", "reject", "tail_counts",
    "OrdinalThresholds", "alpha_from_budget", "ordinal_levels",
    "guarantee_experiment", "drift_experiment", "run_stream",
    "CATEGORICAL_PROBS", "binomial_pmf", "beta_binomial_pmf", "randomized_count_pmf", "exact_unrandomized_rate",
    "categorical_unrandomized_count_pmf", "kolmogorov_sf", "ks_discrete", "ks_monte_carlo_p",
    # models
    "ArithTask", "ChainTask", "TASKS", "task_from_dict", "chain_level_for", "pipeline_buf_len",
    "TrainSpec", "ModelPair", "task_for", "DRAFT_VARIANTS", "draft_config", "target_config", "train_model", "train_pair",
    "in_draft_band",
    "save_model", "load_model", "load_pair", "step_accuracy",
    # pipeline, banks and benchmark
    "MODES", "TAKEOVERS", "CALL_KINDS", "CALIBRATORS", "BENCH_PARTS", "PipelineConfig", "Counters", "RunResult", "run_pipeline",
    "run_batched", "compiled_pipelines", "row_forward", "forward_some", "row_buckets", "bucket_index",
    "majority_vote", "make_calibrator", "collect_bank", "bank_settings",
    "save_bank", "load_bank", "paired_bootstrap", "turn_rates", "bench", "format_bench",
]
