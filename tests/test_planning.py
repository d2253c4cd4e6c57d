"""Whole requests and `fleetcal plan`: formulas derived by hand, monotonicity in the limits and the traffic, the
interval around the central value, the hourly fleet, spares and the cheapest mix (bad input: tests/test_cli_contract.py)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from core.engines import engine_rules
from core.errors import CatalogError
from core.hardware import get_gpu
from core.paths import RESULTS_DIR
from estimator.kernels import Knob, kernels_for, sample_kernels
from estimator.operators import load_ops
from estimator.options import Option, gpus_at
from estimator.plan_search import cheapest_mix, frontier, interval, search
from estimator.planning import Limit, Point, aggregated_rates, engine_budget
from estimator.provisioning import hourly_fleet, spares
from estimator.traffic import Request
from fleetcal.cli import main

MODEL = "llama-3.1-8b"


@pytest.fixture(scope="module")
def ops():
    return load_ops(RESULTS_DIR, warn=False)


def test_aggregated_whole_requests_from_a_known_decode_step_and_prefill_rate():
    # B = 64 sequences advance 64 tokens in a 20 ms decode step; prompts of 1,000 tokens, replies of 500, prefill at
    # 10,000 tokens/s, a budget of 8,192 tokens. To keep 64 sequences running a step carries 64 x 1000 / 500 = 128 prompt
    # tokens: 12.8 ms. Step 32.8 ms -> 64 / 0.0328 = 1,951.2 output tok/s per GPU, TPOT 32.8 ms, total tokens x 3;
    # a new prompt fits one step's room (8,192 - 64): TTFT = 20 ms + 1,000 / 10,000 s = 120 ms.
    w = Request(MODEL, input_len=1000, output_len=500, requests_per_s=1)
    p = aggregated_rates(0.020, 64, 64, 10_000, w, budget_per_gpu=8192, prompt_per_gpu=1000)
    assert p.output_tokens_per_s_per_gpu == pytest.approx(64 / 0.0328)
    assert p.total_tokens_per_s_per_gpu == pytest.approx(3 * 64 / 0.0328)
    assert p.tpot_ms == pytest.approx(32.8)
    assert p.tokens_per_s_per_user == pytest.approx(1000 / 32.8)
    assert p.ttft_ms == pytest.approx(120.0)
    assert p.fits
    # a prompt longer than the room takes ceil(u / room) steps: 20,000 tokens over 8,128 -> 3 steps of 20 ms + 0.8128 s
    long = Request(MODEL, input_len=20_000, output_len=500, requests_per_s=1)
    assert aggregated_rates(0.020, 64, 64, 10_000, long, 8192, 20_000).ttft_ms == pytest.approx(3 * (20 + 812.8))


def test_engine_rules_are_read_from_data_with_their_sources():
    # vLLM 0.32 EngineArgs.get_batch_defaults (OpenAI server): >= 160 GiB 16,384 / 1,024; >= 70 GiB and not A100 8,192 / 1,024;
    # else 2,048 / 256; CacheConfig: 0.92 of total memory, 16-token blocks. TensorRT-LLM: 8,192 / 2,048, 0.9 of free, 32 tokens
    vllm, trt = engine_rules("vllm"), engine_rules("trtllm")
    assert engine_budget(get_gpu("B200")) == (16384, 1024)
    assert engine_budget(get_gpu("H100")) == (8192, 1024)
    assert engine_budget(get_gpu("A100-80GB")) == (2048, 256)
    assert engine_budget(get_gpu("A100-80GB"), "trtllm") == (8192, 2048)
    assert (vllm.memory_fraction, vllm.memory_fraction_of, vllm.page_tokens) == (0.92, "total", 16)
    assert (trt.memory_fraction, trt.memory_fraction_of, trt.page_tokens) == (0.9, "free", 32)
    assert vllm.captured("H100", 512) and not vllm.captured("H100", 513) and vllm.captured("B200", 1024)
    assert "vllm/engine/arg_utils.py" in vllm.source and "llm_args.py" in trt.source
    # of 80 GiB with 20 GiB taken: vLLM 0.92 x 80 - 20 = 53.6 GiB; TensorRT-LLM 0.9 x (80 - 20) = 54 GiB
    assert vllm.kv_room_bytes(80, 20) == pytest.approx(53.6) and trt.kv_room_bytes(80, 20) == pytest.approx(54.0)
    with pytest.raises(CatalogError, match="unknown engine 'sglang'; engines with rules: trtllm, vllm"):
        engine_rules("sglang")


def test_spares_by_hand():
    # 10 instances x 8 GPUs x 1.095 failures a year x 100 h / 8,760 h = 1 instance down on average; Poisson(1):
    # P(<=3) = 0.981, P(<=4) = 0.9963 -> 4 spares for 99%
    assert spares(10, 8, 1.095, 100) == 4
    assert spares(10, 8, 0.0, 100) == 0


def test_whole_instances_and_the_cheapest_mix_by_hand():
    p = Point(1, 1, 1, 1, 1, 1, True)
    a = Option("A", "aggregated", "bf16", "", 0, ((1.0, 8),), p, Limit.TPOT)  # 1 request/s per 8-GPU instance at $1 per GPU-hour
    b = Option("B", "aggregated", "bf16", "", 0, ((0.25, 1),), p, Limit.TPOT)  # 0.25 requests/s per GPU at $3 per GPU-hour
    assert gpus_at(a.pools, 2.5) == 24  # 3 instances
    # 2.5 requests/s: A alone 24 GPU-h/h = $576 a day; 2 A instances + 0.5 on B (2 GPUs, $6/h): (16 + 6) x 24 = $528
    cost, split = cheapest_mix([(a, 1.0), (b, 3.0)], 2.5)
    assert cost == pytest.approx(528.0)
    assert split == [("A", 2.0), ("B", pytest.approx(0.5))]


def test_hourly_fleet_peaks_at_the_peak_hour_and_a_scale_up_delay_only_adds():
    pools = ((2.0, 4),)
    rates = [1.0] * 10 + [9.0] + [3.0] * 13
    fleet = hourly_fleet(pools, rates)
    assert max(fleet) == gpus_at(pools, 9.0) == 20
    late = hourly_fleet(pools, rates, scale_up_hours=2)
    assert all(x >= y for x, y in zip(late, fleet)) and max(late) == max(fleet)
    assert late[8] == 20 and fleet[8] == 4  # provisioned two hours ahead of the peak


def _gpus(ops, **w):
    base = dict(input_len=1000, output_len=500, requests_per_s=20, ttft_ms=2000, tpot_ms=40)
    c, _ = search(MODEL, get_gpu("H100"), Request(MODEL, **(base | w)), ops)
    return c.option.gpus if c else math.inf


def test_a_stricter_tpot_never_needs_fewer_gpus(ops):
    counts = [_gpus(ops, tpot_ms=t, requests_per_s=200) for t in (80, 40, 20, 10)]
    assert counts == sorted(counts) and counts[-1] > counts[0]


def test_more_traffic_never_needs_fewer_gpus(ops):
    counts = [_gpus(ops, requests_per_s=r) for r in (5, 20, 80, 320)]
    assert counts == sorted(counts) and counts[-1] > counts[0]


def test_the_interval_holds_the_central_value_and_each_draw_has_its_median_at_the_central(ops):
    gpu = get_gpu("H100")
    c, _ = search(MODEL, gpu, Request(MODEL, 1000, 500, 40, ttft_ms=2000, tpot_ms=40), ops)
    lo, hi, bad = interval(c, 100, seed=1)
    assert lo <= c.option.gpus <= hi and lo < hi and bad == 0.0
    k, _ = kernels_for(gpu, ops)
    rng = np.random.default_rng(0)
    draws = [sample_kernels(k, rng).allreduce_nvlink_fraction for _ in range(400)]
    assert abs(np.median(draws) - k.allreduce_nvlink_fraction) < 0.03
    lo, hi = k.ranges[Knob("allreduce_nvlink_fraction")]
    assert min(draws) >= lo and max(draws) <= hi


def test_plan_prints_the_table_interval_and_plot(tmp_path, capsys):
    plot = tmp_path
    profile = tmp_path / "day.csv"
    profile.write_text("hour,share\n" + "\n".join(f"{h},{1 + (h >= 12)}" for h in range(24)))
    rc = main(["plan", "--model", "llama-3.1-70b", "--gpu", "H100", "--gpu", "A100-80GB", "--input-len", "1000", "--output-len", "1000",
               "--request-rate", "50", "--ttft-ms", "2000", "--tpot-ms", "50", "--plot", str(plot), "--samples", "40",
               "--traffic-profile", str(profile), "--gpu-failures-per-year", "0.5", "--repair-hours", "48", "--json"])  # fmt: skip
    assert rc == 0
    doc = json.loads(capsys.readouterr().out)
    assert {r["gpu"] for r in doc["rows"]} == {"H100", "A100"}
    for r in doc["rows"]:
        assert r["gpus_p5"] <= r["gpus"] <= r["gpus_p95"]
        assert r["ttft_ms"] <= 2000 and r["tpot_ms"] <= 50
        assert max(r["hourly_gpus"]) == r["gpus"]  # the peak hour (shares 2 of 36 an hour -> 50 x 24 x 2 / 36 req/s)
        assert r["gpus_with_spares"] >= r["gpus"]
    assert doc["request"]["peak_requests_per_s"] == pytest.approx(50 * 24 * 2 / 36) and doc["request"]["requests_per_s"] == 50
    assert sorted(p.name for p in tmp_path.iterdir()) == ["day.csv", "plan_frontier.csv", "plan_frontier.png"]


def test_disaggregated_whole_requests_by_hand():
    # the same decode step (64 tokens in 20 ms: 3,200 tok/s) and prefill rate (10,000 tok/s): a request takes
    # 1,000 / 10,000 + 500 / 3,200 = 0.25625 GPU-seconds -> 500 / 0.25625 = 1,951.2 output tok/s per GPU, the aggregated
    # figure (the model adds prefill and decode work either way; the modes differ in latency). TTFT: one 0.5 s step of
    # 4,096 tokens carries the prompt, plus 10 ms of KV transfer; TPOT is the bare decode step.
    from estimator.planning import disaggregated_rates

    w = Request(MODEL, input_len=1000, output_len=500, requests_per_s=1)
    p = disaggregated_rates(0.020, 64, 64, 10_000, 0.5, 4096, 1000, 0.010, w)
    assert p.output_tokens_per_s_per_gpu == pytest.approx(500 / 0.25625)
    assert p.ttft_ms == pytest.approx(510.0) and p.tpot_ms == pytest.approx(20.0)


def test_predict_request_is_whole_requests_on_a_gpu(capsys):
    from estimator.arch import Layout, load_arch
    from estimator.memory import kv_room_sequences
    from estimator.planning import aggregated_point

    assert (
        main(
            ["predict", "--model", MODEL, "--gpu", "H100", "--input-len", "1000", "--output-len", "500", "--batch-per-gpu", "max", "--json"]
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    a, gpu = load_arch(MODEL), get_gpu("H100")
    k, _ = kernels_for(gpu, load_ops(RESULTS_DIR, warn=False))
    # --batch-per-gpu max: what the KV room holds at a request's full length, 1,000 + 500 tokens, as plan sizes it
    assert out["batch_per_gpu"] == kv_room_sequences(a, gpu, Layout(1), k, 1500, "bf16") == out["kv_room_sequences_per_gpu"]
    p = aggregated_point(a, gpu, Layout(1), k, Request(MODEL, 1000, 500), out["batch_per_gpu"])
    assert out["mode"] == "aggregated" and out["output_tokens_per_s_per_gpu"] == pytest.approx(p.output_tokens_per_s_per_gpu)
    assert out["output_tokens_per_s_per_gpu"] < out["decode_tokens_per_s_per_gpu"]  # prefill takes its share of the steps
    assert main(["predict", "--model", MODEL, "--gpu", "H100", "--concurrency", "16", "--disaggregated", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["batch_per_gpu"] == 16 and out["mode"] == "disaggregated" and out["ttft_ms"] > 0


def test_a_tpot_below_the_step_floor_is_refused_in_one_line_and_writes_nothing(tmp_path, capsys):
    # issue 36: "met" at TPOT 0.9 ms before the step had a floor; batch 1 of TP8 now takes 1.5 ms (kernel launches and
    # 64 all-reduce latencies included), and no layout reaches 1 ms
    argv = ["plan", "--model", MODEL, "--gpu", "H100", "--input-len", "1000", "--output-len", "300", "--request-rate", "5",
            "--ttft-ms", "2000", "--tpot-ms", "1", "--samples", "0", "--plot", str(tmp_path), "--csv", str(tmp_path / "p.csv")]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no layout of llama-3.1-8b meets TTFT 2000 ms and TPOT 1 ms" in err[0] and "decodes at" in err[0]
    assert not any(tmp_path.iterdir())


def test_no_frontier_point_beats_its_layouts_step_floor(ops):
    # B200's frontier reached 2,788 tok/s per user without a floor. A decode step of Llama-3.1-8B at TP t lasts at least
    # its kernels x 0.58 us and, under TP, 64 all-reduces x 7 us (kernels.toml); aggregated points also carry prompts
    kernels = {t: 7 * 32 + 1 + 3 * 32 + 2 + (64 if t > 1 else 0) for t in (1, 2, 4, 8)}
    floor_s = {t: kernels[t] * 0.58e-6 + (64 * 7e-6 if t > 1 else 0) for t in kernels}
    r = Request(MODEL, 1000, 300, 5, ttft_ms=2000, tpot_ms=100)
    front = frontier(MODEL, get_gpu("B200"), r, ops)
    assert not front.empty and front["tokens_per_s_per_user"].max() < 2788
    for _, p in front.iterrows():
        assert p["tokens_per_s_per_user"] <= 1 / floor_s[p["layout"]], p.to_dict()


def test_candidate_layouts_are_those_the_model_can_be_laid_out_on():
    from dataclasses import replace

    from estimator.arch import Layout, layout_problem, load_arch
    from estimator.memory import kv_room_sequences
    from estimator.plan_search import candidate_layouts

    # Qwen2.5-7B: 28 heads divide by 1, 2, 4, not 8; DeepSeek-V3: 256 experts + 32 redundant = 288 divide by 32 and 144,
    # EP64 takes 64 redundant (320 = 5 x 64); EP 2 and 4 with data-parallel attention are tried too (a small MoE's layouts)
    h100 = get_gpu("H100")
    assert [lay.tp for lay in candidate_layouts(load_arch("qwen2.5-7b"), "qwen2.5-7b", h100)] == [1, 2, 4]
    ep = {lay.ep: lay.redundant_experts for lay in candidate_layouts(load_arch("deepseek-v3"), "deepseek-v3", h100) if lay.dp_attention}
    assert ep == {2: 0, 4: 0, 8: 0, 16: 0, 32: 32, 64: 64, 144: 32}
    # vLLM's rule for KV heads (llama.py): fewer KV heads than TP are replicated when TP divides by them
    a = load_arch("llama-3.1-8b")
    two = replace(a, shapes=replace(a.shapes, kv_heads=2))
    three = replace(a, shapes=replace(a.shapes, kv_heads=3))
    assert layout_problem(two, Layout(8, tp=8)) is None and "KV heads" in layout_problem(three, Layout(8, tp=8))
    # replicated, each GPU holds one head of each of the group's 8 x B sequences, as with 8 heads split one a GPU: the same
    # B, not 4 times it (a quarter of the KV per token, held in 4 copies)
    gpu, k = get_gpu("H100"), kernels_for(get_gpu("H100"))[0]
    one_copy = kv_room_sequences(two, gpu, Layout(8, tp=8), k, 1000, "bf16", rule="vllm")
    whole = kv_room_sequences(replace(two, shapes=replace(two.shapes, kv_heads=8)), gpu, Layout(8, tp=8), k, 1000, "bf16")
    assert one_copy == whole > 0


def test_estimate_and_plan_size_the_same_requests_through_one_path(capsys):
    # issue 36: estimate's serving model and plan gave 2,098 and 180 H100 for the same Llama-3.1-70B traffic (this
    # checkout: 222 and 40), sizing KV, batches and token budgets apart. 50 requests/s of 1,000 + 1,000 tokens, 20 tok/s
    # per user (TPOT 50 ms), TTFT 2 s, no cache, no peak: 4.32e6 one-question visits a day of 1,000-token replies
    assert main(["estimate", "--model", "llama-3.1-70b", "--gpu", "H100", "--scenario", "roofline", "--daily-visits", "4.32e6",
                 "--questions-per-visit", "1", "--tokens-per-reply", "1000", "--input-len", "1000", "--output-len", "1000",
                 "--cached-fraction", "0", "--peak-to-average", "1", "--tokens-per-s-per-user", "20", "--ttft-ms", "2000",
                 "--json"]) == 0  # fmt: skip
    est = json.loads(capsys.readouterr().out)
    assert est["request"]["requests_per_s"] == pytest.approx(50) and est["request"]["tpot_ms"] == pytest.approx(50)
    assert main(["plan", "--model", "llama-3.1-70b", "--gpu", "H100", "--input-len", "1000", "--output-len", "1000",
                 "--requests-per-s", "50", "--ttft-ms", "2000", "--tpot-ms", "50", "--samples", "0", "--json"]) == 0  # fmt: skip
    (row,) = json.loads(capsys.readouterr().out)["rows"]
    (roof,) = est["rows"]
    assert roof["gpus"] == row["gpus"] and f"{row['mode']}, {row['layout']}" in roof["how"]
