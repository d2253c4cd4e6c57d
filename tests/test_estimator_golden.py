"""Golden tests against published figures, each with its source and tolerance."""

from __future__ import annotations

import json

import pytest

from core.hardware import CatalogError, get_gpu, gpu_catalog, match_gpu
from core.models import MODEL_DIR, get_model, kv_cache_bytes_per_token, model_catalog
from core.shapes import shapes_from_config, shapes_from_dict
from estimator.article import ArticleInputs, article_estimate, demand_ops_per_s_exact, round_significant
from fleetcal.cli import main

# 科创板日报 2025-02-08 citing Guotai Junan: 1.6e19 ops/s, 16,177 H100 (FP8, 50%), 51,282 A100.


def test_article_numbers_exactly():
    est = article_estimate(ArticleInputs())
    assert est["demand_ops_per_s"] == 1.6e19
    assert est["demand_ops_per_s_exact"] == pytest.approx(1.5532e19, rel=1e-4)
    assert est["gpus"] == {"H100": 16177, "A100": 51282}


def test_article_json_contract(capsys):
    assert main(["estimate", "--scenario", "article", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["demand_ops_per_s"] == 1.6e19
    assert doc["gpus"]["H100"] == 16177 and doc["gpus"]["A100"] == 51282


def test_article_roundings_are_what_produce_the_published_counts():
    # Without the article's two roundings the counts differ: proof that each rounding matters.
    no_demand_rounding = article_estimate(ArticleInputs(demand_significant_digits=None))
    assert no_demand_rounding["gpus"]["H100"] == 15705  # 1.5532e19 / (0.5 * 1978e12)
    exact_peak = article_estimate(ArticleInputs(peak_whole_tflops=False))
    assert exact_peak["gpus"]["H100"] == 16170  # 1.6e19 / (0.5 * 1978.9e12)
    assert round_significant(1.5532e19, 2) == 1.6e19


def test_685b_checkpoint_rounds_to_the_same_demand():
    # reference: with 685e9 (MTP module included) the demand is 1.586e19, also 1.6e19 when rounded
    a = ArticleInputs(params_per_token=685e9)
    assert demand_ops_per_s_exact(a) == pytest.approx(1.586e19, rel=1e-3)
    assert article_estimate(a)["demand_ops_per_s"] == 1.6e19


@pytest.mark.parametrize(
    ("name", "precision", "tflops", "memory_gb", "bandwidth"),
    [
        # NVIDIA datasheets (dense figures); H800/H20 from China-market specifications
        ("H100", "fp8", 1978.9, 80, 3350),
        ("H100-PCIe", "fp8", 1513, 80, 2000),
        ("H800", "bf16", 989.4, 80, 3350),
        ("H200", "bf16", 989.4, 141, 4800),
        ("A100", "int8", 624, 80, 2039),
        ("A100-40GB", "bf16", 312, 40, 1555),
        ("B200", "fp8", 4500, 180, 7700),
        ("H20", "fp8", 296, 96, 4000),
    ],
)
def test_catalog_matches_datasheets(name, precision, tflops, memory_gb, bandwidth):
    gpu = get_gpu(name)
    assert gpu.peak_tflops[precision] == pytest.approx(tflops, rel=1e-6)
    assert gpu.memory_gb == memory_gb and gpu.bandwidth_gb_per_s == bandwidth
    assert gpu.source


def test_catalog_lookup_and_close_names():
    assert match_gpu("NVIDIA H100 80GB HBM3").name == "H100"
    assert match_gpu("NVIDIA H100 PCIe").name == "H100-PCIe"
    assert match_gpu("NVIDIA H200").name == "H200"
    assert match_gpu("NVIDIA A100-SXM4-40GB").name == "A100-40GB"
    assert match_gpu("AMD EPYC") is None
    with pytest.raises(CatalogError, match="H100"):
        get_gpu("H10O")
    assert len(gpu_catalog()) >= 8


def test_a100_has_no_fp8_so_its_int8_peak_stands_in():
    assert get_gpu("A100").peak_flops_per_s("fp8") == 624e12


# DeepSeek-V3 technical report (arXiv:2412.19437): 671B total, 37B activated per token.
# Tolerance 2%: the report rounds; counting the config gives 37.55B active.
def test_deepseek_v3_parameters_from_config():
    spec = get_model("deepseek-v3")
    assert spec.total_params == pytest.approx(671e9, rel=0.005)
    assert spec.active_params == pytest.approx(37e9, rel=0.02)
    assert spec.is_moe and spec.shapes.num_experts == 256 and spec.shapes.experts_per_token == 8 and spec.shapes.moe_layers == 58


@pytest.mark.parametrize("key", sorted(model_catalog()))
def test_one_architecture_description(key):
    """A model's spec holds the shapes its config.json gives: the parameter counts and the serving model read one description."""
    assert get_model(key).shapes == shapes_from_config(MODEL_DIR / key, key)


def test_moe_layer_freq_is_honoured():
    cfg = json.loads((MODEL_DIR / "deepseek-v3" / "config.json").read_text())
    every_other = shapes_from_dict({**cfg, "moe_layer_freq": 2}, "x")
    assert every_other.moe_layers == len(range(3, 61, 2)) == 29 and every_other.dense_layers == 61 - 29
    assert shapes_from_dict(cfg, "x").moe_layers == 58


def test_deepseek_v3_mla_kv_cache_bytes():
    # reference: (512 + 64) x 61 = 35,136 values per token = 70,272 bytes in bf16
    assert kv_cache_bytes_per_token(get_model("deepseek-v3"), "bf16") == 70_272


@pytest.mark.parametrize("key", ["smollm2-135m", "qwen2.5-0.5b", "qwen2.5-7b", "llama-3.1-8b", "llama-3.1-70b"])
def test_dense_parameter_counts_match_model_cards(key):
    # sources in core/data/models/catalog.toml; model cards round to 2-3 digits: 1% tolerance
    spec = get_model(key)
    assert spec.total_params == pytest.approx(model_catalog()[key]["published_total_params"], rel=0.01)
    assert spec.active_params == spec.total_params


def test_gqa_kv_cache_bytes():
    # Llama-3.1-8B: 2 x 8 KV heads x 128 x 32 layers x 2 bytes = 131,072 bytes/token
    assert kv_cache_bytes_per_token(get_model("llama-3.1-8b")) == 131_072


def test_unknown_model_is_refused():
    with pytest.raises(CatalogError):
        get_model("/no/such/model")
