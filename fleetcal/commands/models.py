"""``fleetcal models``: which architectures fleetcal reads, and which of them the serving model costs.

Generated from the tables the reader and the serving model use, not from a list of its own: the families of
core/data/models/families.toml (with the attention kinds each rule gives, core/config_fields.RULE_KINDS), the
quantization methods core/quant.py reads (METHODS), the model_types refused by name, the features the serving model
does not cost yet (estimator/arch.NOT_YET_COSTED), and every catalogued model read through them. ``fleetcal report``
writes the same tables into docs/models.md.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import pandas as pd

from core.config_fields import RULE_KINDS
from core.families import Family, families, refused
from core.models import get_model, model_catalog
from core.quant import METHODS, WEIGHT_FORMATS
from estimator.arch import COSTED, NOT_YET_COSTED, not_yet_costed

MODELS_START, MODELS_END = "<!-- models:start -->", "<!-- models:end -->"


def add_cli_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="one JSON document on stdout")


def _moe(f: Family) -> str:
    if not f.is_moe:
        return "dense"
    shared = {"n_shared": "shared: n_shared_experts", "key": f"shared: {f.shared_key}"}.get(f.shared, "no shared expert")
    return f"{f.experts} x {f.expert_width}, top {f.top_k}; {shared}; MoE layers: {f.moe_layers}"


def family_rows() -> list[dict[str, Any]]:
    """One row per model_type read: the attention kinds its layers can have, its MoE keys, and the serving model's answer:
    modelled, or the kinds and features it does not cost yet (a model of the family is refused where its config has one)."""
    rows = []
    for model_type, f in sorted(families().items()):
        if f.text_config:
            rows.append({"model_type": model_type, "family": f.name, "attention": "its text_config's", "moe": "its text_config's",
                         "serving_model": "as its text model"})  # fmt: skip
            continue
        kinds = RULE_KINDS[f.attention]
        features = [*kinds, *(["sinks"] if f.sinks else [])]
        refuses = [NOT_YET_COSTED[k] for k in features if k in NOT_YET_COSTED]
        rows.append({"model_type": model_type, "family": f.name, "attention": ", ".join(kinds), "moe": _moe(f),
                     "serving_model": "refuses " + ", ".join(refuses) if refuses else "modelled"})  # fmt: skip
    return rows


def model_rows() -> list[dict[str, Any]]:
    """One row per catalogued model, read as a user's config would be: counts, layer kinds, experts, the weight format it
    is served in (the catalog's, else its checkpoint's), its quantization_config per component, and the serving model's
    answer to it."""
    rows = []
    for key in sorted(model_catalog()):
        spec = get_model(key)
        s, missing = spec.shapes, not_yet_costed(spec.shapes, spec.weight_dtype)
        kinds = ", ".join(f"{n} {kind}" + (f" {s.windows[kind]}" if kind in s.windows else "") for kind, n in s.layer_kinds.items())
        moe = f"{s.num_experts} x top {s.experts_per_token}" + (f" + {s.shared_experts} shared" if s.shared_experts else "")
        quant = spec.checkpoint.describe() if spec.checkpoint.quantized else "none"
        rows.append({"model": key, "model_type": s.model_type, "total_b": round(spec.total_params / 1e9, 2),
                     "active_b": round(spec.active_params / 1e9, 2), "layers": kinds, "experts": moe if s.num_experts else "",
                     "weights": spec.weight_dtype, "quantization_config": quant,
                     "serving_model": "modelled" if not missing else "read; refuses " + ", ".join(missing)})  # fmt: skip
    return rows


def support() -> dict[str, Any]:
    """The whole support matrix, as ``--json`` prints it."""
    return {
        "families": family_rows(),
        "models": model_rows(),
        "refused": dict(sorted(refused().items())),
        "quantization_methods": {m: about for m, (_, about) in METHODS.items()},
        "weight_formats": list(WEIGHT_FORMATS),
        "not_yet_costed": dict(NOT_YET_COSTED),
        "costed": dict(COSTED),
    }


def markdown(doc: dict[str, Any]) -> list[str]:
    """The support matrix as markdown tables (the terminal output and docs/models.md's generated block)."""
    lines = ["Families read from config.json, by `model_type`:", "", pd.DataFrame(doc["families"]).to_markdown(index=False), ""]
    lines += ["Catalogued models, read as a user's config.json would be (parameters in billions; layers by attention kind and window):", ""]
    lines += [pd.DataFrame(doc["models"]).to_markdown(index=False), "", "Refused by name:", ""]
    lines += [f"- `{m}`: {why}" for m, why in doc["refused"].items()]
    lines += ["", "Quantization (`quantization_config.quant_method`) read, per component:", ""]
    lines += [f"- `{m}`: {about}" for m, about in doc["quantization_methods"].items()]
    lines += ["", "How the serving model (`predict`, `plan`, `validate`) costs what is read (attention kinds, sinks, experts, "
              "weight formats for `--weight-dtype`):", ""]  # fmt: skip
    lines += [f"- `{what}`: {how}" for what, how in doc["costed"].items()]
    lines += ["", "Read but not yet costed by the serving model (`predict`, `plan` refuse a model that has one, in one line): "
              + (", ".join(doc["not_yet_costed"].values()) or "none") + "."]  # fmt: skip
    return lines


def docs_block() -> str:
    """docs/models.md's generated block, markers included."""
    note = "_Generated by `fleetcal report` (and printed by `fleetcal models`) from the reader's tables; do not edit by hand._"
    return "\n".join([MODELS_START, "", note, "", *markdown(support()), "", MODELS_END])


def main(args: argparse.Namespace) -> int:
    doc = support()
    print(json.dumps(doc) if args.json else "\n".join(markdown(doc)))
    return 0
