"""The ATTS draft and target decoders, trained from scratch on the arithmetic scratchpad task (or the chain task).

ATTS (arXiv 2509.15148) pairs a small draft model with a large target model; no pretrained
weights can be downloaded here, so both are trained on the embedded arithmetic task
(`codesign.data`'s arithmetic task, a faithful small-scale reproduction of arXiv
2509.15148's setting): the target to at least 99% step accuracy, the draft stopped
while its step error lies in the 10-30% band, so that it is a useful but fallible writer.

Sizes: "full" (target 3.54M params, draft 0.14M, operands of 3-12 digits, for the H200), "large"
(target 106M, draft 4.0M, 3-12 digits: a per-call cost ratio that lets a draft pay, for a GPU) and
"tiny" (target 0.14M, draft 0.05M, 3-5 digits, minutes on a CPU). A `TrainSpec` with a time budget
trains for a wall-clock time instead of a step count (its learning rate follows the elapsed time).

Step accuracy (`step_accuracy`) is teacher-forced: given the gold prefix, a scratchpad line
counts as correct when the greedy (argmax) prediction of every byte of the line, its newline
included, is right. One forward pass per batch, so it is cheap enough to run while training. Its
`exact` (every line right given the gold prefix) is also the share of problems that greedy decoding
solves with the gold chain: greedy decoding writes the gold text exactly when every prediction is right.
The tasks themselves (`ArithTask`, `ChainTask`, `task_for`) live in `_tasks`.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import nets
from nets import InputError
from codesign.atts._tasks import ArithTask, ChainTask, _check_size, task_for, task_from_dict
from codesign.data import ArithDataset
from codesign.training import TrainConfig, Trainer

__all__ = ["TrainSpec", "ModelPair", "DRAFT_VARIANTS", "draft_config", "target_config", "train_model", "step_accuracy",
           "save_model", "load_model", "train_pair", "load_pair"]

NEWLINE = 10


def _decoder(name: str, d_model: int, n_layers: int, n_heads: int, d_ff: int, n_kv_heads: int | None = None
             ) -> nets.ModelConfig:
    kind = "mha" if n_kv_heads in (None, n_heads) else "gqa"
    return nets.ModelConfig(name=name, vocab_size=256, d_model=d_model, n_layers=n_layers, max_seq_len=512,
                            attention=nets.AttentionConfig(kind=kind, n_heads=n_heads, n_kv_heads=n_kv_heads or n_heads,
                                                           head_dim=d_model // n_heads),
                            ffn=nets.FFNConfig(kind="dense", activation="swiglu", d_ff=d_ff),
                            positions="rope", source="codesign ATTS reproduction (arXiv 2509.15148)")


def target_config(size: str = "full") -> nets.ModelConfig:
    """Target decoder: 4 layers, d_model 256 (3.54M params) full; 12 layers, d_model 768 (106M) large;
    2 layers, d_model 64 (0.14M) tiny."""
    _check_size(size)
    if size == "full":
        return _decoder("atts-target", 256, 4, 8, 768)
    if size == "large":
        return _decoder("atts-target-large", 768, 12, 12, 2816)
    return _decoder("atts-target-tiny", 64, 2, 4, 192)


# the large draft's shapes, most capable first (d_model, layers, heads, d_ff, kv heads): all 26-30x smaller than
# the large target; "kv2" shares each KV head among 3 query heads (a 3x smaller KV cache), "1layer" halves the
# layers a decode step runs through (a pair's cost ratio is a property of the call, so a script may take the
# first variant whose measured ratio meets its need)
DRAFT_VARIANTS = {"base": (384, 2, 6, 1152, 6), "kv2": (384, 2, 6, 1152, 2), "1layer": (512, 1, 8, 1536, 8)}


def draft_config(size: str = "full", variant: str = "base") -> nets.ModelConfig:
    """Draft decoder: 2 layers, d_model 64 (0.14M params) full; large: `variant` of `DRAFT_VARIANTS`, base
    2 layers, d_model 384 (4.0M, 26x smaller than its target; its KV cache, which a decode step reads, 12x
    smaller); 1 layer, d_model 48 (0.05M) tiny. Only the large size has variants."""
    _check_size(size)
    if variant not in DRAFT_VARIANTS or (size != "large" and variant != "base"):
        allowed = ", ".join(DRAFT_VARIANTS) if size == "large" else "base"
        raise InputError("variant", variant, f"for size {size!r} must be one of: {allowed}")
    if size == "full":
        return _decoder("atts-draft", 64, 2, 4, 192)
    if size == "large":
        d, layers, heads, ff, kv = DRAFT_VARIANTS[variant]
        return _decoder("atts-draft-large" + ("" if variant == "base" else f"-{variant}"), d, layers, heads, ff, kv)
    return _decoder("atts-draft-tiny", 48, 1, 4, 128)


@dataclass(frozen=True)
class TrainSpec:
    """Optimisation of one model: AdamW with warmup + cosine decay, masked next-byte loss.

    steps: optimiser steps; batch: examples per step; lr: peak learning rate;
    eval_every: steps between step-accuracy evaluations on `eval_n` validation problems.
    time_budget_s: if set, train for this many wall-clock seconds (compilation and evaluations
      included) or `steps`, whichever ends first; the learning rate warms up over `warmup_steps`
      and then decays on a cosine of the elapsed share of the budget (not of `steps`).
    dtype: compute dtype of the network (`TrainConfig.dtype`: "float32", or "auto" for bfloat16 on
      an accelerator); parameters and optimiser state stay float32.
    """

    steps: int = 3000
    batch: int = 64
    lr: float = 3e-3
    warmup_steps: int = 100
    weight_decay: float = 0.01
    eval_every: int = 250
    eval_n: int = 256
    train_n: int = 20000
    seed: int = 0
    time_budget_s: float | None = None
    dtype: str = "float32"

    def __post_init__(self):
        for name in ("steps", "batch", "eval_every", "eval_n", "train_n"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InputError(name, value, "must be an integer >= 1")
        if not isinstance(self.warmup_steps, int) or not 0 <= self.warmup_steps < self.steps:
            raise InputError("warmup_steps", self.warmup_steps, f"must be an integer in [0, steps={self.steps})")
        if not 0 < self.lr < 1:
            raise InputError("lr", self.lr, "must lie in (0, 1)")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise InputError("seed", self.seed, "must be a non-negative integer")
        budget = self.time_budget_s
        if budget is not None and (isinstance(budget, bool) or not isinstance(budget, (int, float))
                                   or not 0 < budget < float("inf")):
            raise InputError("time_budget_s", budget, "must be None or a positive number of seconds")
        if self.dtype not in ("float32", "bfloat16", "auto"):
            raise InputError("dtype", self.dtype, "must be one of float32, bfloat16, auto")


def _line_ids(dataset: ArithDataset) -> np.ndarray:
    """int32 [n, seq_len]: for every target byte, the index of its completion line (-1 elsewhere).

    Line k < n_steps is scratchpad step k; line n_steps is the answer line; END is its own.
    """
    targets, mask = dataset.targets, dataset.target_mask > 0
    is_nl = (targets == NEWLINE) & mask
    # a byte belongs to the line whose newline is the first at or after it
    line = np.cumsum(is_nl, axis=1) - is_nl
    return np.where(mask, line, -1).astype(np.int32)


@jax.jit
def _predict(graphdef, state, inputs_BxL):
    logits, _ = nnx.merge(graphdef, state)(inputs_BxL)
    return jnp.argmax(logits, -1)


def step_accuracy(model: nets.TransformerLM, dataset: ArithDataset, *, batch: int = 256) -> dict[str, float]:
    """Teacher-forced accuracy: fraction of scratchpad lines (`step`), of answer lines (`answer`)
    and of whole completions (`exact`) whose every byte the greedy prediction gets right."""
    graphdef, state = nnx.split(model)
    line_ids = _line_ids(dataset)
    n_steps = dataset.n_steps
    step_ok = step_total = answer_ok = exact_ok = 0
    for start in range(0, len(dataset.problems), batch):
        sl = slice(start, start + batch)
        pred = np.asarray(_predict(graphdef, state, jnp.asarray(dataset.inputs[sl])))
        wrong = (pred != dataset.targets[sl]) & (line_ids[sl] >= 0)
        for row in range(pred.shape[0]):
            bad_lines = set(line_ids[sl][row][wrong[row]].tolist())
            k = int(n_steps[sl][row])
            step_ok += sum(1 for i in range(k) if i not in bad_lines)
            step_total += k
            answer_ok += k not in bad_lines
            exact_ok += not bad_lines
    n = len(dataset.problems)
    return {"step": step_ok / step_total, "answer": answer_ok / n, "exact": exact_ok / n}


class _ArithTrainer(Trainer):
    """The project's one training step on the arithmetic task: batches of whole examples drawn from a
    fixed training set, the next-byte loss on the completion only (the prompt's bytes are masked out),
    AdamW with the `TrainSpec`'s schedule (with a time budget, a learning rate set before every step:
    `optax.inject_hyperparams`); computed in the `TrainSpec`'s dtype."""

    def __init__(self, cfg: nets.ModelConfig, task: ArithTask | ChainTask, spec: TrainSpec):
        self.task, self.spec = task, spec
        tc = TrainConfig(steps=spec.steps, batch=spec.batch, seq_len=task.seq_len, lr=spec.lr,
                         warmup_steps=spec.warmup_steps, weight_decay=spec.weight_decay, clip_norm=1.0, aux_weight=0.0,
                         seed=spec.seed, dtype=spec.dtype)
        super().__init__(tc, cfg=cfg)

    def load_data(self):
        train = self.task.dataset(self.spec.train_n, self.spec.seed, "train")
        arrays = tuple(jnp.asarray(a) for a in (train.inputs, train.targets, train.target_mask))
        return jax.device_put(arrays, self.replicated), None

    def sample(self, train_data, step):
        inputs, targets, masks = train_data
        rows = jax.random.randint(jax.random.fold_in(self.root_key, step + 1), (self.spec.batch,), 0, inputs.shape[0])
        return inputs[rows], (targets[rows], masks[rows])

    def build_optimizer(self):
        spec = self.spec
        if spec.time_budget_s is not None:   # the rate is set from the elapsed time before every step
            adamw = optax.inject_hyperparams(optax.adamw, static_args=("b1", "b2", "weight_decay"))
            return optax.chain(optax.clip_by_global_norm(1.0),
                               adamw(learning_rate=0.0, b1=0.9, b2=0.98, weight_decay=spec.weight_decay))
        schedule = optax.warmup_cosine_decay_schedule(0.0, spec.lr, spec.warmup_steps, spec.steps, spec.lr * 0.05)
        return optax.chain(optax.clip_by_global_norm(1.0),
                           optax.adamw(schedule, b1=0.9, b2=0.98, weight_decay=spec.weight_decay))

    def set_lr(self, lr: float) -> None:
        """Set the learning rate of the next steps (time-budgeted training): a new value of the same
        shape, dtype and placement, so the compiled step is reused."""
        clip_state, adamw_state = self.opt_state
        old = adamw_state.hyperparams["learning_rate"]
        new = jax.device_put(np.asarray(lr, old.dtype), self.replicated)
        self.opt_state = (clip_state, adamw_state._replace(hyperparams={**adamw_state.hyperparams, "learning_rate": new}))

    def objective(self, params, inputs_BxL, targets_and_mask, step):
        targets_BxL, mask_BxL = targets_and_mask
        logits, _ = self.forward(params, inputs_BxL, step)
        nll = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), targets_BxL)
        loss = (nll * mask_BxL).sum() / jnp.maximum(mask_BxL.sum(), 1.0)
        return loss, {"loss": loss}


