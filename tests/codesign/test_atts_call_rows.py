"""The optional tally of the ATTS engine's model calls by kind and row bucket (`PipelineConfig.count_rows`)."""

import jax
import jax.numpy as jnp
import pytest

from codesign.atts import CALL_KINDS, PipelineConfig, StaticBank, run_pipeline
from codesign.data import make_problem

BANK = 64
SETTINGS = dict(m=16, max_turns=3, max_chunk=5, buf_len=64, draft_temperature=0.0, target_temperature=0.0)


@pytest.fixture(scope="module")
def models(tiny_atts_pair):
    return tiny_atts_pair


def _atts(models, **kw):
    cal = StaticBank(BANK)
    cfg = PipelineConfig(mode="atts", alpha=0.25, **SETTINGS, **kw)
    problems = [make_problem(i, 3) for i in range(2)]               # 32 slots: calls on 16 or 32 rows
    return run_pipeline(*models, problems, cfg, key=jax.random.key(0), calibrator=cal,
                        cal_state=cal.init_state(jnp.linspace(0.0, 8.0, BANK)))


def test_counting_calls_by_rows_changes_no_output_and_adds_up_to_the_call_counters(models):
    plain = _atts(models)
    counted = _atts(models, count_rows=True)
    assert plain.calls_by_rows is None
    assert counted.texts == plain.texts and counted.counts == plain.counts
    assert (counted.levels == plain.levels).all() and 0 < (counted.levels > 0).sum() < (counted.levels >= 0).sum()
    by_rows = counted.calls_by_rows
    assert set(by_rows) == set(CALL_KINDS) and all(set(t) == {16, 32} for t in by_rows.values())
    for kind, name in zip(CALL_KINDS, ("draft_calls", "score_calls", "target_gen_calls")):
        assert sum(by_rows[kind].values()) == plain.counts[name] > 0
    # a scoring call serves only the slots whose chunk just ended: never all 32 at once here (their chunks
    # end on different ticks once some are regenerated), so some ran on the 16-row bucket
    assert by_rows["target_score"][16] > 0
    # on all rows (no buckets) the same calls are made, every one on 32 rows
    every = _atts(models, count_rows=True, buckets=False)
    assert every.texts == plain.texts
    assert {k: {32: sum(t.values())} for k, t in by_rows.items()} == every.calls_by_rows


def test_the_bucket_is_the_smallest_that_holds_the_masked_slots():
    from codesign.atts import bucket_index, row_buckets

    sizes = row_buckets(1024)
    assert sizes == (128, 256, 512, 1024)
    for n, rows in ((1, 128), (128, 128), (129, 256), (512, 512), (513, 1024), (1024, 1024)):
        mask = jnp.arange(1024) < n
        assert sizes[int(bucket_index(mask, sizes))] == rows
