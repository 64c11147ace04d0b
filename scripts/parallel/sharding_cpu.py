"""Sharded training on CPU with 8 forced host devices, checked against one device; writes results/parallel/sharding_cpu.json.

    python scripts/parallel/sharding_cpu.py [--configs mfa-moe,mla-moe] [--meshes data8,...] [--steps 20] [--merge]

For each (tiny float32 config, mesh): the step-0 loss and gradients against one device
(max absolute differences), the step-0 expert routing of the first MoE layer (chosen
experts, tokens per expert, output), the parameter and optimiser bytes per device
measured from the arrays' addressable shards beside what the rules imply, the number of
compilations of the training step over the run, and the validation-loss curve over
`--steps` steps against the one-device curve. All meshes run in this one process (the
device count is fixed when JAX starts). Exit status 1 if any figure misses its tolerance.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

if "jax" not in sys.modules:
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
    os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

import codesign  # noqa: E402
import nets  # noqa: E402
from codesign import parallel  # noqa: E402
from codesign.data import sample_batch  # noqa: E402

_BASE = nets.zoo.default_config()
_FFN = {"d_ff": 128, "n_experts": 4, "top_k": 2, "d_expert": 32, "n_shared_experts": 1, "moe_start": 1}
CONFIGS = {
    "mfa-moe": _BASE.replace(name="tiny-mfa-moe", d_model=64, n_layers=2, max_seq_len=32,
                             attention={"n_heads": 4, "head_dim": 16, "q_rank": 32}, ffn=_FFN),
    "mla-moe": _BASE.replace(name="tiny-mla-moe", d_model=64, n_layers=2, max_seq_len=32,
                             attention={"kind": "mla", "n_heads": 4, "n_kv_heads": 4, "head_dim": 16, "q_rank": 32,
                                        "kv_rank": 32, "rope_dim": 8}, ffn=_FFN),
}
MESHES = {"data8": "data=8", "fsdp8": "data=1,fsdp=8", "data2xtensor4": "data=2,tensor=4",
          "data2xexpert4": "data=2,expert=4", "fsdp2xtensor2xexpert2": "data=1,fsdp=2,tensor=2,expert=2"}
TOL_STEP0 = 1e-5   # loss and every gradient entry, float32
TOL_CURVE = 1e-3   # validation loss at every step


class OneDevice(codesign.Trainer):
    devices = jax.devices()[:1]


def step0(trainer: codesign.Trainer):
    """(task loss, gradients as numpy) of step 0's batch, under the trainer's mesh and rules."""
    tc = trainer.tc

    @jax.jit
    def loss_and_grads(params, data):
        with nets.sharding_rules(trainer.rules):
            inputs, targets = sample_batch(data, jax.random.fold_in(trainer.data_key, 0), tc.batch, tc.seq_len)
            inputs = jax.lax.with_sharding_constraint(inputs, trainer.batch_sharded)
            targets = jax.lax.with_sharding_constraint(targets, trainer.batch_sharded)
            (_, metrics), grads = jax.value_and_grad(trainer.objective, has_aux=True)(
                params, inputs, targets, jnp.asarray(0, jnp.int32))
        return metrics["loss"], grads

    loss, grads = loss_and_grads(trainer.params, trainer.train_data)
    return float(loss), jax.tree.map(np.asarray, jax.device_get(grads))


def first_moe(trainer: codesign.Trainer):
    """The first MoE layer of the trainer's network as its own module (its repeat axis sliced away)."""
    model = trainer.model_from(trainer.params)
    for i, (kinds, _) in enumerate(model.segments_plan):
        if "moe" in kinds:
            moe = model.segments[i].blocks[kinds.index("moe")].ffn
            graphdef, state = nnx.split(moe)
            return graphdef, jax.tree.map(lambda x: x[0], state)
    raise ValueError("the config has no MoE layer")


def routing0(trainer: codesign.Trainer):
    """Step 0's routing in the first MoE layer, fed the embedded step-0 batch: (experts, tokens/expert, output)."""
    tc = trainer.tc
    graphdef, state = first_moe(trainer)
    embed = trainer.params["embed"]["embedding"]

    @jax.jit
    def route(state, embed, data):
        with nets.sharding_rules(trainer.rules):
            inputs, _ = sample_batch(data, jax.random.fold_in(trainer.data_key, 0), tc.batch, tc.seq_len)
            x = nets.constrain(embed[...][inputs], ("activation_batch", None, None))
            moe = nnx.merge(graphdef, state)
            _, _, experts, _ = moe.route(x.reshape(-1, x.shape[-1]))
            y, aux = moe(x)
        return experts, aux["tokens_per_expert"], y

    dispatch = "all_to_all" in route.lower(state, embed, trainer.train_data).as_text()
    return jax.tree.map(np.asarray, jax.device_get(route(state, embed, trainer.train_data))), dispatch


