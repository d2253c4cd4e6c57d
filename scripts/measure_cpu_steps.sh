#!/usr/bin/env bash
# The measurements of the CPU step model (estimator/cpu_steps.py), all on this machine in one go,
# about 70 minutes on 2 cores: operator curves with vLLM's own CPU kernels before and after the
# engine runs (the curves take the median of both, so a machine whose speed drifts is seen from
# both sides), then vLLM decode and prefill steps to predict. The bundled model's decode at
# batches up to 32 and 128-token prompts fits the engine overheads; everything else is held out:
# its larger batches, its longer contexts, its prefills, and a larger Llama shape (SmolLM2-360M's,
# dummy weights) measured in the same run.
# Decode and prefill sweeps run in 3 rounds (--repeats 3: every configuration once, then again), and a configuration
# counts at the median of its rounds: on a shared machine one configuration measured minutes apart
# varies by up to 2x, and rounds make that drift fall on fitted and held-out batches alike.
# Decode runs prefill their whole batch in one step (--max-num-batched-tokens 32768), so that the
# decode steps timed by difference are all full batches; prefill runs keep vLLM's 4,096-token chunks.
#   scripts/measure_cpu_steps.sh [OUT_DIR]     # default results/runs
#   MODELS=bundled scripts/measure_cpu_steps.sh   # the bundled model alone (about half the time): enough for its own steps
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
FC="${FLEETCAL_VENV:-.venv}/bin/fleetcal"
OUT="${1:-results/runs}"
OPS=gemm,attention_decode,attention_prefill,layer_elementwise,sampling
for model in ${MODELS:-bundled smollm2-360m}; do
  fmt=auto; [ "$model" = bundled ] || fmt=dummy
  bench() { "$FC" bench --model "$model" --load-format "$fmt" --out "$OUT" "$@"; }
  bench --mode ops --operators "$OPS"
  batches=1,2,4,8,16,32,64,128,256; [ "$model" = bundled ] || batches=1,4,16,64,128
  bench --mode decode --microbench off --budget-s 6 --repeats 3 --max-num-batched-tokens 32768 \
      --batch-sizes "$batches" --input-lens 128 --output-lens 64          # batch at fixed context
  bench --mode decode --microbench off --budget-s 6 --repeats 3 --max-num-batched-tokens 32768 \
      --batch-sizes 4 --input-lens 512,2048 --output-lens 64               # context at fixed batch
  bench --mode prefill --microbench off --repeats 3 --batch-sizes 1,4 --input-lens 128,512,2048
  bench --mode ops --operators "$OPS" --microbench off
done
