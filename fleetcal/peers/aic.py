"""NVIDIA's AIConfigurator (PyPI ``aiconfigurator``, Apache-2.0, https://github.com/ai-dynamo/aiconfigurator) beside fleetcal
on the rows of core/data/validation.toml: what each row becomes in the peer's terms, running the peer in its own
environment, and its committed predictions (results/peer/aiconfigurator-<version>.json).

The peer predicts from a database of per-operator latencies measured on real GPUs, by system, engine and engine version.
It never runs inside fleetcal's environment: ``scripts/setup_peers.sh`` installs it into ``.venv-peers`` and
``run_peer`` executes ``aic_runner.py`` there as a subprocess. What each row kind becomes (docs/peer.md):

- system: the GPU's SXM system of the peer's database (``SYSTEMS``); a GPU without one (H800, H20) is not expressed.
- backend and version: by the row's source, the engine that produced the figure (``BACKENDS``).
- precision: FP8 weights are the peer's ``fp8`` GEMMs (``fp8_block`` for a block-scaled checkpoint, DeepSeek-V3, and its
  experts); FP16/BF16 weights are its 16-bit ``bfloat16`` GEMMs (the A100's FP16 and BF16 tensor-core peaks are the same
  312 TFLOPS); NVFP4 weights are its ``nvfp4`` GEMMs and experts; MXFP4 (gpt-oss: experts only) its ``w4a16_mxfp4``
  experts on Hopper and ``w4a8_mxfp4_mxfp8`` on Blackwell (TensorRT-LLM's gpt-oss guide: MXFP8 activations there); the
  KV cache is ``fp8`` or ``bfloat16`` as the row's, except where the source's backend says otherwise.
- layout: TP as the row's; data-parallel attention is the peer's ``attention_dp_size`` = the instance's GPUs (TP 1),
  experts over ``moe_ep_size`` = the row's EP with ``moe_tp_size`` 1, or, with no EP and no data-parallel attention,
  ``moe_tp_size`` = TP (TensorRT-LLM's default for a TP-only MoE), in the row's weight precision either way.
- ``max_load``: the peer's aggregated (in-flight batching) estimate at the largest batch its own KV gate admits under the
  row's ``kv_fraction`` (TensorRT-LLM's free-memory fraction), capped at ``max_batch``, with fleetcal's token budget per
  step (TensorRT-LLM's default ``max_num_tokens``, 8,192, core/data/engines/) as ``ctx_tokens``.
- ``static_batch``: the peer's static estimate at the row's batch and lengths.
- ``prefill_step`` / ``decode_step``: one context pass of ``tokens_per_gpu / input_len`` prompts per GPU, or one decode
  step at the row's batch per GPU and context length; experts balanced as the row says (``ROUTING``).
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from core.engines import engine_rules
from core.errors import UsageError
from core.models import MODEL_DIR, get_model, resolve_model_key
from core.paths import RESULTS_DIR, ROOT, portable
from estimator.validation import Row
from fleetcal.peers.aic_runner import SYSTEMS

NAME = "aiconfigurator"
RUNNER = Path(__file__).with_name("aic_runner.py")
PYTHON_ENV = "FLEETCAL_PEER_PYTHON"
DEFAULT_PYTHON = ROOT / ".venv-peers" / "bin" / "python"
PEER_DIR = RESULTS_DIR / "peer"
RUN_TIMEOUT_S = 600  # `validate --peer` on the 121 rows of core/data/validation.toml took 33 s on two cores

# The row's source -> the peer's database closest to the engine that produced the figure. "current" is the peer's
# maintained version of that backend on the system (aiconfigurator_core/systems/query_versions.yaml: TensorRT-LLM 1.3.0rc20
# on H100/H200, 1.0.0 on A100). SGLang's WideEP tables (DeepEP over 1-8 nodes, data-parallel MLA, DeepEP MoE) are held only
# under versions outside its maintained slots; 0.5.6.post2 is the oldest, the closest to the blog's SGLang of May 2025, and
# its context-MLA table holds an FP8 KV cache only.
BACKENDS: dict[str, dict[str, Any]] = {
    "trtllm-perf-overview": {"backend": "trtllm", "version": "current"},
    "trtllm-v061": {"backend": "trtllm", "version": "current"},
    "sglang-large-scale-ep": {"backend": "sglang", "version": "0.5.6.post2", "allow_unlisted_version": True, "kv_quant": "fp8"},
}
DEFAULT_BACKEND = {"backend": "trtllm", "version": "current"}

# Expert routing per row, where the row says how experts were balanced: the peer's MoE tables hold a power law of expert
# load (alpha 1.01, its default) and a uniform one. SGLang's default EPLB is the peer's own EPLB model (enable_eplb: in
# SGLang, prefill's power law flattened to alpha 0.6 and 0.8 of the tokens; its tables hold no 288-slot rows, so the 32
# redundant experts are not placed); "perfect EPLB" (random expert choice) is the uniform distribution.
ROUTING: dict[str, dict[str, Any]] = {
    "sglang-deepseek-prefill-ep32-4k-default-eplb": {"enable_eplb": True},
    "sglang-deepseek-prefill-ep32-4k-perfect-eplb": {"workload_distribution": "uniform", "enable_eplb": False},
}


BLACKWELL = {"b200_sxm", "b300_sxm", "gb200"}  # the peer's systems with FP4 tensor cores


def _quant(row: Row, moe: bool) -> dict[str, str | None]:
    """The peer's GEMM, MoE and KV quantization modes for the row's weight and KV precisions (module docstring)."""
    key = resolve_model_key(row.model)
    block = key is not None and get_model(key).checkpoint.fp8_block_scaled  # its config.json's weight_block_size
    gemm = {"fp8": "fp8_block" if block else "fp8", "nvfp4": "nvfp4"}.get(row.weight_dtype, "bfloat16")
    experts = gemm
    if row.weight_dtype == "mxfp4":  # gpt-oss: MXFP4 experts, the rest in 16 bits; Blackwell runs them on MXFP8 activations
        experts = "w4a8_mxfp4_mxfp8" if SYSTEMS.get(row.gpu) in BLACKWELL else "w4a16_mxfp4"
    return {"gemm_quant": gemm, "moe_quant": experts if moe else None, "kv_quant": "fp8" if row.kv_dtype == "fp8" else "bfloat16"}


def peer_request(row: Row) -> dict[str, Any] | str:
    """What the row becomes in the peer's terms (a request for the runner), or why the peer cannot express it."""
    system = SYSTEMS.get(row.gpu)
    if system is None:
        return f"the peer's database holds no {row.gpu} system (it holds {', '.join(sorted(SYSTEMS))} of fleetcal's GPUs)"
    key = resolve_model_key(row.model)
    if key is None or not (MODEL_DIR / key / "config.json").is_file():
        return f"no committed config.json for {row.model}"
    backend = {**DEFAULT_BACKEND, **BACKENDS.get(row.source, {})}
    if row.kind == "max_load" and row.kv_rule != backend["backend"]:
        return f"the row's KV rule is {row.kv_rule}'s but its source maps to the peer's {backend['backend']} backend"
    moe = get_model(key).is_moe  # experts split by EP where the row has it, else by TP (TensorRT-LLM's default)
    moe_tp = 1 if row.ep > 1 or row.dp_attention else row.tp
    req: dict[str, Any] = {"id": row.id, "kind": row.kind, "model_dir": portable(MODEL_DIR / key), "system": system, **_quant(row, moe),
                           **backend, "tp": row.tp, "attention_dp": row.num_gpus if row.dp_attention else 1,
                           "moe_ep": row.ep if moe else None, "moe_tp": moe_tp if moe else None}  # fmt: skip
    req.update(ROUTING.get(row.id, {}))
    if row.kind == "max_load":
        req |= {"input_len": row.input_len, "output_len": row.output_len, "max_batch": row.max_batch, "kv_fraction": row.kv_fraction,
                "ctx_tokens": engine_rules("trtllm").budgets[0].max_num_batched_tokens}  # fmt: skip
    elif row.kind == "static_batch":
        req |= {"input_len": row.input_len, "output_len": row.output_len, "batch": row.batch}
    elif row.kind == "prefill_step":
        if row.tokens_per_gpu % row.input_len:
            return f"{row.tokens_per_gpu} tokens per GPU is not a whole number of {row.input_len}-token prompts"
        req |= {"input_len": row.input_len, "tokens_per_gpu": row.tokens_per_gpu}
    else:
        req |= {"context_len": row.context_len, "batch": row.batch}
    return req


