"""The serving model against published end-to-end throughput (data/validation.toml): each row predicted as its
source ran it, the signed error per row, and the median and worst absolute error over the gated rows.

These rows validate; nothing is fitted to them. How each kind of row is predicted:

- ``max_load``: the engine keeps as many sequences in flight as its KV cache admits, up to ``max_batch``. What a
  sequence holds is the engine's rule: TensorRT-LLM's default scheduler, GUARANTEED_NO_EVICT, reserves the prompt and
  the whole output before it starts a request (its runtime-options guide and SchedulerConfig reference); vLLM holds
  only the pages written, input_len + output_len / 2 on average over a reply. B requests then take B x input_len
  prompt tokens at the prefill rate (steps of 8,192 tokens) plus output_len decode steps at batch B and the mean
  context input_len + output_len / 2. Output tokens/s = B x output_len / that time.
- ``static_batch``: one prefill of ``batch`` prompts, then output_len - 1 decode steps at the mean context.
- ``prefill_step`` / ``decode_step``: one step of the serving model at the row's tokens per GPU, or batch and context.
"""

from __future__ import annotations

import math
import statistics
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd

from core.engines import CudaGraphs
from core.hardware import CatalogError, Device, get_gpu
from core.paths import DATA_DIR
from estimator.arch import Arch, Layout, load_arch
from estimator.bench_limits import bench_graphs
from estimator.kernels import Kernels, kernels_for
from estimator.memory import engine_step_tokens, kv_room_sequences
from estimator.serving import step
from estimator.traffic import mean_kv_len

VALIDATION_FILE = DATA_DIR / "validation.toml"
KINDS = ("max_load", "static_batch", "prefill_step", "decode_step")
SOURCE_FIELDS = ("engine", "engine_version", "cuda_graph_sizes", "cuda_graph_padding", "bench")  # a [source.*] table's, for its rows
PER = ("gpu", "instance", "node")


@dataclass(frozen=True)
class Row:
    """One published figure and how it was run."""

    id: str
    source: str
    model: str
    gpu: str
    weight_dtype: str
    kv_dtype: str
    num_gpus: int
    kind: str
    counts: str  # output or input tokens
    per: str  # gpu, instance or node (8 GPUs)
    value: float  # tokens/s, as published
    tp: int = 1
    ep: int = 1
    dp_attention: bool = False
    redundant_experts: int = 0
    input_len: int = 0
    output_len: int = 0
    batch: int = 0  # static_batch: per instance; decode_step: per GPU
    context_len: int = 0
    tokens_per_gpu: int = 0
    mtp_tokens: int = 0
    kv_rule: str = "trtllm"
    kv_fraction: float = 0.9
    max_batch: int = 2048
    gate: bool = True
    note: str = ""
    engine: str = ""  # the engine whose measured kernels stand for the source's (from its [source.*] table)
    engine_version: str = ""
    cuda_graph_sizes: tuple[int, ...] = ()  # the CUDA-graph batch sizes the source set itself; empty: the engine's rules
    cuda_graph_padding: bool = False
    bench: str = ""  # the benchmark tool whose own limits cut the captured sizes (trtllm-bench)

    def kernels(self, gpu: Device, ops: pd.DataFrame | None, arch: Arch) -> Kernels:
        """The kernels as the source ran them: its engine's rules (``kv_rule``), its engine's measured kernels at its
        version (core/data/kernels), the CUDA graphs it captured (a trtllm-bench run: cut at the batch it chose)."""
        db = ((self.engine,), self.engine_version or None) if self.engine else None
        k = kernels_for(gpu, ops, arch.fp8_block_scaled, engine=self.kv_rule, database=db)[0]
        if not self.cuda_graph_sizes:
            return k
        if self.bench == "trtllm-bench" and not self.dp_attention:
            lengths = (self.input_len, self.output_len)
            graphs = bench_graphs(self.cuda_graph_sizes, arch, gpu, self.tp, *lengths, self.kv_dtype, self.kv_fraction)
        else:  # with attention DP each GPU is an engine of max_batch / GPUs sequences (the row's max_batch is the bench's then)
            graphs = CudaGraphs(self.cuda_graph_sizes, self.cuda_graph_padding)
            per_engine = self.max_batch / self.num_gpus if self.dp_attention else self.max_batch
            graphs = graphs.capped(per_engine, engine_step_tokens(gpu, self.kv_rule))
        return replace(k, cuda_graphs=graphs)


def load_rows(path: Path = VALIDATION_FILE) -> tuple[list[Row], dict[str, dict[str, str]]]:
    """The validation rows and their sources; a malformed file or row is one CatalogError naming it."""
    try:
        d = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise CatalogError(f"{path.name} cannot be read: {exc}") from exc
    sources = d.get("source", {})
    rows = []
    for i, r in enumerate(d.get("row", [])):
        source = sources.get(r.get("source"), {})
        run = {f: tuple(v) if isinstance(v, list) else v for f, v in source.items() if f in SOURCE_FIELDS}  # how the source ran
        try:
            row = Row(**{**run, **r})
        except TypeError as exc:
            raise CatalogError(f"{path.name}: row {i + 1} ({r.get('id', '?')}): {exc}") from exc
        if row.kind not in KINDS or row.per not in PER or row.counts not in ("output", "input") or row.source not in sources:
            raise CatalogError(f"{path.name}: row {row.id}: kind, per, counts or source is not one of the known ones")
        rows.append(row)
    return rows, sources


