"""Measured step times for scripts/bench/peers.py: reading a measured JSON, and timing the cases locally."""

from __future__ import annotations

import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import nets
from peers_cases import MODEL, NA, ROWS, Case, spec_of_device

_TIME_KEYS = (("median_s", 1.0), ("seconds", 1.0), ("time_s", 1.0), ("latency_s", 1.0), ("median_ms", 1e-3))


def load_measured(path: str | None) -> tuple[dict, list[dict]]:
    """(header, records) of measured step times.

    Reads this script's `--measure-out` file ({"device": ..., "records": [{model, phase, batch,
    context_len, median_s, ...}]}, also "measurements" / "steps" or a bare list), or a kernel data
    file of `scripts/bench/kernels.py` (schema "codesign.kernels/1"), whose whole-model
    decode_step / prefill_step items become records.
    """
    if path is None:
        return {}, []
    if not Path(path).is_file():
        raise ValueError(f"measured={path!r}: no such file (JSON of measured step times)")
    data = json.loads(Path(path).read_text())
    if isinstance(data, list):
        return {}, data
    if data.get("schema") == "codesign.kernels/1":
        records = []
        for item in data.get("items", []):
            d = item.get("describe", {})
            if item.get("kind") in ("decode_step", "prefill_step") and d.get("type") == "workload" \
                    and not d.get("ops"):
                scenario = d.get("scenario", {})
                records.append({"model": d.get("config", {}).get("name"), "phase": scenario.get("phase"),
                                "batch": scenario.get("batch"), "context_len": scenario.get("context_len"),
                                "median_s": item.get("timing", {}).get("median_s"), "id": item.get("id"),
                                "device": (data.get("device") or {}).get("kind")})
        return {k: v for k, v in data.items() if k != "items"}, records
    for key in ("records", "measurements", "steps"):
        if isinstance(data.get(key), list):
            return {k: v for k, v in data.items() if k != key}, data[key]
    raise ValueError(f"measured={path!r}: must hold a list of records (or a dict with 'records')")


def measured(case: Case, records: list[dict], device: str | None = None) -> dict | None:
    """The measured end-to-end step [ms] of `case`, matched on GPU, model, phase, batch, context.

    A record's GPU is its own "device" (jax's device_kind) or the file's `device`; it applies
    to the case whose spec is that GPU's (an H100 measurement to H100 cases only).
    """
    for r in records:
        model = str(r.get("model", r.get("config", ""))).lower()
        context = r.get("context_len", r.get("context", r.get("seq_len")))
        if spec_of_device(r.get("device", device)) is not case.spec:
            continue
        if model == MODEL and r.get("phase") == case.phase and r.get("batch") == case.batch \
                and context == case.context_len:
            for key, scale in _TIME_KEYS:
                if r.get(key):
                    rows = {row: NA for row in ROWS}
                    rows["total"] = 1e3 * scale * float(r[key])
                    spread = r.get("iqr_s", r.get("spread_s"))
                    return {"rows_ms": rows, "spread_ms": None if spread is None else 1e3 * float(spread),
                            "record": r}
    return None



def _random_cache(cfg, batch: int, max_len: int, key) -> tuple:
    """A KV cache of random BF16 values (never time on zeros), built leaf by leaf without a zero copy."""
    shapes = jax.eval_shape(lambda: nets.init_cache(cfg, batch, max_len, dtype=jnp.bfloat16))
    leaves, treedef = jax.tree.flatten(shapes)
    keys = jax.random.split(key, len(leaves))
    return jax.tree.unflatten(treedef, [jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves)])


def _time_case(graphdef, state, cfg, case: Case, n: int, warmup: int, repeats: int) -> dict:
    from flax import nnx  # noqa: PLC0415
    length = case.context_len if case.phase == "prefill" else 1
    cache = _random_cache(cfg, case.batch, case.context_len + (case.phase == "decode"), jax.random.key(1 + n))
    tokens = jnp.asarray(np.random.default_rng(n).integers(0, cfg.vocab_size, (case.batch, length)), jnp.int32)
    index = 0 if case.phase == "prefill" else case.context_len

    def step(state, tokens, cache):
        logits, aux = nnx.merge(graphdef, state)(tokens, cache=cache, cache_index=index)
        return logits[:, -1], aux["cache"]

    # the cache is donated (updated in place) where the backend supports donation
    donated = jax.jit(step, donate_argnums=(2,) if jax.default_backend() != "cpu" else ())
    t = time.perf_counter()
    _, cache = jax.block_until_ready(donated(state, tokens, cache))
    compile_s = time.perf_counter() - t
    for _ in range(warmup - 1):
        _, cache = jax.block_until_ready(donated(state, tokens, cache))
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        _, cache = jax.block_until_ready(donated(state, tokens, cache))
        times.append(time.perf_counter() - t)
    q1, median, q3 = np.percentile(times, [25, 50, 75])
    return {"median_s": float(median), "iqr_s": float(q3 - q1), "min_s": float(min(times)),
            "compile_s": float(compile_s)}


def measure(cases: list[Case], model: str, warmup: int, repeats: int, on_record=None) -> list[dict]:
    """Time one jitted step of `model` (random BF16 weights, nets.TransformerLM) per case on the local device.

    The weights are built once and shared by the cases. prefill: the prompt of context_len
    tokens written into an empty cache (logits for every position, as the network computes
    them); decode: one token per sequence attending a cache of context_len tokens, the cache
    donated so that it is updated in place. Median and interquartile range of `repeats` timed
    calls after `warmup` calls (the first compiles; its time is compile_s), each ended by
    block_until_ready. A case the device cannot run (out of memory) is recorded with its
    error instead of a time, and the next case runs. `on_record(records)` is called after
    each case (to save progress).
    """
    from flax import nnx  # noqa: PLC0415
    cfg = nets.zoo.get(model)
    lm = nets.TransformerLM(cfg, rngs=nnx.Rngs(params=0), dtype=jnp.bfloat16, param_dtype=jnp.bfloat16)
    graphdef, state = nnx.split(lm)
    del lm
    device = jax.devices()[0]
    records = []
    for n, case in enumerate(cases):
        record = {"model": model, "phase": case.phase, "batch": case.batch, "context_len": case.context_len,
                  "dtype": "bfloat16", "repeats": repeats, "warmup": warmup,
                  "device": getattr(device, "device_kind", str(device)), "backend": jax.default_backend()}
        try:
            record.update(_time_case(graphdef, state, cfg, case, n, warmup, repeats))
        except jax.errors.JaxRuntimeError as error:  # e.g. RESOURCE_EXHAUSTED: reported, not fatal
            record["error"] = str(error)[:2000]
        records.append(record)
        if on_record is not None:
            on_record(records)
    return records
