"""Hardening, recovery fine-tuning, and the deployment file with its verification.

After a joint run, `harden_and_recover` fixes every relaxed choice (argmax formats, kept
FFN widths rounded to multiples of 8), fine-tunes the network weights for a few steps
with those choices applied exactly (one format per layer, 0/1 width masks, KV and
activation formats in the forward pass), measures the validation loss and computes the
predicted cost of the hardened design. `write_deployment` records all of it:

    schema_version, kind         "codesign.deployment", SCHEMA_VERSION
    model                        the ModelConfig (full widths; the kept widths are in `hardened`)
    design_space, hardened       candidate formats and the chosen per-layer formats / widths
    target                       name and every hardware parameter (learned ones included)
    scenario, metric             what the cost is of, and which metric the run traded
    cost                         latency_s, energy_j, dollars, memory_bytes, area_mm2, the
                                 metric's value and the per-op latency breakdown
    validation                   loss [nats/byte] and how it was measured (batches, corpus hash)
    checkpoint                   the recovery checkpoint (path relative to the file) and step
    train                        the recovery TrainConfig (rebuilds the same evaluation)
    provenance                   seed, git commit, package versions, python, time

`verify_deployment` rebuilds the network from the file and its checkpoint, re-measures the
validation loss and re-computes the cost; any field that disagrees beyond the tolerance
(loss: relative 1e-3, enough for CPU/GPU reduction-order differences; cost: relative 1e-5)
is reported and `codesign verify` exits 1. A file that is not a deployment, has another
schema version, or names a checkpoint that is missing is a ValueError (exit 2).
Files are written to a temporary name and renamed, so an interrupted export never leaves
a file that looks complete.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

import hwcost
import nets
from codesign import _integrity
from codesign.joint import _targets
from codesign.training._checkpoint import Checkpointer
from codesign.joint._space import DesignSpace
from codesign.training._trainer import TrainConfig, Trainer

SCHEMA_VERSION = 1
KIND = "codesign.deployment"
LOSS_RTOL = 1e-3
COST_RTOL = 1e-5
_COST_FIELDS = ("latency_s", "energy_j", "dollars", "memory_bytes", "area_mm2")


class HardenedTrainer(Trainer):
    """Plain training of the network with a hardened design applied exactly in every forward pass."""

    def __init__(self, tc: TrainConfig, space: DesignSpace, hardened: dict[str, Any], init_params: Any = None):
        self.space = space
        self.hardened = hardened
        super().__init__(tc, init_params)
        self.quant = space.hard_quant(self.cfg, hardened)

    def model_from(self, params: Any):
        from flax import nnx
        return nnx.merge(self.graphdef, self.space.apply_hard(self.cfg, params, self.hardened), self.rest)

    def forward(self, params: Any, inputs: jax.Array, step: jax.Array | None):
        return self.model_from(params)(inputs, quant=self.quant)


def design_cost(cfg: nets.ModelConfig, space: DesignSpace, hardened: dict[str, Any], target, scenario: hwcost.Scenario,
                metric: str) -> dict[str, Any]:
    """Predicted cost of a hardened design: every Cost field, the metric's value, per-op latency."""
    from codesign.joint._trainer import cost_metric

    knobs = space.hard_workload_knobs(cfg, hardened, scenario)
    cost = target.cost(hwcost.workload(cfg, scenario, knobs))
    # a field the target does not model is recorded as None (and not verified)
    out = {name: float(getattr(cost, name)) if name in cost.modelled else None for name in _COST_FIELDS}
    out["metric"] = metric
    out["metric_value"] = float(cost_metric(cost, metric))
    if "op_latency_s" in cost.breakdown:
        out["breakdown_latency_s"] = {op: float(v) for op, v in cost.by_op("op_latency_s").items()}
    return out


def provenance(seed: int) -> dict[str, Any]:
    import importlib.metadata as md

    def version(pkg: str) -> str:
        try:
            return md.version(pkg)
        except md.PackageNotFoundError:
            return "absent"

    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                                cwd=Path(__file__).resolve().parent).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    return {"seed": seed, "git_commit": commit, "python": platform.python_version(),
            "packages": {p: version(p) for p in ("jax", "jaxlib", "flax", "optax", "equinox", "orbax-checkpoint",
                                                 "ml_dtypes", "codesign")},
            "backend": jax.default_backend(), "created_utc": datetime.datetime.now(datetime.UTC).isoformat()}


