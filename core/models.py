"""Model catalog and per-model formulas: parameters, FLOPs per token, weight and KV-cache bytes.

Configs are the models' own ``config.json`` files kept in ``core/data/models/<name>/``;
any other Hugging Face checkpoint directory works too. Parameters are counted by building
the model on PyTorch's meta device with transformers (no memory, no weights), so the count
is the architecture's, not a hand formula's.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from core.dtypes import BYTES_PER_DTYPE
from core.hardware import CatalogError
from core.paths import DATA_DIR
from core.shapes import Shapes, shapes_from_dict

MODEL_DIR = DATA_DIR / "models"


@dataclass(frozen=True)
class ModelSpec:
    """One architecture: its parameter counts (counted on the meta device) and its shapes (core/shapes.py, the one
    description of layers, heads, experts and KV cache). Counts are in parameters (not billions)."""

    name: str
    total_params: int
    active_params: int
    embedding_params: int  # input embedding (a lookup, no FLOPs)
    tied_embeddings: bool
    shapes: Shapes
    weight_dtype: str = "bf16"
    expert_params: int = 0  # parameters of one routed expert

    def __post_init__(self) -> None:
        if self.weight_dtype not in BYTES_PER_DTYPE:
            raise CatalogError(f"{self.name}: unknown dtype {self.weight_dtype!r}; use one of {sorted(BYTES_PER_DTYPE)}")
        if not 0 < self.active_params <= self.total_params:
            raise CatalogError(f"{self.name}: active parameters must be in (0, total]")

    @property
    def is_moe(self) -> bool:
        return self.shapes.num_experts > 0

    @property
    def max_context(self) -> int:
        return self.shapes.max_context

    @property
    def matmul_params(self) -> int:
        """Active parameters that multiply per token: the input embedding is a lookup, not a matrix product."""
        return self.active_params - (self.embedding_params if not self.tied_embeddings else 0)


def _text_config(config: Any) -> Any:
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def _config_dict(config: Any) -> dict[str, Any]:
    """A transformers config as the config.json it was read from (what core/shapes.py parses)."""
    return _text_config(config).to_dict()


def count_params_meta(config: Any, shapes: Shapes) -> tuple[int, int, int]:
    """(total, input-embedding, one-routed-expert) parameter counts of ``config``, built on the meta device.

    Multi-token-prediction modules that transformers does not build (DeepSeek-V3's MTP layer)
    are not counted, matching the published 671B.
    """
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    total = sum(p.numel() for p in model.parameters())
    embed = model.get_input_embeddings().weight.numel()
    expert = 0
    if shapes.num_experts and shapes.moe_layers:
        routed = 0
        for name, p in model.named_parameters():
            if ".experts." in name or name.endswith(".experts.gate_up_proj") or name.endswith(".experts.down_proj"):
                routed += p.numel()
        expert = routed // (shapes.num_experts * shapes.moe_layers)
    return int(total), int(embed), int(expert)


def spec_from_config(config: Any, name: str, weight_dtype: str = "bf16") -> ModelSpec:
    """Build a ``ModelSpec`` from a transformers config (MoE- and MLA-aware)."""
    text = _text_config(config)
    shapes = shapes_from_dict(_config_dict(config), name)
    total, embed, expert = count_params_meta(config, shapes)
    idle_experts = shapes.num_experts - shapes.experts_per_token
    active = total - idle_experts * expert * shapes.moe_layers if shapes.num_experts else total
    return ModelSpec(
        name=name,
        total_params=total,
        active_params=int(active),
        embedding_params=embed,
        tied_embeddings=bool(getattr(text, "tie_word_embeddings", False) or getattr(config, "tie_word_embeddings", False)),
        shapes=shapes,
        weight_dtype=weight_dtype,
        expert_params=expert,
    )


@cache
def model_catalog() -> dict[str, dict[str, Any]]:
    """Catalog entries (published figures and sources) by model key."""
    try:
        return tomllib.loads((MODEL_DIR / "catalog.toml").read_text())
    except tomllib.TOMLDecodeError as exc:
        raise CatalogError(f"model catalog is malformed: {exc}") from exc


def resolve_model_key(name: str) -> str | None:
    """Catalog key for a model name, alias, Hugging Face id or path basename; None if not catalogued."""
    want = Path(name.rstrip("/")).name.lower()
    for key, entry in model_catalog().items():
        names = [key, entry.get("hf_id", ""), *entry.get("aliases", [])]
        if want in {Path(n).name.lower() for n in names if n}:
            return key
    return None


def load_config(name_or_path: str) -> tuple[Any, str]:
    """Load a transformers config for a catalogued model or a local checkpoint directory.

    Returns the config and the name under which it is known.
    """
    from transformers import AutoConfig

    key = resolve_model_key(name_or_path)
    path = MODEL_DIR / key if key is not None else Path(name_or_path).expanduser()
    local = (path / "config.json").is_file()
    known = ", ".join(sorted(model_catalog()))
    if not local and (key is not None or name_or_path.startswith(("/", ".", "~")) or path.exists()):
        raise CatalogError(f"model {name_or_path!r}: no config.json there; give a checkpoint directory")
    if not local and name_or_path.count("/") != 1:
        raise CatalogError(
            f"unknown model {name_or_path!r}: give a catalogued model ({known}), a directory with config.json, or a Hugging Face id "
            "(org/name)"
        )
    try:
        if local:
            return AutoConfig.from_pretrained(str(path)), key or name_or_path
        from huggingface_hub.utils import logging as hub_logging

        hub_logging.set_verbosity_error()  # one line on failure, not a retry log
        return AutoConfig.from_pretrained(name_or_path), name_or_path
    except (ValueError, OSError, json.JSONDecodeError) as exc:
        raise CatalogError(
            f"cannot read a config for model {name_or_path!r}: give a catalogued model ({known}), "
            f"a directory with config.json, or a Hugging Face id reachable from here"
        ) from exc


@cache
def get_model(name_or_path: str, weight_dtype: str | None = None) -> ModelSpec:
    """ModelSpec for a catalogued model (by key, alias or HF id) or a checkpoint directory."""
    config, key = load_config(name_or_path)
    entry = model_catalog().get(key, {})
    dtype = weight_dtype or entry.get("weight_dtype", "bf16")
    return spec_from_config(config, key, dtype)


# --- formulas -------------------------------------------------------------------------------


def flops_per_token_linear(spec: ModelSpec) -> float:
    """Matrix-multiply FLOPs per token outside attention scores: 2 × (active params − input embedding).

    Source: the 2N rule (Kaplan et al. 2020; PaLM appendix B); the embedding lookup is free,
    the output head is a matrix multiply and counts (once more where it shares the embedding's weights).
    """
    return 2.0 * spec.matmul_params


def flops_per_token_attention(spec: ModelSpec, context_len: float) -> float:
    """Attention-score FLOPs for one token attending to ``context_len`` earlier tokens, all layers, as decode runs
    them (MLA absorbed): ``Shapes.decode_attention_flops`` times the layers."""
    return spec.shapes.decode_attention_flops(context_len) * spec.shapes.num_layers


def flops_per_token(spec: ModelSpec, context_len: float = 0.0) -> float:
    """Model FLOPs per token at a given context length: linear layers + attention."""
    return flops_per_token_linear(spec) + flops_per_token_attention(spec, context_len)


def kv_cache_bytes_per_token(spec: ModelSpec, dtype: str = "bf16") -> float:
    """KV-cache bytes per token, all layers (``Shapes.kv_bytes_per_token``)."""
    return spec.shapes.kv_bytes_per_token(dtype)


def weight_bytes(spec: ModelSpec, dtype: str | None = None) -> float:
    """Bytes of all weights at ``dtype`` (default: the model's serving dtype)."""
    return spec.total_params * BYTES_PER_DTYPE[dtype or spec.weight_dtype]


def weight_bytes_read_per_step(spec: ModelSpec, batch_size: int, dtype: str | None = None) -> float:
    """Weight bytes one decode step reads at batch ``batch_size``.

    Dense: all weights except the embedding table (rows are gathered, not streamed).
    MoE: shared weights plus the routed experts that at least one of the batch's tokens uses,
    expected value under uniform routing: E × (1 − (1 − k/E)^B) experts per MoE layer.
    """
    b = BYTES_PER_DTYPE[dtype or spec.weight_dtype]
    streamed = spec.total_params - (0 if spec.tied_embeddings else spec.embedding_params)
    if not spec.is_moe:
        return streamed * b
    s = spec.shapes
    all_routed = s.num_experts * spec.expert_params * s.moe_layers
    touched = s.num_experts * (1.0 - (1.0 - s.experts_per_token / s.num_experts) ** batch_size)
    return (streamed - all_routed + touched * spec.expert_params * s.moe_layers) * b
