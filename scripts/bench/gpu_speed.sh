#!/usr/bin/env bash
# One device call: probe the software, our training step per remat policy and attention kernel (the
# first case profiled op by op), the PyTorch peer on the same configs, decode attention against its
# roofline, the QAT step overhead. Writes everything under $1 (default $OUT).
# Usage on the GPU machine, from the repository root:  bash scripts/bench/gpu_speed.sh "$OUT" [sections]
# Sections (comma-separated; default probe,step,peer,decode,qat, about 7.5 minutes on an H100):
#   probe   GPU, driver, jax/torch/cuDNN versions, which grouped-matmul kernel "auto" takes
#   step    our step (train_throughput.py) on $CASES (model:batch:seq[:remat[:attention]]); the first
#           case is traced with jax.profiler into $OUT/profile/ with its op table (table.txt)
#   peer    the PyTorch peer (torch_peer.py, torch.compile) on $PEER_CASES, one process
#   decode  decode attention against its roofline, nets' own paths included (decode_attention.py)
#   qat     the QAT step overhead per format (qat_step.py)
# and the earlier calls' sections: options fusion train (grouped matmul and attention options, the
# step before/after), moe (the MoE layer and its router+dispatch share), hf (HF logits, JAX on CPU).
# CPU smoke run of the same script (tiny shapes):  CASES=codesign-default:4:32:none:auto STEP_ARGS=--quick \
#   DECODE_ARGS=--quick QAT_STEPS=3 QAT_FORMATS=fp8_e4m3 bash scripts/bench/gpu_speed.sh /tmp/out step,decode,qat
# Each section runs under its own time limit so one failure cannot use up the call; the step and
# QAT scripts rewrite their JSON after every case, so a limit keeps what finished.
set -u
out=${1:-${OUT:-runs/bench}}
steps=${2:-probe,step,peer,decode,qat}
mkdir -p "$out"
export PYTHONPATH=. PYTHONUNBUFFERED=1
if [[ $steps == *probe* ]]; then
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv | tee "$out/probe.txt"
  python3 - <<'PY' 2>&1 | tee -a "$out/probe.txt"
import jax
print("jax", jax.__version__, jax.devices())
try:
    import torch
    print("torch", torch.__version__, "cudnn(torch)", torch.backends.cudnn.version())
except Exception as e:
    print("torch unavailable:", e)
try:
    from jax._src.lib import cuda_versions
    print("cudnn(jax)", cuda_versions.cudnn_get_version())
except Exception as e:
    print("cudnn(jax) unknown:", e)
try:
    import jax._src.lax.pallas_lowerings.gpu.ragged_dot  # noqa: F401
    print("pallas-triton grouped kernels: present")
except Exception as e:
    print("pallas-triton grouped kernels: MISSING", e)
from nets.grouped import resolve_implementation
print("grouped auto ->", resolve_implementation("auto"))
PY
fi
if [[ $steps == *options* ]]; then
  timeout 200 python3 scripts/bench/gpu_speed.py --out "$out/options.json" > "$out/options.log" 2>&1
  echo "options rc=$?"; grep -v '^{' "$out/options.log" | grep -v '^  File\|^Traceback\|^    ' | tail -60
fi
if [[ $steps == *fusion* ]]; then
  XLA_FLAGS=--xla_gpu_experimental_use_ragged_dot_fusion=true timeout 50 python3 scripts/bench/gpu_speed.py \
    --only grouped --reference-only --out /tmp/cudnn_fusion.json > "$out/cudnn_fusion.log" 2>&1
  echo "fusion rc=$?"; tail -8 "$out/cudnn_fusion.log"
fi
if [[ $steps == *train* ]]; then
  # The reference step does not fit an 80 GB H100 at codesign-100m's batch 32 x 1024 (einsum attention
  # scores of every layer kept for the backward pass): before and after are compared at batch 16.
  CODESIGN_GROUPED_MATMUL=reference CODESIGN_ATTENTION=einsum timeout 130 python3 scripts/bench/train_throughput.py \
    --cases codesign-default:64:256,codesign-100m:16:1024 --out "$out/train_before.json" > "$out/train_before.log" 2>&1
  echo "before rc=$?"; tail -5 "$out/train_before.log"
  timeout 180 python3 scripts/bench/train_throughput.py --cases codesign-default:64:256,codesign-100m:16:1024,codesign-100m:32:1024 \
    --out "$out/train_after.json" > "$out/train_after.log" 2>&1
  rc=$?; echo "after rc=$rc"; tail -6 "$out/train_after.log"
  if [[ $rc != 0 ]]; then  # keep the attention-only figure if the grouped kernel failed inside the step
    grep -v '^  ' "$out/train_after.log" | tail -3
    CODESIGN_GROUPED_MATMUL=reference timeout 100 python3 scripts/bench/train_throughput.py \
      --cases codesign-100m:32:1024 --out "$out/train_after.json" > "$out/train_after.log" 2>&1
    echo "after (reference grouped) rc=$?"; tail -4 "$out/train_after.log"
  fi
