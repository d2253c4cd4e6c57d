#!/usr/bin/env bash
# The simulator against the real vLLM server, on this machine, in one measuring session (all within the hour, so that
# the comparison simulates each serve run with the CPU step model measured beside it: estimator/sim/measured.py):
# the bundled model's CPU step model (the steps of scripts/measure_cpu_steps.sh it needs, below), then Azure's
# conversation trace (core/data/traces/) replayed against vLLM's server on the bundled model, N requests at each of
# RATES requests/s with the trace's arrival times time-scaled, and at each of POISSON_RATES with Poisson arrivals and the
# trace's lengths; --repeats REPEATS rounds of each. Choose the rates from the step model's own prediction of the
# capacity (fleetcal simulate --device cpu --traffic azure-conv), from light load to past saturation.
# `fleetcal report --write-docs` then regenerates the comparison table in docs/methods.md.
# Measure on a quiet machine (1-minute load average below about 1.5, no other vLLM engine running); the load average
# at the start and end of each part is printed.
#   RATES=0.05,0.1,0.15,0.2 POISSON_RATES=0.1 N=30 scripts/measure_cpu_serve.sh [OUT_DIR]     # default results/runs
#   STEPS=no ...   skips the step model (when it was measured in this session already)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
FC="${FLEETCAL_VENV:-.venv}/bin/fleetcal"
OUT="${1:-results/runs}"
: "${RATES:?give RATES, requests/s, comma-separated}" "${N:=100}" "${REPEATS:=1}"
echo "start $(date -u +%FT%TZ) $(uptime)"
if [ "${STEPS:-yes}" != no ]; then
  # scripts/measure_cpu_steps.sh's steps of the bundled model, cut to what the comparison reads (about 12 minutes, where
  # its batches 64-256 alone take 25): operator curves before and after, the decode batches the overheads are fitted on
  # (1-32 at 128-token prompts, 3 rounds), and as held-out checks decode at 512/2048-token contexts and prefills of 512
  # and 2,048 tokens, the contexts and prompts of Azure's conversation trace.
  bench() { "$FC" bench --model bundled --out "$OUT" "$@"; }
  OPS=gemm,attention_decode,attention_prefill,layer_elementwise,sampling
  bench --mode ops --operators "$OPS"
  bench --mode decode --microbench off --budget-s 6 --repeats 3 --max-num-batched-tokens 32768 \
      --batch-sizes 1,2,4,8,16,32 --input-lens 128 --output-lens 64
  bench --mode decode --microbench off --budget-s 6 --repeats 2 --max-num-batched-tokens 32768 \
      --batch-sizes 4 --input-lens 512,2048 --output-lens 64
  bench --mode prefill --microbench off --repeats 2 --batch-sizes 1 --input-lens 512,2048
  bench --mode ops --operators "$OPS" --microbench off
  echo "steps done $(date -u +%FT%TZ) $(uptime)"
fi
serve() { "$FC" bench --mode serve --microbench off --trace azure-conv --num-prompts "$N" --repeats "$REPEATS" \
            --serve-budget-s 86400 --out "$OUT" "$@"; }
serve --request-rates "$RATES"                                                  # the trace's own arrivals, time-scaled
echo "trace done $(date -u +%FT%TZ) $(uptime)"
if [ -n "${POISSON_RATES:-}" ]; then
  serve --trace-arrivals gamma --burstiness 1 --request-rates "$POISSON_RATES"   # Poisson arrivals, the trace's lengths
  echo "poisson done $(date -u +%FT%TZ) $(uptime)"
fi