def in_draft_band(acc: dict[str, float]) -> bool:
    """The draft checkpoint rule of `train_pair` (as `train_model`'s `select`): a step error of 10-30%."""
    return 0.10 <= 1.0 - acc["step"] <= 0.30


def train_model(cfg: nets.ModelConfig, task: ArithTask | ChainTask, spec: TrainSpec, *,
                select: Callable[[dict[str, float]], bool] | None = None,
                stop_at_step_accuracy: float | None = None,
                log: Callable[[str], None] | None = print) -> tuple[nets.TransformerLM, list[dict]]:
    """Train `cfg` on `task` through `codesign.Trainer`; returns (model, history of evaluations).

    `select(metrics)`: if given, the parameters of the latest evaluation for which it returns True
    are kept (and training stops at the first such evaluation once the step error is below 20%),
    which is how the draft is stopped inside its error band; if none qualifies, the final model.
    `stop_at_step_accuracy`: stop at the first evaluation whose step accuracy reaches it (target).
    """
    trainer = _ArithTrainer(cfg, task, spec)
    valid = task.dataset(spec.eval_n, spec.seed, "valid")
    history, kept = [], None
    start = time.perf_counter()
    clock = _BudgetClock(spec, start)
    for step in range(spec.steps):
        if spec.time_budget_s is not None:
            trainer.set_lr(clock.lr(step))
        metrics = trainer.advance(step)
        out_of_time = clock.tick(step, metrics)
        if log and clock.new_quarter():
            log(f"  {cfg.name} step {step + 1:>5}  loss {float(metrics['loss']):.4f}  {clock.share:.0%} of the time "
                f"after compiling  {time.perf_counter() - start:.0f} s")
        if (step + 1) % spec.eval_every == 0 or step + 1 == spec.steps or out_of_time:
            acc = step_accuracy(trainer.model_from(trainer.params), valid)
            entry = {"step": step + 1, "loss": float(metrics["loss"]), "step_accuracy": acc["step"],
                     "answer_accuracy": acc["answer"], "exact": acc["exact"],
                     "elapsed_s": time.perf_counter() - start}
            history.append(entry)
            if log:
                log(f"  {cfg.name} step {step + 1:>5}  loss {entry['loss']:.4f}  step acc {acc['step']:.4f}  "
                    f"answer acc {acc['answer']:.4f}  {entry['elapsed_s']:.0f} s")
            if select is not None and select(acc):
                kept = jax.tree.map(jnp.copy, trainer.params)   # a copy: the next step donates the trainer's buffers
                if 1.0 - acc["step"] <= 0.2:
                    break
            if stop_at_step_accuracy is not None and acc["step"] >= stop_at_step_accuracy:
                break
            if out_of_time:
                break
    return trainer.model_from(kept if kept is not None else trainer.params), history


