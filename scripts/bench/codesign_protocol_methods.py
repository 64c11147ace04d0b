"""The fair protocol's methods (scripts/bench/codesign_protocol.py runs them; its docstring states each one's budget).

Each search takes the protocol's `Bench` (pricing, PTQ evaluator, pretrained weights) and returns candidate rows
{formats, cost, signal}; the heuristics return one design per budget; `pick` is a method's design at a budget.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np

from codesign import SEED_STRIDE, PathTrainer, random_candidate

if TYPE_CHECKING:
    from codesign_protocol import Bench


def gradient_path(b: Bench, seed: int = 0) -> list[dict[str, Any]]:
    """The path on seed `seed`'s batches (steps from seed * SEED_STRIDE on); one PathTrainer, compiled once."""
    a = b.a
    if not hasattr(b, "path"):  # built once, before the clock starts (as random / TPE's evaluator is)
        tc = b.train_config(b.tc.model, a.path_steps, a.finetune_lr)
        b.path = PathTrainer(tc, b.joint_config(0.0), b.space, init_net_params=b.init)
        b.path_start = jax.device_get((b.path.params, b.path.opt_state))
    trainer = b.path
    t0 = time.perf_counter()
    params, opt_state = (jax.device_put(x, trainer.rules.tree_shardings(x)) for x in b.path_start)
    base = seed * SEED_STRIDE // a.path_steps * a.path_steps  # segment k's batches: from base + k * path_steps
    rows = []
    compile_s = None
    for k, lam in enumerate(sorted(a.lams, reverse=a.path_order == "descending")):
        step, todo = base + k * a.path_steps, a.path_steps
        if not hasattr(b, "path_compiled"):  # the first step compiles: time it apart
            tc0 = time.perf_counter()
            params, opt_state, _ = trainer.run_segment(params, opt_state, lam, step, 1)
            jax.block_until_ready(params)
            compile_s, step, todo = time.perf_counter() - tc0, step + 1, todo - 1
            b.path_compiled = True
        ran = a.path_steps - todo
        if todo:
            params, opt_state, n = trainer.run_segment(params, opt_state, lam, step, todo,
                                                       patience=a.path_patience, min_steps=max(1, a.path_min_steps - ran))
            ran += n
        snap = jax.device_get(params)
        formats = b.space.harden(b.cfg, snap["knobs"])["formats"]
        signal = b.ptq(formats, snap["net"])
        if a.path_signal == "damage":  # the design's quantisation damage at the path's weights, on the PTQ scale
            signal += b.ptq(["bf16"] * b.n) - b.ptq(["bf16"] * b.n, snap["net"])
        rows.append({"formats": formats, "cost": b.cost(formats), "signal": signal, "lam": lam,
                     "probs": softmax(np.asarray(snap["knobs"]["w_logits"])).round(4).tolist(), "steps": ran,
                     "t_s": time.perf_counter() - t0, "compile_s": compile_s})
        b.log(f"gradient path lam={lam:g}: {formats}, signal {rows[-1]['signal']:.4f}")
    return rows


def softmax(logits: np.ndarray) -> np.ndarray:
    """The format probabilities of a row of logits, on the host (a record only; no eager JAX op to compile)."""
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def random_search(b: Bench, seed: int = 0) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    rows, t0 = [], time.perf_counter()
    for _ in range(b.a.trials):
        formats = random_candidate(b.space, b.cfg, rng)["formats"]
        rows.append({"formats": formats, "cost": b.cost(formats), "signal": b.ptq(formats),
                     "t_s": time.perf_counter() - t0})
    return rows


def tpe_search(b: Bench, seed: int = 0) -> list[dict[str, Any]]:
    try:
        import optuna
    except ImportError:  # an optional extra (pip install -e .[bench]); the record says TPE did not run
        b.log("optuna is not installed: TPE skipped")
        return []

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=["minimize", "minimize"],
                                sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=5))
    rows, t0 = [], time.perf_counter()
    for _ in range(b.a.trials):
        trial = study.ask()
        formats = [trial.suggest_categorical(f"layer_{i}", list(b.formats)) for i in range(b.n)]
        row = {"formats": formats, "cost": b.cost(formats), "signal": b.ptq(formats)}
        row["t_s"] = time.perf_counter() - t0
        study.tell(trial, [row["signal"], math.log10(row["cost"])])
        rows.append(row)
    return rows


def fisher_sensitivity(b: Bench) -> np.ndarray:
    """[layer, format] sum_i F_ii (w_i - Q_f(w_i))^2, F the mean squared gradient of the loss."""
    trainer = b.pre  # the plain network (no design applied): its gradients at the pretrained weights
    xs, ys = trainer.valid

    def loss(params, x, y):
        logits = trainer.model_from(params)(x)[0].astype(jnp.float32)
        return jnp.mean(-jnp.take_along_axis(jax.nn.log_softmax(logits), y[..., None], -1))
    grad = jax.jit(jax.grad(loss))
    batches = min(b.a.fisher_batches, xs.shape[0])
    fisher = jax.tree.map(jnp.zeros_like, b.init)
    for i in range(batches):
        g = grad(b.init, xs[i], ys[i])
        fisher = jax.tree.map(lambda f, gi: f + gi * gi / batches, fisher, g)
    # one compiled function of the design's one-hot arrays (`DesignSpace.apply` with hard knobs equals `apply_hard`)
    # instead of 12 x 6 eager `apply_hard` calls (99 s on the H100 at 115M parameters)
    @jax.jit
    def weighted_error(fisher, params, state):
        q = b.space.apply(b.cfg, params, state["knobs"], 1.0, widths=state["widths"])
        return sum(jnp.sum(f * (w - wq) ** 2) for f, w, wq in
                   zip(jax.tree.leaves(fisher), jax.tree.leaves(params), jax.tree.leaves(q)))
    out = np.zeros((b.n, len(b.formats)))
    for layer in range(b.n):
        for j, fmt in enumerate(b.formats):
            names = ["bf16"] * b.n
            names[layer] = fmt
            out[layer, j] = float(weighted_error(fisher, b.init, b.dt.design_state(b.design(names))))
    return out


def hawq_greedy(b: Bench, sens: np.ndarray, budget: float) -> list[str]:
    """Start at bf16 everywhere; take the (layer, cheaper format) move with the least sensitivity increase
    per energy saved until the budget holds."""
    choice = [0] * b.n
    names = b.formats
    while b.cost([names[c] for c in choice]) > budget:
        best, best_score = None, math.inf
        now = b.cost([names[c] for c in choice])
        for layer in range(b.n):
            for j in range(len(names)):
                trial = list(choice)
                trial[layer] = j
                saved = now - b.cost([names[c] for c in trial])
                if saved > 0 and (score := (sens[layer, j] - sens[layer, choice[layer]]) / saved) < best_score:
                    best, best_score = trial, score
        if best is None:
            break
        choice = best
    return [names[c] for c in choice]


def practitioner_rule(b: Bench, low: str) -> list[str]:
    return ["bf16"] + [low] * (b.n - 2) + ["bf16"] if b.n > 2 else ["bf16"] * b.n


def pick(rows: list[dict[str, Any]], budget: float) -> dict[str, Any] | None:
    ok = [r for r in rows if r["cost"] <= budget * (1 + 1e-9)]
    return min(ok, key=lambda r: r["signal"]) if ok else None
