"""A checkpoint's own weight formats, read from config.json: its base precision (``torch_dtype``) and its
``quantization_config`` (FP8 with or without 128 x 128 blocks, MXFP4, ModelOpt NVFP4 / FP8, AWQ / GPTQ / compressed-tensors
INT4), per component of the model: which components a method quantizes and which the checkpoint keeps unquantized
(``modules_to_not_convert``, ``ignore``, ``exclude_modules``, ``ignored_layers``).

Which components a method quantizes follows vLLM's quantization configs (vllm/model_executor/layers/quantization/): the
linear layers of the decoder and its experts; the embedding, the norms, the routers (built without a quantization
config in vLLM's MoE models) and the LM head stay at the base precision; MXFP4 (``mxfp4.py``, gpt-oss) quantizes the
routed experts only and leaves every linear layer unquantized. Each format's size and compute precision are
core/dtypes.py's; this module says which component is stored in which.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from typing import Any

from core.dtypes import SHORT_NAME
from core.dtypes import WEIGHT_FORMATS as FORMATS
from core.errors import CatalogError

WEIGHT_FORMATS = tuple(FORMATS)  # the names a checkpoint's formats take: core/dtypes.py's table (bytes, compute precision)
BASE_DTYPES = {**SHORT_NAME, **{short: short for short in SHORT_NAME.values()}}  # torch_dtype, long or short -> short name
COMPONENTS = ("embedding", "attention", "mixer", "dense_ffn", "shared_experts", "router", "routed_experts", "norms", "lm_head")
LINEAR = ("attention", "mixer", "dense_ffn", "shared_experts", "routed_experts")  # what vLLM's quantization methods quantize
# Module names by which a component is recognised in a checkpoint's lists of unquantized modules (Hugging Face naming
# of the families read; layer 1 stands for any layer).
MODULE_NAMES = {
    "attention": ("model.layers.1.self_attn.q_proj", "model.layers.1.self_attn.o_proj", "model.layers.1.self_attn.q_a_proj",
                  "model.layers.1.self_attn.kv_a_proj_with_mqa", "model.layers.1.self_attn.qkv_proj"),
    "mixer": ("model.layers.1.linear_attn.in_proj_qkvz", "model.layers.1.linear_attn.out_proj", "model.layers.1.mixer.in_proj",
              "model.layers.1.mixer.out_proj", "backbone.layers.1.mixer.in_proj"),
    "dense_ffn": ("model.layers.1.mlp.gate_proj", "model.layers.1.mlp.down_proj", "model.layers.1.feed_forward.gate_proj"),
    "shared_experts": ("model.layers.1.mlp.shared_experts.gate_proj", "model.layers.1.mlp.shared_expert.gate_proj",
                       "model.layers.1.feed_forward.shared_expert.gate_proj"),
    "routed_experts": ("model.layers.1.mlp.experts.0.gate_proj", "model.layers.1.mlp.experts.gate_up_proj",
                       "model.layers.1.block_sparse_moe.experts.0.w1", "model.layers.1.feed_forward.experts.gate_up_proj"),
}  # fmt: skip


@dataclass(frozen=True)
class Checkpoint:
    """The formats of a checkpoint's weights, per component."""

    base: str = "bf16"  # precision of what is not quantized (torch_dtype)
    method: str = ""  # quantization_config.quant_method; "" when the weights are not quantized
    quantized: str = ""  # the format the quantized components take (fp8, int8, int4, mxfp4, nvfp4)
    scope: tuple[str, ...] = ()  # the components the method quantizes
    kept: tuple[str, ...] = ()  # components of that scope the checkpoint leaves at the base precision
    block: tuple[int, ...] = ()  # FP8 weight_block_size (DeepSeek-V3, Kimi K2: 128 x 128)
    group_size: int = 0  # weights per scale of INT4 / NVFP4 / MXFP4

    def format_of(self, component: str) -> str:
        """The format ``component``'s weights are stored in."""
        if self.quantized and component in self.scope and component not in self.kept:
            return self.quantized
        return self.base

    @property
    def fp8_block_scaled(self) -> bool:
        """FP8 weights with a scale per block (``weight_block_size``)."""
        return self.quantized == "fp8" and bool(self.block)

    def describe(self) -> str:
        """One line: the method and what it quantizes, for ``fleetcal models`` and error messages."""
        if not self.quantized:
            return self.base
        block = f" {'x'.join(map(str, self.block))} blocks" if self.block else ""
        kept = f", {', '.join(self.kept)} kept {self.base}" if self.kept else ""
        return f"{self.quantized}{block} ({self.method}: {', '.join(c for c in self.scope if c not in self.kept)}){kept}"


def _matches(entry: str, name: str) -> bool:
    """Whether one entry of an unquantized-module list names module ``name``: ``re:`` a regular expression
    (compressed-tensors), a glob with ``*`` (gpt-oss, ModelOpt), else a module path or one segment of it (AWQ's "gate")."""
    if entry.startswith("re:"):
        return re.search(entry[3:], name) is not None
    if "*" in entry:
        return fnmatch.fnmatch(name, entry) or fnmatch.fnmatch(name, entry + ".*")
    return name == entry or name.startswith(entry + ".") or f".{entry}." in f".{name}."


def kept_components(entries: list[Any]) -> tuple[str, ...]:
    """Components a list of unquantized modules covers (an entry naming any of a component's modules keeps it)."""
    names = [e for e in entries if isinstance(e, str)]
    return tuple(c for c, mods in MODULE_NAMES.items() if any(_matches(e, m) for e in names for m in mods))


