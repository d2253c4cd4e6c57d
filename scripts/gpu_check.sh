#!/usr/bin/env bash
# One prepared GPU measurement (about 3 minutes on an H200; limit 6): device microbenchmarks,
# a decode sweep (batch 1..256) and a prefill sweep (2k-token prompts) for SmolLM2-135M and a
# dense 8B model (Llama-3.1-8B), with dummy weights built from the configs in the repo.
# vLLM when it imports, the transformers engine otherwise. Needs only python3 with torch,
# transformers, pandas, tqdm, nvidia-ml-py and py-cpuinfo: nothing is installed.
#
#   scripts/gpu_check.sh [OUT_DIR]            # on a CUDA machine; records go to OUT_DIR (default results/runs)
#   scripts/gpu_check.sh OUT_DIR --cpu-test   # the same steps on the CPU with tiny sizes, to test the script
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT="${1:-results/runs}"
PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ] && [ "${2:-}" = "--cpu-test" ] && PY=.venv/bin/python
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 VLLM_LOGGING_LEVEL=WARNING
if [ "${2:-}" = "--cpu-test" ]; then
  DEVICE=cpu; MODELS="smollm2-135m"; DECODE=1,2; PREFILL=1,2; DEC_IN=32; DEC_OUT=8; PRE_IN=256; STEP_LIMIT=300
else
  DEVICE=cuda; MODELS="smollm2-135m llama-3.1-8b"; DECODE=1,2,4,8,16,32,64,128,256; PREFILL=1,4,8
  DEC_IN=128; DEC_OUT=32; PRE_IN=2048; STEP_LIMIT=150
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,clocks.max.mem --format=csv || true
fi
if "$PY" -c "import vllm" >/dev/null 2>&1; then ENGINE=vllm; else ENGINE=transformers; fi
echo "gpu_check: engine $ENGINE on $DEVICE, models: $MODELS, records to $OUT"
status=0
for model in $MODELS; do
  common=(--engine "$ENGINE" --device "$DEVICE" --model "$model" --load-format dummy --out "$OUT" --microbench full)
  timeout "$STEP_LIMIT" "$PY" -m fleetcal.cli bench "${common[@]}" --mode decode \
      --batch-sizes "$DECODE" --input-lens "$DEC_IN" --output-lens "$DEC_OUT" || status=1
  timeout "$STEP_LIMIT" "$PY" -m fleetcal.cli bench "${common[@]}" --mode prefill \
      --batch-sizes "$PREFILL" --input-lens "$PRE_IN" || status=1
done
ls -l "$OUT"
exit $status
