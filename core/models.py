"""Model catalog and per-model formulas: parameters, FLOPs per token, weight and KV-cache bytes.

Configs are the models' own ``config.json`` files kept in ``core/data/models/<name>/``; any other checkpoint
directory works too, and a Hugging Face id (org/name) has its config.json alone fetched (core/hub.py). The config is
read as data (core/reader.py), never through transformers or remote code, into one architecture description
(core/shapes.py); parameters are counted from it by formula (core/params.py), checked against transformers' own
meta-device counts of every catalogued config (core/param_cache.py).
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from core.dtypes import BYTES_PER_DTYPE, WEIGHT_FORMATS
from core.errors import CatalogError
from core.hub import fetch_config
from core.params import component_params, routed_expert_params, total_params
from core.paths import DATA_DIR
from core.quant import LINEAR, Checkpoint
from core.shapes import Shapes, shapes_from_dict

MODEL_DIR = DATA_DIR / "models"


@dataclass(frozen=True)
class ModelSpec:
    """One architecture: its parameter counts (core/params.py) and its shapes (core/shapes.py, the one description
    of layers, heads, experts, attention kinds, KV cache and checkpoint formats). Counts are in parameters (not billions)."""

    name: str
    total_params: int
    active_params: int
    embedding_params: int  # input embedding (a lookup, no FLOPs)
    tied_embeddings: bool
    shapes: Shapes
    weight_dtype: str = "bf16"  # the format the linear layers' weights are served in
    expert_params: int = 0  # parameters of one routed expert

    def __post_init__(self) -> None:
        if self.weight_dtype not in WEIGHT_FORMATS:
            raise CatalogError(f"{self.name}: unknown weight format {self.weight_dtype!r}; use one of {', '.join(WEIGHT_FORMATS)}")
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

    @property
    def checkpoint(self) -> Checkpoint:
        """The checkpoint's own formats, per component (core/quant.py)."""
        return self.shapes.checkpoint

    @property
    def component_params(self) -> dict[str, int]:
        """Parameters by component (embedding, attention, experts, ...), summing to ``total_params``."""
        return component_params(self.shapes)


def checkpoint_format(s: Shapes) -> str:
    """The format most of a checkpoint's linear weights are stored in (gpt-oss: its MXFP4 experts; Kimi K2: FP8); an
    unquantized checkpoint serves in bf16, as vLLM serves fp16 and fp32 checkpoints' 2-byte weights too."""
    if not s.checkpoint.quantized:
        return "bf16"
    parts = component_params(s)
    return s.checkpoint.format_of(max(LINEAR, key=lambda c: parts[c]))


def spec_from_dict(cfg: dict[str, Any], name: str, weight_dtype: str | None = None) -> ModelSpec:
    """A ``ModelSpec`` from a config.json's contents: read (core/reader.py), counted (core/params.py)."""
    shapes = shapes_from_dict(cfg, name)
    total, expert = total_params(shapes), routed_expert_params(shapes) if shapes.num_experts else 0
    idle_experts = shapes.num_experts - shapes.experts_per_token
    active = total - idle_experts * expert * shapes.moe_layers if shapes.num_experts else total
    return ModelSpec(name=name, total_params=total, active_params=active, embedding_params=shapes.vocab * shapes.hidden,
                     tied_embeddings=shapes.tied_embeddings, shapes=shapes, weight_dtype=weight_dtype or checkpoint_format(shapes),
                     expert_params=expert)  # fmt: skip


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


def read_config_file(path: Path, name: str) -> dict[str, Any]:
    """A config.json's contents; malformed JSON or a non-object refused in one line saying where."""
    try:
        cfg = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CatalogError(f"model {name!r}: {path} is not valid JSON ({exc})") from exc
    except OSError as exc:
        raise CatalogError(f"model {name!r}: cannot read {path} ({exc.strerror})") from exc
    if not isinstance(cfg, dict):
        raise CatalogError(f"model {name!r}: {path} is not a JSON object")
    return cfg


def load_config(name_or_path: str) -> tuple[dict[str, Any], str]:
    """The config.json contents of a catalogued model, a checkpoint directory (or a config.json file), or a Hugging
    Face id (org/name, its config.json alone fetched); and the name under which it is known."""
    key = resolve_model_key(name_or_path)
    path = MODEL_DIR / key if key is not None else Path(name_or_path).expanduser()
    if path.is_file() and path.suffix == ".json":
        return read_config_file(path, name_or_path), name_or_path
    if (path / "config.json").is_file():
        return read_config_file(path / "config.json", name_or_path), key or name_or_path
    known = ", ".join(sorted(model_catalog()))
    if key is not None or name_or_path.startswith(("/", ".", "~")) or path.exists():
        raise CatalogError(f"model {name_or_path!r}: no config.json there; give a checkpoint directory")
    if name_or_path.count("/") != 1:
        raise CatalogError(
            f"unknown model {name_or_path!r}: give a catalogued model ({known}), a directory with config.json, or a Hugging Face id "
            "(org/name)"
        )
    return fetch_config(name_or_path), name_or_path


