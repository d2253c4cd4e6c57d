#!/usr/bin/env bash
# Command 1 of the quick start: set up (idempotent), measure the bundled model with
# `fleetcal bench`'s defaults (extra arguments go to bench), then show what it means: measured
# utilization beside the article's 50%, the fleet for H100 and A100 under every scenario using
# this run's measurements, and regenerated tables, plots and the generated sections of the README and docs/
# (`report --write-docs`: without it, report writes only tables/ and plots/ of its --results directory).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
FC="${FLEETCAL_VENV:-.venv}/bin/fleetcal"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
"$FC" bench "$@" | tee "$log"
run="$(sed -n 's/^results: //p' "$log" | tail -1)"
echo
echo "== fleet for the article's traffic, using this run's measured utilization =="
"$FC" estimate --run "$run"
echo
"$FC" report --write-docs
