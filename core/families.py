"""The families of architectures fleetcal reads, by ``model_type``: the table in ``core/data/models/families.toml``.

One table serves the reader (core/reader.py), the parameter counts (core/params.py) and ``fleetcal models``: a family
says which config keys hold its experts, widths and layer pattern, which small parameters (biases, norms, sinks) it
has, and which fields its published configs omit. A ``model_type`` that is not in the table, or is listed as refused,
is refused in one line that names it.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields
from functools import cache
from typing import Any

from core.errors import CatalogError
from core.paths import DATA_DIR

FAMILIES_FILE = DATA_DIR / "models" / "families.toml"


@dataclass(frozen=True)
class Family:
    """How one model_type's config.json is read (the keys are documented at the top of families.toml)."""

    model_type: str
    name: str
    reader: str = "gqa"
    attention: str = "global"
    pattern: int = 0
    experts: str = ""
    top_k: str = "num_experts_per_tok"
    expert_width: str = ""
    shared: str = "none"
    shared_key: str = ""
    moe_layers: str = "all"
    dense_width: str = "intermediate_size"
    qkv_bias: bool | str = False
    o_bias: bool | str = False
    mlp_bias: bool | str = False
    qk_norm: bool | str = False
    norms: int = 2
    gated_ffn: bool = True
    sinks: bool = False
    expert_bias: bool = False
    router_bias: bool = False
    attn_gate: bool = False
    shared_gate: bool = False
    tie: bool = False
    defaults: dict[str, Any] = field(default_factory=dict)
    defaults_source: str = ""
    text_config: bool = False
    transformers: str = ""

    @property
    def is_moe(self) -> bool:
        return bool(self.experts)

    def flag(self, value: bool | str, cfg: dict[str, Any]) -> bool:
        """A family flag: fixed (true/false), or read from the config key it names (false where the config omits it)."""
        return value if isinstance(value, bool) else bool(cfg.get(value) or False)


@cache
def _table() -> dict[str, Any]:
    try:
        return tomllib.loads(FAMILIES_FILE.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise CatalogError(f"{FAMILIES_FILE.name} is malformed: {exc}") from exc


@cache
def families() -> dict[str, Family]:
    """Every family read, by model_type."""
    known = {f.name for f in fields(Family)}
    out = {}
    for model_type, entry in _table()["families"].items():
        unknown = set(entry) - known
        if unknown:
            raise CatalogError(f"{FAMILIES_FILE.name}: family {model_type!r} has unknown keys {sorted(unknown)}")
        out[model_type] = Family(model_type=model_type, **entry)
    return out


@cache
def refused() -> dict[str, str]:
    """model_types refused by name, with the reason."""
    return dict(_table().get("refused", {}))


def _named(cfg: dict[str, Any]) -> str:
    archs = cfg.get("architectures") or []
    return f" ({archs[0]})" if isinstance(archs, list) and archs and isinstance(archs[0], str) else ""


def family_of(cfg: dict[str, Any], name: str) -> Family:
    """The family of a config.json's contents; one CatalogError naming the model_type when it is not read."""
    model_type = cfg.get("model_type")
    if not isinstance(model_type, str) or not model_type:
        raise CatalogError(f"model {name!r}: config.json has no model_type; fleetcal reads {', '.join(sorted(families()))}")
    if cfg.get("is_encoder_decoder"):
        raise CatalogError(f"model {name!r}: model_type {model_type!r} is an encoder-decoder, not a causal language model")
    if model_type in refused():
        raise CatalogError(f"model {name!r}: model_type {model_type!r}{_named(cfg)} is refused: {refused()[model_type]}")
    if model_type not in families():
        raise CatalogError(
            f"model {name!r}: model_type {model_type!r}{_named(cfg)} is not modelled; fleetcal reads "
            f"{', '.join(sorted(families()))} (`fleetcal models` lists them)"
        )
    return families()[model_type]
