"""The serving model on the architectures part 1 taught fleetcal to read: experts touched by a batch, weights per GPU by
component and format, each figure derived here by hand from the model's config.json or published card."""

from __future__ import annotations

import json
import shutil

import pytest

from core.hardware import get_gpu
from core.models import MODEL_DIR, get_model
from estimator.arch import Layout, load_arch
from estimator.attention_ops import attention_costs, decode_attended, prefill_attended
from estimator.kernels import published_kernels
from estimator.kv_cache import sequence_bytes, state_bytes_per_layer, vllm_block
from estimator.layer_ops import Batch, moe_costs, touched_experts
from estimator.memory import activation_bytes, kv_room_sequences, weight_bytes_per_gpu
from estimator.mixer_ops import decode_flops_per_token, mixer_costs
from estimator.serving import step

H200 = get_gpu("H200")


def _batch(model: str, tokens: float, layout: Layout | None = None) -> Batch:
    return Batch(load_arch(model), H200, layout or Layout(1), published_kernels(), "decode", tokens, tokens, 1000.0, 1.0, "bf16", 1.0)


def test_a_decode_step_reads_the_experts_its_tokens_touch():
    # Mixtral-8x7B, 8 experts, top-2: one token touches 2; 64 tokens 8 x (1 - (6/8)^64), all but 1e-7 of them
    assert touched_experts(_batch("mixtral-8x7b", 1)) == pytest.approx(2.0)
    assert touched_experts(_batch("mixtral-8x7b", 64)) == pytest.approx(8 * (1 - 0.75**64))
    # Qwen3-30B-A3B, 128 experts, top-8, at batch 4: 128 x (1 - (120/128)^4) = 29.0
    assert touched_experts(_batch("qwen3-30b-a3b", 4)) == pytest.approx(128 * (1 - (120 / 128) ** 4))
    # EP 8 with data-parallel attention: 16 experts a GPU; every token of the 8 GPUs can route to them
    lay = Layout(8, ep=8, dp_attention=True)
    assert touched_experts(_batch("qwen3-30b-a3b", 2, lay)) == pytest.approx(16 * (1 - (120 / 128) ** 16))


def test_mixtral_decodes_at_batch_one_below_the_memory_bound_ceiling_and_near_it():
    """The issue: Mixtral decoded at 32 tok/s at batch 1 on one H200, every expert read; the ceiling is ~186. One token
    reads the 2 experts it is routed to in each of 32 layers, 3 x 4,096 x 14,336 weights each, and the rest of the
    model (12.9B active parameters, its card, less the 0.13B input embedding it only gathers), all in BF16."""
    spec, a = get_model("mixtral-8x7b"), load_arch("mixtral-8x7b")
    expert = 3 * 4096 * 14336
    assert spec.expert_params == expert
    read = (spec.total_params - 6 * 32 * expert - 32000 * 4096) * 2  # 2 of 8 experts per layer, no embedding
    ceiling = H200.bandwidth_bytes_per_s / read  # tokens/s if the weights streamed at the datasheet bandwidth
    assert 180 < ceiling < 195  # the issue's ~186
    st = step(a, H200, Layout(1), published_kernels(), "decode", batch_per_gpu=1, context=1000)
    assert ceiling / 3 < st.tokens / st.seconds < ceiling


def test_a_tied_lm_head_is_held_once():
    # SmolLM2-135M ties its head to the embedding: its weights are its 134.5M parameters x 2 bytes, the matrix once
    spec = get_model("smollm2-135m")
    assert spec.tied_embeddings
    assert weight_bytes_per_gpu(load_arch("smollm2-135m"), Layout(1))["total"] == 2 * spec.total_params


def test_block_scaled_fp8_is_read_from_a_users_checkpoint(tmp_path):
    # a user's own Kimi K2 directory (not the catalog's name) still gets the block-scaled FP8 kernels its config declares
    shutil.copy(MODEL_DIR / "kimi-k2" / "config.json", tmp_path / "config.json")
    assert load_arch(str(tmp_path)).fp8_block_scaled and load_arch("deepseek-v3").fp8_block_scaled
    assert not load_arch(str(tmp_path), "bf16").fp8_block_scaled


