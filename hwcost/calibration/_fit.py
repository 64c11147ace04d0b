"""Fitting the efficiency curves to a kernel data file, and the error tables of the result.

The parameters are fitted with optax (Adam) on log time to the training split of a kernel
data file (`hwcost.load_data`); `calibrate` fits a preset GPU and returns a
`hwcost.CalibratedGPU` with a report of the held-out errors, calibrated and uncalibrated.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from hwcost.calibration._data import MODEL_KINDS, KernelData, load_data
from hwcost.calibration._efficiency import FORWARD_OF, KERNEL_GROUPS, Efficiency
from hwcost.calibration._preset import CalibratedGPU, calibrated
from hwcost.calibration._software import Software, as_software, kernel_seconds, software
from hwcost.targets._gpu import GPU
from hwcost.targets._presets import gpu


def predict(device: GPU, eff: Software | Efficiency | None, data: KernelData):
    """Predicted time [s] of every item on `device` with the software profile `eff` (None: the roofline)."""
    columns = {c: jnp.asarray(v, jnp.int32 if c == "group" else jnp.float32) for c, v in data.kernels.items()}
    return _predict_columns(device, eff, columns, jnp.asarray(data.item_of_row), len(data.ids))


def _predict_columns(device, eff, k, item_of_row, n_items: int):
    rows = kernel_seconds(device, eff, k["group"], k["flops"], k["bytes"], k["bits"], k["waste"], k["launches"],
                          k["copy"], k["extra_bytes"], k["rows"], k["step"])
    return jax.ops.segment_sum(rows, item_of_row, num_segments=n_items)


# Curve exponents in (0.05, 1]: at most 1 keeps a kernel's time non-decreasing in its work
# (exponent 1 is Hockney's n_1/2 form, a constant floor half/peak for tiny launches).
_EXP_LOW, _EXP_SPAN = 0.05, 0.95
MAX_FIT_STEPS = 1_000_000  # one compiled scan; far above the 3000 a fit needs, far below a hang


_COPIES = ("kv_cache_copies", "weight_copies")


def _structure(sw: Software) -> tuple:
    """What `_to_software` keeps of a starting profile (hashable): (copies per _COPIES, dense_experts, name,
    norm_reads, gemm_rate_bits)."""
    return (tuple(float(np.asarray(getattr(sw, k))) for k in _COPIES), sw.dense_experts, sw.name, sw.norm_reads,
            sw.gemm_rate_bits)


_TIED = {"norm": ("elementwise", ("memory_max",))}
"""Fields a family shares with another in a fit: a multi-pass norm streams like a copy.

