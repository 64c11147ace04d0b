"""Black-box search baselines: valid candidates, seeded reproducibility, exact evaluation, monotone HV curves."""

import math

import numpy as np
import pytest

from codesign import (Evaluator, common_reference, hv_curve, random_candidate, random_search, speedup, time_to_reach,
                      tpe_search, width_choices, DesignSpace, check_hardened as _check_hardened,
                      full_widths as _full_widths, SweepConfig, front_and_volume, resolve_model)


def _sc(tiny_json, **kw):
    base = dict(model=tiny_json, lams=(0.0,), hardware=(), pretrain_steps=0, steps=2, recovery_steps=1, batch=8,
                seq_len=32, eval_batches=1)
    base.update(kw)
    return SweepConfig(**base)


class AnalyticEvaluator:
    """A fast stand-in for training: the real predicted cost, and a loss that grows as bits and width shrink."""

    def __init__(self, sc):
        self.inner = Evaluator(sc)  # builds no trainer until it is called
        self.space, self.cfg, self.calls = self.inner.space, self.inner.cfg, 0

    def __call__(self, hardened):
        _check_hardened(self.space, hardened)
        self.calls += 1
        from nets.formats import get_format
        bits = np.mean([get_format(f).bits for f in hardened["formats"] + hardened["kv_formats"]])
        keep = np.mean([w / f for w, f in zip(hardened["ffn_widths"], _full_widths(self.cfg))])
        cost = self.inner.cost(hardened)
        return {"val_loss": 3.0 + 2.0 / bits + 0.5 * (1 - keep), "cost": cost["metric_value"], "cached": False,
                **{k: list(hardened[k]) for k in ("formats", "kv_formats", "act_formats", "ffn_widths")}}


def test_random_candidates_are_valid_hardened_designs_and_seeded(tiny_json):
    cfg = resolve_model(tiny_json)
    space = DesignSpace()
    draws = [random_candidate(space, cfg, np.random.default_rng(3)) for _ in range(2)]
    assert draws[0] == draws[1]
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(200):
        c = random_candidate(space, cfg, rng)
        _check_hardened(space, c)
        assert all(w % 8 == 0 and 8 <= w <= full for w, full in zip(c["ffn_widths"], _full_widths(cfg)))
        seen.update(c["ffn_widths"])
    assert seen == set(range(8, max(_full_widths(cfg)) + 1, 8)), "every width harden can produce is reachable"
    # the widths offered are exactly those DesignSpace.harden produces
    choices = width_choices(cfg)
    for keep in np.linspace(0.01, 0.99, 37):
        knobs = {**space.init(cfg), "ffn_keep_logit": np.full((cfg.n_layers,), math.log(keep / (1 - keep)))}
        for layer, w in enumerate(space.harden(cfg, knobs)["ffn_widths"]):
            assert w in choices[layer]


def test_random_search_is_reproducible(tiny_json):
    ev = AnalyticEvaluator(_sc(tiny_json))
    a = random_search(ev, n_trials=6, seed=7, log=lambda *_: None)
    b = random_search(ev, n_trials=6, seed=7, log=lambda *_: None)
    c = random_search(ev, n_trials=6, seed=8, log=lambda *_: None)
    key = lambda rows: [(r["formats"], r["kv_formats"], r["ffn_widths"], r["val_loss"]) for r in rows]  # noqa: E731
    assert key(a) == key(b) and key(a) != key(c)
    assert [r["trial"] for r in a] == list(range(6)) and all(r["method"] == "random" for r in a)


def test_tpe_search_is_seeded_and_proposes_valid_designs(tiny_json):
    pytest.importorskip("optuna")
    ev = AnalyticEvaluator(_sc(tiny_json))
    a = tpe_search(ev, n_trials=10, seed=1, n_startup_trials=3, log=lambda *_: None)
    b = tpe_search(ev, n_trials=10, seed=1, n_startup_trials=3, log=lambda *_: None)
    assert [r["formats"] + r["kv_formats"] + r["ffn_widths"] for r in a] == \
           [r["formats"] + r["kv_formats"] + r["ffn_widths"] for r in b]
    for r in a:
        _check_hardened(ev.space, {k: r[k] for k in ("formats", "kv_formats", "act_formats", "ffn_widths")})
    assert all(r["t_s"] >= 0 for r in a) and [r["t_s"] for r in a] == sorted(r["t_s"] for r in a)


