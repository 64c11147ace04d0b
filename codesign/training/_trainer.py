"""Plain training of a `nets.ModelConfig` on the embedded byte corpus (no cost term).

One jitted step (loss, gradient and optax update together) runs sharded over a device
mesh through `jax.sharding`: the mesh of `TrainConfig.mesh` (`codesign.parallel`; default:
data parallelism over every device), parameters and optimiser state placed by the rules
table, so XLA inserts the collectives. The same code runs on one CPU, on CPU with forced
host devices, on a multi-GPU host and over several processes (`jax.distributed`: each
process builds only its rows of each batch, `Trainer.step_data`).

Exact resume: the batch of step s is drawn from `fold_in(data_key, s)`, and the
checkpoint holds parameters, optimiser state and step, so N steps in one go equal
N/2 steps + kill + resume N/2 bit for bit.

Numerics guard: the step checks inside the jitted function that the objective, the
gradients and the optimiser's updates are all finite, and selects (`jnp.where`) the new
parameters and optimiser state only when they are, so a NaN or inf never reaches the
state. A small on-device guard ({"skipped", "bad_step"}) rides along with the metrics;
the host reads it only where the loop already synchronises (the logged metrics, a
checkpoint, the end), so the guard adds no host round trip per step. With
`TrainConfig.on_nonfinite`:
    "stop": the first bad step (1-based, the numbering of metrics.jsonl) freezes the state
            at the last good one; at the next synchronisation the loop saves that state as
            the checkpoint of the last good step (never a poisoned one) and raises
            `NonFiniteError` naming the bad step and that checkpoint.
    "skip": a bad step leaves parameters and optimiser state unchanged (its optimiser step
            count included) and training goes on; `skipped_steps` in metrics.jsonl and
            summary.json counts them.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import nets
from codesign._phase import phase
from codesign.parallel import make_mesh, mesh_rules, parse_mesh
from codesign.training._checkpoint import Checkpointer
from codesign.training._metrics import MetricsWriter, read_metrics
from codesign.data import CORPORA, eval_batches, load_byte_corpus, sample_batch, window_starts

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "auto": None}
ON_NONFINITE = ("stop", "skip")


class NonFiniteError(FloatingPointError):
    """A non-finite loss or gradient stopped training (`TrainConfig.on_nonfinite == "stop"`).

    `step` is the bad step (1-based, as in metrics.jsonl); `last_good_step` the step of the
    checkpoint left on disk with the state just before it (0: none was saved).
    """

    def __init__(self, step: int, last_good_step: int, checkpoint_dir: Path):
        self.step, self.last_good_step, self.checkpoint_dir = step, last_good_step, checkpoint_dir
        where = (f"the last good state (step {last_good_step}) is checkpointed in {checkpoint_dir}"
                 if last_good_step > 0 else "no state was checkpointed (it failed before any good step)")
        super().__init__(f"non-finite loss or gradient at step {step}; training stopped and {where} "
                         "(on_nonfinite='skip' skips such steps instead)")


def compute_dtype(name: str):
    """The network's compute dtype for a TrainConfig.dtype; parameters and optimiser state stay float32.

    "auto" is bfloat16 on an accelerator (GPU, TPU: the matrix units' native rate, with
    float32 master weights so small updates are not rounded away) and float32 on CPU
    (no bf16 speed-up there, and tests compare exactly).
    """
    if name == "auto":
        return jnp.bfloat16 if jax.default_backend() in ("gpu", "tpu") else jnp.float32
    return DTYPES[name]


def _check(ok: bool, field: str, value: Any, allowed: str) -> None:
    """`nets.fail(field, value, allowed)` unless `ok` (the one error convention, as a guard)."""
    if not ok:
        nets.fail(field, value, allowed)


@dataclass(frozen=True)
class TrainConfig:
    """What to train and how. `model` is a zoo name or a path to a ModelConfig JSON file."""

    model: str = "codesign-default"
    steps: int = 300
    batch: int = 16
    seq_len: int = 128
    lr: float = 3e-3
    warmup_steps: int = 20
    weight_decay: float = 0.05
    clip_norm: float = 1.0
    aux_weight: float = 0.01
    log_every: int = 10
    eval_every: int = 100
    eval_batches: int = 4
    ckpt_every: int = 100
    seed: int = 0
    dtype: str = "auto"
    on_nonfinite: str = "stop"   # a NaN/inf loss or gradient: "stop" the run or "skip" that update
    mesh: str = ""               # device mesh, e.g. "data=2,fsdp=4" (codesign.parallel; "": data over all devices)
    remat: str = "none"          # what the backward pass keeps of each layer: none (all), dots, full (nets.REMAT_POLICIES)
    attention: str = "auto"      # attention kernel (nets.ATTENTION_IMPLEMENTATIONS); auto: CODESIGN_ATTENTION or fastest
    corpus: str = "stdlib"       # the embedded byte corpus (codesign.data.CORPORA): stdlib or stdlib+deps

    def __post_init__(self) -> None:
        cfg = resolve_model(self.model)  # an unknown model is the first error a user should see
        for name in ("steps", "batch", "seq_len", "log_every", "eval_every", "eval_batches", "ckpt_every"):
            value = getattr(self, name)
            _check(isinstance(value, int) and value > 0, name, value, "must be a positive integer")
        _check(isinstance(self.warmup_steps, int) and 0 <= self.warmup_steps < self.steps, "warmup_steps",
               self.warmup_steps, f"must be an integer in [0, steps={self.steps})")
        for name in ("lr", "clip_norm"):
            value = getattr(self, name)
            _check(isinstance(value, (int, float)) and 0 < value < float("inf"), name, value, "must be a positive number")
        for name in ("weight_decay", "aux_weight"):
            value = getattr(self, name)
            _check(isinstance(value, (int, float)) and 0 <= value < float("inf"), name, value, "must be >= 0")
        for name, allowed in (("dtype", DTYPES), ("remat", nets.REMAT_POLICIES), ("on_nonfinite", ON_NONFINITE),
                              ("attention", nets.ATTENTION_IMPLEMENTATIONS), ("corpus", CORPORA)):
            _check(getattr(self, name) in allowed, name, getattr(self, name), f"must be one of {', '.join(allowed)}")
        from codesign._limits import check_train_limits  # sizes bounded before anything is allocated

        check_train_limits(self, cfg)
        parse_mesh(self.mesh)

    def model_config(self) -> nets.ModelConfig:
        return resolve_model(self.model)


def resolve_model(spec: str) -> nets.ModelConfig:
    """A zoo name, or a path to our ModelConfig JSON or a Hugging Face config.json (`nets.load_config`'s rule)."""
    return nets.load_config(spec)


def training_flops_per_token(cfg: nets.ModelConfig, seq_len: int) -> float:
    """Model FLOPs per trained token: 6*N_active + 12*n_layers*n_heads*qk_head_dim*seq_len.

    The PaLM convention (Chowdhery et al. 2022, appendix B): forward plus backward of
    the matmuls (6 per parameter) and of the attention score/value products.
    """
    a = cfg.attention
    return 6.0 * nets.count_params(cfg).active + 12.0 * cfg.n_layers * a.n_heads * a.qk_head_dim * seq_len


def make_optimizer(tc: TrainConfig) -> optax.GradientTransformation:
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=tc.lr, warmup_steps=tc.warmup_steps, decay_steps=tc.steps, end_value=tc.lr * 0.1)
    return optax.chain(optax.clip_by_global_norm(tc.clip_norm),
                       optax.adamw(schedule, b1=0.9, b2=0.95, weight_decay=tc.weight_decay))


