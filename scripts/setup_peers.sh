#!/usr/bin/env bash
# The peers fleetcal is compared with, each in its own virtual environment apart from the project's (.venv-peers,
# or $FLEETCAL_PEERS_VENV): NVIDIA's AIConfigurator (Apache-2.0, https://github.com/ai-dynamo/aiconfigurator), whose
# pins (numpy>=2.1, pyarrow, plotly, bokeh, ...) the project's own environment does not carry. `fleetcal validate --peer
# aiconfigurator` runs it there as a subprocess; the project never imports it, CI never installs it (it reads the committed
# results/peer/ data). Idempotent: re-running installs only when the pinned version changed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV="${FLEETCAL_PEERS_VENV:-.venv-peers}"
PYTHON="${PYTHON:-python3}"
# The pin is the `peers` extra of pyproject.toml, read here so that it is written once.
PIN="$("$PYTHON" -c 'import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["peers"])')"

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup_peers: creating $VENV" >&2
  "$PYTHON" -m venv "$VENV"
fi
want="$PIN"
stamp="$VENV/.fleetcal-peers"
if [ "$(cat "$stamp" 2>/dev/null || true)" = "$want" ]; then
  exit 0
fi
echo "setup_peers: installing $want into $VENV (about 30 s)" >&2
"$VENV/bin/python" -m pip --disable-pip-version-check -q install $want
"$VENV/bin/python" -c "import aiconfigurator.sdk.perf_database" \
  || { echo "setup_peers: $VENV cannot import aiconfigurator" >&2; exit 1; }
echo "$want" > "$stamp"
echo "setup_peers: done ($VENV/bin/python)" >&2
