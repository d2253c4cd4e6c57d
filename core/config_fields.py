"""The fields of a config.json, read without transformers or remote code: the pieces core/reader.py assembles into one
architecture description (core/shapes.py).

The family table (core/families.py) says which keys a model_type uses; a field the cost needs that the config lacks, a
value of the wrong kind, or a model_type that is not read is refused in one line naming it (CatalogError). Multimodal
checkpoints (Llama 4, Gemma 3) are read as their text model (``text_config``); their quantization and precision are the
checkpoint's top level.
"""

from __future__ import annotations

from typing import Any

from core.errors import CatalogError
from core.families import Family, family_of
from core.shapes import Details, Layer

# The attention kinds each rule of families.toml can give a layer (core/shapes.py names them); `fleetcal models` prints
# them and tests/test_model_reading.py checks every catalogued model's kinds are among its family's.
RULE_KINDS = {"global": ("global",), "sliding_all": ("global", "sliding"), "qwen_window": ("global", "sliding"),
              "layer_types": ("global", "sliding"), "chunked": ("global", "chunked"), "interval": ("global", "linear"),
              "hybrid_pattern": ("global", "mamba", "none"), "mla": ("mla",)}  # fmt: skip
KIND_OF_LAYER_TYPE = {"full_attention": "global", "sliding_attention": "sliding", "chunked_attention": "chunked",
                      "linear_attention": "linear"}  # fmt: skip


def need_int(cfg: dict[str, Any], key: str, name: str, fam: Family, default: int | None = None) -> int:
    """A whole-number field; refused by name when missing (and no default applies) or not a whole number."""
    v = cfg.get(key)
    if v is None:
        if default is None:
            raise CatalogError(f"model {name!r}: config.json ({fam.model_type}) has no {key!r}, which the cost needs")
        return default
    if isinstance(v, bool) or not isinstance(v, int | float) or v != int(v) or v < 0:
        raise CatalogError(f"model {name!r}: config.json field {key!r} is {v!r}, not a whole number of at least 0")
    return int(v)


def text_model(cfg: dict[str, Any], fam: Family, name: str) -> tuple[dict[str, Any], Family]:
    """The text model's config and family: the config itself, or a multimodal wrapper's ``text_config``."""
    if not fam.text_config:
        return cfg, fam
    text = cfg.get("text_config")
    if not isinstance(text, dict):
        raise CatalogError(f"model {name!r}: config.json ({fam.model_type}) has no 'text_config', which the cost needs")
    inner = family_of(text, name)
    if inner.text_config:
        raise CatalogError(f"model {name!r}: text_config's model_type {inner.model_type!r} is itself a wrapper")
    return text, inner


def _window(cfg: dict[str, Any], key: str, name: str, fam: Family, context: int) -> int:
    """A window in tokens (refused by name where the config lacks it); 0 where it spans the whole context, since no
    token ever leaves it (Phi-3-128k's 262,144-token window at a 131,072-token context)."""
    w = need_int(cfg, key, name, fam)
    return 0 if context and w >= context else w


def _from_layer_types(types: Any, cfg: dict[str, Any], name: str, fam: Family, n: int, context: int) -> list[tuple[str, int]]:
    """Kinds from a ``layer_types`` list: a sliding layer keeps ``sliding_window`` tokens, a chunked one
    ``attention_chunk_size``; a window that spans the whole context reads as global attention."""
    if not isinstance(types, list) or len(types) != n:
        raise CatalogError(f"model {name!r}: layer_types must list {n} layers (num_hidden_layers)")
    unknown = sorted({str(t) for t in types if t not in KIND_OF_LAYER_TYPE})
    if unknown:
        raise CatalogError(f"model {name!r}: layer_types {unknown} are not read; fleetcal reads {', '.join(KIND_OF_LAYER_TYPE)}")
    kinds = [KIND_OF_LAYER_TYPE[t] for t in types]
    foreign = sorted(set(kinds) - set(RULE_KINDS[fam.attention]))
    if foreign:
        raise CatalogError(f"model {name!r}: layer_types has {', '.join(foreign)} layers, which {fam.model_type} is not read with")
    windows = {k: _window(cfg, key, name, fam, context) for k, key in (("sliding", "sliding_window"), ("chunked", "attention_chunk_size"))
               if k in kinds}  # fmt: skip
    return [(k, windows[k]) if windows.get(k) else ("global" if k in windows else k, 0) for k in kinds]