class _BudgetClock:
    """Wall-clock control of a time-budgeted training (`TrainSpec.time_budget_s`; inert without one).

    The device runs ahead of the host, so the clock waits for the step's loss every `sync_every`
    steps (and after the first, whose time is mostly compilation) before reading the time. The
    learning rate: linear warmup over `warmup_steps`, then a cosine from `lr` to 5% of it over the
    share of the budget left after the first step.
    """

    sync_every = 8

    def __init__(self, spec: TrainSpec, start: float):
        self.spec, self.start, self.first_done, self.share, self.quarters = spec, start, None, 0.0, 0

    def new_quarter(self) -> bool:
        """True the first time the elapsed share passes each quarter of the budget (progress lines)."""
        if self.share >= (self.quarters + 1) / 4:
            self.quarters = int(self.share * 4)
            return True
        return False

    def lr(self, step: int) -> float:
        spec = self.spec
        warm = min(1.0, (step + 1) / max(spec.warmup_steps, 1))
        return spec.lr * warm * (0.05 + 0.95 * 0.5 * (1.0 + np.cos(np.pi * min(self.share, 1.0))))

    def tick(self, step: int, metrics: dict) -> bool:
        """After `step`: True once the budget is spent."""
        if self.spec.time_budget_s is None or (step > 0 and (step + 1) % self.sync_every):
            return False
        jax.block_until_ready(metrics["loss"])
        now = time.perf_counter()
        if self.first_done is None:
            self.first_done = now
        left_after_first = self.spec.time_budget_s - (self.first_done - self.start)
        self.share = (now - self.first_done) / max(left_after_first, 1e-9)
        return now - self.start >= self.spec.time_budget_s