def recovery_config(tc, steps: int):
    """The recovery fine-tune after hardening: `steps` steps at 0.3x the joint lr, no warm-up."""
    return dataclasses.replace(tc, steps=steps, warmup_steps=0, lr=tc.lr * 0.3, eval_every=steps, ckpt_every=steps,
                               log_every=max(1, steps // 2))


def harden_and_recover(trainer, out_dir: Path, *, recovery_steps: int, progress: bool = False) -> dict[str, Any]:
    """Harden a finished `JointTrainer`, fine-tune `recovery_steps` steps into out_dir/recovery/, and
    return the deployment record (not yet written; see `write_deployment`)."""
    from codesign.training._trainer import train

    space, cfg = trainer.space, trainer.cfg
    params = jax.device_get(trainer.params)
    hardened = space.harden(cfg, params["knobs"])
    target = trainer.target(params)
    tc = recovery_config(trainer.tc, recovery_steps)
    recovery = HardenedTrainer(tc, space, hardened, init_params=params["net"])
    result = train(tc, Path(out_dir) / "recovery", progress=progress, trainer=recovery)
    jc = trainer.jc
    return {
        "schema_version": SCHEMA_VERSION, "kind": KIND,
        "model": cfg.to_dict(), "design_space": space.to_dict(), "hardened": hardened,
        "target": {"name": jc.target, "params": _targets.target_params(target),
                   "learned": list(jc.hardware)},
        "scenario": dataclasses.asdict(trainer.scenario),
        "objective": {"metric": jc.metric, "lam": jc.lam, "budget": jc.budget},
        "cost": design_cost(cfg, space, hardened, target, trainer.scenario, jc.metric),
        "validation": {"loss": result.final_val_loss, "batch": tc.batch, "seq_len": tc.seq_len,
                       "batches": tc.eval_batches, "corpus": tc.corpus,
                       "corpus_sha256": recovery.corpus.train_sha256},
        "checkpoint": {"path": "recovery/checkpoints", "step": recovery_steps},
        "train": dataclasses.asdict(tc),
        "provenance": provenance(tc.seed),
    }


def write_deployment(path: Path, record: dict[str, Any]) -> None:
    """Write the record sealed with SHA-256 digests of its checkpoint files and of itself (`codesign._integrity`).

    The record's checkpoint path is relative to the file's folder."""
    nets.atomic_write_json(path, _integrity.seal(record, Path(path).parent))


# ---- reading and verifying ------------------------------------------------------------
def load_deployment(path: str | Path) -> dict[str, Any]:
    """Read and check the structure of a deployment file (ValueError naming what is wrong)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"deployment={str(path)!r}: no such file")
    record = nets.read_json_file(path, "deployment", what="a deployment file (codesign run / sweep)")
    if not isinstance(record, dict) or record.get("kind") != KIND:
        raise ValueError(f"deployment={str(path)!r}: kind={record.get('kind') if isinstance(record, dict) else None!r}: "
                         f"must be {KIND!r}")
    if record.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(f"{path}: schema_version={record.get('schema_version')!r}: this codesign reads version "
                         f"{SCHEMA_VERSION}")
    for key in ("model", "design_space", "hardened", "target", "scenario", "objective", "cost", "validation",
                "checkpoint", "train", "provenance"):
        if key not in record:
            raise ValueError(f"{path}: deployment.{key}: missing (a deployment file has {key})")
        if not isinstance(record[key], dict):
            nets.fail(f"deployment.{key}", type(record[key]).__name__, "must be an object", file=str(path))
    ckpt = record["checkpoint"]
    if not isinstance(ckpt.get("path"), str) or not isinstance(ckpt.get("step"), int) or ckpt["step"] < 0:
        nets.fail("deployment.checkpoint", {k: ckpt.get(k) for k in ("path", "step")},
                  "must have a path (string) and a step (integer >= 0)", file=str(path))
    _integrity.check_record(record, path)
    return record


@dataclass
class Check:
    name: str
    recorded: float
    measured: float
    rtol: float

    @property
    def ok(self) -> bool:
        if not (math.isfinite(self.recorded) and math.isfinite(self.measured)):
            return False
        return abs(self.measured - self.recorded) <= self.rtol * max(abs(self.recorded), 1e-30)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "recorded": self.recorded, "measured": self.measured, "rtol": self.rtol,
                "ok": self.ok}


@dataclass
class Rebuilt:
    """A deployment rebuilt from its file: the record, the design and the trainer holding its weights."""
    record: dict[str, Any]
    cfg: nets.ModelConfig
    space: Any  # DesignSpace or PruningSpace
    hardened: dict[str, Any]
    target: Any
    scenario: hwcost.Scenario
    trainer: Trainer  # params restored from the recorded checkpoint step

    def model(self):
        """The network with the hardened design applied to its weights (KV/activation formats: `trainer.quant`)."""
        return self.trainer.model_from(self.trainer.params)

    def cost(self, target=None, scenario: hwcost.Scenario | None = None) -> dict[str, Any]:
        """Predicted cost of the design on `target` / `scenario` (default: the recorded ones)."""
        return design_cost(self.cfg, self.space, self.hardened, self.target if target is None else target,
                           self.scenario if scenario is None else scenario, self.record["objective"]["metric"])


def rebuild_deployment(path: str | Path) -> Rebuilt:
    """Check a deployment file and its checkpoint's hashes, rebuild the network and restore its weights."""
    from codesign.joint._prune_space import HardenedPruningTrainer, PruningSpace

    path = Path(path)
    record = load_deployment(path)
    ckpt_dir = path.parent / str(record["checkpoint"]["path"])
    if not ckpt_dir.is_dir():
        raise ValueError(f"checkpoint={str(ckpt_dir)!r}: no such folder next to the deployment file")
    _integrity.check_checkpoint(record, ckpt_dir, path)  # before anything is rebuilt from it
    try:
        cfg = nets.ModelConfig.from_dict(record["model"])
        pruning = "search_tokens" in record["design_space"]  # a PruningSpace's dict (SpAtten keep ratios)
        space = (PruningSpace if pruning else DesignSpace).from_dict(record["design_space"])
        hardened = record["hardened"]
        target = _targets.make_target(record["target"]["name"], record["target"]["params"])
        scenario = hwcost.Scenario(**record["scenario"])
        train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
        tc_dict = {k: v for k, v in record["train"].items() if k in train_fields}
    except (KeyError, TypeError) as err:
        raise ValueError(f"deployment={str(path)!r}: malformed ({err.__class__.__name__}: {err})") from None
    step = record["checkpoint"]["step"]
    checker = Checkpointer(ckpt_dir)
    if step not in checker.all_steps():
        checker.close()
        raise ValueError(f"checkpoint={str(ckpt_dir)!r}: step {step!r} not found (have {checker.all_steps()})")
    # the recorded model config is authoritative: train through a JSON file of it
    cfg_path = path.parent / ".verify_model.json"
    cfg_path.write_text(cfg.to_json())
    try:
        tc = TrainConfig(**{**tc_dict, "model": str(cfg_path)})
        trainer = (HardenedPruningTrainer if pruning else HardenedTrainer)(tc, space, hardened)
        try:
            restored = checker.restore(step, trainer.state())
        except Exception as err:  # orbax raises many kinds; the user needs one line
            raise ValueError(f"checkpoint={str(ckpt_dir)!r}: cannot be restored into the recorded model "
                             f"({err.__class__.__name__}: {str(err).splitlines()[0][:200]})") from None
        trainer.params, trainer.opt_state = restored["params"], restored["opt_state"]
    finally:
        checker.close()
        cfg_path.unlink(missing_ok=True)
    return Rebuilt(record, cfg, space, hardened, target, scenario, trainer)


def verify_deployment(path: str | Path) -> list[Check]:
    """Rebuild the deployment from its file and checkpoint; re-measure loss and cost (see module docstring)."""
    rebuilt = rebuild_deployment(path)
    record = rebuilt.record
    loss = rebuilt.trainer.evaluate()
    cost = rebuilt.cost()
    checks = [Check("validation.loss", float(record["validation"]["loss"]), loss, LOSS_RTOL)]
    for name in _COST_FIELDS + ("metric_value",):
        if cost[name] is None:
            continue
        checks.append(Check(f"cost.{name}", float(record["cost"][name]), cost[name], COST_RTOL))
    return checks


__all__ = ["SCHEMA_VERSION", "Check", "HardenedTrainer", "design_cost", "harden_and_recover",
           "load_deployment", "rebuild_deployment", "Rebuilt", "verify_deployment", "write_deployment"]