@cache
def get_model(name_or_path: str, weight_dtype: str | None = None) -> ModelSpec:
    """ModelSpec for a catalogued model (by key, alias or HF id), a checkpoint directory or a Hugging Face id."""
    cfg, key = load_config(name_or_path)
    entry = model_catalog().get(key, {})
    return spec_from_dict(cfg, key, weight_dtype or entry.get("weight_dtype"))


# --- formulas -------------------------------------------------------------------------------


def flops_per_token_linear(spec: ModelSpec) -> float:
    """Matrix-multiply FLOPs per token outside attention scores: 2 × (active params − input embedding).

    Source: the 2N rule (Kaplan et al. 2020; PaLM appendix B); the embedding lookup is free,
    the output head is a matrix multiply and counts (once more where it shares the embedding's weights).
    """
    return 2.0 * spec.matmul_params


def flops_per_token_attention(spec: ModelSpec, context_len: float) -> float:
    """Attention-score FLOPs for one token attending to ``context_len`` earlier tokens, all layers, as decode runs
    them (MLA absorbed): ``Shapes.decode_attention_flops`` over each layer's context (a sliding layer's at most its window)."""
    return spec.shapes.decode_attention_flops_all_layers(context_len)


def flops_per_token(spec: ModelSpec, context_len: float = 0.0) -> float:
    """Model FLOPs per token at a given context length: linear layers + attention."""
    return flops_per_token_linear(spec) + flops_per_token_attention(spec, context_len)


def kv_cache_bytes_per_token(spec: ModelSpec, dtype: str = "bf16") -> float:
    """KV-cache bytes per token, all layers (``Shapes.kv_bytes_per_token``)."""
    return spec.shapes.kv_bytes_per_token(dtype)


def bytes_per_weight(dtype: str) -> float:
    """Bytes one weight takes in format ``dtype`` (core/dtypes.py); one line where no size is known for the format."""
    if dtype not in BYTES_PER_DTYPE:
        raise CatalogError(f"no byte size is known for weight format {dtype!r}; known: {', '.join(BYTES_PER_DTYPE)}")
    return BYTES_PER_DTYPE[dtype]


def weight_bytes(spec: ModelSpec, dtype: str | None = None) -> float:
    """Bytes of all weights at ``dtype`` (default: the model's serving dtype)."""
    return spec.total_params * bytes_per_weight(dtype or spec.weight_dtype)


def checkpoint_bytes(spec: ModelSpec, bytes_per_format: dict[str, float] | None = None) -> float:
    """Bytes of the checkpoint's weights, each component in its own format (core/quant.py): e.g. gpt-oss's MXFP4
    experts beside its bf16 attention and embeddings. ``bytes_per_format`` gives each format's bytes per weight,
    scales included (default: core/dtypes.py's, e.g. MXFP4 4.25 bits)."""
    sizes = bytes_per_format or {name: f.bytes_per_element for name, f in WEIGHT_FORMATS.items()}
    parts = spec.component_params  # counted over every layer at each access: once here
    missing = {spec.checkpoint.format_of(c) for c, n in parts.items() if n} - set(sizes)
    if missing:
        raise CatalogError(f"{spec.name}: no byte size is known for weight format(s) {', '.join(sorted(missing))}")
    return sum(n * sizes[spec.checkpoint.format_of(c)] for c, n in parts.items())


def weight_bytes_read_per_step(spec: ModelSpec, batch_size: int, dtype: str | None = None) -> float:
    """Weight bytes one decode step reads at batch ``batch_size``.

    Dense: all weights except the embedding table (rows are gathered, not streamed).
    MoE: shared weights plus the routed experts that at least one of the batch's tokens uses,
    expected value under uniform routing: E × (1 − (1 − k/E)^B) experts per MoE layer.
    """
    b = bytes_per_weight(dtype or spec.weight_dtype)
    streamed = spec.total_params - (0 if spec.tied_embeddings else spec.embedding_params)
    if not spec.is_moe:
        return streamed * b
    s = spec.shapes
    all_routed = s.num_experts * spec.expert_params * s.moe_layers
    touched = s.num_experts * (1.0 - (1.0 - s.experts_per_token / s.num_experts) ** batch_size)
    return (streamed - all_routed + touched * spec.expert_params * s.moe_layers) * b
