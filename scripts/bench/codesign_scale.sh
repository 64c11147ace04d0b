#!/usr/bin/env bash
# The GPU-scale co-design protocol (scripts/bench/codesign_protocol.py at 115M parameters), as calls of at most
# ten minutes on one warm GPU: each call runs this with the same STATE folder and continues where the last stopped.
#   bash scripts/bench/codesign_scale.sh OUT_DIR DEADLINE_S [STATE]
#   ARMS="h100-sxm latency" bash scripts/bench/codesign_scale.sh ...   # one arm only (its own uniform arms included)
# Settings fixed before any result: model scale115m, corpus stdlib+deps, batch 16 x 256 bytes, pretraining 2000
# steps at 1e-3 (100 warm-up), every retraining 120 steps at 3e-4, 5 paired seeds, 16 validation batches, the
# protocol's default space, lambdas and trials, one search seed; first XR-NPE energy, then H100 latency (the
# retrainings of designs both share are reused).
set -u
# TPE needs optuna, which the lent GPU machines lack: install it from wheels carried in .whl/ (see docs/codesign.md)
if ! python3 -c "import optuna" 2>/dev/null && ls .whl/optuna-*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
OUT=${1:?out dir}; DEADLINE=${2:?deadline seconds}; STATE=${3:-.codesign-state/scale}
T0=$SECONDS
# JAX's persistent compilation cache in the state folder: a later call loads the retraining, path and evaluation
# programs instead of compiling them again (~140 s a process for the retraining step alone on the H100; the quick
# CPU protocol ran in 72 s instead of 139 s with the same losses)
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-$STATE/jax-cache}
export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=${JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS:-1}
COMMON=(--model scale115m --corpus stdlib+deps --batch 16 --seq-len 256 --pretrain-steps 2000 --warmup 100
        --lr 1e-3 --retrain-steps 120 --finetune-lr 3e-4 --eval-batches 16 --search-seeds 1 --state "$STATE"
        --search-need-s 120)
mkdir -p "$OUT"
IFS=';' read -ra ARM_LIST <<< "${ARMS:-xrnpe energy;h100-sxm latency}"
for arm in "${ARM_LIST[@]}"; do
  set -- $arm
  stem=scale_${1%%-*}
  [ -f "$STATE/$stem.done" ] && continue
  left=$((DEADLINE - SECONDS + T0))
  [ "$left" -lt 60 ] && { echo "codesign_scale: $left s left, $stem not started"; break; }
  PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH} python3 scripts/bench/codesign_protocol.py "${COMMON[@]}" --target "$1" --metric "$2" \
      --out "$OUT" --stem "$stem" --deadline-s "$left" 2>&1 | tee -a "$OUT/scale_log.txt"
  [ -f "$OUT/$stem.json" ] && cp "$OUT/$stem.json" "$STATE/" && touch "$STATE/$stem.done" || break
done
cp "$STATE"/protocol_retrain_cache.json "$OUT/" 2>/dev/null
ls "$STATE"