def lm_loss(logits_BxLxV: jax.Array, targets_BxL: jax.Array) -> jax.Array:
    """Mean next-token cross-entropy in nats, computed in float32."""
    return optax.softmax_cross_entropy_with_integer_labels(logits_BxLxV.astype(jnp.float32), targets_BxL).mean()


@dataclass
class TrainResult:
    out_dir: Path
    steps: int
    first_val_loss: float
    final_val_loss: float
    tokens_per_s: float
    params: Any = dataclasses.field(repr=False)
    model: Any = dataclasses.field(repr=False)


class Trainer:
    """Builds the model, optimiser, sharded state and the jitted step for one TrainConfig.

    This is the one training step of the project: every trainer (joint, hardened, pruning, ATTS's
    draft and target, the SpAtten script's fine-tuning) is this class with some hooks overridden:
    `build_model` (the network), `load_data` / `sample` (where batches come from), `init_trainable`
    / `build_optimizer` (what moves and how), `forward` / `objective` (the loss). `train` runs it
    with checkpoints and metrics on disk; `advance` runs one step in memory.
    """

    devices: Any = None  # the devices of the mesh (None: every device); a one-device reference sets [device]

    def __init__(self, tc: TrainConfig, init_net_params: Any = None, *, cfg: nets.ModelConfig | None = None):
        """`init_net_params` (network parameters of the same config) replaces the fresh initialisation;
        `cfg` (a config built in code) replaces the one `tc.model` names."""
        self.tc = tc
        self.cfg = tc.model_config() if cfg is None else cfg
        self.mesh = make_mesh(tc.mesh, self.devices)
        self.rules = mesh_rules(self.mesh)  # logical axis names -> mesh axes (codesign.parallel.RULES)
        batch_axes = self.rules.mesh_axes("activation_batch")
        n_split = int(np.prod([self.mesh.shape[a] for a in batch_axes]))
        _check(tc.batch % n_split == 0, "batch", tc.batch,
               f"must be a multiple of {n_split}, the devices the batch is split over ({'x'.join(batch_axes)})")
        _check(tc.seq_len <= self.cfg.max_seq_len, "seq_len", tc.seq_len,
               f"must be at most the model's max_seq_len={self.cfg.max_seq_len}")
        self.replicated = NamedSharding(self.mesh, P())
        self.batch_sharded = NamedSharding(self.mesh, P(batch_axes or None))
        root = jax.random.key(tc.seed)
        self.root_key = root
        self.data_key = jax.random.fold_in(root, 1)
        # several processes (`codesign.parallel.initialize_distributed`): each builds only its rows of a batch
        self.per_process_batches = (jax.process_count() > 1 and type(self).sample is Trainer.sample
                                    and type(self).load_data is Trainer.load_data)
        model = self.build_model(jax.random.fold_in(root, 0))
        self.graphdef, params, self.rest = nnx.split(model, nnx.Param, ...)
        if init_net_params is not None:
            if jax.tree.structure(init_net_params) != jax.tree.structure(params):
                raise ValueError("init_net_params: its tree does not match the model of "
                                 f"model={tc.model!r}")
            params = init_net_params
        trainable = self.init_trainable(params)
        self.optimizer = self.build_optimizer()
        self.params = jax.device_put(trainable, self.rules.tree_shardings(trainable))
        opt_state = self.optimizer.init(self.params)
        self.opt_state = jax.device_put(opt_state, self.rules.tree_shardings(opt_state))
        self.train_data, self.valid = self.load_data()
        self.trace_count = 0
        self.step_fn = jax.jit(self._step, donate_argnums=(0, 1))
        self.eval_fn = jax.jit(self._eval)

    # ---- hooks a subclass (the joint co-design trainer, ATTS's models, ...) overrides ----
    def build_model(self, key: jax.Array) -> nnx.Module:
        """The network, freshly initialised from `key` (its parameters are what `nnx.Param` selects)."""
        return nets.TransformerLM(self.cfg, rngs=nnx.Rngs(params=key), dtype=compute_dtype(self.tc.dtype),
                                  **self.kernel_options())

    def kernel_options(self) -> dict[str, Any]:
        """How the network is computed (never what): remat policy and attention kernel of `self.tc`."""
        return {"remat": self.tc.remat, "attention": None if self.tc.attention == "auto" else self.tc.attention}

    def load_data(self) -> tuple[Any, Any]:
        """(training data, validation batches), both on the device: the embedded byte corpus and
        `tc.eval_batches` fixed validation batches of it. With several processes the training split
        stays on the host (None is returned for it): `step_data` builds each step's batch from it."""
        self.corpus = corpus = load_byte_corpus(self.tc.corpus)
        valid_x, valid_y = eval_batches(corpus.valid, self.tc.batch, self.tc.seq_len, self.tc.eval_batches)
        valid = jax.device_put((np.asarray(valid_x), np.asarray(valid_y)), self.batch_sharded_eval())
        if self.per_process_batches:
            return None, valid
        return jax.device_put(jnp.asarray(corpus.train), self.replicated), valid

    def step_data(self, step: int) -> Any:
        """What the jitted step reads as its `train_data` at `step` (0-based).

        One process: the training split, on the devices (`sample` draws the batch inside the step).
        Several processes: the step's batch itself, (inputs, targets) global arrays laid out like
        `batch_sharded`, each process reading only the rows its devices hold; the windows are those
        `sample_batch` draws from the same key, so the batch is the one-process batch.
        """
        if not self.per_process_batches:
            return self.train_data
        tc, data = self.tc, self.corpus.train
        starts = np.asarray(window_starts(data.shape[0], jax.random.fold_in(self.data_key, step), tc.batch, tc.seq_len))
        offsets = np.arange(tc.seq_len, dtype=np.int64)

        def rows(index: tuple[slice, ...], shift: int) -> np.ndarray:  # the rows of one local device's shard
            return data[starts[index[0]][:, None] + offsets[None, :] + shift].astype(np.int32)

        return tuple(jax.make_array_from_callback((tc.batch, tc.seq_len), self.batch_sharded,
                                                  lambda index, shift=shift: rows(index, shift)) for shift in (0, 1))

    def sample(self, train_data: Any, step: jax.Array) -> tuple[jax.Array, Any]:
        """The batch of `step` (traced): (inputs, targets), drawn from `fold_in(data_key, step)` so a
        resumed run sees the same batches. `targets` may be any pytree the objective reads.
        With several processes `train_data` already is the step's batch (`step_data`)."""
        if self.per_process_batches:
            return train_data
        return sample_batch(train_data, jax.random.fold_in(self.data_key, step), self.tc.batch, self.tc.seq_len)

    def init_trainable(self, net_params: Any) -> Any:
        """The pytree the optimiser moves; plain training moves the network parameters only."""
        return net_params

    def build_optimizer(self) -> optax.GradientTransformation:
        return make_optimizer(self.tc)

    def objective(self, params: Any, inputs: jax.Array, targets: jax.Array, step: jax.Array):
        """(scalar to minimise, metrics): task loss plus the MoE load-balance term."""
        logits, aux = self.forward(params, inputs, step)
        task = lm_loss(logits, targets)
        balance = aux["load_balance_loss"]
        return task + self.tc.aux_weight * balance, {"loss": task, "load_balance_loss": balance}

    def batch_sharded_eval(self) -> NamedSharding:
        return NamedSharding(self.mesh, P(None, self.batch_sharded.spec[0]))

    def model_from(self, params: Any) -> nnx.Module:
        return nnx.merge(self.graphdef, params, self.rest)

    def forward(self, params: Any, inputs: jax.Array, step: jax.Array | None) -> tuple[jax.Array, dict]:
        """(logits, aux) of the network the trainable state describes (step None: evaluation)."""
        return self.model_from(params)(inputs)

    def _step(self, params: Any, opt_state: Any, train_data: jax.Array, step: jax.Array, guard: Any = None):
        """One update; `guard` (see `init_guard`; None: a fresh one) is returned updated as metrics
        "skipped_steps" and "bad_step" (see the module docstring)."""
        self.trace_count += 1  # runs only when jax traces: counts compilations
        with nets.sharding_rules(self.rules):  # activation constraints, expert dispatch (read while tracing)
            params, opt_state, metrics = self._update(params, opt_state, train_data, step, guard)
        # out shardings: the state leaves the step laid out as it came in (one compilation per shape)
        return (jax.lax.with_sharding_constraint(params, self.rules.tree_shardings(params)),
                jax.lax.with_sharding_constraint(opt_state, self.rules.tree_shardings(opt_state)), metrics)

    def _update(self, params: Any, opt_state: Any, train_data: jax.Array, step: jax.Array, guard: Any):
        guard = init_guard() if guard is None else guard
        inputs, targets = self.sample(train_data, step)
        inputs = jax.lax.with_sharding_constraint(inputs, self.batch_sharded)
        targets = jax.lax.with_sharding_constraint(targets, self.batch_sharded)
        (total, metrics), grads = jax.value_and_grad(self.objective, has_aux=True)(params, inputs, targets, step)
        updates, new_opt_state = self.optimizer.update(grads, opt_state, params)
        new_params = optax.apply_updates(params, updates)
        metrics["grad_norm"] = optax.tree.norm(grads)
        finite = _all_finite((total, grads, updates))
        skipped, bad_step = guard["skipped"], guard["bad_step"]
        if self.tc.on_nonfinite == "stop":  # frozen from the first bad step on
            apply = finite & (bad_step < 0)
            bad_step = jnp.where(finite | (bad_step >= 0), bad_step, step + 1).astype(jnp.int32)
        else:
            apply = finite
            skipped = skipped + (~finite).astype(jnp.int32)
        params, opt_state = jax.tree.map(lambda new, old: jnp.where(apply, new, old),
                                         (new_params, new_opt_state), (params, opt_state))
        metrics["skipped_steps"], metrics["bad_step"] = skipped, bad_step
        return params, opt_state, metrics

    def advance(self, step: int) -> dict[str, jax.Array]:
        """Run the update of `step` (0-based) on the trainer's own state, in memory (no checkpoint, no
        file): the loop of a caller that keeps its own schedule of evaluations. Returns the step's
        metrics (on the device); a non-finite step leaves the state unchanged and shows in its
        "bad_step" / "skipped_steps"."""
        self.params, self.opt_state, metrics = self.step_fn(self.params, self.opt_state, self.step_data(step),
                                                            jnp.asarray(step, jnp.int32))
        return metrics

    def _eval(self, params: Any, valid: tuple[jax.Array, jax.Array]) -> jax.Array:
        xs, ys = valid
        with nets.sharding_rules(self.rules):
            return self._eval_batches(params, xs, ys)

    def _eval_batches(self, params: Any, xs: jax.Array, ys: jax.Array) -> jax.Array:
        # a few fixed batches, unrolled: NNX modules cannot cross into a lax.map body
        return jnp.mean(jnp.stack([lm_loss(self.forward(params, xs[i], None)[0], ys[i]) for i in range(xs.shape[0])]))

    def evaluate(self, params: Any | None = None) -> float:
        return float(self.eval_fn(self.params if params is None else params, self.valid))

    def state(self) -> dict[str, Any]:
        return {"params": self.params, "opt_state": self.opt_state}


