#!/usr/bin/env bash
# The prepared GPU measurement (6 min 15 s on one H200 on its first run, 2 min of it in a compiled
# step that failed and was fixed; 2 min 49 s on 2026-12-04 with step 4; each step has its own limit, the whole fits in 8). Needs only python3 with torch, transformers, pandas, tqdm, nvidia-ml-py and
# py-cpuinfo: nothing is installed and nothing is fetched; vLLM is used where it imports.
#   1. operator microbenchmarks (bf16 and fp8 GEMMs, grouped expert GEMMs, decode and prefill
#      attention, norms, sampling, copy) at DeepSeek-V3 and Llama-3.1-8B shapes, with the device
#      peak microbenchmarks;
#   2. transformers decode (batch 1..128) and prefill (2k-token prompts) for Llama-3.1-8B with
#      dummy weights, eager;
#   3. the same decode compiled (static KV cache, torch.compile with CUDA graphs), beside eager;
#   4. every configuration steps 2 and 3 measured, predicted from the operators of step 1 alone (`fleetcal validate --run`
#      on this script's files: the serving model on the kernels measured here) and printed beside what was measured.
# Energy per token comes from NVML's energy counter in every step. One results file per step.
#
#   scripts/gpu_run.sh [OUT_DIR]            # on a CUDA machine; records go to OUT_DIR (default results/runs)
#   scripts/gpu_run.sh OUT_DIR --cpu-test   # the same steps on the CPU with tiny sizes, to test the script
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT="${1:-results/runs}"
PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ] && [ "${2:-}" = "--cpu-test" ] && PY=.venv/bin/python
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 VLLM_LOGGING_LEVEL=WARNING
if [ "${2:-}" = "--cpu-test" ]; then
  DEVICE=cpu; OPS_MODELS="smollm2-135m"; OPS_MB=quick; E2E=smollm2-135m
  DECODE=1,2; DEC_IN=16; DEC_OUT=8; PREFILL=1; PRE_IN=64; COMPILED=1; LIMIT=120; COMPILE_LIMIT=120; BUDGET=0.5
else
  DEVICE=cuda; OPS_MODELS="deepseek-v3 llama-3.1-8b"; OPS_MB=full; E2E=llama-3.1-8b
  DECODE=1,8,32,128; DEC_IN=128; DEC_OUT=32; PREFILL=1,4; PRE_IN=2048; COMPILED=1,32; LIMIT=150; COMPILE_LIMIT=200; BUDGET=6
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,clocks.max.mem,power.limit --format=csv || true
fi
echo "gpu_run: $DEVICE, ops for $OPS_MODELS, transformers decode/prefill for $E2E, records to $OUT"
status=0
files=()  # --run FILE for each results file a step wrote (a step cut short by its limit keeps what it finished), for step 4
step() {  # a step that fails or runs out of time is reported; the finished configurations stay in its file
  local limit=$1 before f; shift
  before="$(ls "$OUT"/*.json 2>/dev/null || true)"
  timeout "$limit" "$PY" -m fleetcal.cli bench --device "$DEVICE" --load-format dummy --out "$OUT" "$@" || { echo "gpu_run: step failed or timed out: $*" >&2; status=1; }
  for f in "$OUT"/*.json; do
    [ -f "$f" ] && ! grep -qxF "$f" <<<"$before" && files+=(--run "$f")
  done
  return 0
}
for model in $OPS_MODELS; do
  step "$LIMIT" --mode ops --model "$model" --engine transformers --microbench "$OPS_MB"
done
step "$LIMIT" --mode decode --model "$E2E" --engine transformers --microbench off --enforce-eager true --budget-s "$BUDGET" \
    --batch-sizes "$DECODE" --input-lens "$DEC_IN" --output-lens "$DEC_OUT"
step "$LIMIT" --mode prefill --model "$E2E" --engine transformers --microbench off --enforce-eager true \
    --batch-sizes "$PREFILL" --input-lens "$PRE_IN" --num-prompts 4
step "$COMPILE_LIMIT" --mode decode --model "$E2E" --engine transformers --microbench off --enforce-eager false --budget-s "$BUDGET" \
    --batch-sizes "$COMPILED" --input-lens "$DEC_IN" --output-lens "$DEC_OUT"
ls -l "$OUT"
echo "gpu_run: the configurations measured, predicted from the operators measured above"
if [ ${#files[@]} -eq 0 ]; then
  echo "gpu_run: no results file was written: nothing to predict" >&2; status=1
else
  timeout 120 "$PY" -m fleetcal.cli validate "${files[@]}" || { echo "gpu_run: the prediction failed" >&2; status=1; }
fi
exit $status