def save_model(model: nets.TransformerLM, directory: str | Path, meta: dict | None = None) -> None:
    """Write config.json, meta.json (with the model's compute dtype) and the parameters (orbax) of `model`
    into `directory`."""
    import orbax.checkpoint as ocp

    path = Path(directory).absolute()
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(model.cfg.to_json())
    meta = {**(meta or {}), "compute_dtype": jnp.dtype(model.dtype).name}
    (path / "meta.json").write_text(json.dumps(meta, indent=2))
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    with ocp.StandardCheckpointer() as ckpt:
        ckpt.save(path / "params", params, force=True)


def load_model(directory: str | Path) -> tuple[nets.TransformerLM, dict]:
    """Rebuild a model saved by `save_model`, computing in the dtype it was saved with (float32 for files
    that do not say); returns (model, meta)."""
    import orbax.checkpoint as ocp

    path = Path(directory).absolute()
    if not (path / "config.json").exists():
        raise InputError("directory", str(directory), "must hold config.json and params/ written by save_model")
    cfg = nets.ModelConfig.from_json((path / "config.json").read_text())
    meta = json.loads((path / "meta.json").read_text())
    model = nets.TransformerLM(cfg, rngs=nnx.Rngs(params=0), dtype=jnp.dtype(meta.get("compute_dtype", "float32")))
    state = nnx.state(model, nnx.Param)
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, nnx.to_pure_dict(state))
    with ocp.StandardCheckpointer() as ckpt:
        restored = ckpt.restore(path / "params", abstract)
    nnx.replace_by_pure_dict(state, restored)
    nnx.update(model, state)
    return model, meta