Where the software reads a norm's input more than once (`Software.norm_reads`), each pass of a
norm is a streaming pass like a copy's: the saturated bandwidth of the elementwise family
(pinned by the data file's 1 GiB copy ceiling) is the norm's too. The norm keeps its own
approach to saturation and launch cost.
"""


def _tie(eff: Efficiency, norm_reads: float) -> Efficiency:
    """`eff` with each tied family's fields taken from its parent (`_TIED`), for a multi-pass norm."""
    if norm_reads <= 1.0:
        return eff
    for child, (parent, fields) in _TIED.items():
        eff = eff.with_group_from(child, parent, fields)
    return eff


def _to_software(u: dict, like: tuple) -> Software:
    """The profile of unconstrained parameters `u`; `like` from `_structure` (copies a profile has none of stay none)."""
    sig = jax.nn.sigmoid
    eff = Efficiency(compute_max=sig(u["compute_max"]), compute_half_flops=jnp.exp(u["compute_half_flops"]),
                     compute_exponent=_EXP_LOW + _EXP_SPAN * sig(u["compute_exponent"]),
                     memory_max=sig(u["memory_max"]), memory_half_bytes=jnp.exp(u["memory_half_bytes"]),
                     memory_exponent=_EXP_LOW + _EXP_SPAN * sig(u["memory_exponent"]),
                     waste_exponent=jnp.exp(u["waste_exponent"]), launch_s=jnp.exp(u["launch_s"]),
                     tile_rows=jnp.exp(u["tile_rows"]))
    copies = {k: jnp.exp(u[k]) if k in u else start for k, start in zip(_COPIES, like[0])}
    return Software(efficiency=_tie(eff, like[3]), step_gap_s=jnp.exp(u["step_gap_s"]),
                    step_elementwise=jnp.exp(u["step_elementwise"]), dense_experts=like[1], name=like[2],
                    norm_reads=like[3], gemm_rate_bits=like[4], **copies)


def _from_software(sw: Software) -> dict:
    eff = sw.efficiency
    logit = lambda p: jnp.log(p) - jnp.log1p(-jnp.minimum(p, 1 - 1e-6))  # noqa: E731
    floor = lambda x, low: jnp.log(jnp.maximum(x, low))  # noqa: E731  (a zero start sits at a small positive value)
    copies = {k: jnp.log(jnp.asarray(getattr(sw, k), jnp.float32)) for k in _COPIES
              if float(np.asarray(getattr(sw, k))) > 0}  # a program with no copies never gets any
    return copies | {"compute_max": logit(eff.compute_max), "compute_half_flops": jnp.log(eff.compute_half_flops),
            "compute_exponent": logit((eff.compute_exponent - _EXP_LOW) / _EXP_SPAN),
            "memory_max": logit(eff.memory_max), "memory_half_bytes": jnp.log(eff.memory_half_bytes),
            "memory_exponent": logit((eff.memory_exponent - _EXP_LOW) / _EXP_SPAN),
            "waste_exponent": floor(eff.waste_exponent, 1e-3), "launch_s": floor(eff.launch_s, 1e-8),
            "tile_rows": floor(eff.tile_rows, 1.0), "step_gap_s": floor(sw.step_gap_s, 1e-8),
            "step_elementwise": floor(sw.step_elementwise, 1e-3)}


def fit(data: KernelData, base: GPU, *, steps: int = 3000, learning_rate: float = 0.05,
        init: Software | Efficiency | None = None, regularisation: float = 1e-4,
        name: str = "ours") -> tuple[Software, dict]:
    """Fit a software profile (efficiency curves and step composition) to the training split of `data`.

    optax Adam on log time. Loss: mean over training items (less those the profile prices at
    a borrowed rate: `_borrowed`) of (log predicted - log measured)^2, plus `regularisation`
    * squared distance of the unconstrained parameters from the start, so that groups with no
    training data stay at the starting point. The profile's program structure is that of
    `init` (default: `hwcost.software(name)`): dense experts, norm reads and the GEMM rate
    floor fixed (a multi-pass norm's saturated bandwidth is the elementwise family's: `_TIED`),
    the KV-cache and layer-weight copies of a whole step fitted from there (a profile with
    none keeps none). Returns the fitted `Software` and {"loss": [first, last], "steps",
    "train_items"}.
    """
    if not isinstance(steps, int) or isinstance(steps, bool) or not 1 <= steps <= MAX_FIT_STEPS:
        raise ValueError(f"steps={steps!r}: must be an integer in [1, {MAX_FIT_STEPS}]")
    if not (isinstance(learning_rate, (int, float)) and learning_rate > 0):
        raise ValueError(f"learning_rate={learning_rate!r}: must be a positive number")
    start = software(name) if init is None else as_software(init)
    train = data.subset(~data.heldout & ~_borrowed(data, start))
    if len(train.ids) == 0:
        raise ValueError("data: no training items (everything is held out)")
    if start.efficiency is None:
        raise ValueError("init: the roofline profile has nothing to fit; start from hwcost.software('ours')")
    u0 = _from_software(start)
    base32 = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32) if eqx.is_array(x) else x, base)
    columns = {c: jnp.asarray(v, jnp.int32 if c == "group" else jnp.float32) for c, v in train.kernels.items()}
    u, losses, final = _fit_run(u0, base32, columns, jnp.asarray(train.item_of_row),
                                jnp.log(jnp.asarray(train.measured_s, jnp.float32)), n_items=len(train.ids),
                                steps=steps, learning_rate=float(learning_rate), regularisation=float(regularisation),
                                like=_structure(start))
    fitted = jax.tree.map(lambda x: jnp.asarray(np.asarray(x)) if eqx.is_array(x) else x,
                          _to_software(u, _structure(start)))
    fitted = _inherit_unseen(fitted, set(np.unique(train.kernels["group"]).astype(int).tolist()))
    return fitted, {"loss": [float(losses[0]), float(final)], "steps": steps, "train_items": len(train.ids)}


