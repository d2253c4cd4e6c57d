"""Extract the per-operator latencies the serving model needs from AIConfigurator's measured database into
core/data/kernels/ (gzip-compressed CSV, read by estimator/kernel_db.py). Run with the peer's Python:

  bash scripts/setup_peers.sh
  .venv-peers/bin/python scripts/extract_kernel_db.py            # rewrite core/data/kernels/
  .venv-peers/bin/python scripts/extract_kernel_db.py --check    # regenerate apart and compare byte for byte

NVIDIA's AIConfigurator (https://github.com/ai-dynamo/aiconfigurator, Apache-2.0) ships, inside its
``aiconfigurator-core`` wheel, tables of operator latencies its collectors timed on real GPUs through each serving
engine's own modules (collector/<backend>/collect_*.py): GEMMs through the engine's linear layer, attention through the
engine's attention op under CUDA graphs, all-reduce through the engine's custom kernels or NCCL, MoE through the engine's
fused-MoE layer. They live at ``aiconfigurator_core/systems/data/<system>/<family>/<backend>/<version>/<table>.parquet``.

What is kept (the rest of the package is not copied):
- systems: the peer systems of the GPUs fleetcal catalogues (SYSTEMS of fleetcal/peers/aic_runner.py);
- tables: TABLES below, each with the rows the serving model can ask for (filters) and the columns that say which
  shape and which kernel (the collector's framework, version, device and op name become the file's backend and version
  columns and systems.csv's device; power columns are dropped);
- versions: per system, table and backend, the newest version that holds the table, and the one closest to each validation
  source's engine (SOURCE_ENGINES): every such engine is older than any version the database holds, so that is the oldest;
- latencies in milliseconds, rounded to 4 significant digits (at most 0.05% off); a shape measured more than once for
  one kernel (the same collection appended twice) is kept once, at the median of its repeats.

Output: core/data/kernels/<system>/<table>.csv.gz (columns: backend, version, kernel_source, the shape, latency_ms),
manifest.csv (one line per system, table, backend and version: rows, kernels, the source file inside the package and
its SHA-256) and systems.csv (fleetcal GPU -> system -> the device name the collector recorded). gzip is written with
no timestamp or name, so the same package and the same zlib give the same bytes.
"""

from __future__ import annotations

import argparse
import bisect
import filecmp
import gzip
import hashlib
import io
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # fleetcal.peers.aic_runner: the standard library only; estimator.kernel_db: pandas too

from estimator.kernel_db import closest_version, version_key  # noqa: E402  (the lookup's own version order)
from fleetcal.peers.aic_runner import SYSTEMS  # noqa: E402

OUT = ROOT / "core" / "data" / "kernels"
PACKAGE = "aiconfigurator-core"
DIGITS = 4
BACKENDS = ("trtllm", "vllm", "sglang", "nccl")
TP_SIZES = (1, 2, 4, 8)  # the tensor-parallel sizes of one NVLink node whose shapes are kept
# The engine each validation source ran (core/data/validation.toml), for choosing the database version closest to it.
# TensorRT-LLM 0.6.1 (trtllm-v061), 0.17 (trtllm-perf-overview-v017), the 1.0-era PyTorch backend (trtllm-perf-overview)
# and the 2025 PyTorch-backend releases of the per-GPU tables and the DeepSeek-R1 blog; SGLang of May 2025
# (sglang-large-scale-ep, before 0.5). The database's oldest versions are TensorRT-LLM 1.0.0 (A100, L40S) and 1.2.0rc5,
# SGLang 0.5.6.post2 and 0.5.9: every source is older, so the closest is the oldest version present.
SOURCE_ENGINES = {"trtllm": ("0.6.1", "0.17.0", "1.0.0"), "sglang": ("0.4.6",)}


@dataclass(frozen=True)
class Table:
    """One operator table: the peer's family directory and file, the shape columns kept, and the rows kept."""

    name: str
    family: str
    file: str
    keys: tuple[str, ...]  # the shape; the last one is spread across the columns (one column per measured value)
    keep: dict[str, tuple] = field(default_factory=dict)  # column -> values kept (a column missing from a file: no filter)