def peer_python(path: Path | None = None) -> Path:
    """The peer environment's Python: ``path``, else $FLEETCAL_PEER_PYTHON, else .venv-peers/bin/python; one UsageError if absent."""
    python = Path(path or os.environ.get(PYTHON_ENV) or DEFAULT_PYTHON)
    if not python.is_file():
        raise UsageError(f"no AIConfigurator environment at {python}: run `bash scripts/setup_peers.sh`, or pass --peer-python "
                         f"(or set {PYTHON_ENV}) to a Python that has aiconfigurator installed")  # fmt: skip
    return python


def scoped(row: Row, per_gpu_tokens_per_s: float) -> float:
    """Tokens/s per GPU scoped as the row counts them (per GPU, per instance, per node of 8), as fleetcal's prediction is."""
    return per_gpu_tokens_per_s * {"gpu": 1, "instance": row.num_gpus, "node": 8}[row.per]


def run_peer(rows: list[Row], python: Path) -> dict[str, Any]:
    """The peer's prediction of every row it can express, from its own environment; rows it cannot, with why."""
    requests, out_rows = [], {}
    for row in rows:
        req = peer_request(row)
        if isinstance(req, str):
            out_rows[row.id] = {"id": row.id, "expressed": False, "why": req}
        else:
            requests.append(req)
    with tempfile.TemporaryDirectory(prefix="fleetcal-peer-") as tmp:
        req_file, out_file = Path(tmp) / "requests.json", Path(tmp) / "out.json"
        req_file.write_text(json.dumps(requests))
        proc = subprocess.run([str(python), "-P", str(RUNNER), str(req_file), str(out_file)], capture_output=True, text=True,
                              timeout=RUN_TIMEOUT_S, cwd=ROOT)  # fmt: skip
        if proc.returncode != 0 or not out_file.is_file():
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise UsageError(f"the peer's runner failed under {python} (exit {proc.returncode}): {last}")
        result = json.loads(out_file.read_text())
    by_id = {r.id: r for r in rows}
    for got, req in zip(result["rows"], requests, strict=True):
        row = by_id[got["id"]]
        if "error" in got:
            out_rows[row.id] = {"id": row.id, "expressed": False, "why": f"the peer refused it: {got['error']}"}
        else:
            out_rows[row.id] = {"id": row.id, "expressed": True, "predicted": round(scoped(row, got["per_gpu_tokens_per_s"]), 1),
                                **{k: got[k] for k in ("per_gpu_tokens_per_s", "batch", "how", "per_op_ms")}, "request": req}  # fmt: skip
    return {"peer": NAME, "versions": result["peer"], "rows": [out_rows[r.id] for r in rows]}