def _inherit_unseen(sw: Software, seen: set[int]) -> Software:
    """`sw` with each training attention family the data has no kernel of priced as its kind's prefill family.

    A suite without training items (the H200 suite of kernels.py) leaves those families at the
    starting point; the forward kernels' fitted curves are the better guess, as before they were apart.
    """
    eff = sw.efficiency
    for train, forward in FORWARD_OF.items():
        if KERNEL_GROUPS.index(train) not in seen:
            eff = eff.with_group_from(train, forward)
    return eqx.tree_at(lambda s: s.efficiency, sw, eff)


def _borrowed(data: KernelData, sw: Software) -> np.ndarray:
    """Items priced entirely at a borrowed rate: every kernel a GEMM narrower than `sw.gemm_rate_bits`.

    The profile prices them on the wider format's GEMM curves and fits nothing of theirs, so
    they are predicted, never fitted: their times follow the kernel a compiler picks per shape
    (module docstring of `hwcost.calibration._software`), which no curve of ours follows, and
    fitted they would only bend the curves of the GEMMs they borrow from.
    """
    floored = (data.kernels["group"] == KERNEL_GROUPS.index("gemm")) & (data.kernels["bits"] < sw.gemm_rate_bits)
    rows = np.bincount(data.item_of_row, minlength=len(data.ids))
    return (rows > 0) & (np.bincount(data.item_of_row, weights=floored, minlength=len(data.ids)) == rows)


@functools.partial(jax.jit, static_argnames=("n_items", "steps", "learning_rate", "regularisation", "like"))
def _fit_run(u0, base, columns, item_of_row, log_measured, *, n_items, steps, learning_rate, regularisation, like):
    """`steps` Adam steps (cosine-decayed rate) in one compiled scan; (u, per-step losses, final loss)."""
    def loss_fn(u):
        predicted = _predict_columns(base, _to_software(u, like), columns, item_of_row, n_items)
        penalty = sum(jnp.sum((u[k] - u0[k]) ** 2) for k in u)
        return jnp.mean((jnp.log(predicted) - log_measured) ** 2) + regularisation * penalty

    optimiser = optax.adam(optax.cosine_decay_schedule(learning_rate, steps, alpha=0.01))

    def step(carry, _):
        u, state = carry
        loss, grads = jax.value_and_grad(loss_fn)(u)
        updates, state = optimiser.update(grads, state, u)
        return (optax.apply_updates(u, updates), state), loss

    (u, _), losses = jax.lax.scan(step, (u0, optimiser.init(u0)), None, length=steps)
    return u, losses, loss_fn(u)


def error_table(device: GPU, eff: Efficiency | None, data: KernelData) -> dict:
    """Absolute percentage errors of `predict` against the measurements, by kind and split.

    {"by_kind": {kind: {"train"|"heldout": {"mape", "max_ape", "n"}}}, "end_to_end": held-out
    whole-model steps, "kernels_heldout": held-out kernels, "under_10us_heldout": held-out
    items measured under 10 us (reported apart), "lower_bound": fraction of items where the
    prediction is not above the measurement}.
    """
    predicted = np.asarray(predict(device, eff, data), np.float64)
    ape = np.abs(predicted - data.measured_s) / data.measured_s

    def summary(mask):
        mask = np.asarray(mask, bool)
        if not mask.any():
            return {"mape": None, "max_ape": None, "n": 0}
        return {"mape": float(np.mean(ape[mask])), "max_ape": float(np.max(ape[mask])), "n": int(mask.sum())}

    kinds = np.asarray(data.kinds)
    model = np.isin(kinds, MODEL_KINDS)
    return {"by_kind": {k: {"train": summary((kinds == k) & ~data.heldout), "heldout": summary((kinds == k) & data.heldout)}
                        for k in sorted(set(data.kinds))},
            "end_to_end": summary(model & data.heldout), "kernels_heldout": summary(~model & data.heldout),
            "under_10us_heldout": summary((data.measured_s < 1e-5) & data.heldout),
            "lower_bound": float(np.mean(predicted <= data.measured_s * (1 + 1e-6))),
            "predicted_s": predicted.tolist()}

