"""The per-operator serving model: golden formulas derived by hand, and physical sense."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from core.deployments import load_deployments
from core.hardware import get_gpu
from core.opcounts import ep_bytes_per_token, expert_gemm_flops, mla_prefill_attention_flops
from estimator.arch import Layout, load_arch
from estimator.kernels import Knob, published_kernels, with_value
from estimator.memory import largest_batch, weight_bytes_per_gpu
from estimator.planning import UNREACHABLE, Rejection, prefill_tokens_for_ttft
from estimator.serving import step
from estimator.sizing import deployment_layouts, size_on
from estimator.traffic import Request

# 2M output tokens/s at DeepSeek day 6's token-weighted lengths (4,383 in, 1,211 out), cache hits, 20 tok/s per user, MTP 1
_D = load_deployments()[0]
TWO_MILLION = Request("deepseek-v3", _D.input_len, _D.output_len, 2e6 / _D.output_len, 1.0, None, 50.0, _D.cache_hit_rate, "bf16", 1)

# DeepSeek-V3 config.json: 61 layers (3 dense), hidden 7,168, 128 heads, q_lora_rank 1,536,
# kv_lora_rank 512, qk_rope_head_dim 64, qk_nope_head_dim 128, v_head_dim 128, dense FFN 18,432,
# 256 routed experts of FFN 2,048, top-8, 1 shared expert, vocabulary 129,280; weights FP8.
DS = load_arch("deepseek-v3")
H800 = get_gpu("H800")
DECODE = Layout(144, ep=144, dp_attention=True, redundant_experts=32)


def test_prefill_attention_flops_per_token_at_4096_not_absorbed():
    # 2 x 128 heads x 4,096 context x (192 + 128) = 335,544,320 FLOPs per token per layer
    assert mla_prefill_attention_flops(DS.shapes, 4096) == 2 * 128 * 4096 * (192 + 128) == 335_544_320


def test_decode_attention_flops_absorbed():
    # absorbed: keys of 512 + 64, values of 512 -> 2 x 128 x 4,989 x 1,088 = 1,389,576,192 per token per layer
    assert DS.shapes.decode_attention_flops(4989) == 2 * 128 * 4989 * (576 + 512) == 1_389_576_192
    # the absorbed formula is 3.4x the non-absorbed one: the overcount the old model made in prefill
    assert DS.shapes.decode_attention_flops(1) / mla_prefill_attention_flops(DS.shapes, 1) == pytest.approx(1088 / 320)


def test_expert_gemm_flops():
    # one expert: gate+up 7,168 -> 4,096 and down 2,048 -> 7,168: 2 x (7168 x 4096 + 2048 x 7168) = 88,080,384 per pair
    assert expert_gemm_flops(DS.shapes, 1) == 2 * (7168 * 4096 + 2048 * 7168) == 88_080_384
    assert expert_gemm_flops(DS.shapes, 1000) == 1000 * 88_080_384


def test_replicated_weight_bytes_under_data_parallel_attention():
    # per layer attention: q_a 7168x1536 + q_b 1536x24576 + kv_a 7168x576 + kv_b 512x(128x256) + o 16384x7168
    # + the query and KV latents' norms 1,536 + 512 = 187,107,328, x 61; dense FFN 3 x 396,361,728; shared experts
    # 58 x 44,040,192: all in FP8 (the checkpoint's quantization_config covers the linear layers), 15,156,963,328 bytes.
    # In BF16 (vLLM builds them unquantized): routers 58 x 7168 x 256, the layers' norms 61 x 2 x 7,168 + 7,168 final,
    # embedding + head 2 x 129,280 x 7,168.
    attn = 7168 * 1536 + 1536 * 24576 + 7168 * 576 + 512 * 128 * 256 + 16384 * 7168 + 1536 + 512
    fp8_part = 61 * attn + 3 * 3 * 7168 * 18432 + 58 * 3 * 7168 * 2048
    assert fp8_part == 15_156_963_328
    bf16_part = 58 * 7168 * 256 + 61 * 2 * 7168 + 7168 + 2 * 129280 * 7168
    w = weight_bytes_per_gpu(DS, DECODE)
    assert w["non_routed"] == fp8_part * 1 + bf16_part * 2 == 19_078_303_744  # replicated on every GPU, not divided by 144
    assert w["routed"] == 2 * 58 * 88_080_384 / 2  # 288 experts over 144 GPUs: 2 each, 44,040,192 bytes each in FP8
    # TP 8 splits all but the routers and norms, which vLLM replicates (ReplicatedLinear, RMSNorm)
    tp8 = weight_bytes_per_gpu(DS, Layout(8, tp=8))["non_routed"]
    assert tp8 == pytest.approx((fp8_part + 2 * 2 * 129280 * 7168) / 8 + (58 * 7168 * 256 + 61 * 2 * 7168 + 7168) * 2)


def test_dispatch_bytes_per_token():
    # FP8 dispatch and BF16 combine of a 7,168-wide token to its 8 experts: 57,344 and 114,688 bytes
    assert ep_bytes_per_token(DS.shapes, 8) == (8 * 7168, 8 * 7168 * 2) == (57_344, 114_688)


def _decode(n: int, redundant: int, overlap: float, batch: int = 64):
    k = with_value(published_kernels(), Knob("overlap"), overlap)
    st = step(
        DS,
        H800,
        Layout(n, ep=n, dp_attention=True, redundant_experts=redundant),
        k,
        "decode",
        batch_per_gpu=batch,
        context=4989,
        mtp_tokens=1,
    )
    return st.tokens / batch / st.seconds, st.comm_s


@pytest.mark.parametrize("overlap", [0.0, 0.5, 1.0])
def test_more_gpus_at_the_same_batch_never_raise_the_per_user_speed(overlap):
    # the same work per GPU (64 sequences, 2 experts per GPU: 256 + redundant experts over N GPUs), spread wider:
    # communication per step never falls (DeepEP's bandwidth falls with EP) and the slowest GPU only gets slower
    grid = [(128, 0), (144, 32), (192, 128), (256, 256)]
    speeds, comms = zip(*(_decode(n, r, overlap) for n, r in grid))
    assert all(a >= b for a, b in zip(speeds, speeds[1:])), speeds
    assert all(a <= b for a, b in zip(comms, comms[1:])), comms
    # fewer GPUs with more experts each read more expert weights per step: narrower EP is slower, as DeepSeek's EP144 implies
    assert _decode(16, 0, overlap)[0] < speeds[0]


def test_a_stricter_speed_target_never_raises_tokens_per_gpu():
    k = published_kernels()
    rates = []
    for target in (10, 15, 20, 25, 30):
        b, _ = largest_batch(DS, H800, DECODE, k, context=4989, tokens_per_s_per_user=target, mtp_tokens=1)
        st = step(DS, H800, DECODE, k, "decode", batch_per_gpu=b, context=4989, mtp_tokens=1)
        rates.append(st.tokens / st.seconds)
    assert all(a >= b for a, b in zip(rates, rates[1:])), rates


def test_fp8_kv_never_lowers_the_batch():
    k = published_kernels()
    for target in (10, 20, 40):
        bf16, _ = largest_batch(DS, H800, DECODE, k, context=4989, tokens_per_s_per_user=target, mtp_tokens=1, kv_dtype="bf16")
        fp8, _ = largest_batch(DS, H800, DECODE, k, context=4989, tokens_per_s_per_user=target, mtp_tokens=1, kv_dtype="fp8")
        assert fp8 >= bf16


def test_step_is_a_sum_over_operators_at_their_own_precision():
    k = published_kernels()
    st = step(DS, H800, DECODE, k, "decode", batch_per_gpu=64, context=4989, mtp_tokens=1)
    assert st.seconds * 1000 == pytest.approx(sum(st.breakdown_ms.values()), rel=1e-3)
    slower_attention = with_value(k, Knob("compute", "attention_decode"), k.ops["attention_decode"].compute / 2)
    slow = step(DS, H800, DECODE, slower_attention, "decode", batch_per_gpu=64, context=4989, mtp_tokens=1)
    # MLA decode attention (BF16, compute-bound with two query tokens) doubles; FP8 GEMMs do not move
    assert slow.breakdown_ms["attention"] == pytest.approx(2 * st.breakdown_ms["attention"], rel=1e-3)
    assert slow.breakdown_ms["attention projections"] == pytest.approx(st.breakdown_ms["attention projections"])


def test_a_stricter_ttft_never_raises_prefill_tokens_per_gpu():
    k, prefill = published_kernels(), Layout(32, ep=32, dp_attention=True, redundant_experts=32)
    layouts = deployment_layouts("deepseek-v3")
    rates, fleets = [], []
    for ttft in (None, 2000, 600, 400, 250):  # None: no target
        service = replace(TWO_MILLION, ttft_ms=ttft)
        tokens, why = prefill_tokens_for_ttft(DS, H800, prefill, k, service, ttft)
        assert why != UNREACHABLE, ttft
        st = step(DS, H800, prefill, k, "prefill", tokens_per_gpu=tokens, prompt_len=service.input_len,
                  cached_fraction=service.cached_fraction)  # fmt: skip
        assert ttft is None or st.seconds * 1000 <= ttft
        rates.append(st.tokens / st.seconds)
        fleets.append(size_on(DS, H800, k, service, layouts).prefill_gpus)
    assert all(a >= b for a, b in zip(rates, rates[1:])), rates
    assert all(a <= b for a, b in zip(fleets, fleets[1:])), fleets
    assert rates[-1] < rates[0]  # a step of one prompt's uncached tokens reads the weights for fewer tokens
    t = TWO_MILLION
    tokens, why = prefill_tokens_for_ttft(DS, H800, prefill, k, t, 20)
    assert why == UNREACHABLE and tokens == math.ceil(t.input_len * (1 - t.cached_fraction))  # one prompt
    refused = size_on(DS, H800, k, replace(t, ttft_ms=20), layouts)
    assert isinstance(refused, Rejection) and "TTFT" in str(refused.limit), "an unreachable TTFT is a refusal, not a figure"


def test_prefill_lends_24_of_132_sms_to_the_hidden_all_to_all_and_decode_none():
    # DeepEP V1's normal kernels (prefill) run on 24 of H800's 132 SMs; its low-latency kernels (decode) on none
    k = published_kernels()
    assert k.normal_sm_share == pytest.approx(24 / 132, abs=1e-3)
    prefill = Layout(32, ep=32, dp_attention=True, redundant_experts=32)
    st = step(DS, H800, prefill, k, "prefill", tokens_per_gpu=8192, prompt_len=4383, cached_fraction=0.5625)
    hidden = st.comm_s - st.breakdown_ms["communication (not hidden)"] / 1000  # what the stage pairing hides
    assert 0 < hidden <= st.comm_s < st.compute_s
    assert st.breakdown_ms["SMs lent to communication"] == pytest.approx(k.normal_sm_share * hidden * 1000, rel=1e-3)
    no_sms = with_value(k, Knob("normal_sm_share"), 0.0)
    free = step(DS, H800, prefill, no_sms, "prefill", tokens_per_gpu=8192, prompt_len=4383, cached_fraction=0.5625)
    assert st.seconds - free.seconds == pytest.approx(k.normal_sm_share * hidden, rel=1e-3)
    dec = step(DS, H800, DECODE, k, "decode", batch_per_gpu=64, context=4989, mtp_tokens=1)
    assert dec.breakdown_ms["SMs lent to communication"] == 0


def test_a_measured_gemm_is_read_at_its_own_rows():
    import pandas as pd

    from estimator.kernels import measured_efficiencies

    points = [(16, 0.02, 0.30), (256, 0.40, 0.45), (1024, 0.60, 0.20), (4096, 0.70, 0.10)]  # (M, MFU, MBU) of one H200's fp8 GEMMs
    ops = pd.DataFrame(
        [
            {"catalog_name": "H200", "device_name": "H200 [cuda-x]", "operator": "gemm", "dtype": "fp8", "m": m, "mfu": c, "mbu": b}
            for m, c, b in points
        ]
    )
    e = measured_efficiencies(ops, H800)["gemm"]  # same architecture as the H800
    assert (e.compute, e.memory) == (0.70, 0.45)  # the best of each
    # 16 and 256 rows were memory-bound (MBU nearer its best than MFU): bandwidth follows the curve, FLOP/s keep their best;
    # 1,024 and 4,096 were compute-bound: the other way round
    assert e.curve == ((16, 0.70, 0.30), (256, 0.70, 0.45), (1024, 0.60, 0.45), (4096, 0.70, 0.45))
    assert (e.at(16).compute, e.at(16).memory) == (0.70, 0.30) and e.at(1).memory == 0.30 and e.at(1e6).compute == 0.70  # ends held
    assert e.at(64).memory == pytest.approx(0.375)  # 64 is halfway from 16 to 256 in log M
    assert e.at(2048).compute == pytest.approx(0.65)
    # a decode step (memory-bound GEMMs of ~64 rows) is slower read off the curve than at the best bandwidth of all shapes
    k = replace(published_kernels(), ops={**published_kernels().ops, "gemm": e})
    best = replace(k, ops={**k.ops, "gemm": replace(e, curve=())})
    on_curve = step(DS, H800, DECODE, k, "decode", batch_per_gpu=64, context=4989)
    assert (
        on_curve.breakdown_ms["attention projections"]
        > step(DS, H800, DECODE, best, "decode", batch_per_gpu=64, context=4989).breakdown_ms["attention projections"]
    )
    # the sensitivity table moves a curve by its best point, keeping its shape
    half = with_value(k, Knob("memory", "gemm"), 0.225).ops["gemm"]
    assert half.memory == 0.225 and half.at(16).memory == pytest.approx(0.15) and half.at(16).compute == 0.70


def test_a_served_mtp_module_takes_weight_and_kv_room():
    from core.opcounts import expert_params, mtp_module_params
    from estimator.memory import kv_room_sequences

    # one more MoE layer: attention 187,105,280 + shared expert 44,040,192 + router 7,168 x 256 + eh_proj 2 x 7,168 x 7,168
    assert mtp_module_params(DS.shapes) == 187_105_280 + 44_040_192 + 1_835_008 + 102_760_448 == 335_740_928
    # with its 256 routed experts and the checkpoint's own copies of embedding and head: 671B + 14B = DeepSeek's "685B"
    checkpoint = 671_026_404_352 + 335_740_928 + 256 * expert_params(DS.shapes) + 2 * 129_280 * 7_168
    assert checkpoint == pytest.approx(685e9, rel=1e-3)
    w0, w1 = weight_bytes_per_gpu(DS, DECODE), weight_bytes_per_gpu(DS, DECODE, mtp=1)
    # FP8 but for its router (BF16, as vLLM builds routers unquantized), replicated under DP attention
    assert w1["non_routed"] - w0["non_routed"] == 335_740_928 - 1_835_008 + 2 * 1_835_008
    assert w1["routed"] - w0["routed"] == 2 * 44_040_192  # 288 experts over 144 GPUs: 2 each
    assert DS.shapes.kv_bytes_per_token("bf16", extra_layers=1) == 62 * 576 * 2  # the module's own latent cache
    k = published_kernels()
    assert kv_room_sequences(DS, H800, DECODE, k, 4989, "bf16", mtp=1) < kv_room_sequences(DS, H800, DECODE, k, 4989, "bf16")


def test_deepseek_prefill_runs_its_published_16k_token_steps():
    from estimator.sizing import default_layouts

    # deepseek-ai/profile-data: prefill at EP32, TP1, 16K tokens per GPU, "in line with ... actual online deployment"
    decode, prefill = default_layouts(DS, "deepseek-v3", H800, published_kernels())
    assert (prefill.num_gpus, prefill.ep, prefill.step_tokens) == (32, 32, 16384) and decode.step_tokens == 0
    assert (decode.num_gpus, decode.ep, decode.redundant_experts, decode.dp_attention) == (144, 144, 32, True)  # day 6: EP144, DP144
    assert size_on(DS, H800, published_kernels(), TWO_MILLION, (prefill, decode)).option.prefill_tokens_per_gpu == 16384


def test_two_micro_batches_hide_communication_stage_by_stage_not_in_total():
    # DeepSeek-V3 report, section 3.4.1: the attention and MoE of one micro-batch overlap the dispatch and combine of the
    # other. Worked by hand: stages (attn A | combine B), (attn B | dispatch A), (MoE A | dispatch B), (MoE B | combine A).
    from estimator.serving import exposed_per_moe_layer

    assert exposed_per_moe_layer(1.0, 1.0, 1.0, 1.0) == 0  # every stage balanced: all hidden
    assert exposed_per_moe_layer(2.0, 3.0, 0.0, 0.0) == 0  # nothing to hide
    assert exposed_per_moe_layer(0.0, 0.0, 1.0, 2.0) == 6.0  # nothing to hide behind: both micro-batches' 1 + 2 exposed
    # comm (3.6 + 6.97) per micro-batch about equals computation (5.2 + 5.4), yet 6.97 - 5.2 + 6.97 - 5.4 is exposed
    assert exposed_per_moe_layer(5.2, 5.4, 3.6, 6.97) == pytest.approx(6.97 + 5.2 + 5.4 + 6.97 - 2 * (5.2 + 5.4))
    assert exposed_per_moe_layer(5.2, 5.4, 3.6, 6.97) == pytest.approx(3.34)


def test_kv_room_as_vllm_and_tensorrt_llm_size_their_caches():
    # Llama-3.1-70B in FP16 on two A100-80GB (TP2) at 5,500 tokens: weights 70,552,387,584 bytes per GPU split by TP, and
    # the norms, 80 x 2 x 8,192 + 8,192 in BF16, on each: 70,555,025,408 bytes; 80 GiB of memory
    from estimator.memory import activation_bytes, kv_room_sequences

    a, lay, gpu, k = load_arch("llama-3.1-70b", "fp16"), Layout(2, tp=2), get_gpu("A100-80GB"), published_kernels()
    assert gpu.memory_bytes == 80 * 2**30
    assert weight_bytes_per_gpu(a, lay)["total"] == 70_552_387_584 + (80 * 2 * 8192 + 8192) * 2 == 70_555_025_408
    # a forward of 8,192 tokens: gate_up 2 x 28,672 / 2 plus 4 x 8,192 values per token, BF16
    assert activation_bytes(a, lay, 8192) == 8192 * (28_672 + 32_768) * 2 == 1_006_632_960
    assert a.shapes.kv_bytes_per_token("bf16") == 2 * 8 * 128 * 80 * 2 == 327_680  # K and V, 8 KV heads, 80 layers
    # vLLM 0.32 profiles its A100 token budget, 2,048 tokens (core/data/engines/vllm-0.32.toml): 251,658,240 bytes
    taken = 70_555_025_408 + 2048 * 61_440 * 2 + 2 * 2**30  # weights, activations, the 2 GiB reserve
    # vLLM: 0.92 x total - taken = 6,073,230,950 bytes; a sequence takes 344 pages of 16 tokens: 1,803,550,720 bytes
    assert kv_room_sequences(a, gpu, lay, k, 5500, "bf16") == int((0.92 * 80 * 2**30 - taken) // (327_680 * 5504)) == 3
    # TensorRT-LLM at its perf overview's 0.95 of what is free, after a profile of its 8,192-token budget: 172 pages of 32
    taken = 70_555_025_408 + 1_006_632_960 + 2 * 2**30
    assert (
        kv_room_sequences(a, gpu, lay, k, 5500, "bf16", headroom=0.95, rule="trtllm")
        == int(0.95 * (80 * 2**30 - taken) // (327_680 * 5504))
        == 6
    )


def test_the_ffn_activation_reads_gate_and_up_and_writes_the_down_input():
    # Llama-3.1-8B, 64 BF16 decode tokens on an H100: 64 x 32 layers x 14,336 x (2 x 2 bytes read + 2 written) = 176 MB
    k = published_kernels()
    a, gpu = load_arch("llama-3.1-8b"), get_gpu("H100")
    st = step(a, gpu, Layout(1), k, "decode", batch_per_gpu=64, context=1000)
    seconds = 64 * 32 * 14_336 * 6 / (k.ops["elementwise"].memory * gpu.bandwidth_bytes_per_s)
    assert st.breakdown_ms["FFN activation"] == pytest.approx(seconds * 1000, rel=1e-3) and st.op_bounds["FFN activation"] == "memory"
    # DeepSeek-V3 in FP8 on H800, EP32 prefill: per routed (token, expert) pair 2 x 2,048 BF16 read, 2,048 FP8 written
    pre = step(DS, H800, Layout(32, ep=32, dp_attention=True), k, "prefill", tokens_per_gpu=4096, prompt_len=4096)
    assert pre.breakdown_ms["FFN activation"] > 0


def _llama_8b_kernels(tp: int) -> int:
    # Llama-3.1-8B, 32 layers, one micro-batch: the cost list runs qkv_proj, o_proj, attention, gate_up, down, the
    # activation and the norms in every layer (7) and the LM head once (225); vLLM's layer runs 3 more (the second norm,
    # rotary, the KV-cache write) and its model 2 more (embedding, final norm): 98; TP adds two all-reduces a layer
    return 7 * 32 + 1 + 3 * 32 + 2 + (2 * 32 if tp > 1 else 0)


def test_a_step_has_a_floor_of_kernel_launches_and_all_reduce_latencies():
    # kernels.toml: a captured graph's 0.58 us per kernel, 6.4 us per launch outside one; 7 us per all-reduce
    k, a, gpu = published_kernels(), load_arch("llama-3.1-8b"), get_gpu("H100")
    assert (k.graph_gap_s, k.eager_launch_s, k.allreduce_latency_s) == pytest.approx((0.58e-6, 6.4e-6, 7e-6))
    assert "ocannl" in k.launch_source and "vllm-project/vllm#24111" in k.allreduce_source
    st = step(a, gpu, Layout(8, tp=8), k, "decode", batch_per_gpu=1, context=1150)  # 8 tokens an engine step: captured
    assert _llama_8b_kernels(8) == 387
    assert st.breakdown_ms["kernel launches"] == pytest.approx(387 * 0.58e-3, abs=1e-4)  # breakdowns keep 4 decimals of a ms
    assert st.breakdown_ms["communication (not hidden)"] >= 64 * 7e-3  # 64 all-reduces of 7 us before any byte moves
    assert st.seconds * 1000 >= 387 * 0.58e-3 + 64 * 7e-3  # TPOT 0.67 ms at least: 1 ms was met at 0.9 before, 1.5 now
    # past vLLM's largest captured step (512 tokens) kernels launch one by one: the host's 6.4 us a launch (2.07 ms for
    # 323 kernels) would bind only where it outlasts running them, never at 600 sequences of an 8B model, so each
    # kernel still waits its launch gap and no more
    captured = step(a, gpu, Layout(1), k, "decode", batch_per_gpu=512, context=1150)
    eager = step(a, gpu, Layout(1), k, "decode", batch_per_gpu=600, context=1150)
    assert captured.breakdown_ms["kernel launches"] == pytest.approx(_llama_8b_kernels(1) * 0.58e-3, abs=1e-4)
    assert eager.breakdown_ms["kernel launches"] == captured.breakdown_ms["kernel launches"]
    assert sum(eager.breakdown_ms.values()) > _llama_8b_kernels(1) * 6.4e-3


def test_the_scheduler_waits_only_where_it_outlasts_the_gpu():
    from core.engines import engine_rules
    from estimator.step_floor import exposed_scheduler_s, scheduler_s

    k, vllm = published_kernels(), engine_rules("vllm")
    # vLLM 0.32: 1.12 us per running sequence (vllm-project/vllm#46112); a TP4 engine of 256 sequences per GPU holds 1,024
    assert scheduler_s(256, Layout(4, tp=4), vllm) == pytest.approx(1024 * 1.12e-6)
    # asynchronous scheduling (vLLM 0.32's default): only what outlasts the GPU's step is waited for
    assert exposed_scheduler_s(2e-3, 1.5e-3, k) == pytest.approx(0.5e-3) and exposed_scheduler_s(1e-3, 1.5e-3, k) == 0.0
    assert engine_rules("trtllm").scheduler_us_per_sequence == 0.0  # no TensorRT-LLM figure looked up: none added


def test_operators_and_assumptions_are_typed_names_that_fail_loudly():
    from core.errors import CatalogError
    from estimator.layer_ops import Op
    from estimator.serving import Stage, stage_seconds

    # the stage sums read operators by enum; one without a stage is an error, not a silent zero in the overlap
    assert stage_seconds({Op.ATTENTION: 1.0, Op.NORMS: 0.5, Op.ROUTED_EXPERTS: 2.0}, Stage.ATTENTION) == 1.5
    with pytest.raises(KeyError, match="without an overlap stage"):
        stage_seconds({Op.ATTENTION: 1.0, Op.KERNEL_LAUNCHES: 0.1}, Stage.ATTENTION)
    with pytest.raises(ValueError):
        Op("attention projection")  # a misspelt operator name is not an operator
    # ranged assumptions are typed: an operator class's part, or a field; a misspelt class is refused, not left unchanged
    k = published_kernels()
    assert str(Knob("compute", "gemm")) == "gemm.compute" and Knob("compute", "gemm") in k.ranges
    with pytest.raises(CatalogError, match="no ranged efficiency gemm_fp6.compute"):
        Knob("compute", "gemm_fp6")