def attention_kinds(cfg: dict[str, Any], fam: Family, n: int, context: int, name: str) -> list[tuple[str, int]]:
    """Each layer's (attention kind, window), by the family's rule (families.toml, ``attention``)."""
    rule = fam.attention
    if isinstance(cfg.get("layer_types"), list) and rule != "hybrid_pattern":
        return _from_layer_types(cfg["layer_types"], cfg, name, fam, n, context)
    if rule == "global":
        return [("global", 0)] * n
    if rule == "sliding_all":
        w = _window(cfg, "sliding_window", name, fam, context) if cfg.get("sliding_window") else 0
        return [("sliding", w) if w else ("global", 0)] * n
    if rule == "qwen_window":
        w = _window(cfg, "sliding_window", name, fam, context) if cfg.get("use_sliding_window") and cfg.get("sliding_window") else 0
        first = need_int(cfg, "max_window_layers", name, fam) if w else 0
        return [("sliding", w) if w and i >= first else ("global", 0) for i in range(n)]
    if rule == "layer_types":
        every = need_int(cfg, "sliding_window_pattern", name, fam, fam.pattern)
        types = ["full_attention" if (i + 1) % every == 0 else "sliding_attention" for i in range(n)]
        return _from_layer_types(types, cfg, name, fam, n, context)
    if rule == "chunked":
        rope = cfg.get("no_rope_layers") or [int((i + 1) % fam.pattern != 0) for i in range(n)]
        return _from_layer_types(["chunked_attention" if r else "full_attention" for r in rope], cfg, name, fam, n, context)
    if rule == "interval":
        every = need_int(cfg, "full_attention_interval", name, fam, fam.pattern)
        return [("global", 0) if (i + 1) % every == 0 else ("linear", 0) for i in range(n)]
    raise CatalogError(f"model {name!r}: attention rule {rule!r} of family {fam.model_type!r} is not known")


def moe_mask(cfg: dict[str, Any], fam: Family, n: int, name: str) -> list[bool]:
    """Which layers carry routed experts, by the family's rule (families.toml, ``moe_layers``)."""
    rule = fam.moe_layers
    if rule == "all":
        return [True] * n
    if rule == "first_k_dense":
        first, freq = min(need_int(cfg, "first_k_dense_replace", name, fam, 0), n), cfg.get("moe_layer_freq") or 1
        if isinstance(freq, list):
            return [bool(freq[i]) if i < len(freq) else False for i in range(n)]
        return [i >= first and (i - first) % int(freq) == 0 for i in range(n)]
    if rule == "sparse_step":
        step, dense = need_int(cfg, "decoder_sparse_step", name, fam, 1), set(cfg.get("mlp_only_layers") or [])
        return [i not in dense and (i + 1) % max(step, 1) == 0 for i in range(n)]
    if rule == "interleave":
        listed = cfg.get("moe_layers")
        step = need_int(cfg, "interleave_moe_layer_step", name, fam, 1)
        chosen = set(listed) if isinstance(listed, list) else set(range(step - 1, n, step)) if step else set()
        return [i in chosen for i in range(n)]
    raise CatalogError(f"model {name!r}: MoE layer rule {rule!r} of family {fam.model_type!r} is not known")


def read_details(cfg: dict[str, Any], fam: Family) -> Details:
    """The family's biases, norms and extra tensors, with the flags it reads from the config (attention_bias, ...)."""
    return Details(qkv_bias=fam.flag(fam.qkv_bias, cfg), o_bias=fam.flag(fam.o_bias, cfg), mlp_bias=fam.flag(fam.mlp_bias, cfg),
                   qk_norm=fam.flag(fam.qk_norm, cfg), norms_per_layer=fam.norms, gated_ffn=fam.gated_ffn, sinks=fam.sinks,
                   expert_bias=fam.expert_bias, router_bias=fam.router_bias, shared_gate=fam.shared_gate)  # fmt: skip


def ffn_side(cfg: dict[str, Any], fam: Family, name: str, h: int, moe: list[bool]) -> dict[str, Any]:
    """The FFN side: dense width, experts, their width, top-k, shared width, as linears and counts."""
    if not fam.is_moe:
        inter = need_int(cfg, "intermediate_size", name, fam)
        return {"linears": {"gate_up": (h, (2 if fam.gated_ffn else 1) * inter), "down": (inter, h)}}
    n_exp, width = need_int(cfg, fam.experts, name, fam), need_int(cfg, fam.expert_width, name, fam)
    top_k = need_int(cfg, fam.top_k, name, fam)
    if not (n_exp and width and 0 < top_k <= n_exp):
        raise CatalogError(f"model {name!r}: {fam.experts} {n_exp}, {fam.expert_width} {width} and {fam.top_k} {top_k} are not "
                           "a mixture of experts (each positive, top-k at most the experts)")  # fmt: skip
    linears: dict[str, tuple[int, int]] = {}
    if not all(moe):
        dense = need_int(cfg, fam.dense_width, name, fam)
        linears.update({"dense_gate_up": (h, 2 * dense), "dense_down": (dense, h)})
    shared = {"n_shared": need_int(cfg, "n_shared_experts", name, fam, 0) * width, "none": 0}.get(fam.shared)
    shared = need_int(cfg, fam.shared_key, name, fam) if shared is None else shared
    if shared:
        linears.update({"shared_gate_up": (h, 2 * shared), "shared_down": (shared, h)})
    groups, topk_group = need_int(cfg, "n_group", name, fam, 1), need_int(cfg, "topk_group", name, fam, top_k)
    return {"linears": linears, "expert_k_n": ((h, 2 * width), (width, h)), "num_experts": n_exp, "experts_per_token": top_k,
            "shared_experts": need_int(cfg, "n_shared_experts", name, fam, 1 if shared else 0) if shared else 0,
            "node_limited_topk": topk_group if groups > 1 else top_k}  # fmt: skip


def layer_stack(kinds: list[tuple[str, int]], moe: list[bool], fam: Family) -> tuple[Layer, ...]:
    """Layers from their attention kinds and MoE mask."""
    return tuple(Layer(kind, w, "moe" if m and fam.is_moe else "dense") for (kind, w), m in zip(kinds, moe))