def init_guard(skipped: int = 0) -> dict[str, jax.Array]:
    """The step's numerics guard: updates skipped so far, and the first bad step (1-based; -1: none)."""
    return {"skipped": jnp.asarray(skipped, jnp.int32), "bad_step": jnp.asarray(-1, jnp.int32)}


def _all_finite(tree: Any) -> jax.Array:
    """True when every float leaf of `tree` is free of NaN and inf (one fused reduction per leaf)."""
    leaves = [x for x in jax.tree.leaves(tree) if jnp.issubdtype(jnp.result_type(x), jnp.inexact)]
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves])) if leaves else jnp.asarray(True)


def _guard_of(m: dict[str, Any]) -> dict[str, Any]:
    return {"skipped": m["skipped_steps"], "bad_step": m["bad_step"]}


def train(tc: TrainConfig, out_dir: str | Path, *, resume: bool = True, progress: bool = True,
          kill_at_step: int | None = None, trainer: Trainer | None = None) -> TrainResult:
    """Train `tc` into `out_dir` (checkpoints/, metrics.jsonl, summary.json, config.json).

    With `resume`, an existing checkpoint in `out_dir` is continued exactly.
    `kill_at_step` SIGKILLs this process right after the checkpoint of that step is
    written: the test of exact resume uses it to interrupt a real run.
    A non-finite loss or gradient stops the run with `NonFiniteError` or skips that update,
    per `tc.on_nonfinite` (module docstring); on a stop no checkpoint of poisoned state is written.
    With several processes (`codesign.parallel.initialize_distributed`) every process runs this with
    the same `out_dir` (a shared folder): all of them write their shards of each checkpoint, and only
    process 0 writes config.json, metrics.jsonl and summary.json.
    """
    from tqdm.auto import tqdm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    trainer = trainer or Trainer(tc)
    primary = jax.process_index() == 0
    progress = progress and primary
    ckpt = Checkpointer(out / "checkpoints")
    start = 0
    latest = ckpt.latest_step() if resume else None
    if latest is not None:
        restored = ckpt.restore(latest, trainer.state())
        trainer.params, trainer.opt_state = restored["params"], restored["opt_state"]
        start = latest
    if primary:
        with phase("file"):
            nets.atomic_write_json(out / "config.json", {"train": dataclasses.asdict(tc),
                                                         "model": trainer.cfg.to_dict()})
    metrics = MetricsWriter(out / "metrics.jsonl", resume_step=start if latest is not None else None,
                            enabled=primary)
    tokens_per_step = tc.batch * tc.seq_len
    first_val = trainer.evaluate()
    if start == 0:
        metrics.write({"step": 0, "val_loss": first_val})
    skipped = _skipped_before(out, start) if latest is not None else 0
    guard, logged_skipped = jax.device_put(init_guard(skipped), trainer.replicated), skipped
    bar = tqdm(total=tc.steps, initial=start, disable=not progress, desc="train", unit="step", dynamic_ncols=True)
    t_last, step_last, val = time.perf_counter(), start, first_val
    for step in range(start, tc.steps):
        with phase("compile" if step == start else "step"):
            trainer.params, trainer.opt_state, m = trainer.step_fn(trainer.params, trainer.opt_state,
                                                                   trainer.step_data(step),
                                                                   jnp.asarray(step, jnp.int32), guard)
        guard = _guard_of(m)
        done = step + 1
        bar.update(1)
        if done % tc.log_every == 0 or done == tc.steps:
            m = jax.device_get(m)  # the loop's own synchronisation; the guard comes with it
            _stop_if_bad(m, ckpt, trainer, metrics, bar)
            logged_skipped = int(m["skipped_steps"])
            m.pop("bad_step")
            now = time.perf_counter()
            tps = (done - step_last) * tokens_per_step / (now - t_last)
            t_last, step_last = now, done
            record = {"step": done, **{k: float(v) for k, v in m.items()}, "tokens_per_s": tps}
            if done % tc.eval_every == 0 or done == tc.steps:
                val = trainer.evaluate()
                record["val_loss"] = val
            metrics.write(record)
            bar.set_postfix(loss=f"{record['loss']:.3f}", val=f"{val:.3f}")
        if done % tc.ckpt_every == 0 or done == tc.steps:
            g = jax.device_get(guard)  # the save below synchronises anyway
            _stop_if_bad({"bad_step": g["bad_step"]}, ckpt, trainer, metrics, bar)
            if int(g["skipped"]) != logged_skipped:  # so a resume from this checkpoint counts them
                metrics.write({"step": done, "skipped_steps": int(g["skipped"])})
                logged_skipped = int(g["skipped"])
            with phase("checkpoint"):
                ckpt.save(done, trainer.state())
            if kill_at_step is not None and done == kill_at_step:
                os.kill(os.getpid(), signal.SIGKILL)
    bar.close()
    metrics.close()
    with phase("checkpoint"):
        ckpt.close()  # waits for orbax, whose removal of old checkpoints can end here
    final_val = trainer.evaluate()
    history = [r for r in read_metrics(out / "metrics.jsonl") if "tokens_per_s" in r]
    tps = float(np.median([r["tokens_per_s"] for r in history[1:]] or [r["tokens_per_s"] for r in history] or [0.0]))
    summary = {"model": trainer.cfg.name, "steps": tc.steps, "first_val_loss": _first_val(out, first_val),
               "final_val_loss": final_val, "tokens_per_s_median": tps, "devices": jax.device_count(),
               "processes": jax.process_count(), "backend": jax.default_backend(),
               "params_total": nets.count_params(trainer.cfg).total, "skipped_steps": logged_skipped,
               "corpus": trainer.corpus.corpus, "corpus_train_sha256": trainer.corpus.train_sha256,
               "corpus_packages": dict(trainer.corpus.packages)}
    if primary:
        with phase("file"):
            nets.atomic_write_json(out / "summary.json", summary)
    return TrainResult(out_dir=out, steps=tc.steps, first_val_loss=summary["first_val_loss"], final_val_loss=final_val,
                       tokens_per_s=tps, params=trainer.params, model=trainer.model_from(trainer.params))


