"""DesignTrainer: a hardened design as an argument of one compiled step, equal to HardenedTrainer's network."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from codesign import DesignSpace, DesignTrainer, HardenedTrainer, TrainConfig, full_widths

SPACE = DesignSpace(formats=("bf16", "posit(8,0)@channel", "fp4_e2m1@channel", "mxfp4", "posit(4,1)@channel"),
                    kv_formats=("bf16", "mxfp4"), act_formats=(), search_ffn_width=True)


def _design(cfg, formats, kv, widths=None):
    return {"formats": formats, "kv_formats": kv, "act_formats": [],
            "ffn_widths": widths or [int(w) for w in full_widths(cfg)]}


@pytest.mark.slow  # 480 s on the loaded 2-core machine (three compilations of the reference)
def test_design_trainer_matches_hardened_trainer_from_one_compilation(tiny_json):
    tc = TrainConfig(model=tiny_json, steps=2, batch=8, seq_len=32, eval_batches=1, warmup_steps=0)
    dt = DesignTrainer(tc, SPACE)
    cfg, n = dt.cfg, dt.cfg.n_layers
    full = [int(w) for w in full_widths(cfg)]
    designs = [_design(cfg, ["fp4_e2m1@channel"] * n, ["mxfp4"] * n),
               _design(cfg, (["bf16", "posit(4,1)@channel"] * n)[:n], ["bf16"] * n, [max(8, w // 2) for w in full])]
    for hardened in designs:
        ref = HardenedTrainer(tc, SPACE, hardened, init_params=dt.init_net)
        # the same network: post-training loss and the loss after the same two steps
        assert dt.loss_of(hardened) == pytest.approx(ref.evaluate(), abs=2e-5)
        trained = dt.train(hardened)
        for step in range(tc.steps):
            ref.advance(step)
        assert trained == pytest.approx(ref.evaluate(), abs=2e-4)
        np.testing.assert_allclose(jax.tree.leaves(jax.device_get(dt.params["net"]))[0],
                                   jax.tree.leaves(jax.device_get(ref.params))[0], atol=1e-4)
    assert dt.trace_count == 1, "every design and seed runs the one compiled step"
    seed1 = dt.train(designs[0], seed=1)
    assert seed1 != dt.train(designs[0], seed=0) and dt.trace_count == 1  # another data order, same compilation
    with pytest.raises(ValueError, match="^seed="):
        dt.train(designs[0], seed=-1)
    with pytest.raises(ValueError, match="formats entry="):
        dt.train(_design(cfg, ["fp8_e4m3"] * n, ["bf16"] * n))