fi
if [[ $steps == *hf* ]]; then  # CPU only (float32 logits compared at 1e-4): runs beside the GPU sections
  (JAX_PLATFORMS=cpu nice -n 19 taskset -c 10-15 timeout 240 python3 scripts/check_hf_logits.py \
     --out "$out/hf_logits.json" > "$out/hf_logits.log" 2>&1; echo "hf rc=$?" >> "$out/hf_logits.log") &
  hf_pid=$!
fi
if [[ $steps == *moe* ]]; then
  timeout ${MOE_S:-110} python3 scripts/bench/gpu_speed.py --only moe --out "$out/moe.json" > "$out/moe.log" 2>&1
  echo "moe rc=$?"; grep -v '^{' "$out/moe.log" | grep -v '^  File\|^Traceback\|^    ' | tail -8
fi
# Ours: the profiled case first, then by importance, so a time limit cuts the least needed case.
CASES=${CASES:-codesign-100m:16:1024:none:auto,codesign-dense-300m:16:2048:dots:auto,codesign-dense-300m:8:2048:none:auto,codesign-100m:16:1024:none:einsum,codesign-dense-300m:16:2048:full:auto}
PEER_CASES=${PEER_CASES:-codesign-100m:16:1024,codesign-dense-300m:16:2048,codesign-dense-300m:8:2048}
if [[ $steps == *step* ]]; then
  timeout ${OURS_S:-200} python3 scripts/bench/train_throughput.py --cases "$CASES" ${STEP_ARGS:---warmup 5 --blocks 5 --block-steps 10} \
    --profile "$out/profile" --profile-steps 3 --out "$out/step_ours.json" > "$out/step_ours.log" 2>&1
  echo "ours rc=$?"; grep -v '^{' "$out/step_ours.log" | grep -v '^  File\|^Traceback\|^    ' | tail -40
fi
if [[ $steps == *peer* ]]; then
  JAX_PLATFORMS=cpu timeout ${PEER_S:-90} python3 scripts/bench/torch_peer.py --cases "$PEER_CASES" \
    --out "$out/step_torch.json" > "$out/step_torch.log" 2>&1
  echo "peer rc=$?"; grep -v '^{' "$out/step_torch.log" | grep -v '^  File\|^Traceback\|^    ' | tail -8
fi
if [[ $steps == *decode* ]]; then
  timeout ${DECODE_S:-80} python3 scripts/bench/decode_attention.py ${DECODE_ARGS:-} --out "$out/decode.json" > "$out/decode.log" 2>&1
  echo "decode rc=$?"; grep -v '^{' "$out/decode.log" | grep -v '^  File\|^Traceback\|^    ' | tail -45
fi
if [[ $steps == *qat* ]]; then
  timeout ${QAT_S:-90} python3 scripts/bench/qat_step.py --steps ${QAT_STEPS:-30} \
    --formats "${QAT_FORMATS:-fp8_e4m3;posit(8,0);fp4_e2m1}" --out "$out/qat.json" > "$out/qat.log" 2>&1
  echo "qat rc=$?"; tail -9 "$out/qat.log"
fi
if [[ -n ${hf_pid:-} ]]; then
  wait $hf_pid; tail -12 "$out/hf_logits.log"
fi
if [[ -n ${PACK:-} ]]; then  # the device tool returns at most 8 files, 2 folders down: pack the rest into one
  trace=$(ls -t "$out"/profile/plugins/profile/*/*.trace.json.gz 2>/dev/null | head -1)
  xplane=$(ls -t "$out"/profile/plugins/profile/*/*.xplane.pb 2>/dev/null | head -1)
  pack=$(mktemp -d)
  tar czf "$pack/results.tar.gz" -C "$out" --exclude=plugins .
  [[ -n $trace ]] && mv "$trace" "$pack/profile.trace.json.gz"
  [[ -n $xplane ]] && mv "$xplane" "$pack/profile.xplane.pb"
  for f in step_ours.json step_torch.json decode.json qat.json; do [[ -f $out/$f ]] && mv "$out/$f" "$pack/"; done
  [[ -f $out/profile/table.txt ]] && mv "$out/profile/table.txt" "$pack/profile_table.txt"
  rm -rf "${out:?}"/* && mv "$pack"/* "$out/" && rmdir "$pack"
  echo "packed:"; ls -la "$out"
fi
