"""The gradient path as the exported job: one continuation over the lambdas, every point hardened,
recovered, measured and written with its deployment file and checkpoint.

`path_points(sc, out, init, ...)` runs `codesign.search.PathTrainer` (one compiled joint step whose
lambda is a state leaf) over `sc.lams` in ascending order, `sc.steps` joint steps per lambda, each
segment continuing from the previous one's network, knobs and optimiser state (a regularisation path
with warm starts). After each segment it writes

    point-K/path/checkpoints   the path state (network, knobs, hardware, optimiser) after segment K:
                               an interrupted run continues from the last finished segment
    point-K/recovery/          the hardened design fine-tuned for `sc.recovery_steps` steps at 0.3x
                               the lr (`codesign.joint.harden_and_recover`'s recipe), its checkpoint
                               and metrics; from the weights the path STARTED from (the pretrained
                               network; `recover_from="start"`, the default) or from the path's own
                               network after segment K (`recover_from="path"`)

Why recovery starts from the shared weights by default: along the path the network keeps training,
so point K's network has had K more segments than point 0's. On a network far from convergence
(the default job's, after 100 steps) that extra training lowers the loss of every later point by
more than its cheaper design raises it (measured: with recovery from the path, the four points of
`codesign run` lost 2.194, 2.149, 2.099, 2.066 nats while the cost fell 3x, one point dominating
the rest). Starting every point's recovery from the same weights gives every exported point the
same training budget (pretraining + recovery steps), so the front compares designs, not budgets;
the path then is the search for the designs.
    point-K/deployment.json    the deployment record, as `codesign verify` reads it

Compilations: the recovery fine-tune of every point runs through ONE `RecoveryTrainer`, whose
compiled step takes the hardened design as arrays (argmax formats as one-hot 1e4 logits, kept FFN
widths as a 0/1 mask, `DesignSpace.apply(..., widths=)`) passed with the data, so a new design is
a new argument, not a new trace: numerically the design `codesign.joint.HardenedTrainer` (what
`codesign verify` rebuilds) applies. Unlike `codesign.joint.DesignTrainer` (the same idea with the
design in the trainable state), its state and checkpoint have HardenedTrainer's layout, which is
what a deployment file's checkpoint must restore into. A path of N points thus compiles three functions (the joint step,
the recovery step, the recovery evaluation) where N independent runs compile four per point (joint
step and evaluation, recovery step and evaluation). A pruning space (`PruningSpace`) recovers
through `HardenedPruningTrainer`, one compilation per point: its kept counts are static shapes.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import nnx

from codesign._phase import phase
from codesign.joint._deploy import KIND, SCHEMA_VERSION, design_cost, provenance, recovery_config, write_deployment
from codesign.joint._prune_space import HardenedPruningTrainer, PruningJointTrainer, PruningSpace
from codesign.joint._space import DesignSpace, design_knobs
from codesign.search._baselines import PathTrainer
from codesign.joint import _targets
from codesign.training._checkpoint import Checkpointer
from codesign.training._trainer import NonFiniteError, Trainer, TrainConfig, init_guard, train


class RecoveryTrainer(Trainer):
    """Fine-tuning of any hardened design of `space` through one compiled step (module docstring).

    `set_design(hardened, net_params)` loads a design and fresh network weights (and a fresh
    optimiser state); `train(tc, out, trainer=self)` then runs it with checkpoints as usual. The
    state (`params`, `opt_state`) has `HardenedTrainer`'s structure, so `codesign verify` restores it.
    """

    def __init__(self, tc: TrainConfig, space: DesignSpace):
        self.space = space
        self._knobs = None  # the design being traced (set inside the jitted step / evaluation)
        super().__init__(tc)
        self._corpus, self._valid = self.train_data, self.valid

    def set_design(self, hardened: dict[str, Any], net_params: Any) -> None:
        knobs = jax.device_put(design_knobs(self.space, self.cfg, hardened), self.replicated)
        self.hardened = hardened
        self.train_data = (self._corpus, knobs)
        self.valid = (*self._valid, knobs)
        self.params = jax.device_put(net_params, self.rules.tree_shardings(net_params))
        opt_state = self.optimizer.init(self.params)
        self.opt_state = jax.device_put(opt_state, self.rules.tree_shardings(opt_state))

    def _step(self, params, opt_state, train_data, step, guard=None):
        corpus, self._knobs = train_data
        try:
            return super()._step(params, opt_state, corpus, step, guard)
        finally:
            self._knobs = None

    def _eval(self, params, valid):
        xs, ys, self._knobs = valid
        try:
            return super()._eval(params, (xs, ys))
        finally:
            self._knobs = None

    def forward(self, params: Any, inputs: jax.Array, step: jax.Array | None):
        design = self._knobs
        net = self.space.apply(self.cfg, params, design["knobs"], 1.0, widths=design["widths"])
        return nnx.merge(self.graphdef, net, self.rest)(inputs, quant=self.space.network_quant(design["knobs"]))


def _segment_done(pdir: Path) -> int | None:
    ckpt = Checkpointer(pdir / "path" / "checkpoints")
    try:
        return ckpt.latest_step()
    finally:
        ckpt.close()


class PruningPathTrainer(PathTrainer, PruningJointTrainer):
    """The path trainer (lambda a state leaf) over a `PruningSpace`: SpAtten token / head keep ratios
    next to the formats and widths (the forward pass is `PruningJointTrainer`'s)."""


def _recover(space, recovery_tc, hardened, net_params, shared):
    """The trainer that fine-tunes `hardened`: the one shared RecoveryTrainer, or for a pruning design a
    HardenedPruningTrainer of its own (a PrunePlan's kept counts are static shapes: one compile each)."""
    if isinstance(space, PruningSpace):
        return HardenedPruningTrainer(recovery_tc, space, hardened, init_params=net_params), shared
    shared = shared or RecoveryTrainer(recovery_tc, space)
    shared.set_design(hardened, net_params)
    return shared, shared


def path_points(sc, out: Path, init_net_params: Any, *, progress: bool, log: Callable[[str], None],
                load_deployment: Callable[[Path], dict[str, Any]]) -> list[tuple[dict[str, float], dict[str, Any]]]:
    """Run (or resume) the path of `sc` (a `SweepConfig`, penalty form) into out/point-K/; returns
    (point, deployment record) per lambda, ascending."""
    space = sc.space()
    tc = sc.train_config(sc.steps)
    lams = sorted(float(x) for x in sc.lams)
    path_class = PruningPathTrainer if isinstance(space, PruningSpace) else PathTrainer
    trainer = path_class(tc, sc.joint_config({"lam": 0.0}), space, init_net_params=init_net_params)
    cfg = trainer.cfg
    recovery_tc = recovery_config(tc, sc.recovery_steps)
    recovery = None
    start_net = jax.device_get(trainer.params["net"])  # the pretrained (or initial) weights every point shares
    # resume: the last point whose deployment and path state are both on disk
    first = 0
    for k in range(len(lams)):
        pdir = out / f"point-{k}"
        if (pdir / "deployment.json").exists() and _segment_done(pdir) == (k + 1) * sc.steps:
            first = k + 1
        else:
            break
    if first:
        ckpt = Checkpointer(out / f"point-{first - 1}" / "path" / "checkpoints")
        restored = ckpt.restore(first * sc.steps, trainer.state())
        ckpt.close()
        trainer.params, trainer.opt_state = restored["params"], restored["opt_state"]
    results = []
    for k, lam in enumerate(lams):
        pdir = out / f"point-{k}"
        point = {"lam": lam}
        if k < first:
            log(f"codesign: path point {k + 1}/{len(lams)} (lam={lam:g}) already done, read back")
            results.append((point, load_deployment(pdir / "deployment.json")))
            continue
        log(f"codesign: path point {k + 1}/{len(lams)} (lam={lam:g}): {sc.steps} joint steps from the previous "
            f"point + {sc.recovery_steps} recovery steps -> {pdir}")
        end = (k + 1) * sc.steps
        if _segment_done(pdir) != end:
            _run_segment(trainer, lam, k * sc.steps, end, pdir)
            ckpt = Checkpointer(pdir / "path" / "checkpoints")
            with phase("checkpoint"):
                ckpt.save(end, trainer.state())
            ckpt.close()
        else:  # the segment finished before an interruption; its recovery had not
            ckpt = Checkpointer(pdir / "path" / "checkpoints")
            restored = ckpt.restore(end, trainer.state())
            ckpt.close()
            trainer.params, trainer.opt_state = restored["params"], restored["opt_state"]
        params = jax.device_get(trainer.params)
        hardened = (space.harden(cfg, params["knobs"], n_tokens=tc.seq_len) if isinstance(space, PruningSpace)
                    else space.harden(cfg, params["knobs"]))
        recover_net = start_net if sc.recover_from == "start" else params["net"]
        fine_tune, recovery = _recover(space, recovery_tc, hardened, recover_net, recovery)
        result = train(recovery_tc, pdir / "recovery", progress=progress, trainer=fine_tune)
        target = trainer.target(params)
        record = _record(sc, cfg, space, hardened, target, trainer, lam, recovery_tc, result.final_val_loss,
                         fine_tune.corpus.train_sha256)
        with phase("file"):
            write_deployment(pdir / "deployment.json", record)
        results.append((point, record))
    return results


def _run_segment(trainer, lam: float, start: int, end: int, pdir: Path) -> None:
    """Joint steps start..end-1 at `lam`, with the numerics guard of `codesign.train` (a non-finite step
    stops the path with NonFiniteError under on_nonfinite="stop", nothing of it saved; "skip" skips it)."""
    trainer.params = trainer.with_lam(trainer.params, lam)
    guard = jax.device_put(init_guard(), trainer.replicated)
    for step in range(start, end):
        with phase("compile" if step == 0 else "step"):
            trainer.params, trainer.opt_state, m = trainer.step_fn(trainer.params, trainer.opt_state,
                                                                   trainer.train_data, jnp.asarray(step, jnp.int32),
                                                                   guard)
        guard = {"skipped": m["skipped_steps"], "bad_step": m["bad_step"]}
    bad = int(jax.device_get(guard["bad_step"]))
    if bad >= 0:
        raise NonFiniteError(bad, bad - 1, pdir / "path" / "checkpoints")


def _record(sc, cfg, space, hardened, target, trainer, lam, tc, val_loss, corpus_sha256) -> dict[str, Any]:
    """The deployment record of one path point (the fields `harden_and_recover` writes)."""
    jc = trainer.jc
    return {
        "schema_version": SCHEMA_VERSION, "kind": KIND,
        "model": cfg.to_dict(), "design_space": space.to_dict(), "hardened": hardened,
        "target": {"name": jc.target, "params": _targets.target_params(target), "learned": list(jc.hardware)},
        "scenario": dataclasses.asdict(trainer.scenario),
        "objective": {"metric": jc.metric, "lam": lam, "budget": None, "method": "path",
                      "recover_from": sc.recover_from},
        "cost": design_cost(cfg, space, hardened, target, trainer.scenario, jc.metric),
        "validation": {"loss": val_loss, "batch": tc.batch, "seq_len": tc.seq_len, "batches": tc.eval_batches,
                       "corpus": tc.corpus, "corpus_sha256": corpus_sha256},
        "checkpoint": {"path": "recovery/checkpoints", "step": tc.steps},
        "train": dataclasses.asdict(tc),
        "provenance": provenance(tc.seed),
    }


__all__ = ["PruningPathTrainer", "RecoveryTrainer", "design_knobs", "path_points"]
