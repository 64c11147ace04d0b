"""Turn-0 scores of the calibration program against an ATTS run (same key, bf16 tiny pair, 64 questions x 16),
and the calibration program with row buckets against all rows: whether a chunk's score depends on the program."""
import numpy as np, jax, jax.numpy as jnp
from flax import nnx
import nets
from codesign.atts import PipelineConfig, run_batched, make_calibrator, target_config, draft_config, task_for
dt = jnp.bfloat16
t = nets.TransformerLM(target_config("tiny"), rngs=nnx.Rngs(params=2), dtype=dt)
d = nets.TransformerLM(draft_config("tiny"), rngs=nnx.Rngs(params=1), dtype=dt)
probs = list(task_for("large").dataset(64, 5, "valid").problems)
kw = dict(max_turns=4, max_chunk=16, buf_len=128, m=16)
key = jax.random.key(3)
res = {}
for b in (True, False):
    cal = run_batched(d, t, probs, PipelineConfig(mode="calibrate", buckets=b, **kw), key=key, batch_questions=64)
    c, st = make_calibrator("mondrian", cal.scores, alpha=0.25, max_turns=4)
    at = run_batched(d, t, probs, PipelineConfig(mode="atts", alpha=0.25, buckets=b, **kw), key=key, calibrator=c, cal_state=st, batch_questions=64)
    a0, b0 = at.scores[:, :, 0], cal.scores[:, :, 0]
    same_text = np.array([[x[:8] == y[:8] for x, y in zip(r1, r2)] for r1, r2 in zip(at.texts, cal.texts)])
    dd = a0 - b0
    print("buckets", b, "turn0 n differ", int((dd != 0).sum()), "of", dd.size, "mean diff", float(np.mean(dd)),
          "atts<cal", int((dd < 0).sum()), "atts>cal", int((dd > 0).sum()), "rate0", float((at.levels[:, :, 0] > 0).mean()), flush=True)
    res[b] = cal.scores
print("calibrate buckets vs not: turn0 n differ", int((res[True][:, :, 0] != res[False][:, :, 0]).sum()))
