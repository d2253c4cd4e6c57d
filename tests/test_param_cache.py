"""The parameter formulas (core/params.py) against transformers' own counts on the meta device, kept in
core/data/models/param_counts.json by config SHA-256 (core/param_cache.py): every catalogued config must be there, and
the formula must give its count to the parameter. The slow test recounts with transformers."""

from __future__ import annotations

import json

import pytest

from core.models import MODEL_DIR, get_model, model_catalog
from core.param_cache import cached_counts, config_sha256, count_all


@pytest.mark.parametrize("key", sorted(model_catalog()))
def test_formula_matches_transformers_count(key):
    path = MODEL_DIR / key / "config.json"
    cached = cached_counts().get(config_sha256(path))
    assert cached is not None, f"{key}: config.json changed or is new; run python -m core.param_cache"
    spec = get_model(key)
    s = spec.shapes
    assert cached["model"] == key
    assert spec.total_params == cached["total_params"]
    assert spec.embedding_params == cached["embedding_params"]
    assert spec.expert_params * s.num_experts * s.moe_layers == cached["routed_expert_params"]


def test_every_cached_count_is_of_a_committed_config():
    committed = {config_sha256(p) for p in MODEL_DIR.glob("*/config.json")}
    assert set(cached_counts()) == committed


def test_components_sum_to_the_total():
    for key in model_catalog():
        spec = get_model(key)
        assert sum(spec.component_params.values()) == spec.total_params


@pytest.mark.slow
def test_cache_is_what_transformers_counts_on_the_meta_device():
    """Builds every catalogued model with transformers on the meta device (as core/param_cache.py's regeneration does)."""
    fresh = count_all()
    stale = {sha: (v["model"], v["total_params"]) for sha, v in fresh.items()
             if {k: x for k, x in v.items() if k != "transformers"} != {k: x for k, x in cached_counts().get(sha, {}).items()
                                                                           if k != "transformers"}}  # fmt: skip
    assert not stale, f"counts differ from param_counts.json: {json.dumps(stale)}"