def predict_row(row: Row, ops: pd.DataFrame | None = None) -> tuple[float, str]:
    """(tokens/s counted and scoped as the row counts them, how the prediction was made)."""
    arch, gpu = load_arch(row.model, row.weight_dtype), get_gpu(row.gpu)
    k = row.kernels(gpu, ops, arch)
    lay = Layout(row.num_gpus, tp=row.tp, ep=row.ep, dp_attention=row.dp_attention, redundant_experts=row.redundant_experts)
    if row.kind == "prefill_step":
        st = step(arch, gpu, lay, k, "prefill", tokens_per_gpu=row.tokens_per_gpu, prompt_len=row.input_len, kv_dtype=row.kv_dtype)
        per_gpu, how = st.tokens / st.seconds, f"prefill step {st.seconds * 1e3:,.0f} ms"
    elif row.kind == "decode_step":
        st = step(
            arch, gpu, lay, k, "decode", batch_per_gpu=row.batch, context=row.context_len, mtp_tokens=row.mtp_tokens, kv_dtype=row.kv_dtype
        )
        per_gpu, how = st.tokens / st.seconds, f"decode step {st.seconds * 1e3:,.1f} ms"
    else:
        per_gpu, how = _whole_requests(row, arch, gpu, lay, k)
    scale = {"gpu": 1, "instance": row.num_gpus, "node": 8}[row.per]
    return per_gpu * scale, how


def _whole_requests(row: Row, arch: Any, gpu: Any, lay: Layout, k: Any) -> tuple[float, str]:
    """Output tokens/s per GPU of a max-load or static-batch row (module docstring)."""
    tp = lay.tp
    held = row.input_len + row.output_len * (1.0 if row.kv_rule == "trtllm" else 0.5)  # KV tokens a sequence holds
    if row.kind == "max_load":
        room = kv_room_sequences(arch, gpu, lay, k, held, row.kv_dtype, headroom=row.kv_fraction, rule=row.kv_rule)
        b = min(room, row.max_batch / tp)  # sequences per GPU (a TP group holds tp x b)
        if b < 1:
            return 0.0, "no KV room for one request"
        why = "KV room" if room < row.max_batch / tp else "max batch"
        chunk = min(engine_step_tokens(gpu, row.kv_rule) / tp, b * row.input_len)
    else:
        b, why = row.batch / tp, "as run"
        chunk = b * row.input_len
    pre = step(arch, gpu, lay, k, "prefill", tokens_per_gpu=chunk, prompt_len=row.input_len, kv_dtype=row.kv_dtype)
    prefill_s = b * row.input_len / (pre.tokens / pre.seconds)
    dec = step(arch, gpu, lay, k, "decode", batch_per_gpu=b, context=mean_kv_len(row.input_len, row.output_len), kv_dtype=row.kv_dtype)
    steps = row.output_len if row.kind == "max_load" else max(row.output_len - 1, 0)
    total_s = prefill_s + steps * dec.seconds
    return (
        b * row.output_len / total_s,
        f"batch {b * tp:,.0f} per instance ({why}); prefill {prefill_s:,.2f} s + {steps} x {dec.seconds * 1e3:.2f} ms",
    )


def validate(rows: list[Row], ops: pd.DataFrame | None = None) -> pd.DataFrame:
    """One line per row: what was run, published and predicted tokens/s, signed error in percent."""
    out = []
    for r in rows:
        pred, how = predict_row(r, ops)
        lengths = f"{r.input_len}/{r.output_len}" if r.output_len else (f"{r.input_len}" if r.input_len else f"ctx {r.context_len}")
        layout = f"TP{r.tp}" + (f" EP{r.ep}" if r.ep > 1 else "") + (" DP-attn" if r.dp_attention else "")
        out.append({"id": r.id, "model": r.model, "gpu": r.gpu, "precision": f"{r.weight_dtype}/{r.kv_dtype} KV", "layout": layout,
                    "kind": r.kind, "lengths": lengths, "counts": f"{r.counts} tok/s per {r.per}", "published": r.value,
                    "predicted": round(pred, 1), "error_pct": round((pred - r.value) / r.value * 100, 1), "gate": r.gate,
                    "how": how, "source": r.source})  # fmt: skip
    return pd.DataFrame(out)


def summary(df: pd.DataFrame) -> dict[str, float]:
    """Median and worst absolute error (percent) over the gated rows, and their count."""
    g = df[df["gate"]]
    errs = [abs(e) for e in g["error_pct"] if not math.isnan(e)]
    worst = g.loc[g["error_pct"].abs().idxmax()] if errs else None
    return {"rows": len(errs), "median_abs_error_pct": round(statistics.median(errs), 1) if errs else float("nan"),
            "worst_abs_error_pct": round(max(errs), 1) if errs else float("nan"), "worst_row": worst["id"] if worst is not None else "",
            "median_signed_error_pct": round(statistics.median(g["error_pct"]), 1) if errs else float("nan")}  # fmt: skip