def base_dtype(cfg: dict[str, Any], name: str) -> str:
    """The short name of a config's ``torch_dtype`` (``dtype`` in newer configs); bf16 when it gives none."""
    raw = cfg.get("torch_dtype") or cfg.get("dtype") or "bfloat16"
    if raw not in BASE_DTYPES:
        raise CatalogError(f"model {name!r}: torch_dtype {raw!r} is not read; use bfloat16, float16 or float32")
    return BASE_DTYPES[raw]


def _fp8(qc: dict[str, Any], name: str) -> dict[str, Any]:
    return {"quantized": "fp8"}


def _mxfp4(qc: dict[str, Any], name: str) -> dict[str, Any]:
    return {"quantized": "mxfp4", "group_size": 32, "scope": ("routed_experts",)}  # 32 FP4 values per 8-bit scale (OCP MX)


def _int_weights(qc: dict[str, Any], name: str) -> dict[str, Any]:
    bits = qc.get("bits", qc.get("w_bit", 4))
    if bits not in (4, 8):
        raise CatalogError(f"model {name!r}: quantization_config.bits {bits!r} is not read; fleetcal reads 4- and 8-bit weights")
    return {"quantized": "int4" if bits == 4 else "int8"}


def _modelopt(qc: dict[str, Any], name: str) -> dict[str, Any]:
    inner = qc.get("quantization") if isinstance(qc.get("quantization"), dict) else qc
    algo = str(inner.get("quant_algo") or "")
    formats = {"NVFP4": "nvfp4", "FP8": "fp8", "W4A16_AWQ": "int4", "W4A8_AWQ": "int4", "MXFP4": "mxfp4"}
    if algo not in formats:
        raise CatalogError(f"model {name!r}: ModelOpt quant_algo {algo!r} is not read; fleetcal reads {', '.join(formats)}")
    group = int(inner.get("group_size") or (16 if algo == "NVFP4" else 0))  # NVFP4: 16 FP4 values per FP8 scale
    return {"quantized": formats[algo], "group_size": group, "ignore": list(inner.get("exclude_modules") or [])}


def _compressed_tensors(qc: dict[str, Any], name: str) -> dict[str, Any]:
    """The one weight format of a compressed-tensors config's groups (float 8 bits: fp8, float 4: nvfp4, int 4/8)."""
    found = set()
    for group in (qc.get("config_groups") or {}).values():
        w = (group or {}).get("weights") or {}
        found.add((w.get("type"), w.get("num_bits"), int(w.get("group_size") or 0)))
    names = {("float", 8): "fp8", ("float", 4): "nvfp4", ("int", 4): "int4", ("int", 8): "int8"}
    formats = {(names.get((t, b)), g) for t, b, g in found}
    if len(formats) != 1 or None in {f for f, _ in formats}:
        raise CatalogError(
            f"model {name!r}: compressed-tensors weights {sorted(map(str, found))} are not read; one format of {sorted(names.values())}"
        )
    fmt, group = formats.pop()
    return {"quantized": fmt, "group_size": group}


# quant_method -> (its reader, what it stores): the methods read; any other is refused by name. `fleetcal models` lists them.
METHODS = {
    "fp8": (_fp8, "FP8 E4M3 linear layers, per-tensor or in weight_block_size blocks (DeepSeek-V3, Kimi K2: 128 x 128)"),
    "mxfp4": (_mxfp4, "MXFP4 routed experts, one 8-bit scale per 32 values; linear layers unquantized (gpt-oss)"),
    "modelopt": (_modelopt, "NVIDIA ModelOpt: NVFP4 (16 values per FP8 scale), FP8, or INT4 AWQ; exclude_modules kept"),
    "awq": (_int_weights, "AWQ weight-only INT4 (group_size); modules_to_not_convert kept"),
    "gptq": (_int_weights, "GPTQ weight-only INT4 or INT8 (bits, group_size)"),
    "compressed-tensors": (_compressed_tensors, "llm-compressor: FP8, NVFP4, INT4 or INT8 weights from config_groups; ignore kept"),
}


def read_checkpoint(cfg: dict[str, Any], name: str) -> Checkpoint:
    """The checkpoint's formats from its config.json contents (the top level, where quantization_config sits)."""
    base = base_dtype(cfg, name)
    qc = cfg.get("quantization_config")
    if not qc:
        return Checkpoint(base=base)
    if not isinstance(qc, dict):
        raise CatalogError(f"model {name!r}: quantization_config is not a table")
    method = str(qc.get("quant_method") or "")
    if method not in METHODS:
        raise CatalogError(f"model {name!r}: quantization_config.quant_method {method!r} is not read; fleetcal reads {', '.join(METHODS)}")
    ignore = qc.get("modules_to_not_convert") or qc.get("ignored_layers") or qc.get("ignore") or []
    got = {"scope": LINEAR, "group_size": int(qc.get("group_size") or 0), "ignore": ignore, **METHODS[method][0](qc, name)}
    block = tuple(qc.get("weight_block_size") or ())
    if block and (len(block) != 2 or not all(isinstance(b, int) and b > 0 for b in block)):
        raise CatalogError(f"model {name!r}: quantization_config.weight_block_size {list(block)!r} is not two positive whole numbers")
    kept = tuple(c for c in kept_components(list(got["ignore"])) if c in got["scope"])
    return Checkpoint(base=base, method=method, quantized=got["quantized"], scope=got["scope"], kept=kept, block=block,
                      group_size=got["group_size"])  # fmt: skip