def calibrate(data: str | Path | KernelData, base: str | GPU = "h200", *, steps: int = 3000,
              name: str | None = None, software_name: str = "ours") -> tuple[CalibratedGPU, dict]:
    """Fit a software profile for `base` to `data`; returns the calibrated GPU and a report (fit, error tables, split).

    `software_name` names whose kernels the data measured ("ours" for our program; a peer's
    data gives the peer's profile, e.g. "peer-torch", with no program structure of ours).
    Our program's structure is the one the data's measurements ran with (`KernelData.program`).
    """
    data = data if isinstance(data, KernelData) else load_data(data)
    device = gpu(base) if isinstance(base, str) else base
    if isinstance(device, CalibratedGPU):
        raise ValueError(f"base={device.name!r}: already calibrated; start from a preset GPU")
    eff, history = fit(data, device, steps=steps, name=software_name,
                       init=software(software_name, **(data.program if software_name.startswith("ours") else {})))
    target = calibrated(device, eff, name or f"{device.name}-calibrated")
    report = {"data": data.source, "device": data.device, "base": device.name, "fit": history,
              "heldout_ids": [i for i, h in zip(data.ids, data.heldout) if h],
              "calibrated": error_table(device, eff, data), "roofline": error_table(device, None, data)}
    return target, report



def format_errors(report: dict) -> str:
    """A human-readable table of a `calibrate` report: MAPE by kind and split, roofline vs calibrated."""
    pct = lambda v: "-" if v is None else f"{100 * v:.1f}%"  # noqa: E731
    cal, roof = report["calibrated"], report["roofline"]
    lines = [f"{'kind':<14} {'n train':>7} {'n held':>6} {'roofline held':>13} {'calib train':>11} "
             f"{'calib held':>10} {'calib held max':>14}"]
    for kind, row in cal["by_kind"].items():
        lines.append(f"{kind:<14} {row['train']['n']:>7} {row['heldout']['n']:>6} "
                     f"{pct(roof['by_kind'][kind]['heldout']['mape']):>13} {pct(row['train']['mape']):>11} "
                     f"{pct(row['heldout']['mape']):>10} {pct(row['heldout']['max_ape']):>14}")
    for label, key in (("kernels, held", "kernels_heldout"), ("< 10 us, held", "under_10us_heldout"),
                       ("end to end", "end_to_end")):
        lines.append(f"{label:<14} {'':>7} {cal[key]['n']:>6} {pct(roof[key]['mape']):>13} {'':>11} "
                     f"{pct(cal[key]['mape']):>10} {pct(cal[key]['max_ape']):>14}")
    lines.append(f"uncalibrated roofline below the measurement on {100 * roof['lower_bound']:.1f}% of items")
    return "\n".join(lines)


def transfer(target: CalibratedGPU, base: str | GPU, name: str | None = None) -> CalibratedGPU:
    """`target`'s software profile on another GPU's hardware: a prediction from datasheet ratios alone.

    The efficiency curves are fractions of peak and the launch costs seconds, so only the
    hardware changes (peaks per precision, bandwidth): what a user without the other GPU gets.
    """
    if not isinstance(target, CalibratedGPU):
        raise ValueError(f"target={type(target).__name__}: must be a CalibratedGPU (see hwcost.calibrate)")
    device = gpu(base) if isinstance(base, str) else base
    return calibrated(device, target.software, name or f"{device.name}-from-{target.name}")


def transfer_errors(target: CalibratedGPU, data) -> dict:
    """The error table (`error_table`) of `target` on every item of `data`, all counted as held out (nothing fitted).

    The profile keeps its fitted curves; its program structure (`KernelData.program`: dense
    or grouped experts) is that of the program `data` measured, a fact about that program,
    not a fitted value.
    """
    data = data if isinstance(data, KernelData) else load_data(data)
    everything = KernelData(ids=data.ids, kinds=data.kinds, measured_s=data.measured_s,
                            heldout=np.asarray([k != "ceiling" for k in data.kinds]), kernels=data.kernels,
                            item_of_row=data.item_of_row, device=data.device, source=data.source, program=data.program)
    sw = _with_program(target.software, data.program)
    return {"calibrated": error_table(target.device, sw, everything),
            "roofline": error_table(target.device, None, everything)}


def _with_program(sw: Software, program: dict) -> Software:
    """`sw` with the program structure `program` (`KernelData.program`) where it has curves (a roofline stays one)."""
    if sw.efficiency is None or not program:
        return sw
    return dataclasses.replace(sw, **program)
