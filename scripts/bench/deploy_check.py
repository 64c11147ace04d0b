"""Deployment check: predicted vs measured decode latency and energy of an exported design.

    PYTHONPATH=. python scripts/bench/deploy_check.py runs/x/deployment.json --out results/deploy_check \
        [--preset results/calibration/h200-calibrated.json] [--steps 64] [--min-seconds 3]

The deployment file (`codesign run` / `codesign sweep`) is rebuilt with
`codesign.joint.rebuild_deployment` (hashes checked, weights restored, the hardened formats
applied to the weights). Its priced scenario (decode: `batch` sequences, `context_len` cached
tokens) is then run on this machine's first device:

- latency: a jitted `lax.scan` of `--steps` decode steps against a cache filled to
  `context_len` (decode cost does not depend on the cached values), median of timed repeats
  after a warm-up; per step = scan time / steps.
- energy (NVIDIA GPUs only): the board power (`nvidia-smi --query-gpu=power.draw`, sampled
  every 50 ms) averaged over repeats lasting at least `--min-seconds`, times their wall time,
  and the idle power read the same way over an idle second; reported per step as measured
  total and above idle.

The weights run as bfloat16 on an accelerator (the design's formats are applied to their
values; XLA has no kernels that read posit or 4-bit storage), so the prediction is given
twice: for the design as exported (its per-layer weight and KV formats) and re-priced with
bf16 weights and KV cache (what the GPU reads). Both, and optionally a calibrated preset's prediction
(`--preset`), are compared to the measurement. Writes `<out>/deploy_check_<device>.json`
and a table `<out>/deploy_check_<device>.txt`.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
from flax import nnx

import hwcost
import nets
from codesign.joint import design_cost, rebuild_deployment
from nets import atomic_write_json
from gpu_speed import timed  # scripts/bench is on sys.path when run as a script


def mean_power_w(during) -> tuple[float | None, float]:
    """Run `during()` while nvidia-smi samples the GPU's power draw every 50 ms; (mean W or None, wall s).

    None where there is no NVIDIA GPU or no samples (CPU, no nvidia-smi). The driver's cumulative
    energy counter would be better, but not every driver answers `total_energy_consumption`.
    """
    if jax.default_backend() != "gpu" or shutil.which("nvidia-smi") is None:
        t = time.perf_counter()
        during()
        return None, time.perf_counter() - t
    sampler = subprocess.Popen(["nvidia-smi", "--query-gpu=power.draw", "--format=csv,noheader,nounits", "-lms", "50",
                                "-i", "0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    time.sleep(0.3)  # the sampler's first reading
    t = time.perf_counter()
    during()
    wall = time.perf_counter() - t
    sampler.terminate()
    out, _ = sampler.communicate(timeout=10)
    samples = []
    for line in out.splitlines():
        try:
            samples.append(float(line.strip()))
        except ValueError:
            pass
    samples = samples[2:] if len(samples) > 4 else samples  # readings from before `during` started
    return (statistics.mean(samples) if samples else None), wall


def decode_program(model: nnx.Module, quant, batch: int, context: int, steps: int):
    """A jitted scan of `steps` decode steps from a cache holding `context - steps` tokens."""
    graphdef, state = nnx.split(model)
    start = max(0, context - steps)

    @jax.jit
    def run(state, cache, token_B):
        def step(carry, i):
            # the state rides in the carry so the merged module belongs to this trace level (nnx)
            token_B, cache, step_state = carry
            logits, aux = nnx.merge(graphdef, step_state)(token_B[:, None], cache=cache, cache_index=start + i,
                                                           quant=quant)
            return (jnp.argmax(logits[:, 0], -1).astype(token_B.dtype), aux["cache"], step_state), ()

        (token_B, cache, _), _ = jax.lax.scan(step, (token_B, cache, state), jnp.arange(steps))
        return token_B, cache

    cache = nets.init_cache(model, batch, max(context, steps))
    cache = jax.tree.map(lambda c: jax.random.normal(jax.random.key(0), c.shape, c.dtype) * 0.1, cache)
    token_B = jnp.zeros((batch,), jnp.int32)
    return lambda: run(state, cache, token_B)


def measure(call, steps: int, repeats: int, min_seconds: float) -> dict:
    t = time.perf_counter()
    jax.block_until_ready(call())  # compile
    compile_s = time.perf_counter() - t
    step_s = timed(call, blocks=repeats, inner=1) / steps
    out = {"compile_s": compile_s, "step_s": step_s, "repeats": repeats, "steps_per_call": steps}
    idle_w, _ = mean_power_w(lambda: time.sleep(1.0))
    if idle_w is None:
        return out
    calls = []

    def busy():
        t = time.perf_counter()
        while time.perf_counter() - t < min_seconds:
            jax.block_until_ready(call())
            calls.append(1)

    power_w, wall = mean_power_w(busy)
    n = len(calls) * steps
    out.update({"energy_calls": len(calls), "energy_wall_s": wall, "power_w": power_w, "idle_power_w": idle_w,
                "energy_step_j": power_w * wall / n, "energy_step_above_idle_j": (power_w - idle_w) * wall / n,
                "latency_during_energy_s": wall / n, "energy_method": "nvidia-smi power.draw sampled every 50 ms"})
    return out


def as_run_cost(rebuilt) -> dict:
    """The design priced as the GPU runs it: bf16 weights and KV cache (activation formats and widths kept)."""
    space_dict = dict(rebuilt.record["design_space"])
    hardened = dict(rebuilt.hardened)
    for key in ("formats", "kv_formats"):
        if hardened.get(key):
            hardened[key] = ["bf16"] * len(hardened[key])
            space_dict[key] = list(dict.fromkeys(["bf16", *space_dict[key]]))
    space = type(rebuilt.space).from_dict(space_dict)
    return design_cost(rebuilt.cfg, space, hardened, rebuilt.target, rebuilt.scenario,
                       rebuilt.record["objective"]["metric"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("deployment", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--preset", type=Path, default=None, help="a calibrated preset to re-price the design on")
    p.add_argument("--steps", type=int, default=64, help="decode steps per timed call")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--min-seconds", type=float, default=3.0, help="length of the energy measurement")
    args = p.parse_args(argv)
    rebuilt = rebuild_deployment(args.deployment)
    scenario = rebuilt.scenario
    if scenario.phase != "decode":
        nets.fail("scenario.phase", scenario.phase, "must be 'decode' for the deployment check",
                  file=str(args.deployment))
    model = rebuilt.model()
    accel = jax.default_backend() in ("gpu", "tpu")
    if accel:  # deployed weights are at most 16-bit: bfloat16 values of the hardened weights
        graphdef, state = nnx.split(model)
        state = jax.tree.map(lambda x: x.astype(jnp.bfloat16) if jnp.issubdtype(x.dtype, jnp.floating) else x, state)
        model = nnx.merge(graphdef, state)
    context = scenario.context_len + (scenario.gen_len - 1) // 2
    call = decode_program(model, rebuilt.trainer.quant, scenario.batch, context, args.steps)
    measured = measure(call, args.steps, args.repeats, args.min_seconds)
    device = jax.devices()[0].device_kind
    predictions = {"recorded (as exported)": rebuilt.record["cost"], "as run (bf16 weights, KV)": as_run_cost(rebuilt)}
    if args.preset is not None:
        predictions["preset, as exported"] = rebuilt.cost(target=hwcost.get_target(str(args.preset)))
    rows = []
    for name, cost in predictions.items():
        row = {"prediction": name, "latency_s": cost["latency_s"], "energy_j": cost.get("energy_j")}
        row["latency_error"] = cost["latency_s"] / measured["step_s"] - 1.0
        if row["energy_j"] is not None and "energy_step_j" in measured:
            row["energy_error"] = row["energy_j"] / measured["energy_step_j"] - 1.0
            row["energy_error_above_idle"] = row["energy_j"] / measured["energy_step_above_idle_j"] - 1.0
        rows.append(row)
    report = {"deployment": str(args.deployment), "device": device, "jax": jax.__version__,
              "target": rebuilt.record["target"]["name"], "scenario": dataclasses.asdict(scenario),
              "decode_context": context, "params": nets.param_count(model), "hardened": rebuilt.hardened,
              "measured": measured, "predictions": rows}
    tag = device.replace(" ", "_").replace("/", "_")
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / f"deploy_check_{tag}.json", report)
    lines = [f"deployment {args.deployment} on {device} (target {report['target']}); decode batch {scenario.batch}, "
             f"context {context}; {report['params']} parameters",
             f"measured: {measured['step_s'] * 1e6:.1f} us/step"
             + (f", {measured['energy_step_j'] * 1e3:.3f} mJ/step ({measured['energy_step_above_idle_j'] * 1e3:.3f} "
                f"above idle; {measured['power_w']:.0f} W, idle {measured['idle_power_w']:.0f} W)"
                if "energy_step_j" in measured else ", energy not measurable here"),
             f"{'prediction':<26}{'latency us':>12}{'error':>9}{'energy mJ':>11}{'error':>9}{'vs above idle':>15}"]
    for r in rows:
        e = r["energy_j"]
        lines.append(f"{r['prediction']:<26}{r['latency_s'] * 1e6:>12.1f}{r['latency_error']:>+9.1%}"
                     + (f"{e * 1e3:>11.3f}" if e is not None else f"{'-':>11}")
                     + (f"{r['energy_error']:>+9.1%}{r['energy_error_above_idle']:>+15.1%}" if "energy_error" in r
                        else ""))
    text = "\n".join(lines)
    (args.out / f"deploy_check_{tag}.txt").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