def test_evaluate_builds_its_trainer_from_exactly_the_candidate(tiny_json):
    """Fast wiring check (no compile): the trainer gets the candidate, the shared weights and the step budget."""
    built = []

    class Recorder:
        def __init__(self, tc, space, hardened, init_params=None):
            built.append((tc, space, hardened, init_params))
            self.steps = []

        def advance(self, step):
            self.steps.append(int(step))
            return {}

        def evaluate(self):
            return float(len(self.steps))

    sc = _sc(tiny_json, steps=3, recovery_steps=2)
    shared = {"weights": np.ones(3)}
    ev = Evaluator(sc, shared, trainer_class=Recorder)
    hardened = random_candidate(ev.space, ev.cfg, np.random.default_rng(5))
    row = ev(hardened)
    (tc, space, got, init), = built
    assert got is hardened and init is shared and space == sc.space()
    assert tc.steps == 5 and row["val_loss"] == 5.0, "steps + recovery_steps, all run"
    assert row["cost"] == ev.cost(hardened)["metric_value"]


def test_evaluator_searches_the_space_it_is_given(tiny_json):
    """space= replaces the sweep's default space for the candidates, the cost and the trainer (no compile)."""
    built = []

    class Recorder:
        def __init__(self, tc, space, hardened, init_params=None):
            built.append(space)

        def advance(self, step):
            return {}

        def evaluate(self):
            return 1.0

    space = DesignSpace(formats=("bf16", "mxfp4", "posit(4,1)@channel"), kv_formats=(), search_ffn_width=False)
    ev = Evaluator(_sc(tiny_json), trainer_class=Recorder, space=space)
    hardened = random_candidate(ev.space, ev.cfg, np.random.default_rng(1))
    assert set(hardened["formats"]) <= set(space.formats) and hardened["kv_formats"] == []
    row = ev(hardened)
    assert built == [space] and row["formats"] == hardened["formats"]
    with pytest.raises(ValueError, match="^space="):
        Evaluator(_sc(tiny_json), space="bf16")


@pytest.mark.slow
def test_evaluate_trains_exactly_the_hardened_design(tiny_json):
    sc = _sc(tiny_json)
    ev = Evaluator(sc)
    hardened = random_candidate(ev.space, ev.cfg, np.random.default_rng(0))
    row = ev(hardened)
    from codesign import design_cost
    from codesign import make_target
    expected = design_cost(ev.cfg, sc.space(), hardened, make_target(sc.target),
                           sc.joint_config({"lam": 0.0}).scenario(), sc.metric)
    assert row["cost"] == expected["metric_value"] and row["latency_s"] == expected["latency_s"]
    assert math.isfinite(row["val_loss"]) and row["seconds"] > 0 and not row["cached"]
    assert row["ffn_widths"] == hardened["ffn_widths"] and row["formats"] == hardened["formats"]
    assert ev.tc.steps == sc.steps + sc.recovery_steps
    again = ev(hardened)
    assert again["cached"] and again["seconds"] == 0.0 and again["val_loss"] == row["val_loss"]


def test_hv_curves_are_monotone_and_share_one_reference(tiny_json):
    ev = AnalyticEvaluator(_sc(tiny_json))
    runs = {"random": random_search(ev, n_trials=12, seed=0, log=lambda *_: None),
            "other": random_search(ev, n_trials=12, seed=1, log=lambda *_: None)}
    reference = common_reference(*runs.values())
    everything = [r for rows in runs.values() for r in rows]
    assert reference == front_and_volume(everything)[2]
    for rows in runs.values():
        curve = hv_curve(rows, reference)
        hvs = [h for _, h in curve]
        assert all(b >= a for a, b in zip(hvs, hvs[1:])) and hvs[-1] > 0
        assert hvs[-1] == pytest.approx(front_and_volume(rows, reference)[1])
        assert time_to_reach(curve, hvs[-1]) == curve[[h for _, h in curve].index(hvs[-1])][0]
        assert time_to_reach(curve, hvs[-1] * 1.5) is None


