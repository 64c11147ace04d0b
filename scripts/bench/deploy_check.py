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
- energy (NVIDIA GPUs only): the board power (`scripts/bench/power.py`: NVML or nvidia-smi,
  sampled every 50 ms) averaged over repeats lasting `--min-seconds` after a first second
  whose readings are dropped (the driver averages power over the last second), times their
  wall time, and the idle power read the same way over an idle second; reported per step as
  measured total and above idle.

The weights run as bfloat16 on an accelerator (the design's formats are applied to their
values; XLA has no kernels that read posit or 4-bit storage), so the prediction is given
twice: for the design as exported (its per-layer weight and KV formats) and re-priced with
bf16 weights and KV cache (what the GPU reads). Both, and optionally a calibrated preset's prediction
(`--preset`), are compared to the measurement. Writes `<out>/deploy_check_<device>.json`
and a table `<out>/deploy_check_<device>.txt`.

The deployment file records the target as it was at export; each prediction is also made on the
target's current datasheet preset (`hwcost.gpu(name)`, whose static power may be measured since),
and a preset's software profile on that datasheet. Energy is split into its static part (static
power x predicted latency) and its dynamic part: the total is compared with the measured total,
the dynamic part with the measured energy above idle.

Offline (`--measured STORED.json`, a file this script wrote): no device is touched; the stored
measurement is compared with the predictions of the current code (CPU is enough):

    PYTHONPATH=. python scripts/bench/deploy_check.py runs/deploy_ship/deployment.json --out /tmp/dc \
        --measured results/deploy_check/h100_1557/deploy_check_NVIDIA_H100_80GB_HBM3.json \
        --preset results/calibration_h100_merged/h100-sxm-calibrated.json
"""

from __future__ import annotations

import argparse
import dataclasses
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
from power import SETTLE_S, mean_power_w, power_source


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
    source = power_source()[0] if jax.default_backend() == "gpu" else None
    idle_w, _ = mean_power_w(lambda: time.sleep(SETTLE_S + 1.0), source, SETTLE_S)
    if idle_w is None:
        return out
    calls = []

    def busy():
        t = time.perf_counter()
        while time.perf_counter() - t < SETTLE_S + min_seconds:
            jax.block_until_ready(call())
            calls.append(1)

    power_w, wall = mean_power_w(busy, source, SETTLE_S)
    if power_w is None:
        return out
    n = len(calls) * steps
    out.update({"energy_calls": len(calls), "energy_wall_s": wall, "power_w": power_w, "idle_power_w": idle_w,
                "energy_step_j": power_w * wall / n, "energy_step_above_idle_j": (power_w - idle_w) * wall / n,
                "latency_during_energy_s": wall / n,
                "energy_method": f"{source.method}, the first {SETTLE_S:.0f} s of each reading dropped"})
    return out


def static_power_of(target) -> float:
    """The static power [W] a target charges for its whole latency (a calibrated GPU's device's; 0 if none)."""
    device = getattr(target, "device", target)
    return float(getattr(device, "static_power_w", 0.0))


def predictions(rebuilt, preset: Path | None) -> list[tuple[str, dict, float | None]]:
    """(name, cost dict, static power W or None where unknown) of each prediction of the deployed design.

    As recorded at export and re-priced as run (bf16 weights and KV), on the target the file
    recorded; the same two on that target's current datasheet preset (if it differs); a
    calibrated preset as given and its software profile on the current datasheet.
    """
    recorded = rebuilt.record["target"]
    out = [("recorded (as exported)", rebuilt.record["cost"], (recorded.get("params") or {}).get("static_power_w")),
           ("as run (bf16 weights, KV)", as_run_cost(rebuilt), static_power_of(rebuilt.target))]
    sheet = hwcost.get_target(recorded["name"])
    if isinstance(sheet, hwcost.GPU) and _floats(sheet) != _floats(rebuilt.target):
        now = dataclasses.replace(rebuilt, target=sheet)
        out += [("datasheet now, as exported", now.cost(), static_power_of(sheet)),
                ("datasheet now, as run", as_run_cost(now), static_power_of(sheet))]
    if preset is not None:
        calibrated = hwcost.get_target(str(preset))
        out.append(("preset, as exported", rebuilt.cost(target=calibrated), static_power_of(calibrated)))
        if isinstance(sheet, hwcost.GPU) and static_power_of(calibrated) != static_power_of(sheet):
            moved = hwcost.calibrated(sheet, calibrated.software)
            out.append(("preset on datasheet now", rebuilt.cost(target=moved), static_power_of(moved)))
    return out


def compare(measured: dict, priced: list[tuple[str, dict, float | None]]) -> list[dict]:
    """Each prediction beside the measurement (fractions: +0.1 = 10% over).

    Latency against the measured step. Energy, where predicted and measured: the total against
    the measured total (`energy_error`); where the static power is known, the static part
    (static W x predicted latency) and the dynamic rest, the total without its static part
    against the measured total (`energy_error_without_static`) and the dynamic part against the
    measured energy above idle (`energy_error_above_idle`).
    """
    rows = []
    for name, cost, static_w in priced:
        row = {"prediction": name, "latency_s": cost["latency_s"], "energy_j": cost.get("energy_j"),
               "latency_error": cost["latency_s"] / measured["step_s"] - 1.0, "static_power_w": static_w}
        if row["energy_j"] is not None and static_w is not None:
            row["energy_static_j"] = static_w * cost["latency_s"]
            row["energy_dynamic_j"] = row["energy_j"] - row["energy_static_j"]
        if row["energy_j"] is not None and "energy_step_j" in measured:
            row["energy_error"] = row["energy_j"] / measured["energy_step_j"] - 1.0
            if "energy_dynamic_j" in row:
                row["energy_error_without_static"] = row["energy_dynamic_j"] / measured["energy_step_j"] - 1.0
                row["energy_error_above_idle"] = row["energy_dynamic_j"] / measured["energy_step_above_idle_j"] - 1.0
        rows.append(row)
    return rows


def table(measured: dict, rows: list[dict]) -> list[str]:
    """The comparison as text lines (mJ per step; errors in percent)."""
    def mj(x):
        return f"{x * 1e3:>10.3f}" if x is not None else f"{'-':>10}"

    def pct(row, key, width):
        return f"{row[key]:>+{width}.1%}" if key in row else f"{'-':>{width}}"

    lines = [f"measured: {measured['step_s'] * 1e6:.1f} us/step"
             + (f", {measured['energy_step_j'] * 1e3:.3f} mJ/step ({measured['energy_step_above_idle_j'] * 1e3:.3f} "
                f"above idle; {measured['power_w']:.0f} W, idle {measured['idle_power_w']:.0f} W)"
                if "energy_step_j" in measured else ", energy not measurable here"),
             f"{'prediction':<28}{'latency us':>11}{'error':>8}{'static W':>9}{'static mJ':>10}{'dynamic mJ':>11}"
             f"{'total mJ':>10}{'error':>8}{'no static':>10}{'dyn vs above idle':>18}"]
    for r in rows:
        static = f"{r['static_power_w']:>9.1f}" if r["static_power_w"] is not None else f"{'?':>9}"
        lines.append(f"{r['prediction']:<28}{r['latency_s'] * 1e6:>11.1f}{r['latency_error']:>+8.1%}{static}"
                     f"{mj(r.get('energy_static_j'))}{mj(r.get('energy_dynamic_j')):>11}{mj(r['energy_j'])}"
                     f"{pct(r, 'energy_error', 8)}{pct(r, 'energy_error_without_static', 10)}"
                     f"{pct(r, 'energy_error_above_idle', 18)}")
    return lines


def _floats(target) -> dict[str, float]:
    """A GPU's hardware fields as plain floats (to tell whether two GPUs differ)."""
    return {f.name: float(getattr(target, f.name)) for f in dataclasses.fields(target)
            if isinstance(getattr(target, f.name), jax.Array)}