def curve(trainer: codesign.Trainer, steps: int) -> list[float]:
    """Validation loss after each of `steps` training steps (step 0: before any)."""
    values = [trainer.evaluate()]
    guard = jax.device_put(codesign.init_guard(), trainer.replicated)
    for step in range(steps):
        trainer.params, trainer.opt_state, metrics = trainer.step_fn(
            trainer.params, trainer.opt_state, trainer.train_data, jnp.asarray(step, jnp.int32), guard)
        guard = {"skipped": metrics["skipped_steps"], "bad_step": metrics["bad_step"]}
        values.append(trainer.evaluate())
    return values


def max_abs(a, b) -> float:
    return float(max(np.max(np.abs(x - y)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))))


def train_config(path: str, mesh_name: str | None, steps: int) -> codesign.TrainConfig:
    return codesign.TrainConfig(model=path, steps=max(steps, 2), batch=16, seq_len=32, lr=3e-3, warmup_steps=1,
                                dtype="float32", mesh="" if mesh_name is None else MESHES[mesh_name])


def remesh(trainer: codesign.Trainer, path: str, mesh_name: str, steps: int, directory: str) -> dict:
    """Save `trainer`'s state as a sharded orbax checkpoint, restore it onto `mesh_name`, take one step on both.

    Returns the restored state's largest difference (must be 0), whether every restored array carries
    the new mesh's sharding, and the next step's loss on both meshes.
    """
    ckpt = codesign.Checkpointer(directory)
    ckpt.save(steps, trainer.state())
    other = codesign.Trainer(train_config(path, mesh_name, steps))
    restored = ckpt.restore(steps, other.state())
    ckpt.close()
    on_new_mesh = all(leaf.sharding.is_equivalent_to(want, leaf.ndim) for leaf, want in zip(
        jax.tree.leaves(restored), jax.tree.leaves(other.rules.tree_shardings(other.state()))))
    diff = max_abs(jax.device_get(restored), jax.device_get(trainer.state()))
    losses = []
    for t, state in ((trainer, trainer.state()), (other, restored)):
        _, _, metrics = t.step_fn(state["params"], state["opt_state"], t.train_data, jnp.asarray(steps, jnp.int32))
        losses.append(float(metrics["loss"]))
    return {"from_mesh": trainer.tc.mesh, "to_mesh": other.tc.mesh, "restored_max_abs_diff": diff,
            "restored_on_new_mesh": bool(on_new_mesh), "next_loss_from": losses[0], "next_loss_to": losses[1],
            "next_loss_abs_diff": abs(losses[0] - losses[1])}


def run_case(config_name: str, mesh_name: str | None, steps: int, path: str) -> dict:
    """Every figure of one (config, mesh); mesh None is the one-device reference."""
    tc = train_config(path, mesh_name, steps)
    trainer = (OneDevice if mesh_name is None else codesign.Trainer)(tc)
    t0 = time.perf_counter()
    loss, grads = step0(trainer)
    (experts, tokens_per_expert, moe_out), all_to_all = routing0(trainer)
    record = {
        "mesh": "one device" if mesh_name is None else tc.mesh, "devices": int(trainer.mesh.devices.size),
        "param_bytes_per_device": parallel.bytes_per_device(trainer.params),
        "opt_bytes_per_device": parallel.bytes_per_device(trainer.opt_state),
        "param_bytes_per_device_expected": parallel.expected_bytes_per_device(trainer.params, trainer.rules),
        "opt_bytes_per_device_expected": parallel.expected_bytes_per_device(trainer.opt_state, trainer.rules),
        "step0_loss": loss, "moe_all_to_all": all_to_all,
    }
    values = curve(trainer, steps)
    record.update(val_curve=values, step_compilations=trainer.trace_count, seconds=time.perf_counter() - t0)
    return record, {"trainer": trainer, "grads": grads, "experts": experts, "tokens_per_expert": tokens_per_expert,
                    "moe_out": moe_out}