def test_gemma3_holds_five_times_the_sequences_of_all_global_attention_at_32k():
    """The issue: Gemma-3-27B read as 62 global layers held 4 sequences of 32K on an H200; 52 of its 62 layers keep a
    1,024-token window. vLLM's hybrid manager (kv_cache.py) groups 10 layers (the fewest of a kind): the 10 global
    layers one group holding every page, the 52 sliding ones 6 groups (8 padding layers) holding 1,024 / 16 + 1 = 65
    pages each. A page is 16 tokens x 2 x 16 KV heads x 128 x 2 bytes = 131,072 bytes; a block holds 10 of them."""
    a, k = load_arch("gemma-3-27b"), published_kernels()
    per_seq = 131_072 * 10 * (2048 + 6 * 65)
    assert sequence_bytes(a.shapes, 32768, "bf16") == per_seq == 3_195_535_360
    all_global = 62 * 2 * 16 * 128 * 2 * 32768  # 16.6 GB a sequence if every layer kept all 32K tokens
    # vLLM 0.32 (core/data/engines/vllm-0.32.toml): 0.92 of the memory, less weights, an 8,192-token activation profile
    # and the 2 GiB reserve
    room = 0.92 * H200.memory_bytes - weight_bytes_per_gpu(a, Layout(1))["total"] - activation_bytes(a, Layout(1), 8192) - 2 * 2**30
    held = kv_room_sequences(a, H200, Layout(1), k, 32768, "bf16")
    assert held == int(room // per_seq) == 25 and int(room // all_global) == 4  # the "~20 sequences against 4"
    # TensorRT-LLM's pages layer by layer, no groups: 10 x 1,024 pages of 32 tokens + 52 x 33 (a 1,024-token window over
    # 32 pages and the one it starts in)
    assert sequence_bytes(a.shapes, 32768, "bf16", rule="trtllm") == 8192 * 32 * (10 * 1024 + 52 * 33)


def test_windows_cap_what_a_decode_step_reads_and_scores():
    # Mistral-7B: 32 layers with a 4,096-token window; at 8,000 tokens of context a decode token reads 4,096 tokens' KV,
    # 2 x 8 KV heads x 128 x 2 bytes each, and scores them in 32 heads of 128: 4 x 32 x 128 x 4,096 FLOPs a layer
    x = _batch("mistral-7b", 1)
    x = Batch(x.a, x.gpu, x.layout, x.k, "decode", 1, 1, 8000.0, 1.0, "bf16", 1.0)
    (att,) = [c for c in attention_costs(x) if c.name == "attention"]
    assert (att.layers, att.nbytes, att.flops) == (32, 4096 * 2 * 8 * 128 * 2, 4 * 32 * 128 * 4096)
    # Llama 4 Scout: 36 chunked layers of 8,192 and 12 global; past the first chunk a decode step attends half a chunk
    assert decode_attended("chunked", 8192, 4000) == 4000 and decode_attended("chunked", 8192, 20000) == 4096
    assert decode_attended("sliding", 1024, 500) == 500 and decode_attended("global", 0, 20000) == 20000


def test_prefill_attends_min_of_position_and_window_summed_over_the_prompt():
    # a 4,096-token prompt through a 1,024-token window: each position p attends min(p, 1,024); the mean over positions
    discrete = sum(min(p, 1024) for p in range(1, 4097)) / 4096
    assert prefill_attended("sliding", 1024, 0, 4096) == pytest.approx(discrete, rel=1e-3)
    # chunks of 8,192 over a 20,000-token prompt: two whole chunks then 3,616 positions, each attending its place in its chunk
    chunked = sum(p % 8192 for p in range(20000)) / 20000
    assert prefill_attended("chunked", 8192, 0, 20000) == pytest.approx(chunked, rel=1e-3)
    # global attention: the mean of the positions, as before (cached + uncached / 2 with a cached prefix)
    assert prefill_attended("global", 0, 1000, 3000) == 2000


def test_each_operator_carries_its_own_efficiency_source():
    """GQA decode attention is not FlashMLA's, a dense model's TP all-reduce not DeepEP's."""
    k = published_kernels()
    llama = step(load_arch("llama-3.1-70b"), H200, Layout(4, tp=4), k, "decode", batch_per_gpu=8, context=2000)
    assert "FlashInfer" in llama.op_sources["attention"] and "FlashMLA" not in llama.op_sources["attention"]
    assert "DeepEP" not in llama.op_sources["communication (not hidden)"]
    ds = step(load_arch("deepseek-v3"), H200, Layout(8, ep=8, dp_attention=True), k, "decode", batch_per_gpu=8, context=2000)
    assert "FlashMLA" in ds.op_sources["attention"] and "DeepEP" in ds.op_sources["communication (not hidden)"]


def test_qwen3_next_keeps_a_state_per_sequence_in_its_linear_layers():
    """Qwen3-Next-80B-A3B: 36 gated DeltaNet layers, 12 of full attention (2 KV heads of 256). A linear layer's state is
    32 value heads x 128 x 128 plus a 3-token convolution window over 2 x 16 x 128 + 32 x 128 channels: 548,864 values,
    1,097,728 bytes in BF16. vLLM grows the attention block to hold it: 16 x ceil(1,097,728 / (16 x 2,048)) = 544 tokens,
    a page of 544 x 2,048 = 1,114,112 bytes (the state padded to it); groups of 12 layers: the full layers one group
    holding ceil(32,768 / 544) = 61 pages at 32K, the linear ones 3 groups of one page each."""
    s = load_arch("qwen3-next-80b-a3b").shapes
    assert state_bytes_per_layer(s, 1) == (32 * 128 * 128 + 3 * (2 * 16 * 128 + 32 * 128)) * 2 == 1_097_728
    assert vllm_block(s, "bf16", 1) == 544
    assert sequence_bytes(s, 32768, "bf16") == 1_114_112 * 12 * (61 + 3) == 855_638_016
    # at TP 2: one KV head each (1,024 bytes a token), half of each state; the block stays 544 tokens
    assert vllm_block(s, "bf16", 2) == 544 and sequence_bytes(s, 32768, "bf16", tp=2) == 544 * 1024 * 12 * (61 + 3)
    # a longer context adds only the full layers' pages: the state does not grow
    assert sequence_bytes(s, 65536, "bf16") - sequence_bytes(s, 32768, "bf16") == 1_114_112 * 12 * (121 - 61)


def test_a_state_update_reads_and_writes_each_sequences_state_once_a_step():
    # gated DeltaNet, per token and layer: 32 heads x 7 x 128 x 128 (S k, rank-1 update, decay, S q) + the convolution,
    # 2 x 4 taps x 8,192 channels; bytes: 8 sequences' states read and written
    s = load_arch("qwen3-next-80b-a3b").shapes
    assert decode_flops_per_token(s, "linear") == 32 * 7 * 128 * 128 + 2 * 4 * 8192
    x = Batch(load_arch("qwen3-next-80b-a3b"), H200, Layout(1), published_kernels(), "decode", 8, 8, 4000.0, 1.0, "bf16", 1.0)
    (op,) = [c for c in mixer_costs(x) if c.name == "linear attention"]
    assert (op.layers, op.nbytes, op.flops) == (36, 2 * 8 * 1_097_728, 8 * decode_flops_per_token(s, "linear"))
    assert "borrowed from attention_decode_gqa" in op.eff.source
    # Mamba-2 (Nemotron-H-8B): 128 heads x 5 x 64 x 128 + 2 x 4 taps x (128 x 64 + 2 x 8 x 128) channels
    nem = load_arch("nemotron-h-8b").shapes
    assert decode_flops_per_token(nem, "mamba") == 128 * 5 * 64 * 128 + 2 * 4 * (128 * 64 + 2 * 8 * 128)


def test_gpt_oss_is_served_as_its_checkpoint_stores_it():
    """The issue: gpt-oss-120b's MXFP4 experts counted as BF16 (234 GB). Its checkpoint keeps the experts in MXFP4 (4.25
    bits a weight with the block scales) and everything else in BF16: 60.8 GiB (model card, table 1), on one 80 GB GPU."""
    spec, a = get_model("gpt-oss-120b"), load_arch("gpt-oss-120b")
    assert a.format_of("routed_experts") == "mxfp4" and a.format_of("attention") == "bf16" and a.format_of("router") == "bf16"
    experts = spec.component_params["routed_experts"]
    by_hand = experts * 4.25 / 8 + (spec.total_params - experts) * 2
    w = weight_bytes_per_gpu(a, Layout(1))["total"]
    assert w == pytest.approx(by_hand) and w / 2**30 == pytest.approx(60.8, rel=0.01)
    assert kv_room_sequences(a, get_gpu("H100"), Layout(1), published_kernels(), 2000, "bf16") > 0
    # --weight-dtype bf16 serves every linear layer in BF16: 234 GB, the figure
    assert weight_bytes_per_gpu(load_arch("gpt-oss-120b", "bf16"), Layout(1))["total"] == pytest.approx(2 * spec.total_params)


def test_gemms_compute_natively_in_fp4_on_blackwell_and_weight_only_elsewhere():
    k = published_kernels()
    for gpu, prec, cls in (("B200", "fp4", "gemm_fp4"), ("H200", "bf16", "gemm_weight_only")):  # gpt-oss's MXFP4 experts
        x = Batch(load_arch("gpt-oss-120b"), get_gpu(gpu), Layout(1), k, "prefill", 8192, 4, 1024.0, 1.0, "bf16", 1.0, 2048.0)
        (experts,) = [c for c in moe_costs(x) if c.name == "routed experts"]
        assert experts.precision == prec and experts.eff.source == k.ops[cls].source
    # INT4 (AWQ/GPTQ) is weight-only everywhere: Llama-3.1-8B's linear layers read at 4.156 bits, computed in BF16
    a = load_arch("llama-3.1-8b", "int4")
    assert a.format_of("attention") == "int4" and a.format_of("lm_head") == "bf16"
    dec = step(a, get_gpu("B200"), Layout(1), k, "decode", batch_per_gpu=1, context=1000)
    assert "Marlin" in dec.op_sources["dense FFN"]
    # the FP4 GEMMs run at B200's FP4 peak: a compute-bound NVFP4 prefill of Llama-3.1-70B beats its FP8 one
    b200, lay = get_gpu("B200"), Layout(1)
    fp4, fp8 = (step(load_arch("llama-3.1-70b", d), b200, lay, k, "prefill", tokens_per_gpu=8192, prompt_len=8192)
                for d in ("nvfp4", "fp8"))  # fmt: skip
    assert fp4.breakdown_ms["dense FFN"] == pytest.approx(fp8.breakdown_ms["dense FFN"] / 2, rel=0.15)


@pytest.mark.parametrize(
    ("model", "layout", "says"),
    [
        ("llama-3.1-70b", Layout(3, tp=3), "64 attention heads do not divide by TP 3"),  # vLLM verify_with_parallel_config
        ("smollm2-360m", Layout(3, tp=3), "5 KV heads neither divide by TP 3 nor divide it"),  # its 15 heads do
        ("mixtral-8x7b", Layout(16, ep=16, dp_attention=True), "do not divide by EP 16"),
        ("llama-3.1-8b", Layout(2, ep=2), "no routed experts to spread"),
        ("llama-3.1-70b", Layout(16, tp=16), "TP 16 spans more than the 8 GPUs"),
        ("smollm2-135m", Layout(32, pp=32), "PP 32 is more stages than smollm2-135m's 30 layers"),
    ],
)
def test_layouts_vllm_cannot_serve_are_refused_in_one_line(model, layout, says):
    from core.errors import CatalogError
    from estimator.arch import check_layout

    with pytest.raises(CatalogError, match=says):
        check_layout(load_arch(model), layout)


def test_linear_attention_heads_must_divide_by_tp_and_layouts_that_exist_pass():
    from dataclasses import replace

    from core.errors import CatalogError
    from estimator.arch import check_layout, tp_limit

    # Qwen3-Next's DeltaNet state is split by its 16 key and 32 value heads: with 30 value heads TP 4 cannot split it
    nxt = load_arch("qwen3-next-80b-a3b")
    odd = replace(nxt, shapes=replace(nxt.shapes, mixer={**nxt.shapes.mixer, "value_heads": 30}))
    with pytest.raises(CatalogError, match=r"linear-attention or Mamba-2 heads \(16, 30\) do not divide by TP 4"):
        check_layout(odd, Layout(4, tp=4))
    check_layout(nxt, Layout(8, tp=8))  # 2 KV heads, each replicated on 4 GPUs
    # TP inside the GB200 NVL72's 72-GPU domain; PCIe TP4 on L40S (a server's 8 GPUs), as TensorRT-LLM ran it
    assert tp_limit(get_gpu("GB200")) == 72 and tp_limit(get_gpu("L40S")) == tp_limit(H200) == 8
    check_layout(load_arch("llama-3.1-70b"), Layout(16, tp=16, gpus_per_node=tp_limit(get_gpu("GB200"))))
    check_layout(load_arch("llama-3.1-70b"), Layout(4, tp=4, gpus_per_node=tp_limit(get_gpu("L40S"))))


def test_plan_lays_a_small_moe_on_fewer_than_eight_gpus_and_spans_an_nvl72():
    """The issue: plan never went below 8 GPUs for any MoE. Now TP 1, 2 and 4 with the experts split (vLLM's default) and
    EP 2 and 4 are candidates; on a GB200 NVL72 expert parallelism spans its 72-GPU NVLink domain."""
    from estimator.plan_search import candidate_layouts

    h200 = candidate_layouts(load_arch("qwen3-30b-a3b"), "qwen3-30b-a3b", H200)
    assert {(lay.num_gpus, lay.tp, lay.ep) for lay in h200} >= {(1, 1, 1), (2, 2, 1), (4, 4, 1), (2, 1, 2), (4, 1, 4)}
    assert all(lay.gpus_per_node == 8 for lay in h200)
    nvl72 = candidate_layouts(load_arch("deepseek-v3"), "deepseek-v3", get_gpu("GB200"))
    assert any(lay.ep == 72 and lay.gpus_per_node == 72 for lay in nvl72)
    # Mixtral has 8 experts: no EP beyond 8
    assert max(lay.ep for lay in candidate_layouts(load_arch("mixtral-8x7b"), "mixtral-8x7b", H200)) == 8
    # DeepSeek-V3 in FP8 does not fit 8 H100s at TP 8 (84 GB each): pipelines of 2 and 4 TP8 stages are tried
    pipes = [lay for lay in candidate_layouts(load_arch("deepseek-v3"), "deepseek-v3", get_gpu("H100")) if lay.pp > 1]
    assert {(lay.num_gpus, lay.tp, lay.pp) for lay in pipes} == {(16, 8, 2), (32, 8, 4)}


def test_a_pipeline_round_is_pp_stage_times_of_its_slowest_stage_plus_the_transfers():
    """Llama-3.1-70B on 8 H100s as TP4 x PP2: vLLM keeps 2 batches in flight, each stage 40 of the 80 layers; the last
    also runs the LM head. A round (every sequence one token) = 2 x (the layers' time x 40/80 + the head + one transfer of
    the batch's hidden states and residual, 2 x 8,192 x 2 bytes a token over NVLink at the all-reduce's share)."""
    k, a, h100 = published_kernels(), load_arch("llama-3.1-70b"), get_gpu("H100")
    one = step(a, h100, Layout(4, tp=4), k, "decode", batch_per_gpu=32, context=2000)
    two = step(a, h100, Layout(8, tp=4, pp=2), k, "decode", batch_per_gpu=32, context=2000)
    head, layers = one.breakdown_ms["LM head and sampling"], sum(v for n, v in one.breakdown_ms.items() if n != "LM head and sampling")
    transfer = 2 * 32 * 2 * 8192 * 2 / (k.allreduce_nvlink_fraction * 900e9 / 2) * 1000
    assert two.breakdown_ms["pipeline transfer"] == pytest.approx(transfer, abs=1e-4)  # ms, to 4 decimals
    assert two.seconds * 1000 == pytest.approx(2 * (layers * 40 / 80 + head) + transfer, rel=1e-3)
    assert two.tokens == one.tokens == 32  # per GPU per round: each of its 32 sequences one token
    # memory: TP4 x PP2 holds what TP8 does, weights and KV per GPU alike (the norms aside)
    tp8 = kv_room_sequences(a, h100, Layout(8, tp=8), k, 3000, "bf16")
    assert kv_room_sequences(a, h100, Layout(8, tp=4, pp=2), k, 3000, "bf16") == pytest.approx(tp8, abs=1)


def test_predict_takes_pp_and_refuses_a_tp_the_model_cannot_split(capsys):
    from fleetcal.cli import main

    args = ["predict", "--model", "llama-3.1-70b", "--gpu", "H100", "--phase", "decode", "--batch-per-gpu", "8", "--json"]
    assert main([*args, "--tp", "4", "--pp", "2"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["layout"]["decode"]["pp"] == 2 and out["layout"]["decode"]["num_gpus"] == 8
    assert "pipeline transfer" in out["breakdown_ms"]["decode"]
    assert main([*args, "--tp", "3"]) == 2  # the issue's --tp 3: 64 heads
    err = capsys.readouterr().err.strip()
    assert "64 attention heads do not divide by TP 3" in err and len(err.splitlines()) == 1


def test_plan_serves_a_small_moe_on_fewer_than_eight_gpus(tmp_path, capsys):
    """The issue: plan asked for 8 GPUs or more for any MoE (144 H100 for Qwen3-30B-A3B before part 1). At 2 requests/s
    of 1,000/1,000 tokens one H200 holds Qwen3-30B-A3B's weights (61 GB in BF16) and the traffic."""
    from fleetcal.cli import main

    assert main(["plan", "--model", "qwen3-30b-a3b", "--gpu", "H200", "--input-len", "1000", "--output-len", "1000",
                 "--requests-per-s", "2", "--ttft-ms", "2000", "--tpot-ms", "50", "--samples", "0", "--json",
                 "--plot", str(tmp_path)]) == 0  # fmt: skip
    doc = json.loads(capsys.readouterr().out)
    (row,) = doc["rows"]
    assert row["gpu"] == "H200" and row["gpus"] < 8 and row["layout"] in ("1x TP1", "2x TP2", "4x TP4", "2x EP2 DP-attn", "4x EP4 DP-attn")


def test_predict_on_the_cpu_refuses_what_its_step_model_does_not_cost(capsys):
    """predict --device cpu does not go through load_arch: its step model (measured operator curves of a dense model)
    ignores experts and windows, so such a model is refused there in one line, before any measurement is looked for."""
    from fleetcal.cli import main

    for model, says in (("mixtral-8x7b", "routed experts"), ("gemma-3-27b", "sliding layers"), ("qwen3-next-80b-a3b", "linear layers")):
        assert main(["predict", "--model", model, "--device", "cpu", "--phase", "decode"]) == 2
        err = capsys.readouterr().err.strip()
        assert says in err and err.endswith("use --gpu") and len(err.splitlines()) == 1


def test_the_new_families_validation_rows_predict_and_mixtral_is_gated():
    """Issue 33: published rows for the families modelled now (core/data/validation.toml, each with its source); the
    Mixtral-8x7B rows and gpt-oss-20b's one-B200 rows, whose conditions their pages state, are gated. A Blackwell row is
    gated only with a note that says why its conditions are read from its source (B200's GEMMs, attention and NVFP4 experts
    read the measured database; MXFP4 experts there keep the published FP4 figure, which the note says)."""
    import estimator.validation as v

    rows, _ = v.load_rows()
    families = {"mixtral-8x7b", "qwen3-30b-a3b", "qwen3-235b-a22b", "gpt-oss-120b", "gpt-oss-20b", "llama-4-scout"}
    new = [r for r in rows if r.model in families]
    assert {r.model for r in new} == families
    assert {r.model for r in rows if r.gate} >= {"mixtral-8x7b", "gpt-oss-20b", "llama-3.1-8b", "deepseek-v3"}
    blackwell = [r for r in rows if r.gpu == "B200"]
    assert blackwell and all(r.note.startswith("gated: every condition is read from the source") for r in blackwell if r.gate)
    assert any(not r.gate for r in blackwell)  # the rest keep their open conditions in their notes
    table = v.validate(new)
    assert table["predicted"].gt(0).all() and len(table) == len(new)


def test_every_kind_and_format_read_is_costed_or_refused_by_name():
    """fleetcal models prints how each feature is costed (estimator.arch.COSTED) or that it is refused (NOT_YET_COSTED):
    every attention kind a family rule can give, attention sinks, experts and every weight format is in one of them."""
    from core.config_fields import RULE_KINDS
    from core.dtypes import WEIGHT_FORMATS
    from estimator.arch import COSTED, NOT_YET_COSTED

    read = {k for kinds in RULE_KINDS.values() for k in kinds} | set(WEIGHT_FORMATS) - {"fp16", "fp32"} | {"sinks", "moe"}
    assert read <= set(COSTED) | set(NOT_YET_COSTED)