ATTN_KEYS = ("batch_size", "num_heads", "num_key_value_heads", "head_dim")
MOE_KEYS = ("moe_dtype", "num_tokens", "hidden_size", "inter_size", "topk", "num_experts", "moe_tp_size", "moe_ep_size")
MOE_WIDE = (*MOE_KEYS[:1], *MOE_KEYS[2:], "num_tokens")
MLA_KEYS = ("mla_dtype", "kv_cache_dtype", "num_heads", "batch_size", "tp_size")
TABLES = (
    # dense GEMM (M x K) . (K x N) through the engine's linear layer; dtypes of the weight formats fleetcal knows
    Table("gemm", "gemm", "gemm_perf.parquet", ("gemm_dtype", "n", "k", "m"),
          {"gemm_dtype": ("bfloat16", "fp8", "fp8_block", "nvfp4", "int8_wo", "int4_wo")}),
    # decode attention: one new token per sequence over `step` cached tokens; full attention only (no sliding window)
    Table("decode_attention", "attention", "generation_attention_perf.parquet", (*ATTN_KEYS, "kv_cache_dtype", "step"),
          {"window_size": (0,), "beam_width": (1,)}),
    # prefill attention: `batch_size` prompts of `isl` tokens, causal, nothing cached
    Table("prefill_attention", "attention", "context_attention_perf.parquet", (*ATTN_KEYS, "attn_dtype", "kv_cache_dtype", "isl"),
          {"window_size": (0,), "beam_width": (1,)}),
    # all-reduce of `message_size` bf16 elements over `num_gpus` GPUs: the engine's custom kernel
    Table("allreduce", "comm", "custom_allreduce_perf.parquet", ("num_gpus", "message_size"), {"allreduce_dtype": ("bfloat16",)}),
    # NCCL collectives (nccl-tests style), `message_size` elements of `nccl_dtype`
    Table("nccl", "comm", "nccl_perf.parquet", ("op_name", "nccl_dtype", "num_gpus", "message_size")),
    # a whole MoE layer's experts on one GPU (routing, grouped GEMMs, activation) at balanced routing
    Table("moe", "moe", "moe_perf.parquet", MOE_WIDE,
          {"distribution": ("balanced",), "moe_dtype": ("bfloat16", "fp8", "fp8_block", "nvfp4", "w4a16_mxfp4")}),
    Table("wideep_moe_prefill", "moe", "wideep_context_moe_perf.parquet", (*MOE_KEYS[:1], *MOE_KEYS[2:], "distribution", "num_tokens")),
    Table("wideep_moe_decode", "moe", "wideep_generation_moe_perf.parquet", (*MOE_KEYS[:1], *MOE_KEYS[2:], "distribution", "num_tokens")),
    # MLA attention (DeepSeek-V3 shapes: 576-wide latent KV), decode over `step` cached tokens and prefill of `isl` tokens
    Table("mla_decode", "mla", "generation_mla_perf.parquet", (*MLA_KEYS, "step")),
    Table("mla_prefill", "mla", "context_mla_perf.parquet", (*MLA_KEYS, "isl")),
    Table("mla_decode_module", "mla", "mla_generation_module_perf.parquet", (*MLA_KEYS, "gemm_type", "step")),
    Table("mla_prefill_module", "mla", "mla_context_module_perf.parquet", (*MLA_KEYS, "gemm_type", "isl")),
    Table("wideep_mla_decode", "mla", "wideep_generation_mla_perf.parquet", (*MLA_KEYS, "isl")),
    Table("wideep_mla_prefill", "mla", "wideep_context_mla_perf.parquet", (*MLA_KEYS, "isl")),
    # MLA's absorbed per-head batched GEMMs (queries into the latent, latent out to values)
    Table("mla_bmm", "mla_bmm", "mla_bmm_perf.parquet", ("op_name", "bmm_dtype", "num_tokens", "num_heads")),
)  # fmt: skip


def kept_versions(backend: str, versions: list[str], current: str | None) -> list[str]:
    """Of the versions holding rows: the newest, the peer's maintained one (``current``, what its estimates read) and the
    one closest to each validation source's engine of this backend."""
    if not versions:
        return []
    keep = {closest_version(versions, None)} | {closest_version(versions, t) for t in SOURCE_ENGINES.get(backend, ())}
    return sorted(keep | ({current} & set(versions)), key=version_key)


def current_versions(data: Path) -> dict[tuple[str, str], str]:
    """(system, backend) -> the peer's maintained database version (systems/query_versions.yaml: its defaults and
    per-system overrides)."""
    import yaml

    q = yaml.safe_load((data.parent / "query_versions.yaml").read_text())
    out = {}
    for system in set(SYSTEMS.values()):
        for backend, slot in q["defaults"].items():
            out[system, backend] = q.get("overrides", {}).get(system, {}).get(backend, slot)["current"]
    return out