def _stop_if_bad(m: dict[str, Any], ckpt: Checkpointer, trainer: Trainer, metrics: MetricsWriter, bar) -> None:
    """If the fetched guard shows a bad step, checkpoint the last good state and raise NonFiniteError.

    Under "stop" the state stopped changing at the bad step, so what the trainer holds is
    the state after step bad-1; it is saved as that step's checkpoint unless one exists.
    """
    bad = int(m["bad_step"])
    if bad < 0:
        return
    good = bad - 1
    if good > 0 and good not in ckpt.all_steps():
        ckpt.save(good, trainer.state())
    bar.close()
    metrics.close()
    ckpt.close()
    raise NonFiniteError(bad, good, ckpt.directory)


def _skipped_before(out: Path, step: int) -> int:
    """The skipped-update count recorded at or before `step` in out/metrics.jsonl (0 if none)."""
    counts = [r["skipped_steps"] for r in read_metrics(out / "metrics.jsonl")
              if r.get("step", 0) <= step and r.get("skipped_steps") is not None]
    return int(counts[-1]) if counts else 0


def _first_val(out: Path, fallback: float) -> float:
    for record in read_metrics(out / "metrics.jsonl"):
        if record.get("step") == 0 and "val_loss" in record:
            return float(record["val_loss"])
    return fallback