def _stored_report(path: Path) -> dict:
    body = nets.read_json_file(path, "measured", what="a deploy_check JSON")
    if not isinstance(body, dict) or not isinstance(body.get("measured"), dict) or "step_s" not in body["measured"]:
        nets.fail("measured", str(path), "must be a JSON written by deploy_check.py (with measured.step_s)")
    return body


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
    p.add_argument("--measured", type=Path, default=None,
                   help="offline: a deploy_check JSON written earlier; its measurement is compared with the "
                        "current predictions and nothing is run")
    args = p.parse_args(argv)
    stored = _stored_report(args.measured) if args.measured is not None else None
    rebuilt = rebuild_deployment(args.deployment)
    scenario = rebuilt.scenario
    if scenario.phase != "decode":
        nets.fail("scenario.phase", scenario.phase, "must be 'decode' for the deployment check",
                  file=str(args.deployment))
    model = rebuilt.model()
    context = scenario.context_len + (scenario.gen_len - 1) // 2
    if stored is None:
        if jax.default_backend() in ("gpu", "tpu"):  # deployed weights are at most 16-bit: bf16 values of them
            graphdef, state = nnx.split(model)
            state = jax.tree.map(lambda x: x.astype(jnp.bfloat16) if jnp.issubdtype(x.dtype, jnp.floating) else x,
                                 state)
            model = nnx.merge(graphdef, state)
        call = decode_program(model, rebuilt.trainer.quant, scenario.batch, context, args.steps)
        measured = measure(call, args.steps, args.repeats, args.min_seconds)
        device = jax.devices()[0].device_kind
    else:
        measured, device = stored["measured"], stored["device"]
    rows = compare(measured, predictions(rebuilt, args.preset))
    report = {"deployment": str(args.deployment), "device": device,
              "jax": stored["jax"] if stored else jax.__version__, "priced_with_jax": jax.__version__,
              "target": rebuilt.record["target"]["name"], "scenario": dataclasses.asdict(scenario),
              "decode_context": context, "params": nets.param_count(model), "hardened": rebuilt.hardened,
              "measured": measured, "measured_from": str(args.measured) if stored else "this run",
              "predictions": rows}
    tag = device.replace(" ", "_").replace("/", "_")
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / f"deploy_check_{tag}.json", report)
    text = "\n".join([f"deployment {args.deployment} on {device} (target {report['target']}); decode batch "
                      f"{scenario.batch}, context {context}; {report['params']} parameters"
                      + (f"; measurement from {args.measured}" if stored else ""), *table(measured, rows)])
    (args.out / f"deploy_check_{tag}.txt").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
