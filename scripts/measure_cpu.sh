#!/usr/bin/env bash
# The committed measurements of a 2-core CPU machine, through the normal commands.
# Each line is one `fleetcal bench` invocation (one results file). Takes about 20 minutes.
# File names carry the CPU's identity, so runs of different machines stay apart.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
FC="${FLEETCAL_VENV:-.venv}/bin/fleetcal"
OUT="${1:-results/runs}"
"$FC" bench --mode ops --out "$OUT"                                              # operators at the bundled model's shapes
for engine in vllm transformers; do
  "$FC" bench --engine "$engine" --out "$OUT"                                   # the default sweep
  "$FC" bench --engine "$engine" --out "$OUT" --mode decode \
      --batch-sizes 1,2,4,8,16,32,64,128,256 --input-lens 128 --output-lens 32   # decode to 256 sequences
  "$FC" bench --engine "$engine" --out "$OUT" --mode prefill \
      --batch-sizes 1,4 --input-lens 128,512,2048                               # prefill up to 2k tokens
done
# past 256 sequences up to the KV-cache limit: 2 GiB holds 93,184 tokens = 582 sequences of 160 tokens
"$FC" bench --out "$OUT" --mode decode --batch-sizes 384,512,640 --input-lens 128 --output-lens 32
"$FC" bench --out "$OUT" --mode serve --concurrencies 1,2,4,8,16 \
    --input-lens 128 --output-lens 64                                          # serving under load
