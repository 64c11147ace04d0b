"""Wall time of the whole ATTS engine (`codesign.atts.run_pipeline`) per mode, on an untrained pair: for comparing
code versions of the engine on one machine, not for ATTS's accuracy or speed-up (those need a trained pair).

    PYTHONPATH=. python scripts/bench/atts_pipeline_speed.py --out runs/bench/atts_pipeline_speed.json

The same random weights, problems, calibration bank and keys in every run, so two versions of the engine that
write the same outputs (the tests check that they do) make the same calls, and their times compare. Each mode is
compiled once, then run `--repeats` times; the median of the device runs is reported (`RunResult.wall_s`).
"""

from __future__ import annotations

import argparse
import statistics

import jax
import jax.numpy as jnp
from flax import nnx

import nets
from codesign.atts import PipelineConfig, StaticBank, draft_config, run_pipeline, target_config
from codesign.data import make_problem


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="tiny", choices=("tiny", "full"), help="the pair's configs")
    parser.add_argument("--questions", type=int, default=16)
    parser.add_argument("--m", type=int, default=16, help="samples per question (slots = questions x m)")
    parser.add_argument("--buf-len", type=int, default=160)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="runs/bench/atts_pipeline_speed.json")
    a = parser.parse_args()
    draft = nets.TransformerLM(draft_config(a.size), rngs=nnx.Rngs(params=1))
    target = nets.TransformerLM(target_config(a.size), rngs=nnx.Rngs(params=2))
    problems = [make_problem(i, 3) for i in range(a.questions)]
    bank = StaticBank(256)
    report = {"device": str(jax.devices()[0]), "jax": jax.__version__, **vars(a), "modes": []}
    print(f"ATTS engine on {report['device']}: {a.size} pair (untrained), {a.questions} questions x m {a.m}")
    for mode in ("target_only", "draft_only", "sync", "atts"):
        cfg = PipelineConfig(mode=mode, alpha=0.25, m=a.m, max_turns=4, max_chunk=8, buf_len=a.buf_len,
                             draft_temperature=1.0, target_temperature=1.0)
        kw = {} if mode in ("target_only", "draft_only") else dict(
            calibrator=bank, cal_state=bank.init_state(jnp.linspace(0.0, 8.0, 256)))   # some chunks taken over
        runs = [run_pipeline(draft, target, problems, cfg, key=jax.random.key(r), **kw) for r in range(a.repeats)]
        walls = [r.wall_s for r in runs]
        report["modes"].append({"mode": mode, "wall_s": statistics.median(walls), "runs_s": walls,
                                "compile_s": runs[0].compile_s})
        nets.atomic_write_json(a.out, report)
        print(f"{mode:<12} {statistics.median(walls) * 1e3:9.1f} ms  (runs: "
              + ", ".join(f"{w * 1e3:.1f}" for w in walls) + f"; compiled in {runs[0].compile_s:.1f} s)", flush=True)
    print(f"written: {a.out}")


if __name__ == "__main__":
    main()
