"""ATTS pipeline (codesign.atts.run_pipeline) at tiny size with randomly initialised models.

Greedy decoding makes every run deterministic, so scheduling can be checked exactly against
`nets.generate` and against a cache-free reference: a pipeline that always regenerates must
write the target's own text, one that never rejects the draft's, whatever the schedule.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import nets
from codesign.atts import StaticBank, PipelineConfig, majority_vote, make_calibrator, paired_bootstrap, run_pipeline
from codesign.data import decode, encode, format_problem, make_problem


@pytest.fixture(scope="module")
def models(tiny_atts_pair):
    return tiny_atts_pair


PROBLEMS = [make_problem(i, 3) for i in range(2)]
GREEDY = dict(m=2, max_turns=3, max_chunk=5, buf_len=64, draft_temperature=0.0, target_temperature=0.0)
BANK = 64


def _generated(model, problem, n):
    prompt = encode(format_problem(problem))
    out = nets.generate(model, jnp.asarray(prompt)[None], n, key=jax.random.key(0))
    return decode(np.asarray(out[0])[len(prompt):])


def _atts(models, bank_value, **kw):
    cal = StaticBank(BANK)
    cfg = PipelineConfig(mode="atts", alpha=0.25, **{**GREEDY, **kw})
    return run_pipeline(*models, PROBLEMS, cfg, key=jax.random.key(0), calibrator=cal,
                        cal_state=cal.init_state(jnp.full(BANK, bank_value)))


def test_always_regenerate_writes_the_target_text_and_never_reject_the_draft_text(models):
    draft, target = models
    always = _atts(models, -1.0)   # every score beats the bank: p = U / 65 <= alpha
    never = _atts(models, 1e6)     # no score beats the bank: p > 64 / 65 > alpha
    n_bytes = GREEDY["max_turns"] * GREEDY["max_chunk"]   # random models never end a line early
    for q, problem in enumerate(PROBLEMS):
        for text in always.texts[q]:
            assert text == _generated(target, problem, n_bytes)
        for text in never.texts[q]:
            assert text == _generated(draft, problem, n_bytes)
    assert (always.levels == 2).all() and (never.levels == 0).all()
    assert always.counts["target_tokens"] == always.counts["draft_tokens"] == len(PROBLEMS) * 2 * n_bytes
    assert never.counts["target_tokens"] == 0 and never.counts["waiting_slot_ticks"] == 0


def test_sync_takes_over_the_top_b_of_each_turn_and_waits_at_the_barrier(models):
    sync = run_pipeline(*models, PROBLEMS, PipelineConfig(mode="sync", alpha=0.5, **{**GREEDY, "m": 4}),
                        key=jax.random.key(0))
    scored = (sync.levels >= 0).sum(1)            # (Q, T) chunks scored per question and turn
    taken = (sync.levels > 0).sum(1)
    assert (scored > 0).all()
    np.testing.assert_array_equal(taken, np.floor(0.5 * scored + 0.5))
    # the chosen ones are the highest scores of their question and turn
    for q in range(len(PROBLEMS)):
        for t in range(GREEDY["max_turns"]):
            s, lv = sync.scores[q, :, t], sync.levels[q, :, t]
            assert s[lv > 0].min() >= s[lv == 0].max()
    assert sync.counts["waiting_slot_ticks"] > 0  # the per-turn barrier holds samples back


@pytest.mark.slow
def test_sync_and_async_agree_when_the_budget_takes_every_chunk(models):
    # m = 1 and alpha = 0.5: the budget takes every chunk over, as an always-rejecting async run does
    one = run_pipeline(*models, PROBLEMS, PipelineConfig(mode="sync", alpha=0.5, **{**GREEDY, "m": 1}),
                       key=jax.random.key(0))
    always = _atts(models, -1.0)
    assert [row[0] for row in one.texts] == [row[0] for row in always.texts]
    assert (one.levels == 2).all()


@pytest.mark.slow
def test_append_keeps_the_draft_chunk_and_the_target_continues(models):
    draft, target = models
    result = _atts(models, -1.0, takeover="append", max_turns=2)
    chunk = GREEDY["max_chunk"]

    @jax.jit
    def next_byte(graphdef, state, tokens_1xL, n):
        logits, _ = nnx.merge(graphdef, state)(tokens_1xL)   # causal: bytes after n do not matter
        return jnp.argmax(logits[0, n - 1])

    def write(model, prefix, n):   # cache-free greedy reference: a full forward pass per byte
        gd, st = nnx.split(model)
        out = list(prefix)
        for _ in range(n):
            padded = jnp.zeros((1, 64), jnp.int32).at[0, :len(out)].set(jnp.asarray(out, jnp.int32))
            out.append(int(next_byte(gd, st, padded, len(out))))
        return out[len(prefix):]

    for q, problem in enumerate(PROBLEMS):
        seq = list(encode(format_problem(problem)))
        for _ in range(2):                 # turn: draft chunk kept, then a target line after it
            seq += write(draft, seq, chunk)
            seq += write(target, seq, chunk)
        expected = decode(np.asarray(seq[len(encode(format_problem(problem))):]))
        assert result.texts[q][0] == expected


def _run(models, mode, problems=PROBLEMS, bank=None, **kw):
    cfg = PipelineConfig(mode=mode, alpha=0.5 if mode == "sync" else 0.25, **{**GREEDY, **kw})
    if mode != "atts":
        return run_pipeline(*models, problems, cfg, key=jax.random.key(0))
    cal = StaticBank(BANK)
    return run_pipeline(*models, problems, cfg, key=jax.random.key(0), calibrator=cal, cal_state=cal.init_state(bank))


# one representative case per property in the default suite (each costs 15-25 s of compiles on 2 cores)
_SLOW = pytest.mark.slow


@pytest.mark.parametrize("mode, bank", [("atts", jnp.full(BANK, -1.0)),
                                        pytest.param("atts", jnp.full(BANK, 1e6), marks=_SLOW),
                                        pytest.param("sync", None, marks=_SLOW),
                                        pytest.param("target_only", None, marks=_SLOW)])
def test_a_pool_smaller_than_the_queue_writes_what_one_slot_per_sample_writes(models, mode, bank):
    problems = [make_problem(i, 3) for i in range(5)]          # 10 samples
    alone = _run(models, mode, problems, bank)
    for slots in (2, 4):                                       # one question at a time; two, then drain
        pooled = _run(models, mode, problems, bank, slots=slots)
        assert pooled.texts == alone.texts
        np.testing.assert_array_equal(pooled.levels, alone.levels)
        np.testing.assert_allclose(pooled.scores, alone.scores, rtol=1e-5)
        assert pooled.counts["prefill_calls"] > 0 and pooled.counts["ticks"] > alone.counts["ticks"]
        assert (pooled.latency_ticks > 0).all()
    assert (alone.latency_ticks <= alone.counts["ticks"]).all() and alone.counts["prefill_calls"] == 0


@pytest.mark.parametrize("mode", ["atts", pytest.param("sync", marks=_SLOW)])
def test_calls_on_a_bucket_of_rows_write_what_calls_on_every_row_write(models, mode):
    from codesign.atts import row_buckets

    problems = [make_problem(i, 3) for i in range(2)]
    bank = jnp.linspace(0.0, 8.0, BANK)                        # some chunks rejected, some not
    bucketed = _run(models, mode, problems, bank, m=16)        # 32 slots: calls on 16 or 32 rows
    assert row_buckets(32) == (16, 32)
    every = _run(models, mode, problems, bank, m=16, buckets=False)   # every call on all 32 rows
    assert bucketed.texts == every.texts
    np.testing.assert_array_equal(bucketed.levels, every.levels)
    assert 0 < (bucketed.levels > 0).sum() < (bucketed.levels >= 0).sum()


@pytest.mark.parametrize("mode, takeover", [("atts", "regenerate"), pytest.param("atts", "append", marks=_SLOW),
                                            pytest.param("sync", "regenerate", marks=_SLOW),
                                            pytest.param("calibrate", "regenerate", marks=_SLOW)])
def test_overlapped_ticks_write_what_fused_ticks_write(models, mode, takeover):
    # overlap: the target's calls read the tick's starting state, so scoring and takeover lag a tick
    problems = [make_problem(i, 3) for i in range(3)]
    bank = jnp.linspace(0.0, 8.0, BANK)
    fused = _run(models, mode, problems, bank, takeover=takeover, slots=4)
    overlapped = _run(models, mode, problems, bank, takeover=takeover, slots=4, overlap=True)
    assert overlapped.texts == fused.texts
    np.testing.assert_array_equal(overlapped.levels, fused.levels)
    np.testing.assert_allclose(overlapped.scores, fused.scores, rtol=1e-5)
    assert overlapped.counts["ticks"] > fused.counts["ticks"]
    if mode == "atts":
        assert 0 < (fused.levels > 0).sum() < (fused.levels >= 0).sum()


# (mode, takeover, m, slots, questions): a pool of 4 slots (admission, prefill on each device) in three modes,
# and 32 slots (calls on buckets of 16 or 32 rows)
TWO_DEVICE_RUNS = (("atts", "regenerate", 2, 4, 3), ("atts", "append", 2, 4, 3), ("sync", "regenerate", 2, 4, 3),
                   ("atts", "regenerate", 16, None, 2))


def test_draft_and_target_on_two_devices_write_what_one_device_writes(models):
    # two host CPU devices stand in for two GPUs: the draft's calls on one, the target's on the other,
    # one all-reduce per tick; the texts, decisions and scores must be those of the one-device run. Only the
    # two-device runs need a process of their own (the device count is fixed at start-up); the one-device
    # runs are made here, on the same models, where the overlapped-tick tests have compiled most of them.
    code = f"""
        import json, jax, jax.numpy as jnp
        from flax import nnx
        import nets
        from codesign.atts import StaticBank
        from codesign.atts import PipelineConfig, run_pipeline
        from codesign.data import make_problem
        assert jax.device_count() == 2, jax.devices()

        def tiny(name, seed):
            cfg = nets.ModelConfig(name=name, d_model=16, n_layers=1, max_seq_len=128,
                                   attention=nets.AttentionConfig(n_heads=2, n_kv_heads=2, head_dim=8),
                                   ffn=nets.FFNConfig(d_ff=32))
            return nets.TransformerLM(cfg, rngs=nnx.Rngs(params=seed))

        models = tiny("draft", 1), tiny("target", 2)
        cal = StaticBank({BANK})
        bank = jnp.linspace(0.0, 8.0, {BANK})
        report = []
        for mode, takeover, m, slots, n in {TWO_DEVICE_RUNS!r}:
            cfg = PipelineConfig(mode=mode, takeover=takeover, alpha=0.5 if mode == "sync" else 0.25,
                                 slots=slots, overlap=True, devices=2, **{{**{GREEDY!r}, "m": m}})
            extra = dict(calibrator=cal, cal_state=cal.init_state(bank)) if mode == "atts" else {{}}
            r = run_pipeline(*models, [make_problem(i, 3) for i in range(n)], cfg, key=jax.random.key(0), **extra)
            report.append(dict(texts=r.texts, levels=r.levels.tolist(), scores=r.scores.tolist(), counts=r.counts))
        print(json.dumps(report))
        """
    import os
    import subprocess
    import sys
    import textwrap

    # the session's XLA flags (tests/conftest.py: the cheap compile) plus two host devices
    env = dict(os.environ, XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=2".strip(),
               JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(report) == len(TWO_DEVICE_RUNS)
    for (mode, takeover, m, slots, n), two in zip(TWO_DEVICE_RUNS, report):
        name = f"{mode}-{takeover}-m{m}"
        one = _run(models, mode, [make_problem(i, 3) for i in range(n)], jnp.linspace(0.0, 8.0, BANK),
                   takeover=takeover, m=m, slots=slots, overlap=True)
        assert two["texts"] == one.texts, name
        np.testing.assert_array_equal(np.asarray(two["levels"]), one.levels, err_msg=name)
        np.testing.assert_allclose(np.asarray(two["scores"], np.float32), one.scores, rtol=1e-5, err_msg=name)
        assert two["counts"] == one.counts, name
        taken, scored = int((one.levels > 0).sum()), int((one.levels >= 0).sum())
        assert 0 < taken < scored, (name, taken, scored)   # both paths of the decision were exercised


def test_two_devices_need_independent_calls_and_two_devices(models):
    with pytest.raises(ValueError, match="devices"):
        PipelineConfig(mode="atts", devices=2)                     # fused ticks: the calls depend on each other
    with pytest.raises(ValueError, match="devices"):
        PipelineConfig(mode="target_only", overlap=True, devices=2)
    with pytest.raises(ValueError, match="devices"):
        PipelineConfig(mode="atts", overlap=True, devices=3)
    if jax.device_count() < 2:
        with pytest.raises(ValueError, match="devices=2.*at most the 1 device"):
            _run(models, "sync", overlap=True, devices=2)


def test_overlapped_append_waits_for_the_target_line():
    # every byte is a newline: a stale newline must not end the target's appended line before it is written
    writer = _newline_writer("writer")
    cfg = dict(GREEDY, takeover="append", max_chunk=8, buf_len=128)
    cal = StaticBank(BANK)
    runs = [run_pipeline(writer, writer, PROBLEMS, PipelineConfig(mode="atts", overlap=o, **cfg), key=jax.random.key(0),
                         calibrator=cal, cal_state=cal.init_state(jnp.full(BANK, -1.0))) for o in (False, True)]
    assert runs[0].texts == runs[1].texts
    assert all(t == "\n" * 2 * GREEDY["max_turns"] for row in runs[0].texts for t in row)   # draft line + target line


def test_majority_vote_and_paired_bootstrap():
    assert majority_vote([3, 5, 3, None, 5, 5]) == 5
    assert majority_vote([7, 2]) == 2          # tie: smallest
    assert majority_vote([None, None]) is None
    a = np.array([1, 1, 0, 1] * 50)
    diff, lo, hi = paired_bootstrap(a, a)
    assert diff == lo == hi == 0.0
    b = np.roll(a, 1)
    diff, lo, hi = paired_bootstrap(a, b, n_boot=2000)
    assert lo <= diff <= hi and hi - lo > 0


def test_make_calibrator_builds_every_variant_from_a_bank():
    rng = np.random.default_rng(0)
    bank = rng.exponential(size=(6, 4, 3)).astype(np.float32)
    bank[:3, :, 2] = np.nan                    # short problems have no third turn
    for name in ("static", "mondrian", "pooled"):
        cal, state = make_calibrator(name, bank, alpha=0.25, max_turns=3)
        p = cal.p_values(state, jnp.asarray([0.1, 10.0]), uniforms=jnp.asarray([0.5, 0.5]),
                         turn_ids=jnp.asarray([0, 2]))
        assert p[1] < p[0]
    static, state = make_calibrator("static", bank, alpha=0.25, max_turns=3)
    assert int(state.valid.sum()) == 24        # turn 0 only
    window, state = make_calibrator("window", bank, alpha=0.25, max_turns=3, window=10)
    np.testing.assert_allclose(np.sort(state.scores), np.sort(bank[3:, :, 2].ravel()[-10:]))  # the latest 10
    aci, state = make_calibrator("aci", bank, alpha=0.25, max_turns=3)
    assert float(aci.level(state)) == 0.25
    pooled, state = make_calibrator("pooled", bank, alpha=0.25, max_turns=3, min_bank=20)
    np.testing.assert_array_equal(np.asarray(pooled.pools(state)), [[1, 0, 0], [0, 1, 0], [0, 1, 1]])  # 24, 24, 12


@pytest.mark.parametrize("kw, field", [
    ({"alpha": 0.0}, "alpha"), ({"alpha": 1.0}, "alpha"), ({"alpha": float("nan")}, "alpha"),
    ({"mode": "fast"}, "mode"), ({"takeover": "both"}, "takeover"), ({"m": 0}, "m"),
    ({"alpha_regenerate": 0.5}, "alpha_regenerate"), ({"draft_temperature": -1.0}, "draft_temperature"),
    ({"buf_len": 8}, "buf_len"), ({"slots": 3}, "slots"), ({"slots": 8}, "slots"), ({"slots": True}, "slots"), ({"overlap": 1}, "overlap")])
def test_bad_config_is_a_clear_error(kw, field):
    with pytest.raises(ValueError, match=f"^{field}="):
        PipelineConfig(**kw)


def test_bad_run_input_is_a_clear_error(models):
    cfg = PipelineConfig(mode="atts", **GREEDY)
    cal = StaticBank(4)
    with pytest.raises(ValueError, match="^calibrator="):
        run_pipeline(*models, PROBLEMS, cfg, key=jax.random.key(0))
    with pytest.raises(ValueError, match="^cal_state="):
        run_pipeline(*models, PROBLEMS, cfg, key=jax.random.key(0), calibrator=cal, cal_state=cal.init_state())
    with pytest.raises(ValueError, match="^problems="):
        run_pipeline(*models, [], cfg, key=jax.random.key(0), calibrator=cal, cal_state=cal.init_state([1.0]))
    with pytest.raises(ValueError, match="^calibrator.n_turns="):
        from codesign.atts import Mondrian
        mon = Mondrian(5, 4)
        run_pipeline(*models, PROBLEMS, cfg, key=jax.random.key(0), calibrator=mon,
                     cal_state=mon.init_state([1.0], turn_ids=[0]))
    bank = np.ones((2, 2, 3), np.float32)
    with pytest.raises(ValueError, match="^bank.shape="):
        make_calibrator("static", bank[0], alpha=0.25, max_turns=3)
    with pytest.raises(ValueError, match="^bank="):
        make_calibrator("static", np.full((2, 2, 3), np.nan, np.float32), alpha=0.25, max_turns=3)
    with pytest.raises(ValueError, match="^bank="):
        make_calibrator("static", np.full((2, 2, 3), np.inf, np.float32), alpha=0.25, max_turns=3)
    with pytest.raises(ValueError, match="^calibrator="):
        make_calibrator("online", bank, alpha=0.25, max_turns=3)
    with pytest.raises(ValueError, match="^a.shape="):
        paired_bootstrap(np.ones(3), np.ones(4))
    with pytest.raises(ValueError, match="^scores"):   # NaN scores are refused by the calibrator itself
        StaticBank(4).init_state(jnp.asarray([1.0, jnp.nan]))


def _newline_writer(name):
    """A model that writes "\\n" after every input: attention and FFN zeroed, every embedding the
    ones vector, the head reading only byte 10 (so each line is one byte long)."""
    cfg = nets.ModelConfig(name=name, d_model=16, n_layers=1, max_seq_len=256,
                           attention=nets.AttentionConfig(n_heads=2, n_kv_heads=2, head_dim=8),
                           ffn=nets.FFNConfig(d_ff=32))
    model = nets.TransformerLM(cfg, rngs=nnx.Rngs(params=0))
    state = jax.tree.map(jnp.zeros_like, nnx.state(model, nnx.Param))
    nnx.update(model, state)
    model.embed.embedding[...] = jnp.ones_like(model.embed.embedding[...])
    model.final_norm.scale[...] = jnp.ones_like(model.final_norm.scale[...])
    model.lm_head.kernel[...] = jnp.zeros_like(model.lm_head.kernel[...]).at[:, 10].set(10.0)
    return model


@pytest.mark.parametrize("mode, p", [("draft_only", 0.25), ("target_only", 1.0),
                                     *(pytest.param(m, q, marks=_SLOW) for m, q in
                                       [("draft_only", 1.0), ("draft_only", 0.5), ("target_only", 0.5),
                                        ("target_only", 0.25)])])
def test_turns_are_paragraphs_of_a_geometric_number_of_lines(mode, p):
    writer = _newline_writer("writer")
    T, m = 8, 64
    cfg = PipelineConfig(mode=mode, m=m, max_turns=T, max_chunk=40, buf_len=512, turn_end_prob=p)
    r = run_pipeline(writer, writer, [make_problem(0, 3)], cfg, key=jax.random.key(1))
    lines_per_turn = np.asarray([len(t) for t in r.texts[0]]) / T   # every line is the one byte "\n"
    assert set("".join(r.texts[0])) == {"\n"}
    if p == 1.0:
        assert (lines_per_turn == 1).all()
    else:  # geometric, mean 1/p, sd sqrt(1-p)/p; 512 turns: the mean within 5 standard errors
        se = np.sqrt(1 - p) / p / np.sqrt(T * m)
        assert abs(lines_per_turn.mean() - 1 / p) < 5 * se, (lines_per_turn.mean(), 1 / p)


def test_turn_end_prob_outside_zero_one_is_a_clear_error():
    for bad in (0.0, 1.5, -0.1, True):
        with pytest.raises(ValueError, match="turn_end_prob"):
            PipelineConfig(turn_end_prob=bad)


def test_a_saved_bank_is_reused_only_with_the_same_settings_and_models(models, tmp_path):
    from codesign.atts import ArithTask, bench, load_bank

    kw = dict(ms=(2,), n_accuracy=1, m_accuracy=2, n_speed=1, n_calibration=3, max_turns=3, parts=("speed",),
              max_chunk=5, buf_len=64, log=None, bank_file=tmp_path / "bank.npz")
    first = bench(*models, ArithTask(3, 3), **kw)
    assert (tmp_path / "bank.npz").exists() and first["calibration"]["scores_by_turn"] > 0
    assert first["calibration"]["collected"]
    second = bench(*models, ArithTask(3, 3), **kw)
    assert not second["calibration"]["collected"], "the saved bank should have been read"
    assert {**second["calibration"], "collected": True} == first["calibration"]
    late = bench(*models, ArithTask(3, 3), **kw, deadline=0.0)   # past its deadline: no run starts, each is listed
    assert late["speed"] == [] and late["skipped"] == ["speed m=2"] and late["complete"]
    with pytest.raises(ValueError, match="max_chunk: file 5, here 6"):
        bench(*models, ArithTask(3, 3), **{**kw, "max_chunk": 6})
    with pytest.raises(ValueError, match="models: file"):                  # another pair scored it
        bench(models[1], models[0], ArithTask(3, 3), **kw)
    with pytest.raises(ValueError, match="bank=.*must be an .npz"):
        load_bank(tmp_path / "missing.npz")


@pytest.mark.slow
def test_bench_runs_every_arm_with_the_turn_structure_it_was_given(models):
    from codesign.atts import ArithTask
    from codesign.atts import CALIBRATORS, bench, format_bench

    saved = []
    report = bench(*models, ArithTask(3, 3), ms=(2,), n_accuracy=3, m_accuracy=2, n_speed=1, n_calibration=3,
                   max_turns=3, min_turn_n=1, turn_end_prob=0.5, max_chunk=5, buf_len=64, pool_slots=4,
                   serve_samples=12, log=None, save=lambda r: saved.append(json.loads(json.dumps(r))))
    # saved after every run (8 accuracy arms, 1 speed row, 1 serve row, start and end), complete only at the end
    assert len(saved) == 12 and [r["complete"] for r in saved] == [False] * 11 + [True]
    assert [len(r["accuracy"]) for r in saved[:10]] == list(range(9)) + [8] and saved[-1] == json.loads(json.dumps(report))
    assert "PARTIAL" in format_bench(saved[3]) and "PARTIAL" not in format_bench(report)
    assert report["turn_end_prob"] == 0.5 and report["max_chunk"] == 5
    assert set(report["accuracy"]) == {"target_only", "draft_only", "sync"} | {f"atts_{c}" for c in CALIBRATORS}
    assert [row["m"] for row in report["speed"]] == [2]
    (serve,) = report["serve"]
    assert (serve["m"], serve["questions"], serve["slots"]) == (2, 6, 4)
    for mode in ("atts", "sync", "target_only"):   # 12 samples through 4 slots: all answered, in more ticks
        assert serve[mode]["ticks"] > 0 and serve[mode]["latency_s_mean"] > 0
    table = format_bench(report)
    assert "mean 2" in table and "a pool of 4 slots" in table


def test_batches_whose_longest_prompts_differ_by_a_few_bytes_share_one_compiled_program(models):
    """Prompt widths are rounded up to a multiple of 8: batches of 10- and 14-byte prompts run one program,
    and a prompt padded further writes what generation from the bare prompt writes."""
    from codesign.data import ArithProblem

    draft, target = models
    cfg = PipelineConfig(mode="target_only", **GREEDY)
    short, long = ArithProblem(123, 45), ArithProblem(12345, 6789)
    assert [len(encode(format_problem(p))) for p in (short, long)] == [10, 14]
    first = run_pipeline(*models, [short], cfg, key=jax.random.key(0))
    second = run_pipeline(*models, [long], cfg, key=jax.random.key(0))
    assert second.compile_s < 0.05, "the second width should have reused the first's program"
    n_bytes = GREEDY["max_turns"] * GREEDY["max_chunk"]   # random models never end a line early
    assert first.texts[0] == [_generated(target, short, n_bytes)] * GREEDY["m"]
    assert second.texts[0] == [_generated(target, long, n_bytes)] * GREEDY["m"]


def test_chain_problems_run_through_the_pipeline_unchanged(models):
    """The pipeline needs only a problem's prompt and answer: the chain task's problems run as the arithmetic
    ones do, and with greedy decoding a run that always takes over writes from the chain prompt what plain
    generation from it writes."""
    from codesign.data import ChainProblem, make_chain_problem

    draft, target = models
    chain = [make_chain_problem(i, 3, 2) for i in range(2)]
    cal = StaticBank(BANK)
    cfg = PipelineConfig(mode="atts", alpha=0.25, **GREEDY)
    always = run_pipeline(*models, chain, cfg, key=jax.random.key(0), calibrator=cal,
                          cal_state=cal.init_state(jnp.full(BANK, -1.0)))
    n_bytes = GREEDY["max_turns"] * GREEDY["max_chunk"]
    for q, problem in enumerate(chain):
        prompt = encode(problem.prompt)
        out = nets.generate(target, jnp.asarray(prompt)[None], n_bytes, key=jax.random.key(0))
        assert always.texts[q] == [decode(np.asarray(out[0])[len(prompt):])] * GREEDY["m"]
    assert (always.levels == 2).all() and not always.correct.any()
    with pytest.raises(ValueError, match="^problems="):
        run_pipeline(*models, [chain[0].prompt], cfg, key=jax.random.key(0), calibrator=cal,
                     cal_state=cal.init_state(jnp.full(BANK, -1.0)))
    assert isinstance(chain[0], ChainProblem)


@pytest.mark.slow
def test_turn_zero_chunks_and_scores_are_the_calibration_programs(models):
    """Turn 0 follows no takeover, so with one key the draft writes the same first chunk, and the target gives
    it the same score, in the calibration program as in an ATTS run (the bank's turn-0 scores and the test's
    are then drawn alike); later turns differ once every chunk is taken over."""
    sampled = dict(GREEDY, draft_temperature=0.7, target_temperature=0.7, m=4)
    cal = run_pipeline(*models, PROBLEMS, PipelineConfig(mode="calibrate", **sampled), key=jax.random.key(5))
    bank = StaticBank(BANK)
    atts = run_pipeline(*models, PROBLEMS, PipelineConfig(mode="atts", alpha=0.25, **sampled), key=jax.random.key(5),
                        calibrator=bank, cal_state=bank.init_state(jnp.full(BANK, -1.0)))   # every chunk regenerated
    assert (atts.levels[:, :, 0] == 2).all() and np.isfinite(cal.scores[:, :, 0]).all()
    np.testing.assert_array_equal(atts.scores[:, :, 0], cal.scores[:, :, 0])
    assert not np.array_equal(atts.scores[:, :, 1], cal.scores[:, :, 1])

