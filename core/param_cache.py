"""Transformers' own parameter counts of every catalogued config, kept in ``core/data/models/param_counts.json`` and keyed
by the SHA-256 of the config.json they were counted from: the check on core/params.py's formulas (tests/test_param_cache.py).

The counts are made by building each model on PyTorch's meta device (no memory, no weights) with transformers'
``AutoModelForCausalLM.from_config``, from the config.json read as data (never remote code): multimodal checkpoints
build their text model, Kimi K2 is built as the DeepSeek-V3 it declares (``architectures``), quantization is left out
(the logical weights are counted, not their packed storage). Planner commands never import this module's counting:
torch and transformers are imported inside ``meta_counts`` only.

Regenerate after adding or changing a catalogued config:  ``python -m core.param_cache``  (``--check`` compares only).
"""

from __future__ import annotations

import hashlib
import json
import sys
from functools import cache
from pathlib import Path
from typing import Any

from core.families import family_of
from core.paths import DATA_DIR

MODEL_DIR = DATA_DIR / "models"
CACHE_FILE = MODEL_DIR / "param_counts.json"


def config_sha256(path: Path) -> str:
    """SHA-256 of a config.json's bytes: the key its counts are cached under."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@cache
def cached_counts() -> dict[str, dict[str, Any]]:
    """The committed counts, by config SHA-256."""
    return json.loads(CACHE_FILE.read_text()) if CACHE_FILE.exists() else {}


def _transformers_config(cfg: dict[str, Any]) -> Any:
    """The transformers config object of a config.json's text model, built from its contents as data."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    fam = family_of(cfg, "config")
    text = dict(cfg["text_config"]) if fam.text_config else dict(cfg)
    text.pop("quantization_config", None)
    model_type = family_of(text, "config").transformers or text["model_type"]
    return CONFIG_MAPPING[model_type](**{k: v for k, v in text.items() if k != "model_type"})


def meta_counts(cfg: dict[str, Any]) -> dict[str, int]:
    """(total, input embedding, all routed experts) parameters of the model built on the meta device."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(_transformers_config(cfg))
    routed = sum(p.numel() for name, p in model.named_parameters() if ".experts." in name)
    return {
        "total_params": int(sum(p.numel() for p in model.parameters())),
        "embedding_params": int(model.get_input_embeddings().weight.numel()),
        "routed_expert_params": int(routed),
    }


def count_all(model_dir: Path = MODEL_DIR) -> dict[str, dict[str, Any]]:
    """Counts of every config.json under ``model_dir``, by SHA-256, with the model key and transformers' version."""
    import transformers

    out = {}
    for path in sorted(model_dir.glob("*/config.json")):
        counts = meta_counts(json.loads(path.read_text()))
        out[config_sha256(path)] = {"model": path.parent.name, **counts, "transformers": transformers.__version__}
    return out


def main(argv: list[str]) -> int:
    """Write the cache (or, with --check, say which entries differ and exit 1)."""
    counts = count_all()
    text = json.dumps(counts, indent=1, sort_keys=True) + "\n"
    if "--check" in argv:
        same = counts == {k: {**v, "transformers": counts[k]["transformers"]} for k, v in cached_counts().items() if k in counts}
        print("param_counts.json matches transformers" if same and len(counts) == len(cached_counts()) else "param_counts.json differs")
        return 0 if same else 1
    CACHE_FILE.write_text(text)
    print(f"{CACHE_FILE}: {len(counts)} configs counted")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
