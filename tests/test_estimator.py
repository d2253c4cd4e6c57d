"""Projections, backtest consistency, calibration on committed real records (bad input: tests/test_cli_contract.py)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from core.deployments import load_deployments
from core.hardware import Peaks
from core.models import flops_per_token, flops_per_token_attention, flops_per_token_linear, get_model
from estimator.backtest import backtest, nodes_from_per_node_throughput
from estimator.calibration import Point, calibrate, fit_efficiency, fit_phase, predict_point
from estimator.fleet import article_inputs, default_request, direct_fleet, project
from estimator.runs import load_run_table, load_runs
from estimator.traffic import Request
from estimator.utilization import measured_utilization
from fleetcal.cli import main

FIXTURE = Path(__file__).parent / "fixtures" / "runs"


def test_backtest_consistency_227_nodes():
    # DeepSeek day 6: 608e9/86,400/73.7e3 + 168e9/86,400/14.8e3 = 95.5 + 131.4 = 226.9 nodes (published 226.75)
    d = load_deployments()[0]
    assert nodes_from_per_node_throughput(d) == pytest.approx(226.9, abs=0.2)


def test_backtest_article_method_on_deepseek_traffic():
    # reference: the article's method on DeepSeek's real traffic gives 2,638 H100; active params alone 145
    df = backtest()
    by = df.set_index("method")
    assert by.loc["article", "predicted_gpus"] == 2638
    assert by.loc["active", "predicted_gpus"] == pytest.approx(145, abs=3)  # 36.6B multiplying parameters vs 37B published
    assert by.loc["article", "error_pct"] == pytest.approx((2638 / 1814 - 1) * 100, abs=0.1)


def test_mla_attention_matches_linear_flops_near_5k_context():
    # reference: at ~5k tokens of context MLA decode attention costs about as much as the linear layers
    spec = get_model("deepseek-v3")
    ratio = flops_per_token_attention(spec, 4989) / flops_per_token_linear(spec)
    assert 0.8 < ratio < 1.4
    assert flops_per_token(spec, 0) == pytest.approx(2 * (spec.active_params - spec.embedding_params))


def test_projection_scenarios_order_and_replacing_assumptions():
    rows = project(
        "deepseek-v3",
        ("H100", "A100"),
        measured={"utilization": 0.25, "engine": "vllm", "mode": "throughput", "size": 8, "model": "m", "device_name": "d", "against": "x"},
    )
    got = {(r["scenario"], r["gpu"]): r["gpus"] for r in rows}
    assert got[("article", "H100")] == 16177 and got[("article", "A100")] == 51282
    assert got[("active", "H100")] < got[("article", "H100")] / 17  # 671B / 37.55B = 17.9x fewer
    assert got[("measured", "H100")] == pytest.approx(2 * 16177, abs=2)  # 25% instead of 50%: twice the GPUs
    roof = next(r for r in rows if r["scenario"] == "roofline" and r["gpu"] == "H100")
    assert roof["gpus"] == roof["decode_gpus"] + roof["prefill_gpus"]
    assert roof["decode_gpus"] % 144 == 0 and roof["prefill_gpus"] % 32 == 0  # whole instances of DeepSeek's layouts
    # 20 tokens/s per user: one MTP token accepted 85% of the time advances 1.85 tokens per step
    assert roof["decode_step_ms"] <= 1.85 / 20 * 1000 + 1e-6
    assert got[("direct", "H100")] is None


def test_peak_traffic_and_speed_target_raise_the_roofline_fleet():
    ref = default_request("deepseek-v3", article_inputs())
    base = {r["gpu"]: r["gpus"] for r in project(scenarios=("roofline",), request=ref)}
    peakier = {r["gpu"]: r["gpus"] for r in project(scenarios=("roofline",), request=replace(ref, peak_to_average=2.0))}
    # while decode stays compute-bound a faster target only shrinks the batch (same tokens/s per GPU);
    # once it forces memory-bound batches, every GPU delivers fewer tokens/s and the fleet grows
    faster = {r["gpu"]: r["gpus"] for r in project(scenarios=("roofline",), request=replace(ref, tpot_ms=1000 / 40))}
    fastest = {r["gpu"]: r["gpus"] for r in project(scenarios=("roofline",), request=replace(ref, tpot_ms=1000 / 60))}
    assert peakier["H100"] > base["H100"]
    assert base["H100"] <= faster["H100"] < fastest["H100"]
    # a speed one sequence cannot reach is refused with the reason, not sized (it used to give a figure)
    (out_of_reach,) = project(gpu_names=("H100",), scenarios=("roofline",), request=replace(ref, tpot_ms=1000 / 500))
    assert out_of_reach["gpus"] is None and out_of_reach["feasible"] is False and "batch 1 decodes at" in out_of_reach["how"]


def test_fit_recovers_known_efficiencies():
    # synthetic points from a known roofline: c=0.4, m=0.6, overhead 2 ms
    pts = []
    for b in (1, 2, 4, 8, 16, 64, 256, 1024):
        p = Point(flops=b * 2e9, nbytes=1e9 + b * 1e6, seconds=0.0, peaks=Peaks("test", 1e13, 1e11), label=str(b))
        true = 0.002 + max(p.flops / (0.4 * 1e13), p.nbytes / (0.6 * 1e11))
        pts.append(Point(p.flops, p.nbytes, true, p.peaks, p.label))
    eff = fit_efficiency(pts, "synthetic")
    assert eff.compute == pytest.approx(0.4, rel=0.05)
    assert eff.memory == pytest.approx(0.6, rel=0.05)
    assert eff.overhead_s == pytest.approx(0.002, rel=0.15)
    assert all(predict_point(p, eff) == pytest.approx(p.seconds, rel=0.05) for p in pts)
    assert fit_phase(pts, "d", "cpu", "e", "decode").undetermined == (), "both regimes sampled: both efficiencies are determined"
    # only memory-bound points (batch 1 to 8): nothing in the data can pin the compute efficiency
    memory_only = [p for p in pts if int(p.label) <= 8]
    assert any(u.startswith("compute efficiency") for u in fit_phase(memory_only, "d", "cpu", "e", "decode").undetermined)


def test_calibration_on_committed_real_records():
    df, skipped = load_run_table(FIXTURE)
    assert not df.empty and not skipped
    fits = {f.phase: f for f in calibrate(df)}
    assert set(fits) == {"prefill", "decode"}
    dec = fits["decode"]
    assert 0 < dec.efficiency.compute <= 1.2 and 0 < dec.efficiency.memory <= 1.2
    assert dec.fit_mape < 0.25 and dec.heldout_mape is not None and dec.heldout_mape < 0.5
    m = measured_utilization(df)
    assert m is not None and 0 < m["utilization"] < 1 and m["against"] == "measured bfloat16 matmul peak" and m["device_kind"] == "cpu"


def test_config_file_sets_traffic(tmp_path, capsys):
    cfg = tmp_path / "t.toml"
    cfg.write_text("daily_visits = 2e8\nutilization = 0.25\n")
    assert main(["estimate", "--config", str(cfg), "--scenario", "article", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["gpus"]["H100"] == int(3.1e19 / (0.25 * 1978e12))  # twice the traffic (3.1064e19 -> 3.1e19) at 25%


def test_predict_speaks_the_design_contract(capsys):
    assert main(["predict", "--model", "llama-3.1-70b", "--gpu", "H100", "--phase", "decode", "--batch-per-gpu", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("output_tokens_per_s_per_gpu", "input_tokens_per_s_per_gpu", "output_tokens_per_s", "tokens_per_s_per_user",
                "batch_per_gpu", "step_ms", "bound", "breakdown_ms", "efficiency_source"):  # fmt: skip
        assert key in out
    # 141e9 bytes of bf16 weights: 70.5e9 per GPU fit two H100s (0.9 x 80 GiB = 77.3e9 usable), with KV room to spare
    assert out["layout"]["decode"]["tp"] == 2 and out["kv_room_sequences_per_gpu"] >= 1
    assert out["output_tokens_per_s"] == pytest.approx(2 * out["output_tokens_per_s_per_gpu"])
    assert out["bound"] == "dense FFN" and out["input_tokens_per_s_per_gpu"] is None
    assert (
        main(
            [
                "predict",
                "--model",
                "deepseek-v3",
                "--gpu",
                "H800",
                "--tokens-per-user",
                "20",
                "--context-len",
                "4989",
                "--mtp-tokens",
                "1",
                "--json",
            ]
        )
        == 0
    )
    ds = json.loads(capsys.readouterr().out)
    assert ds["tokens_per_s_per_user"] >= 20 and ds["layout"]["decode"]["ep"] == 144 and ds["layout"]["decode"]["dp_attention"]
    assert set(ds["breakdown_ms"]) == {"decode", "prefill"} and "routed experts" in ds["breakdown_ms"]["decode"]


def test_direct_scenario_uses_measured_tokens_per_s():
    df = load_runs(FIXTURE)
    spec = get_model("smollm2-135m")
    slow = Request("smollm2-135m", 4383, 1211, 1e4 * 10 * 1000 / 86_400 / 1211, 1.2, None, 50.0)  # 20 tok/s per user
    cpu = df["device_name"].iloc[0]  # CPUs are named with their identity, e.g. "AMD EPYC [cpu-…]"
    assert cpu.startswith("AMD EPYC [cpu-")
    d = direct_fleet(spec, cpu, slow, df)
    # serving records at >= 20 tok/s per user (1000 / mean TPOT) exist in the fixture: the best of them sets the rate
    serve = df[(df["mode"] == "serve") & (df["interactivity_tokens_per_s"] >= 20)]
    assert d["tokens_per_s_per_gpu"] == pytest.approx(serve["output_tokens_per_s"].max())
    assert d["gpus"] == -(-slow.output_tokens_per_s * slow.peak_to_average // d["tokens_per_s_per_gpu"])
    # nobody got 200 tok/s per user on this CPU, no decode step took under 5 ms, and the fixture has no throughput run
    assert direct_fleet(spec, cpu, replace(slow, tpot_ms=5.0), df) is None
    assert direct_fleet(spec, "H100", slow, df) is None


def test_a_fleet_costs_its_gpus_for_24_hours_at_the_dated_or_given_price(capsys):
    """The article's 16,177 H100 at the catalog's $3.00 (May 2026): 16,177 x 3.00 x 24 = $1,164,744 a day, and the
    article's 1e12 output tokens a day (1e8 visits x 10 x 1,000) make that $1.164744 per million output tokens; its
    7,111 B200 at the catalog's $5.25 (March 2026): 7,111 x 5.25 x 24 = $895,986 a day."""
    (h100, b200) = project(gpu_names=("H100", "B200"), scenarios=("article",))
    assert h100["gpus"] == 16177 and h100["usd_per_gpu_hour"] == 3.0 and "2026-05" in h100["price_source"]
    assert h100["usd_per_day"] == pytest.approx(1_164_744) and h100["usd_per_million_output_tokens"] == pytest.approx(1.164744)
    assert b200["usd_per_gpu_hour"] == 5.25 and b200["usd_per_day"] == pytest.approx(7111 * 5.25 * 24)
    (given,) = project(gpu_names=("B200",), scenarios=("article",), prices={"*": 5.0})
    assert given["usd_per_day"] == pytest.approx(7111 * 5.0 * 24) and given["price_source"] == "--gpu-hour-usd"
    assert main(["estimate", "--scenario", "article", "--gpu", "H800", "--gpu-hour-usd", "2", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)["rows"]
    assert row["usd_per_day"] == pytest.approx(16177 * 2 * 24)  # DeepSeek's own price for its 1,814 H800 gives $87,072 a day


def test_a_catalog_price_needs_a_source():
    from core.errors import CatalogError
    from core.hardware import Device, get_gpu

    h100 = get_gpu("H100")
    with pytest.raises(CatalogError, match="date and source"):
        Device(h100.name, h100.full_name, h100.peak_tflops, h100.memory_gb, h100.bandwidth_gb_per_s, h100.source, usd_per_gpu_hour=3.0)


def test_prompt_length_is_token_weighted_from_the_published_kv_length():
    # requests whose prompt is r times their reply: the KV length each decoded token sees, averaged over
    # output tokens, and the prompt length each prompt token sits in, averaged over prompt tokens
    r, replies = 3.0, [100, 400, 2500]
    prompts = [r * o for o in replies]
    kv = sum(p * o + o * (o - 1) / 2 for p, o in zip(prompts, replies)) / sum(replies)
    weighted = sum(p * p for p in prompts) / sum(prompts)
    d = replace(load_deployments()[0], input_tokens_per_day=r, output_tokens_per_day=1.0, average_kv_len=kv)
    assert d.input_len == pytest.approx(weighted, rel=1e-3)
    assert weighted > 2 * r * sum(replies) / len(replies)  # the mean prompt (r x 1,000) would be less than half of it
    ds = Request.of_deployment(load_deployments()[0])
    assert ds.input_len == pytest.approx(608 / 168 / (608 / 168 + 0.5) * 4989)  # DeepSeek day 6: 4,383 tokens
    assert ds.mean_kv_len == pytest.approx(4989) and ds.input_len / ds.output_len == pytest.approx(608 / 168)


def test_measured_utilization_is_the_formulas_count_from_the_most_relevant_run():
    import pandas as pd

    def row(kind, mode, u_record, rate, per_user_ms, **kw):
        # a record measured at 100 TFLOP/s of model work and u_record of its peak, which is 100 / u_record TFLOP/s
        return {
            "peak_tflops": 100.0 / u_record,
            "status": "ok",
            "mode": mode,
            "batch_size": 32,
            "concurrency": None,
            "mfu": u_record if kind == "cuda" else None,
            "mfu_measured_peak": u_record,
            "model_tflops_per_s": 100.0,
            "decode_tokens_per_s": rate if mode == "decode" else None,
            "output_tokens_per_s": rate,
            "decode_step_ms": per_user_ms if mode == "decode" else None,
            "interactivity_tokens_per_s": None,
            "model_key": "llama-3.1-8b",
            "device_kind": kind,
            "device_name": kind,
            "model": "llama-3.1-8b",
            "engine": "e",
            "dtype": "bfloat16",
            "run_file": f"{kind}-{mode}-{rate}",
            **kw,
        }

    params = get_model("llama-3.1-8b").matmul_params
    gpu_fast_users = row("cuda", "decode", 0.1, 2690.0, 11.9)  # 84 tokens/s per user
    gpu_slow_users = row("cuda", "decode", 0.1, 5000.0, 58.0)  # 17 tokens/s per user: misses 20
    cpu = row("cpu", "throughput", 0.9, 900.0, None)  # 13% by the formula: higher, but a CPU
    m = measured_utilization(pd.DataFrame([cpu, gpu_slow_users, gpu_fast_users]), tokens_per_s_per_user=20)
    # 2 x parameters x output tokens/s over the 1,000 TFLOP/s peak, not the record's own MFU (prompts and attention in it)
    assert m["device_kind"] == "cuda" and m["tokens_per_s_per_user"] == pytest.approx(84.0, abs=0.1)
    assert m["utilization"] == pytest.approx(2 * params * 2690 / 1e15) and m["against"] == "bfloat16 datasheet peak"
    assert measured_utilization(pd.DataFrame([cpu, gpu_slow_users]), tokens_per_s_per_user=20)["utilization"] == pytest.approx(
        2 * params * 5000 / 1e15
    )
    only_cpu = measured_utilization(pd.DataFrame([cpu]))
    assert only_cpu["against"] == "measured bfloat16 matmul peak" and only_cpu["utilization"] == pytest.approx(
        0.9 * 2 * params * 900 / 1e14
    )
