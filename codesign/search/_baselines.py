"""Black-box search over the hardened design space: the baselines the gradient method is measured against.

The gradient method (`codesign.search._sweep.sweep`)
relaxes every discrete choice and moves it by gradient; a black-box method instead samples
discrete designs and trains each one. Both search the SAME space, the hardened choices of a
`DesignSpace` (see `DesignSpace.harden`):

    per layer: weight format (space.formats), KV-cache format (space.kv_formats, when searched),
    activation format (space.act_formats, when searched), kept FFN / expert hidden width from
    the multiples of 8 up to the full width (the full width itself when it is not a multiple).

A candidate is a `hardened` dict, exactly what `harden` returns. `Evaluator(sc, init)(candidate)`
trains the network with that design applied exactly (`codesign.joint._retrain.DesignTrainer`, one
compilation for every candidate) from
the shared pretrained weights for `sc.steps + sc.recovery_steps` steps, the step budget of
one gradient point (joint steps + recovery steps), then measures the validation loss
[nats/byte] and the predicted cost (`codesign.joint._deploy.design_cost`, the same call the sweep
uses). It writes no checkpoints (a gradient point writes three): that favours the baselines.

Two searchers, each returning its evaluated rows with wall-clock offsets `t_s` [s]:
- `random_search`: designs drawn uniformly per layer and per choice (numpy Generator, seeded).
- `tpe_search`: Optuna's TPESampler (seeded) in its MULTI-objective form (MOTPE, Ozaki et al.
  2022) on (val loss, log10 cost), both minimised. We chose multi-objective over one
  scalarised TPE run per lambda because the comparison is by hypervolume of the front: MOTPE
  spends the whole budget on that front, whereas a scalarised run per lambda splits it into
  independent searches, each with its own random start-up phase. Widths are searched as an
  ordinal integer index (TPE's Parzen estimator then uses their order), formats as categoricals.
A candidate already evaluated is answered from a cache at no time cost (the evaluation is
deterministic: same seed, same batches).

Hypervolume is `codesign.search._sweep.front_and_volume`'s: (val loss, log10 cost) space, with ONE
reference point shared by every method (`common_reference`), so curves are comparable.
`hv_curve` gives hypervolume after each evaluation against wall time (monotone: a fixed
reference and a growing point set), `time_to_reach` when a curve first reaches a level, and
`speedup` the ratio the benchmark reports.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

import nets
from codesign.joint import _targets
from codesign.joint._deploy import design_cost, recovery_config
from codesign.joint._retrain import DesignTrainer
from codesign.joint._trainer import JointTrainer
from codesign.joint._space import WIDTH_MULTIPLE, DesignSpace, check_hardened, full_widths
from codesign.search._sweep import SweepConfig, front_and_volume


def width_choices(cfg: nets.ModelConfig, multiple: int = WIDTH_MULTIPLE) -> list[list[int]]:
    """Kept FFN widths `harden` can produce, per layer: multiples of `multiple` up to the full width."""
    if not (isinstance(multiple, int) and multiple > 0):
        raise ValueError(f"multiple={multiple!r}: must be a positive integer")
    return [sorted(set(range(multiple, full + 1, multiple)) | {full} if full >= multiple else [full])
            for full in full_widths(cfg)]


def random_candidate(space: DesignSpace, cfg: nets.ModelConfig, rng: np.random.Generator) -> dict[str, Any]:
    """One hardened design drawn uniformly per layer and per choice."""
    n = cfg.n_layers
    pick = lambda names: [str(names[int(i)]) for i in rng.integers(0, len(names), n)] if names else []  # noqa: E731
    hardened = {"formats": pick(space.formats), "kv_formats": pick(space.kv_formats),
                "act_formats": pick(space.act_formats)}
    if space.search_ffn_width:
        hardened["ffn_widths"] = [int(c[int(rng.integers(0, len(c)))]) for c in width_choices(cfg)]
    else:
        hardened["ffn_widths"] = [int(full) for full in full_widths(cfg)]
    return hardened


def candidate_key(hardened: dict[str, Any]) -> str:
    return repr([hardened[k] for k in ("formats", "kv_formats", "act_formats", "ffn_widths")])


class Evaluator:
    """evaluate(candidate) -> row: train the hardened design from shared weights, measure loss and cost.

    `sc` fixes the model, step budget (steps + recovery_steps), batch, seq_len, lr, seed,
    target, metric and scenario; `init_net_params` are the shared pretrained network weights.
    The row has the sweep's row fields (val_loss, cost = metric value, latency_s, energy_j,
    formats, kv_formats, act_formats, ffn_widths) plus `seconds` [s] spent evaluating.
    `space` replaces the sweep's default space (`sc.space()`): every method of a comparison searches
    the one given. By default every candidate trains in ONE `DesignTrainer` per step budget (the design
    is an argument of the compiled step: one compilation for the whole search). `trainer_class`
    instead builds a trainer per candidate: called as `trainer_class(tc, space, hardened,
    init_params=...)`, then `advance(step)` for every step and `evaluate()` (e.g. `HardenedTrainer`,
    one compilation per design; a test passes a recorder to check what it is given without compiling).
    """

    def __init__(self, sc: SweepConfig, init_net_params: Any = None, *, trainer_class: type | None = None,
                 space: DesignSpace | None = None):
        if tuple(sc.hardware):
            raise ValueError(f"hardware={tuple(sc.hardware)!r}: black-box search costs designs on the preset target; "
                             "give hardware=() so both methods search the same space")
        self.sc = sc
        self.tc = sc.train_config(sc.steps + sc.recovery_steps)
        self.cfg = self.tc.model_config()
        self.space = sc.space() if space is None else space
        if not isinstance(self.space, DesignSpace):
            raise ValueError(f"space={space!r}: must be a codesign.DesignSpace")
        self.target = _targets.make_target(sc.target)
        self.scenario = sc.joint_config(sc.points()[0]).scenario()
        self.init_net_params = init_net_params
        self.trainer_class = trainer_class
        self.cache: dict[str, dict[str, Any]] = {}
        self._shared: dict[str, DesignTrainer] = {}  # one compiled DesignTrainer per TrainConfig (its repr)

    def cost(self, hardened: dict[str, Any]) -> dict[str, Any]:
        return design_cost(self.cfg, self.space, hardened, self.target, self.scenario, self.sc.metric)

    def __call__(self, hardened: dict[str, Any]) -> dict[str, Any]:
        check_hardened(self.space, hardened)
        key = candidate_key(hardened)
        if key in self.cache:
            return {**self.cache[key], "seconds": 0.0, "cached": True}
        t0 = time.perf_counter()
        row = self.train_and_measure(hardened, self.init_net_params, self.tc)
        self.cache[key] = row
        return {**row, "seconds": time.perf_counter() - t0, "cached": False}

    def train_and_measure(self, hardened: dict[str, Any], init_net_params: Any, tc) -> dict[str, Any]:
        """Train `hardened` from `init_net_params` for `tc.steps` steps; the row of val loss and cost."""
        if self.trainer_class is None:
            key = repr(tc)
            if key not in self._shared:
                self._shared[key] = DesignTrainer(tc, self.space, init_net_params)
            val_loss = self._shared[key].train(hardened, init_net_params)
        else:
            trainer = self.trainer_class(tc, self.space, hardened, init_params=init_net_params)
            for step in range(tc.steps):
                trainer.advance(step)
            val_loss = trainer.evaluate()
        cost = self.cost(hardened)
        return {"val_loss": val_loss, "cost": cost["metric_value"], "metric": cost["metric"],
                "latency_s": cost["latency_s"], "energy_j": cost["energy_j"],
                **{k: list(hardened[k]) for k in ("formats", "kv_formats", "act_formats", "ffn_widths")}}


def _check_budget(n_trials: int, seconds: float | None) -> None:
    if isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 1:
        raise ValueError(f"n_trials={n_trials!r}: must be a positive integer")
    if seconds is not None and not (isinstance(seconds, (int, float)) and 0 < seconds < math.inf):
        raise ValueError(f"seconds={seconds!r}: must be a positive number of seconds or None")


def _run(next_candidate: Callable[[], Any], evaluator, n_trials: int, seconds: float | None, method: str,
         on_result: Callable[[Any, dict], None] = lambda *_: None, log=print) -> list[dict[str, Any]]:
    t0 = time.perf_counter()
    rows = []
    while len(rows) < n_trials and (seconds is None or time.perf_counter() - t0 < seconds):
        handle, hardened = next_candidate()
        row = evaluator(hardened)
        row.update(method=method, trial=len(rows), t_s=time.perf_counter() - t0)
        on_result(handle, row)
        rows.append(row)
        log(f"codesign search: {method} trial {len(rows)} at {row['t_s']:.1f}s: val loss {row['val_loss']:.4f}, "
            f"cost {row['cost']:.4g}{' (cached)' if row['cached'] else ''}")
    return rows


def random_search(evaluator, *, n_trials: int, seconds: float | None = None, seed: int = 0,
                  log=print) -> list[dict[str, Any]]:
    """Evaluate uniformly drawn designs until `n_trials` are done or `seconds` [s] have passed.

    A candidate started inside the time budget is finished, so the last one may end past it.
    """
    _check_budget(n_trials, seconds)
    rng = np.random.default_rng(seed)
    return _run(lambda: (None, random_candidate(evaluator.space, evaluator.cfg, rng)), evaluator, n_trials, seconds,
                "random", log=log)


def tpe_search(evaluator, *, n_trials: int, seconds: float | None = None, seed: int = 0, n_startup_trials: int = 5,
               log=print) -> list[dict[str, Any]]:
    """Multi-objective TPE (Optuna, seeded) on (val loss, log10 cost); see the module docstring."""
    import optuna

    _check_budget(n_trials, seconds)
    if isinstance(n_startup_trials, bool) or not isinstance(n_startup_trials, int) or n_startup_trials < 1:
        raise ValueError(f"n_startup_trials={n_startup_trials!r}: must be a positive integer")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=n_startup_trials)
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=sampler)
    space, cfg = evaluator.space, evaluator.cfg
    widths = width_choices(cfg)

    def ask():
        trial = study.ask()
        hardened = {key: [trial.suggest_categorical(f"{key}_{layer}", list(names)) for layer in range(cfg.n_layers)]
                    if names else []
                    for key, names in (("formats", space.formats), ("kv_formats", space.kv_formats),
                                       ("act_formats", space.act_formats))}
        if space.search_ffn_width:
            hardened["ffn_widths"] = [int(c[trial.suggest_int(f"ffn_width_index_{layer}", 0, len(c) - 1)])
                                      for layer, c in enumerate(widths)]
        else:
            hardened["ffn_widths"] = [int(full) for full in full_widths(cfg)]
        return trial, hardened

    def tell(trial, row):
        values = [row["val_loss"], math.log10(row["cost"])] if _finite(row) else None
        if values is None:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            study.tell(trial, values)

    return _run(ask, evaluator, n_trials, seconds, "tpe", on_result=tell, log=log)


# ---- the gradient method as one continuation path ---------------------------------------
class PathTrainer(JointTrainer):
    """A `JointTrainer` whose lambda is a leaf of the state ("lam", never updated), not a compile-time
    constant: one compiled step serves every lambda of a path. Penalty form only; the gate
    temperature (and straight-through hardening, `JointConfig.straight_through`) anneals over each segment of `tc.steps` steps (the step passed in counts on
    across segments, so every segment samples fresh batches)."""

    def __init__(self, tc, jc, space=None, init_net_params=None):
        if jc.budget is not None or jc.lam != 0:
            raise ValueError(f"lam={jc.lam!r}, budget={jc.budget!r}: a path trainer takes lam=0 and no budget; "
                             "lambda is set in its state")
        super().__init__(tc, jc, space, init_net_params)

    def init_trainable(self, net_params: Any) -> Any:
        return {**super().init_trainable(net_params), "lam": jnp.zeros((), jnp.float32)}

    def optimizer_groups(self) -> dict[str, optax.GradientTransformation]:
        return {**super().optimizer_groups(), "lam": optax.set_to_zero()}

    def progress(self, step: jax.Array) -> jax.Array:
        return super().progress(jnp.asarray(step) % self.tc.steps)

    def with_lam(self, params: Any, lam: float) -> Any:
        """`params` with lambda set, placed like the rest of the state (so the step is not retraced)."""
        return {**params, "lam": jax.device_put(jnp.asarray(lam, jnp.float32), self.replicated)}

    def objective(self, params: Any, inputs: jax.Array, targets: jax.Array, step: jax.Array):
        total, metrics = super().objective(params, inputs, targets, step)  # jc.lam = 0: no penalty inside
        return total + params["lam"] * jnp.log(metrics["cost"]), metrics

    def run_segment(self, params: Any, opt_state: Any, lam: float, start: int, steps: int, *, patience: int = 0,
                    min_steps: int = 1) -> tuple[Any, Any, int]:
        """Joint steps `start`, `start` + 1, ... at `lam`: `steps` of them, or, with `patience` > 0, fewer once
        the relaxation has converged: the hardened design (`DesignSpace.harden`: argmax formats, rounded
        widths) came out the same after `patience` consecutive steps and at least `min_steps` steps ran.
        Returns (params, opt_state, steps run). The check reads the knobs back after every step (a few
        milliseconds); `patience` 0 runs all `steps` without reading anything back."""
        for name, value, low in (("steps", steps, 1), ("patience", patience, 0), ("min_steps", min_steps, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name}={value!r}: must be an integer >= {low}")
        params = self.with_lam(params, lam)
        previous, same = None, 0
        for done in range(1, steps + 1):
            params, opt_state, _ = self.step_fn(params, opt_state, self.train_data,
                                                jnp.asarray(start + done - 1, jnp.int32))
            if not patience:
                continue
            design = self.space.harden(self.cfg, jax.device_get(params["knobs"]))
            same = same + 1 if design == previous else 0
            previous = design
            if same >= patience and done >= min_steps:
                return params, opt_state, done
        return params, opt_state, steps


def gradient_path(sc: SweepConfig, init_net_params: Any, *, log=print,
                  space: DesignSpace | None = None) -> list[dict[str, Any]]:
    """The gradient method run as ONE continuation path over `sc.lams` (ascending), a regularisation path
    with warm starts: `sc.steps` joint steps at each lambda, continuing from the previous lambda's network,
    knobs and optimiser state; after each segment the knobs are hardened (`DesignSpace.harden`) and the
    design is recovery-fine-tuned for `sc.recovery_steps` steps from the current network (0.3x lr, as
    `harden_and_recover`) and measured like a black-box candidate. Rows carry `t_s` [s] from the start
    (after the shared pretraining), `lam` and `point`.

    Unlike `codesign.search._sweep.sweep` (independent points from the pretrained network, each with its own
    compilation, checkpoints and deployment file), the path compiles one joint step for all lambdas
    and writes nothing: it is the search, not the export. `space` replaces `sc.space()` (as `Evaluator`'s)."""
    if sc.budgets:
        raise ValueError(f"budgets={tuple(sc.budgets)!r}: the path runs the penalty form; give lams")
    evaluator = Evaluator(sc, init_net_params, space=space)
    space, cfg = evaluator.space, evaluator.cfg
    tc = sc.train_config(sc.steps)
    jc = sc.joint_config({"lam": 0.0})
    recovery_tc = recovery_config(tc, sc.recovery_steps)
    t0 = time.perf_counter()
    trainer = PathTrainer(tc, jc, space, init_net_params=init_net_params)
    params, opt_state, step = trainer.params, trainer.opt_state, 0
    rows = []
    for point, lam in enumerate(sorted(float(x) for x in sc.lams)):
        params = trainer.with_lam(params, lam)
        for _ in range(sc.steps):
            params, opt_state, _ = trainer.step_fn(params, opt_state, trainer.train_data, jnp.asarray(step, jnp.int32))
            step += 1
        snapshot = jax.device_get(params)
        hardened = space.harden(cfg, snapshot["knobs"])
        row = evaluator.train_and_measure(hardened, snapshot["net"], recovery_tc)
        row.update(method="gradient-path", lam=lam, point=point, cached=False, t_s=time.perf_counter() - t0)
        rows.append(row)
        log(f"codesign search: gradient path lam={lam:g} at {row['t_s']:.1f}s: val loss {row['val_loss']:.4f}, "
            f"cost {row['cost']:.4g}")
    return rows


# ---- hypervolume against wall time ------------------------------------------------------
def _finite(row: dict[str, Any]) -> bool:
    return math.isfinite(row["val_loss"]) and math.isfinite(row["cost"]) and row["cost"] > 0


def common_reference(*row_lists: Sequence[dict[str, Any]]) -> tuple[float, float]:
    """One reference for every method: `front_and_volume`'s default over the union of all finite rows."""
    rows = [r for rows in row_lists for r in rows if _finite(r)]
    if not rows:
        raise ValueError("rows=[]: need at least one finite (val_loss, cost) row to place a reference point")
    return tuple(front_and_volume(rows)[2])


def hv_curve(rows: Sequence[dict[str, Any]], reference: tuple[float, float]) -> list[tuple[float, float]]:
    """(t_s, hypervolume of every row finished by t_s) after each row, rows sorted by `t_s`."""
    out, seen = [], []
    for row in sorted(rows, key=lambda r: r["t_s"]):
        if _finite(row):
            seen.append(row)
        out.append((float(row["t_s"]), front_and_volume(seen, reference)[1] if seen else 0.0))
    return out


def time_to_reach(curve: Sequence[tuple[float, float]], level: float, rtol: float = 1e-9) -> float | None:
    """First time [s] at which the curve's hypervolume is >= level (None if never)."""
    for t, hv in curve:
        if hv >= level * (1 - rtol):
            return t
    return None


def speedup(curves: dict[str, Sequence[tuple[float, float]]], gradient: str = "gradient") -> dict[str, Any]:
    """The benchmark's verdict: the black-box methods' best final hypervolume, and how fast each method gets there.

    target_hv = max over black-box methods of their final hypervolume; ratio = (time the
    fastest black-box method needs to reach target_hv) / (time the gradient method needs);
    None when the gradient method never reaches it (`gradient_fraction` says how close it got).
    """
    if gradient not in curves or len(curves) < 2:
        raise ValueError(f"curves={sorted(curves)!r}: need {gradient!r} and at least one black-box method")
    others = {m: c for m, c in curves.items() if m != gradient}
    finals = {m: (c[-1][1] if c else 0.0) for m, c in curves.items()}
    target = max(finals[m] for m in others)
    times = {m: time_to_reach(c, target) for m, c in curves.items()}
    reached = [times[m] for m in others if times[m] is not None]
    t_blackbox = min(reached) if reached else None
    t_gradient = times[gradient]
    ratio = t_blackbox / t_gradient if (t_blackbox is not None and t_gradient) else None
    return {"target_hv": target, "final_hv": finals, "time_to_target_s": times, "blackbox_time_s": t_blackbox,
            "gradient_time_s": t_gradient, "ratio": ratio,
            "gradient_fraction": finals[gradient] / target if target > 0 else None}


def timed_sweep(sc: SweepConfig, out_dir: str | Path, *, progress: bool = False, log=print):
    """Run `codesign.search._sweep.sweep` and give each point a wall-clock offset `t_s` [s].

    The clock starts when the first point starts (after the shared pretraining, which every
    method shares); point k's time is the modification time of its deployment.json (written
    when its joint + recovery run is finished). Returns (SweepResult, rows with t_s). Give a fresh
    `out_dir`: points read back from an earlier run would get times before the start.
    """
    from codesign.search._sweep import sweep

    marks: dict[str, float] = {}

    def timed_log(message: str) -> None:
        if "point 1/" in message and "start" not in marks:
            marks["start"] = time.time()
        log(message)

    result = sweep(sc, out_dir, progress=progress, log=timed_log)
    rows = []
    for row in result.rows:
        done = (Path(out_dir) / f"point-{row['point']}" / "deployment.json").stat().st_mtime
        rows.append({**row, "method": "gradient", "t_s": done - marks["start"]})
    return result, rows


__all__ = ["Evaluator", "PathTrainer", "candidate_key", "common_reference", "gradient_path", "hv_curve",
           "random_candidate", "random_search", "speedup", "time_to_reach", "timed_sweep", "tpe_search",
           "width_choices"]
