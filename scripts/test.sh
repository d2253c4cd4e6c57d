#!/usr/bin/env bash
# Command 2 of the quick start: set up (idempotent) and run the whole test suite.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
exec "${FLEETCAL_VENV:-.venv}/bin/python" -m pytest "$@"