def test_speedup_ratio_is_the_time_ratio_to_the_best_blackbox_volume():
    curves = {"gradient": [(1.0, 0.2), (2.0, 0.5)], "random": [(1.0, 0.1), (6.0, 0.4)],
              "tpe": [(1.0, 0.3), (4.0, 0.45), (9.0, 0.45)]}
    v = speedup(curves)
    assert v["target_hv"] == 0.45 and v["blackbox_time_s"] == 4.0 and v["gradient_time_s"] == 2.0
    assert v["ratio"] == 2.0
    slow = speedup({"gradient": [(1.0, 0.1)], "random": [(1.0, 0.4)]})
    assert slow["ratio"] is None and slow["gradient_fraction"] == pytest.approx(0.25)


@pytest.mark.parametrize("call, field", [
    (lambda ev: random_search(ev, n_trials=0), "n_trials"),
    (lambda ev: random_search(ev, n_trials=2, seconds=-1.0), "seconds"),
    (lambda ev: tpe_search(ev, n_trials=2, n_startup_trials=0), "n_startup_trials"),
    (lambda ev: ev({"formats": ["fp16"] * 2, "kv_formats": ["bf16"] * 2, "act_formats": [], "ffn_widths": [8, 8]}),
     r"hardened.formats entry"),
    (lambda ev: width_choices(ev.cfg, multiple=0), "multiple"),
    (lambda ev: common_reference([]), "rows"),
    (lambda ev: speedup({"gradient": [(1.0, 0.1)]}), "curves"),
])
def test_bad_input_is_a_clear_error(tiny_json, call, field):
    if field == "n_startup_trials":
        pytest.importorskip("optuna")
    ev = AnalyticEvaluator(_sc(tiny_json))
    with pytest.raises(ValueError, match=f"^{field}"):
        call(ev if "hardened" not in field else ev.inner)


def test_evaluator_refuses_learned_hardware(tiny_json):
    with pytest.raises(ValueError, match="^hardware="):
        Evaluator(_sc(tiny_json, hardware=("n_macs",)))


