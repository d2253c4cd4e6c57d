#!/usr/bin/env bash
# Command 1 of the quick start: set up (idempotent), measure the bundled model on this machine
# with `fleetcal bench`'s defaults, and print what was measured. Extra arguments go to bench.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
exec "${FLEETCAL_VENV:-.venv}/bin/fleetcal" bench "$@"
