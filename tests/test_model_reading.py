"""Reading config.json by model_type (core/reader.py): each family's layer kinds, MoE layers and widths read from its
own keys, and every config fleetcal cannot read refused in one line that names what is wrong, exit status 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.errors import CatalogError
from core.families import families, refused
from core.models import MODEL_DIR, get_model, model_catalog, spec_from_dict
from core.shapes import shapes_from_config, shapes_from_dict
from fleetcal.cli import main


def cfg_of(key: str) -> dict:
    return json.loads((MODEL_DIR / key / "config.json").read_text())


def refusal(tmp_path: Path, capsys, config_text: str) -> str:
    """What `fleetcal predict` says about a directory holding ``config_text`` as its config.json: one line, exit 2."""
    (tmp_path / "config.json").write_text(config_text)
    code = main(["predict", "--model", str(tmp_path), "--gpu", "H100", "--phase", "decode", "--batch-per-gpu", "1", "--context-len", "100"])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    return lines[0]


def test_a_config_of_only_its_model_type_is_refused_naming_the_missing_field(tmp_path, capsys):
    line = refusal(tmp_path, capsys, json.dumps({"model_type": "llama"}))
    assert "has no 'hidden_size'" in line and "llama" in line


def test_a_dense_config_without_its_ffn_width_is_refused_not_given_a_default(tmp_path, capsys):
    cfg = {k: v for k, v in cfg_of("llama-3.1-8b").items() if k != "intermediate_size"}
    assert "has no 'intermediate_size'" in refusal(tmp_path, capsys, json.dumps(cfg))


@pytest.mark.parametrize(("model_type", "says"), [("gptj", "refused: GPT-J"), ("deepseek_v32", "sparse attention"),
                                                  ("bert", "not a causal language model"), ("mamba", "is not modelled")])  # fmt: skip
def test_model_types_not_read_are_refused_by_name(tmp_path, capsys, model_type, says):
    line = refusal(tmp_path, capsys, json.dumps({"model_type": model_type, "architectures": ["X"], "hidden_size": 8}))
    assert f"model_type {model_type!r}" in line and says in line


def test_malformed_json_and_an_encoder_decoder_are_one_line(tmp_path, capsys):
    assert "is not valid JSON" in refusal(tmp_path, capsys, '{"model_type": "llama",')
    assert "encoder-decoder" in refusal(tmp_path, capsys, json.dumps({"model_type": "llama", "is_encoder_decoder": True}))
    assert "not a JSON object" in refusal(tmp_path, capsys, "[1, 2]")


def test_a_field_of_the_wrong_kind_is_refused_by_name():
    with pytest.raises(CatalogError, match="'num_hidden_layers' is '32', not a whole number"):
        shapes_from_dict({**cfg_of("llama-3.1-8b"), "num_hidden_layers": "32"}, "x")


def test_every_family_and_refusal_is_in_the_one_table():
    # the reader, `fleetcal models` and the refusals read the same table: the families the brief names are all there
    for model_type in ("llama", "mistral", "qwen2", "qwen3", "gemma3", "gemma3_text", "phi3", "mixtral", "qwen3_moe", "gpt_oss",
                       "llama4", "deepseek_v3", "kimi_k2", "glm4_moe", "qwen3_next", "nemotron_h"):  # fmt: skip
        assert model_type in families()
    assert "deepseek_v32" in refused() and not set(refused()) & set(families())


def test_kimi_k2_reads_without_remote_code_or_a_prompt(capsys):
    spec = get_model("kimi-k2")
    assert capsys.readouterr().out == ""
    s = spec.shapes
    assert (s.model_type, s.num_experts, s.experts_per_token, s.moe_layers, s.mla["kv_lora_rank"]) == ("kimi_k2", 384, 8, 60, 512)
    assert spec.checkpoint.fp8_block_scaled and spec.checkpoint.block == (128, 128) and spec.weight_dtype == "fp8"


def test_qwen3_moe_experts_are_sized_by_moe_intermediate_size():
    # config: intermediate_size 6144 (dense width, unused), moe_intermediate_size 768 (each expert)
    s = get_model("qwen3-30b-a3b").shapes
    assert s.expert_k_n == ((2048, 2 * 768), (768, 2048)) and s.moe_layers == 48 and "gate_up" not in s.linears


def test_qwen_dense_layers_and_sparse_step():
    cfg = {**cfg_of("qwen3-30b-a3b"), "mlp_only_layers": [0, 5], "decoder_sparse_step": 2}
    s = shapes_from_dict(cfg, "x")
    # transformers' Qwen3MoeSparseMoeBlock rule: MoE where (i + 1) % 2 == 0 and i not in mlp_only_layers: the 24 odd
    # layers 1, 3, ..., 47 less layer 5 = 23; the other 25 have the dense FFN of intermediate_size
    assert s.moe_layers == 23 and s.dense_layers == 25 and s.linears["dense_gate_up"] == (2048, 2 * 6144)


def test_glm_shared_expert_and_first_dense_layer():
    s = get_model("glm-4.5-air").shapes
    assert s.dense_layers == 1 and s.moe_layers == 45 and s.shared_experts == 1
    assert s.linears["shared_gate_up"] == (4096, 2 * 1408) and s.linears["dense_gate_up"] == (4096, 2 * 10944)


def test_llama4_interleave_reads_dense_layers_at_their_own_width():
    cfg = cfg_of("llama-4-scout")
    s = shapes_from_dict(cfg, "x")
    assert s.moe_layers == 48 and s.shared_experts == 1 and s.linears["shared_gate_up"] == (5120, 2 * 8192)
    maverick_like = {**cfg, "text_config": {**cfg["text_config"], "interleave_moe_layer_step": 2}}
    m = shapes_from_dict(maverick_like, "x")  # every 2nd layer MoE (1, 3, ...), dense layers of intermediate_size_mlp
    assert (m.moe_layers, m.dense_layers, m.linears["dense_gate_up"]) == (24, 24, (5120, 2 * 16384))
    assert [i for i, layer in enumerate(m.layers) if layer.ffn == "moe"][:3] == [1, 3, 5]


def test_attention_kinds_per_family():
    gemma = get_model("gemma-3-27b").shapes  # every 6th layer global (5, 11, ..., 59), the rest a 1,024-token window
    assert [i for i, layer in enumerate(gemma.layers) if layer.mixer == "global"] == list(range(5, 62, 6))
    assert gemma.layer_kinds == {"sliding": 52, "global": 10} and gemma.windows == {"sliding": 1024}
    oss = get_model("gpt-oss-120b").shapes  # alternating, sliding first; 128-token window
    assert [layer.mixer for layer in oss.layers[:2]] == ["sliding", "global"] and oss.windows == {"sliding": 128}
    scout = get_model("llama-4-scout").shapes  # NoPE global layers 3, 7, ..., 47; chunks of 8,192 elsewhere
    assert [i for i, layer in enumerate(scout.layers) if layer.mixer == "global"] == list(range(3, 48, 4))
    assert scout.windows == {"chunked": 8192}
    nxt = get_model("qwen3-next-80b-a3b").shapes  # full attention every 4th layer, gated DeltaNet elsewhere
    assert nxt.layer_kinds == {"linear": 36, "global": 12} and nxt.layers[3].mixer == "global"
    assert get_model("nemotron-h-8b").shapes.layer_kinds == {"mamba": 24, "none": 24, "global": 4}
    assert get_model("mistral-7b").shapes.windows == {"sliding": 4096} and get_model("phi-3-mini").shapes.windows == {"sliding": 2047}
    assert get_model("qwen2.5-7b").shapes.layer_kinds == {"global": 28}  # sliding_window given, use_sliding_window false


def test_windows_that_never_drop_a_token_read_as_global_and_missing_windows_are_refused():
    phi_128k = {**cfg_of("phi-3-mini"), "sliding_window": 262144, "max_position_embeddings": 131072}
    assert shapes_from_dict(phi_128k, "x").layer_kinds == {"global": 32}
    qwen = {**cfg_of("qwen2.5-7b"), "use_sliding_window": True, "sliding_window": 4096, "max_window_layers": 20}
    assert [layer.mixer for layer in shapes_from_dict(qwen, "x").layers].index("sliding") == 20
    oss = {k: v for k, v in cfg_of("gpt-oss-20b").items() if k != "sliding_window"}
    with pytest.raises(CatalogError, match="has no 'sliding_window'"):
        shapes_from_dict(oss, "x")
    with pytest.raises(CatalogError, match=r"layer_types \['banded'\] are not read"):
        shapes_from_dict({**cfg_of("gpt-oss-20b"), "layer_types": ["banded"] * 24}, "x")
    with pytest.raises(CatalogError, match="layer_types has linear layers, which qwen3 is not read with"):
        shapes_from_dict({**cfg_of("qwen3-8b"), "layer_types": ["linear_attention"] * 36}, "x")
    with pytest.raises(CatalogError, match="has no 'max_window_layers'"):  # which layers slide is not guessed
        qwen_no_first = {k: v for k, v in cfg_of("qwen2.5-7b").items() if k != "max_window_layers"}
        shapes_from_dict({**qwen_no_first, "use_sliding_window": True, "sliding_window": 4096}, "x")


def test_checkpoint_formats_per_component():
    oss = get_model("gpt-oss-120b").checkpoint  # quant_method mxfp4: MoE experts only; attention, router, embeddings bf16
    assert oss.format_of("routed_experts") == "mxfp4"
    assert {oss.format_of(c) for c in ("attention", "router", "embedding", "lm_head", "norms")} == {"bf16"}
    assert get_model("qwen3-8b").checkpoint.format_of("dense_ffn") == "bf16" and not get_model("qwen3-8b").checkpoint.quantized


@pytest.mark.parametrize(("qc", "fmt", "kept"), [
    ({"quant_method": "awq", "bits": 4, "group_size": 128, "modules_to_not_convert": ["gate"]}, "int4", ()),
    ({"quant_method": "gptq", "bits": 8, "group_size": 128}, "int8", ()),
    ({"quant_method": "modelopt", "quant_algo": "NVFP4", "exclude_modules": ["lm_head", "model.layers.*.self_attn*"]}, "nvfp4",
     ("attention",)),
    ({"quant_method": "compressed-tensors", "ignore": ["lm_head", "re:.*mlp.gate$"],
      "config_groups": {"group_0": {"weights": {"type": "float", "num_bits": 4, "group_size": 16}}}}, "nvfp4", ()),
    ({"quant_method": "fp8", "weight_block_size": [128, 128], "ignored_layers": ["model.layers.1.mlp.experts.0.gate_proj"]}, "fp8",
     ("routed_experts",)),
])  # fmt: skip
def test_quantization_configs_are_read(qc, fmt, kept):
    spec = spec_from_dict({**cfg_of("mixtral-8x7b"), "quantization_config": qc}, "x")
    c = spec.checkpoint
    assert c.quantized == fmt and c.kept == kept and c.format_of("router") == "bf16" and c.format_of("lm_head") == "bf16"
    assert c.format_of("attention") == ("bf16" if "attention" in kept else fmt)
    assert spec.weight_dtype == ("bf16" if kept == ("routed_experts",) else fmt)  # the experts hold most of Mixtral's weights


@pytest.mark.parametrize(("qc", "says"), [({"quant_method": "bitsandbytes"}, "quant_method 'bitsandbytes' is not read"),
                                          ({"quant_method": "gptq", "bits": 3}, "bits 3 is not read"),
                                          ({"quant_method": "fp8", "weight_block_size": [128]}, "weight_block_size [128]")])  # fmt: skip
def test_quantization_not_read_is_refused(qc, says):
    with pytest.raises(CatalogError, match=says.replace("[", r"\[").replace("]", r"\]")):
        spec_from_dict({**cfg_of("llama-3.1-8b"), "quantization_config": qc}, "x")


def test_every_catalogued_model_is_costed_and_a_feature_not_yet_costed_would_be_refused_in_one_line(capsys, monkeypatch):
    import estimator.arch

    args = ["--gpu", "H200", "--phase", "decode", "--batch-per-gpu", "1", "--context-len", "1000"]
    for model in sorted(model_catalog()):  # windows, chunks, sinks, linear attention, Mamba-2, MXFP4: all costed now
        assert main(["predict", "--model", model, *args]) == 0, model
        capsys.readouterr()
    # the guard stays for what core learns to read before the serving model costs it: one line, exit 2
    monkeypatch.setattr(estimator.arch, "NOT_YET_COSTED", {"sliding": "sliding-window attention", "mxfp4": "MXFP4 weights"})
    assert main(["predict", "--model", "gpt-oss-120b", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert "sliding-window attention, MXFP4 weights are read but not yet modelled by the serving model" in err
    assert len(err.splitlines()) == 1


def test_a_config_file_path_is_read_too(tmp_path):
    path = tmp_path / "my.json"
    path.write_text((MODEL_DIR / "qwen3-8b" / "config.json").read_text())
    assert get_model(str(path)).total_params == get_model("qwen3-8b").total_params
    assert shapes_from_config(MODEL_DIR / "qwen3-8b", "qwen3-8b") == get_model("qwen3-8b").shapes


def test_a_hugging_face_id_has_its_config_json_alone_fetched_and_read(monkeypatch, tmp_path):
    import http.server
    import threading

    served = (MODEL_DIR / "qwen3-30b-a3b" / "config.json").read_bytes()
    asked: list[str] = []

    class Hub(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            asked.append(self.path)
            ok = self.path == "/example-org/some-moe/resolve/main/config.json"
            self.send_response(200 if ok else 404)
            self.end_headers()
            self.wfile.write(served if ok else b"")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
    try:
        spec = get_model("example-org/some-moe")
        assert spec.total_params == get_model("qwen3-30b-a3b").total_params and asked == ["/example-org/some-moe/resolve/main/config.json"]
        with pytest.raises(CatalogError, match="no such model"):
            get_model("example-org/absent")
    finally:
        server.shutdown()


def test_an_unreachable_hub_is_one_line_within_seconds(monkeypatch, tmp_path, capsys):
    import socket
    import time

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    start = time.perf_counter()
    code = main(["predict", "--model", "nobody/nothing", "--gpu", "H100", "--phase", "decode", "--batch-per-gpu", "1"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "could not be fetched within 5 s" in err
    assert time.perf_counter() - start < 6
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CatalogError, match="HF_HUB_OFFLINE"):
        get_model("nobody/else")


@pytest.mark.parametrize(("change", "says"), [({"num_key_value_heads": 5}, "32 attention heads cannot share 5 key/value heads"),
                                              ({"num_experts_per_tok": 200}, "are not a mixture of experts"),
                                              ({"moe_intermediate_size": 0}, "are not a mixture of experts"),
                                              ({"vocab_size": -1}, "not a whole number of at least 0")])  # fmt: skip
def test_impossible_values_are_refused(change, says):
    with pytest.raises(CatalogError, match=says):
        shapes_from_dict({**cfg_of("qwen3-30b-a3b"), **change}, "x")