@pytest.mark.slow  # ~90 s of CPU on 2 cores: the joint step's compile (formats, XR-NPE cost) dominates
def test_path_trainer_lambda_is_state_one_compilation_and_cost_falls(tiny_json):
    """The path's lambda lives in the state: one compilation serves every lambda, the penalty is
    lam * log(cost) exactly, and a larger lambda pushes the knobs to a cheaper design."""
    import dataclasses

    import jax
    import jax.numpy as jnp

    from codesign import PathTrainer

    sc = _sc(tiny_json, steps=6)
    tc = sc.train_config(sc.steps)
    jc = dataclasses.replace(sc.joint_config({"lam": 0.0}), lam=0.0)
    trainer = PathTrainer(tc, jc, sc.space())
    from codesign.data import sample_batch
    inputs, targets = sample_batch(trainer.train_data, jax.random.key(0), 8, 32)
    base = {**trainer.params, "lam": jnp.asarray(0.0)}
    step = jnp.asarray(0, jnp.int32)
    objective = jax.jit(trainer.objective)  # one compile for both lambdas (eager NNX is slower than compiling)
    total0, metrics = objective(base, inputs, targets, step)
    total1, _ = objective({**base, "lam": jnp.asarray(0.5)}, inputs, targets, step)
    np.testing.assert_allclose(float(total1 - total0), 0.5 * float(jnp.log(metrics["cost"])), rtol=1e-5)
    costs = {}
    for lam in (0.0, 3.0):
        params = trainer.with_lam(jax.device_put(jax.tree.map(jnp.copy, trainer.params), trainer.replicated), lam)
        opt_state = jax.device_put(trainer.optimizer.init(params), trainer.replicated)
        for s in range(sc.steps):
            params, opt_state, _ = trainer.step_fn(params, opt_state, trainer.train_data, jnp.asarray(s, jnp.int32))
        costs[lam] = float(trainer.cost(params["knobs"]).latency_s)
        assert float(params["lam"]) == lam, "lambda is never updated"
    assert trainer.trace_count == 1, "one compilation for both lambdas"
    assert costs[3.0] < costs[0.0], costs

    # run_segment's stopping rule, against the designs of the same steps run one by one
    start = jax.device_get((trainer.with_lam(trainer.params, 3.0), trainer.optimizer.init(trainer.params)))
    fresh = lambda: (jax.device_put(x, trainer.replicated) for x in start)  # noqa: E731
    params, opt_state = fresh()
    designs = []
    for s in range(12):
        params, opt_state, _ = trainer.step_fn(params, opt_state, trainer.train_data, jnp.asarray(s, jnp.int32))
        designs.append(trainer.space.harden(trainer.cfg, jax.device_get(params["knobs"])))
    patience, min_steps = 2, 3
    expected = next((n for n in range(1, 13) if n >= min_steps and n > patience
                     and all(d == designs[n - 1] for d in designs[n - 1 - patience:n])), 12)
    params, opt_state = fresh()
    params, _, ran = trainer.run_segment(params, opt_state, 3.0, 0, 12, patience=patience, min_steps=min_steps)
    assert ran == expected < 12, (ran, expected)  # lam 3 settles on the cheapest formats within a few steps
    assert trainer.space.harden(trainer.cfg, jax.device_get(params["knobs"])) == designs[ran - 1]
    assert trainer.run_segment(*fresh(), 3.0, 0, 4)[2] == 4  # patience 0: every step
    assert trainer.trace_count == 1, "the segments reuse the one compilation"
    for kw, field in (({"steps": 0}, "steps"), ({"steps": 2, "patience": -1}, "patience"),
                      ({"steps": 2, "min_steps": 0}, "min_steps")):
        with pytest.raises(ValueError, match=f"^{field}="):
            trainer.run_segment(*fresh(), 3.0, 0, **{"steps": 2, **kw})


@pytest.mark.parametrize("kw, field", [({"lam": 0.1}, "lam"), ({"budget": 1e-3}, "lam")])
def test_path_trainer_refuses_a_fixed_lambda_or_budget(tiny_json, kw, field):
    import dataclasses

    from codesign import PathTrainer

    sc = _sc(tiny_json)
    jc = dataclasses.replace(sc.joint_config({"lam": 0.0}), **kw)
    with pytest.raises(ValueError, match=f"^{field}="):
        PathTrainer(sc.train_config(2), jc, sc.space())


def test_gradient_path_walks_the_lambdas_in_order_from_one_compilation(tiny_json):
    """The path: one row per lambda (ascending), times increasing, each row a hardened design measured
    like a black-box candidate (its cost is the design's predicted cost)."""
    from codesign import gradient_path

    sc = _sc(tiny_json, lams=(0.3, 0.0), steps=2, recovery_steps=1)
    rows = gradient_path(sc, None, log=lambda *_: None)
    assert [r["lam"] for r in rows] == [0.0, 0.3] and [r["point"] for r in rows] == [0, 1]
    assert rows[0]["t_s"] < rows[1]["t_s"] and all(r["method"] == "gradient-path" for r in rows)
    ev = Evaluator(sc)
    for r in rows:
        hardened = {k: r[k] for k in ("formats", "kv_formats", "act_formats", "ffn_widths")}
        _check_hardened(ev.space, hardened)
        assert r["cost"] == ev.cost(hardened)["metric_value"] and math.isfinite(r["val_loss"])
    # budgets are the independent sweep's form: the config itself refuses them for the path, and
    # gradient_path refuses a config of the independent method that carries them
    with pytest.raises(ValueError, match="^method='path'"):
        _sc(tiny_json, lams=(), budgets=(1e-3,))
    with pytest.raises(ValueError, match="^budgets="):
        gradient_path(_sc(tiny_json, lams=(), budgets=(1e-3,), method="independent"), None)