def compare(record: dict, arrays: dict, ref: dict, ref_arrays: dict) -> dict:
    out = {
        "step0_loss_abs_diff": abs(record["step0_loss"] - ref["step0_loss"]),
        "step0_grad_max_abs_diff": max_abs(arrays["grads"], ref_arrays["grads"]),
        "routing_experts_equal": bool(np.array_equal(arrays["experts"], ref_arrays["experts"])),
        "routing_tokens_per_expert_equal": bool(np.array_equal(arrays["tokens_per_expert"],
                                                               ref_arrays["tokens_per_expert"])),
        "moe_output_max_abs_diff": max_abs(arrays["moe_out"], ref_arrays["moe_out"]),
        "val_curve_max_abs_diff": float(np.max(np.abs(np.subtract(record["val_curve"], ref["val_curve"])))),
        "param_bytes_ratio": ref["param_bytes_per_device"] / record["param_bytes_per_device"],
        "opt_bytes_ratio": ref["opt_bytes_per_device"] / record["opt_bytes_per_device"],
    }
    out["ok"] = bool(out["step0_loss_abs_diff"] <= TOL_STEP0 and out["step0_grad_max_abs_diff"] <= TOL_STEP0
                     and out["routing_experts_equal"] and out["routing_tokens_per_expert_equal"]
                     and out["moe_output_max_abs_diff"] <= TOL_STEP0 and out["val_curve_max_abs_diff"] <= TOL_CURVE
                     and record["param_bytes_per_device"] == record["param_bytes_per_device_expected"]
                     and record["opt_bytes_per_device"] == record["opt_bytes_per_device_expected"]
                     and record["step_compilations"] == 1
                     and record["moe_all_to_all"] == ("expert=" in record["mesh"]))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--meshes", default=",".join(MESHES))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--out", default="results/parallel/sharding_cpu.json")
    parser.add_argument("--remesh", default="data2xtensor4",
                        help="Restore the last mesh's checkpoint onto this mesh ('' : skip).")
    parser.add_argument("--workdir", default=None, help="Where the tiny config JSON files go (default: a temp dir).")
    parser.add_argument("--merge", action="store_true",
                        help="Keep the other configs' entries already in --out (run one config at a time).")
    args = parser.parse_args(argv)
    import tempfile

    workdir = args.workdir or tempfile.mkdtemp(prefix="sharding-cpu-")
    os.makedirs(workdir, exist_ok=True)
    results = {"devices": jax.device_count(), "backend": jax.default_backend(), "jax": jax.__version__,
               "steps": args.steps, "tolerances": {"step0": TOL_STEP0, "curve": TOL_CURVE}, "configs": {}}
    ok = True
    names = [c for c in args.configs.split(",") if c]
    if args.merge and args.out and os.path.exists(args.out):
        with open(args.out) as f:
            kept = {k: v for k, v in json.load(f)["configs"].items() if k not in names}
        results["configs"].update(kept)
        ok = all(r["ok"] for e in kept.values() for r in [*e["meshes"].values(), e.get("checkpoint_remesh", {"ok": 1})])
    for config_name in names:
        path = os.path.join(workdir, f"{config_name}.json")
        with open(path, "w") as f:
            f.write(CONFIGS[config_name].to_json())
        ref, ref_arrays = run_case(config_name, None, args.steps, path)
        entry = {"one_device": ref, "meshes": {}}
        print(f"{config_name}: one device: step-0 loss {ref['step0_loss']:.6f}, "
              f"params {ref['param_bytes_per_device']} B, opt {ref['opt_bytes_per_device']} B", flush=True)
        for mesh_name in [m for m in args.meshes.split(",") if m]:
            record, arrays = run_case(config_name, mesh_name, args.steps, path)
            record.update(compare(record, arrays, ref, ref_arrays))
            entry["meshes"][mesh_name] = record
            ok &= record["ok"]
            results["configs"][config_name] = entry
            if args.out:  # so far, in case the run is cut short
                nets.atomic_write_json(args.out, {**results, "complete": False, "ok": bool(ok)})
            print(f"{config_name} {mesh_name:>22}: loss diff {record['step0_loss_abs_diff']:.2e}, grad diff "
                  f"{record['step0_grad_max_abs_diff']:.2e}, routing equal {record['routing_experts_equal']}, "
                  f"curve diff {record['val_curve_max_abs_diff']:.2e}, params/dev {record['param_bytes_per_device']} "
                  f"(x{record['param_bytes_ratio']:.2f} less), opt/dev {record['opt_bytes_per_device']} "
                  f"(x{record['opt_bytes_ratio']:.2f} less), compilations {record['step_compilations']}, "
                  f"{'ok' if record['ok'] else 'MISS'} ({record['seconds']:.0f} s)", flush=True)
        if args.remesh and len(entry["meshes"]) and config_name == next(iter(CONFIGS)):
            last = list(entry["meshes"])[-1]
            target = args.remesh if args.remesh != last else "data8"
            try:
                r = remesh(arrays["trainer"], path, target, args.steps,
                           os.path.join(workdir, f"ckpt-{config_name}"))
                r["ok"] = bool(r["restored_max_abs_diff"] == 0 and r["restored_on_new_mesh"]
                               and r["next_loss_abs_diff"] <= TOL_STEP0)
            except Exception as err:  # recorded, not hidden: the run goes on to the other figures
                r = {"from_mesh": MESHES[last], "to_mesh": MESHES[target], "error": repr(err), "ok": False,
                     "restored_max_abs_diff": float("nan"), "next_loss_from": float("nan"),
                     "next_loss_to": float("nan")}
            entry["checkpoint_remesh"] = r
            if args.out:
                nets.atomic_write_json(args.out, {**results, "complete": False, "ok": bool(ok)})
            ok &= r["ok"]
            print(f"{config_name}: checkpoint of {r['from_mesh']} restored onto {r['to_mesh']}: max diff "
                  f"{r['restored_max_abs_diff']:.1e}, next-step loss {r['next_loss_from']:.6f} vs "
                  f"{r['next_loss_to']:.6f} ({'ok' if r['ok'] else 'MISS'})", flush=True)
        results["configs"][config_name] = entry
    results["ok"], results["complete"] = bool(ok), True
    if args.out:
        nets.atomic_write_json(args.out, results)
        print(f"wrote {args.out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
