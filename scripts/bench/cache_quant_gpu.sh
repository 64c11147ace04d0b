#!/usr/bin/env bash
# One device call (about 6 minutes on an H100) for the GPU numbers of two changes measured only on the CPU so far
# (results/gpu_speed/decode_step_cpu/, results/gpu_speed/quantizer_cpu/): the KV cache written in place, the ATTS
# engine's calls, the quantisers without frexp/ldexp, and the QAT step.
#   bash scripts/bench/cache_quant_gpu.sh OUT_DIR
#   QUICK=1 bash scripts/bench/cache_quant_gpu.sh OUT_DIR     # the same commands at CPU sizes: checks the script
# Each step has its own time limit and writes its files as it goes, so a slow step costs only itself.
set -u
OUT=${1:?out dir}
mkdir -p "$OUT"
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH}
if [ "${QUICK:-0}" = 1 ]; then
  DECODE=(--cpu --kinds mha,mla --steps 1 --repeats 1)
  CALLS=(--size tiny --rows 64 --widths 1 --reps 2)
  SUITE=(--tiny --budget-s 60)
  QUANT=(--n 65536)
  QAT=(--steps 6)
else
  DECODE=()                                                             # 16 layers, batch 32, 8192 tokens, bf16
  CALLS=(--size large --draft-variant kv2 --rows 256,1024 --widths 1,17 --reps 20)   # the GPU pair, buffer 320
  SUITE=(--budget-s 100)
  QUANT=()
  QAT=(--steps 30)
fi
step() {  # step NAME LIMIT_S COMMAND...
  local name=$1 limit=$2
  shift 2
  echo "== $name ($(date -u +%H:%M:%S), limit ${limit} s)"
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  echo "   exit $?"; tail -n 12 "$OUT/$name.log"
}
step decode_step 120 python3 scripts/bench/decode_step.py "${DECODE[@]}" --out "$OUT/decode_step.json"
step atts_calls 120 python3 scripts/bench/atts_calls.py "${CALLS[@]}" --out "$OUT/atts_calls"
step cost_suite_decode 130 python3 scripts/bench/cost_suite.py "${SUITE[@]}" --only decode_step --out "$OUT/cost_suite"
step quantizer 60 python3 scripts/bench/quantizer.py "${QUANT[@]}" --out "$OUT/quantizer.json"
step qat_step 150 python3 scripts/bench/qat_step.py "${QAT[@]}" --formats "mxfp4;posit(8,0)" --out "$OUT/qat_step.json"
