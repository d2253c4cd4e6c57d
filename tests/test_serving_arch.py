"""The serving model on the architectures part 1 taught fleetcal to read: experts touched by a batch, weights per GPU by
component and format, each figure derived here by hand from the model's config.json or published card."""

from __future__ import annotations

import shutil

import pytest

from core.hardware import get_gpu
from core.models import MODEL_DIR, get_model
from estimator.arch import Layout, load_arch
from estimator.kernels import published_kernels
from estimator.layer_ops import Batch, touched_experts
from estimator.memory import weight_bytes_per_gpu
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
