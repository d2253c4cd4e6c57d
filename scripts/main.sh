#!/usr/bin/env bash
# Command 1 of the quick start, and the rented GPU's loop in one command. Sets up (idempotent), then:
#   1. the model's operators (`fleetcal bench --mode ops`);
#   2. the engine end to end (`fleetcal bench`): on a GPU (nvidia-smi present) offline throughput, prefill, decode and
#      the server under load (--mode throughput,prefill,decode,serve); on a CPU offline throughput and decode;
#   3. those same configurations predicted from the operators alone (`fleetcal validate --run` on the files just
#      written): predicted against measured per configuration with the model's error, beside the measured MFU/MBU
#      against the article's 50%;
#   4. the fleet for the article's traffic from this run's measured utilization (`fleetcal estimate --run`) and the
#      regenerated tables, plots and generated sections of the README and docs/ (`fleetcal report --write-docs`: without
#      it, report writes only tables/ and plots/ of its --results directory).
# Extra arguments go to the engine run (a --mode given there replaces the default); on a GPU the model, sizes and
# lengths among them go to the operator run too. On a CPU, to keep the quick start quick, 1 and 2 are one bench
# invocation (one process, one peak microbenchmark): the operators are vLLM's own CPU kernels at only the shapes this
# run's sizes reach (--ops-range sweep); the decode steps at batches 1, 8 and 32 fit the CPU step model's engine
# overhead and the throughput configurations are held out. Each step prints how long it took (DEVELOPERS.md).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
t0=$SECONDS
bash scripts/setup.sh
FC="${FLEETCAL_VENV:-.venv}/bin/fleetcal"
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  OPS=(--mode ops)
  E2E=(--mode throughput,prefill,decode,serve)
else
  OPS=()  # measured in the engine run
  E2E=(--mode ops,throughput,decode --ops-range sweep --operators gemm,attention_decode,attention_prefill,layer_elementwise,sampling)
fi
args=("$@")
shared=()  # what the operator run takes of the arguments: the model and the sizes its shapes come from
for ((i = 0; i < ${#args[@]}; i++)); do
  case "${args[i]}" in
    --model | --load-format | --dtype | --device | --batch-sizes | --input-lens | --output-lens | --concurrencies | --out)
      shared+=("${args[i]}" "${args[i + 1]:-}"); i=$((i + 1)) ;;
    --model=* | --load-format=* | --dtype=* | --device=* | --batch-sizes=* | --input-lens=* | --output-lens=* | --concurrencies=* | --out=*)
      shared+=("${args[i]}") ;;
  esac
done
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
took() { echo "main: $1 took $((SECONDS - $2)) s"; }
took "setup" "$t0"

runs=()  # --run FILE for each results file written, for step 3
if [ ${#OPS[@]} -gt 0 ]; then
  t=$SECONDS
  echo "== 1. operators =="
  "$FC" bench "${shared[@]}" "${OPS[@]}" | tee "$log"
  runs+=(--run "$(sed -n 's/^results: //p' "$log" | tail -1)")
  took "the operator run" "$t"
fi

t=$SECONDS
echo "== 2. the engine end to end$([ ${#OPS[@]} -gt 0 ] || echo ", its operators first") =="
"$FC" bench "${E2E[@]}" "$@" | tee "$log"
run="$(sed -n 's/^results: //p' "$log" | tail -1)"
runs+=(--run "$run")
took "the engine run" "$t"

t=$SECONDS
echo
echo "== 3. the same configurations predicted from the operators alone, beside what was measured =="
"$FC" validate "${runs[@]}" || echo "main: this run could not be predicted (the line above says why)" >&2
took "the prediction" "$t"

t=$SECONDS
echo
echo "== 4. fleet for the article's traffic, using this run's measured utilization =="
"$FC" estimate --run "$run"
echo
"$FC" report --write-docs
took "the estimate and the report" "$t"
took "all of it" "$t0"
