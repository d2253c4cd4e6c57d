"""Shared fixtures. Engine tests drive real engines on the bundled model (no mocks)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")


@pytest.fixture(scope="session")
def bundled_model_dir():
    from bench.bundled import ensure_bundled_model

    return ensure_bundled_model()


@pytest.fixture(scope="session")
def cpu_dtype() -> str:
    """The precision this CPU runs natively (fp32 where bf16 would be emulated): engine tests size their work by it."""
    from bench.precision import choose_dtype
    from fleetcal.identity import describe_cpu

    return choose_dtype("auto", describe_cpu())[0]


def has_cuda() -> bool:
    from bench.device import cuda_available

    return cuda_available()


requires_gpu = pytest.mark.skipif(not has_cuda(), reason="needs an NVIDIA GPU; none is visible on this machine")