def catalog_needs() -> dict[str, set]:
    """The shapes the catalogued models take (core/data/models/*/config.json) at tensor parallelism 1, 2, 4 and 8: GEMM
    (N, K) of every linear map split either way (and whole), the router's and MLA's prefill up-projection; attention
    (query heads, KV heads, head dim) per GPU; MoE (hidden, expert intermediate, top-k, experts)."""
    import tomllib

    from core.shapes import shapes_from_config

    models = ROOT / "core" / "data" / "models"
    need: dict[str, set] = {"gemm": set(), "attention": set(), "moe": set()}
    for name in tomllib.loads((models / "catalog.toml").read_text()):
        if not (models / name / "config.json").is_file():
            continue
        s = shapes_from_config(models / name, name)
        linears = list(s.linears.values()) + ([(s.hidden, s.num_experts)] if s.num_experts else [])
        if s.mla:
            linears.append((s.mla["kv_lora_rank"], s.heads * (s.mla["nope"] + s.mla["v"])))
        for tp in TP_SIZES:
            need["gemm"] |= {(n_, k_) for k, n in linears for k_, n_ in ((k, n), (k, n // tp), (k // tp, n))}
            if not s.mla:
                need["attention"].add((max(1, s.heads // tp), max(1, s.kv_heads // tp), s.head_dim))
        if s.expert_k_n:
            need["moe"].add((s.hidden, s.expert_k_n[1][0], s.experts_per_token, s.num_experts))
    return need


def bracket(grid: list[int], x: int) -> set[int]:
    """The grid points an interpolation at ``x`` reads: ``x`` itself, else its neighbours below and above."""
    i = bisect.bisect_left(grid, x)
    return {x} if i < len(grid) and grid[i] == x else {grid[j] for j in (i - 1, i) if 0 <= j < len(grid)}


def select(df, t: Table, need: dict[str, set]):
    """The rows of one file that a catalogued model's shape reads (GEMM: the (N, K) grid points around each shape;
    attention: its exact head counts; MoE: its exact expert shape); other tables whole."""
    import pandas as pd

    if t.name == "gemm":
        ns, ks = sorted(df["n"].unique()), sorted(df["k"].unique())
        cols, keep = ["n", "k"], {(a, b) for n, k in need["gemm"] for a in bracket(ns, n) for b in bracket(ks, k)}
    elif t.name in ("decode_attention", "prefill_attention"):
        cols, keep = ["num_heads", "num_key_value_heads", "head_dim"], need["attention"]
    elif t.name == "moe":
        cols, keep = ["hidden_size", "inter_size", "topk", "num_experts"], need["moe"]
    else:
        return df
    return df[pd.MultiIndex.from_frame(df[cols]).isin(list(keep))] if keep and len(df) else df.iloc[:0]


def _sig(x: float) -> str:
    return f"{float(x):.{DIGITS}g}"


def table_rows(pd, path: Path, t: Table, need: dict[str, set]):
    """One peer file's kept rows: filtered, kernel and shape columns, repeats reduced to their median, latency in ms;
    and the device name the collector recorded."""
    raw = pd.read_parquet(path)
    device = str(raw["device"].iloc[0]) if "device" in raw.columns and len(raw) else ""
    for col, values in t.keep.items():
        if col in raw.columns:
            raw = raw[raw[col].isin(values)]
    if "backend" in raw.columns:  # vLLM's and SGLang's custom all-reduce: eager or under a CUDA graph, in its own column
        raw = raw.assign(kernel_source=raw["backend"])
    raw = select(raw, t, need)
    out = raw.groupby(["kernel_source", *t.keys], as_index=False, sort=True)["latency"].median()
    return out.rename(columns={"latency": "latency_ms"}), device


def peer_data_root() -> Path:
    import aiconfigurator_core

    return Path(aiconfigurator_core.__file__).resolve().parent / "systems" / "data"


def system_tables(pd, data: Path, system: str, t: Table, need: dict[str, set], current: dict, manifest: list, devices: dict):
    """One table of one system: the kept versions of every backend, concatenated (None when no backend holds it)."""
    frames = []
    for backend in BACKENDS:
        base = data / system / t.family / backend
        dirs = sorted(d for d in base.iterdir() if (d / t.file).is_file()) if base.is_dir() else []
        held = {d.name: table_rows(pd, d / t.file, t, need) for d in dirs}
        for _, device in held.values():
            devices.setdefault(system, device)
        nonempty = [v for v, (rows, _) in held.items() if not rows.empty]
        for version in kept_versions(backend, nonempty, current.get((system, backend))):
            rows, path = held[version][0], base / version / t.file
            frames.append(rows.assign(backend=backend, version=version))
            manifest.append({"system": system, "table": t.name, "backend": backend, "version": version, "rows": len(rows),
                             "kernel_sources": ";".join(sorted(rows["kernel_source"].unique())),
                             "source": f"aiconfigurator_core/systems/data/{path.relative_to(data).as_posix()}",
                             "source_sha256": hashlib.sha256(path.read_bytes()).hexdigest()})  # fmt: skip
    if not frames:
        return None
    df = pd.concat(frames)[["backend", "version", "kernel_source", *t.keys, "latency_ms"]]
    return df.sort_values(["backend", "version", "kernel_source", *t.keys], kind="stable")


def extract(out: Path) -> None:
    """Write the whole extract under ``out``."""
    from importlib import metadata

    import pandas as pd

    data, need = peer_data_root(), catalog_needs()
    current = current_versions(data)
    manifest: list[dict] = []
    devices: dict[str, str] = {}
    for system in sorted(set(SYSTEMS.values())):
        for t in TABLES:
            df = system_tables(pd, data, system, t, need, current, manifest, devices)
            if df is not None:
                _write_gz(out / system / f"{t.name}.csv.gz", notice(metadata.version(PACKAGE), f"{system} {t.file}") + _csv(df, t))
    head = notice(metadata.version(PACKAGE), "systems/data")
    _write(out / "manifest.csv", head + pd.DataFrame(manifest).to_csv(index=False, lineterminator="\n"))
    sysrows = [{"gpu": g, "system": s, "device": devices.get(s, "")} for g, s in sorted(SYSTEMS.items())]
    _write(out / "systems.csv", head + pd.DataFrame(sysrows).to_csv(index=False, lineterminator="\n"))
    _write(out / "LICENSE", metadata.distribution("aiconfigurator").read_text("licenses/LICENSE"))


def notice(version: str, what: str) -> str:
    """The first line of every file written: whose data it is, under which licence, and that it was changed (Apache-2.0
    section 4: a copy of the licence, retained attribution, a notice on each modified file)."""
    return (f"# Derived from {PACKAGE} {version} ({what}), Copyright (c) 2025-2026 NVIDIA CORPORATION & AFFILIATES, "
            "Apache-2.0 (LICENSE); filtered, rounded and reshaped by scripts/extract_kernel_db.py (README.md)\n")


def _csv(df, t: Table) -> str:
    """CSV text, wide: one line per kernel and shape, one column per measured value of the shape's last column
    (``m=1``, ``m=2``, ...; empty where that value was not measured)."""
    across = t.keys[-1]
    df = df.assign(latency_ms=df["latency_ms"].map(_sig))
    wide = df.pivot(index=["backend", "version", "kernel_source", *t.keys[:-1]], columns=across, values="latency_ms")
    wide.columns = [f"{across}={v}" for v in wide.columns]
    return wide.reset_index().to_csv(index=False, lineterminator="\n")


def _write_gz(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=9, mtime=0) as f:
        f.write(text.encode())
    path.write_bytes(buf.getvalue())


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def check(out: Path) -> int:
    """Regenerate into a scratch directory and compare every file with ``out``; 0 when identical."""
    with tempfile.TemporaryDirectory() as tmp:
        extract(Path(tmp))
        new = sorted(p.relative_to(tmp).as_posix() for p in Path(tmp).rglob("*") if p.is_file())
        old = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and p.name != "README.md")
        differ = [f for f in new if f not in old or not filecmp.cmp(Path(tmp) / f, out / f, shallow=False)]
        differ += [f"{f} (not regenerated)" for f in old if f not in new]
    for f in differ:
        print(f"extract_kernel_db: {f} differs", file=sys.stderr)
    return 1 if differ else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=OUT, help="where the extract goes (default: core/data/kernels)")
    p.add_argument("--check", action="store_true", help="regenerate apart and compare byte for byte with --out")
    a = p.parse_args(argv)
    if a.check:
        return check(a.out)
    extract(a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