@dataclass
class ModelPair:
    """A trained draft/target pair, the task they were trained on and their measured quality."""

    draft: nets.TransformerLM
    target: nets.TransformerLM
    task: ArithTask | ChainTask
    report: dict


def _default_specs(size: str, seed: int) -> tuple[TrainSpec, TrainSpec]:
    if size == "full":
        return (TrainSpec(steps=8000, batch=128, lr=2e-3, warmup_steps=200, eval_every=500, eval_n=512, seed=seed),
                TrainSpec(steps=8000, batch=128, lr=3e-3, warmup_steps=200, eval_every=100, eval_n=512,
                          seed=seed + 1))
    return (TrainSpec(steps=3000, batch=64, lr=3e-3, warmup_steps=100, eval_every=250, eval_n=256, seed=seed),
            TrainSpec(steps=3000, batch=64, lr=3e-3, warmup_steps=100, eval_every=50, eval_n=256, seed=seed + 1))


def train_pair(size: str = "full", *, out: str | Path | None = None, seed: int = 0,
               target_spec: TrainSpec | None = None, draft_spec: TrainSpec | None = None,
               test_n: int = 1000, log: Callable[[str], None] | None = print) -> ModelPair:
    """Train the target (to >= 99% step accuracy) and the draft (stopped in the 10-30% error band),
    measure both on `test_n` held-out test problems, optionally save them under `out`/{draft,target}.

    The report says whether each requirement is met; it does not raise when one is missed,
    so a caller sees the numbers (the training script exits non-zero instead).
    """
    _check_size(size)
    task = task_for(size)
    default_target, default_draft = _default_specs(size, seed)
    target_spec, draft_spec = target_spec or default_target, draft_spec or default_draft
    start = time.perf_counter()
    target, target_hist = train_model(target_config(size), task, target_spec, stop_at_step_accuracy=0.997,
                                      log=log)
    target_s = time.perf_counter() - start
    draft, draft_hist = train_model(draft_config(size), task, draft_spec, select=in_draft_band, log=log)
    draft_s = time.perf_counter() - start - target_s
    test = task.dataset(test_n, seed + 7, "test")
    target_acc, draft_acc = step_accuracy(target, test), step_accuracy(draft, test)
    report = {
        "size": size, "task": dataclasses.asdict(task), "device": str(jax.devices()[0]),
        "target": {"config": target.cfg.name, "params": nets.param_count(target), "train_s": target_s,
                   "spec": dataclasses.asdict(target_spec), "test": target_acc, "history": target_hist},
        "draft": {"config": draft.cfg.name, "params": nets.param_count(draft), "train_s": draft_s,
                  "spec": dataclasses.asdict(draft_spec), "test": draft_acc, "history": draft_hist},
        "test_n": test_n,
        "target_ok": target_acc["step"] >= 0.99,
        "draft_ok": 0.10 <= 1.0 - draft_acc["step"] <= 0.30,
    }
    if out is not None:
        save_model(target, Path(out) / "target", {"task": report["task"], "test": target_acc})
        save_model(draft, Path(out) / "draft", {"task": report["task"], "test": draft_acc})
        (Path(out) / "report.json").write_text(json.dumps(report, indent=2))
    return ModelPair(draft, target, task, report)


def load_pair(directory: str | Path) -> ModelPair:
    """Load a pair written by `train_pair(out=directory)`."""
    path = Path(directory)
    target, meta = load_model(path / "target")
    draft, _ = load_model(path / "draft")
    report = json.loads((path / "report.json").read_text()) if (path / "report.json").exists() else {}
    return ModelPair(draft, target, task_from_dict(meta["task"]), report)
