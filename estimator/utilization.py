"""Measured utilization: each run's MFU and MBU beside the article's 50%, and the one that replaces it.

The ``measured`` scenario's policy lives here: the formula's own count (2 × parameters × output tokens/s
over the peak of the precision used) from the most relevant run: a GPU before a CPU, a run that met the
per-user speed before one that did not, then the highest; never a figure above 100% of its peak.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from core.deployments import reference_deployment

ARTICLE_UTILIZATION = 0.5


def utilization_table(df: pd.DataFrame) -> pd.DataFrame:
    """Measured MFU and MBU per device, model, engine, mode and size, beside the article's 50%.

    ``tokens_per_s`` is prefill tokens/s for prefill records, decode tokens/s for decode records
    and output tokens/s otherwise.
    """
    if df.empty:
        return pd.DataFrame()
    ok = df[(df["status"] == "ok") & (df["batch_size"].notna() | df["concurrency"].notna())].copy()  # open-loop records have no size
    ok["size"] = ok["batch_size"].fillna(ok["concurrency"]).astype(int)
    ok["mfu_used"] = ok["mfu"].fillna(ok["mfu_measured_peak"])
    ok["mbu_used"] = ok["mbu"].fillna(ok["mbu_measured_peak"])
    ok["peak"] = np.where(ok["mfu"].notna(), "datasheet", "measured")
    # the rate each mode is about: prefill tokens/s, decode tokens/s, else output tokens/s
    ok["tokens_per_s"] = ok["prefill_tokens_per_s"].where(
        ok["mode"] == "prefill", ok["decode_tokens_per_s"].where(ok["mode"] == "decode", ok["output_tokens_per_s"])
    )
    ok["article_utilization"] = ARTICLE_UTILIZATION
    ok["mfu_vs_article"] = ok["mfu_used"] / ARTICLE_UTILIZATION
    cols = ["device_name", "model", "engine", "mode", "size", "input_len", "output_len", "tokens_per_s",
            "mfu_used", "mbu_used", "peak", "article_utilization", "mfu_vs_article"]  # fmt: skip
    return ok[cols].rename(columns={"mfu_used": "mfu", "mbu_used": "mbu"}).reset_index(drop=True)


def _formula_utilization(row: pd.Series) -> float | None:
    """Utilization counted the way the article's formula counts: 2 × parameters that multiply per token ×
    output tokens/s ÷ the peak the record's MFU was measured against (``peak_tflops``: the datasheet peak of the
    run's precision on a catalogued device, from the run header, else the run's measured matmul peak) times its
    GPUs. The record's MFU counts prompts and attention too; the formula leaves them out."""
    from core.hardware import CatalogError
    from core.models import get_model

    rate = row["decode_tokens_per_s"] if row["mode"] == "decode" else row["output_tokens_per_s"]
    if pd.isna(rate) or pd.isna(row["peak_tflops"]) or not row["peak_tflops"]:
        return None
    try:
        params = get_model(row["model_key"]).matmul_params
    except CatalogError:
        return None
    gpus = row.get("num_gpus")
    gpus = gpus if gpus is not None and pd.notna(gpus) and gpus else 1
    return float(2 * params * rate / (row["peak_tflops"] * 1e12 * gpus))


def measured_utilization(df: pd.DataFrame, tokens_per_s_per_user: float | None = None, prefer_kind: str = "cuda") -> dict[str, Any] | None:
    """What replaces the article's 50%: the most relevant measured utilization, counted as the formula counts.

    Most relevant: a GPU run over a CPU run; then a run whose users got at least ``tokens_per_s_per_user`` (default:
    the reference deployment's, DeepSeek's 20; serving: 1000 / mean TPOT; decode: 1000 / step time) over one that did
    not or cannot say (offline throughput); then the highest utilization. Throughput, serving and decode runs count; none above 100%.
    """
    if df.empty:
        return None
    ok = df[
        (df["status"] == "ok") & df["mode"].isin(["throughput", "serve", "decode"]) & (df["batch_size"].notna() | df["concurrency"].notna())
    ].copy()
    if ok.empty:
        return None
    ok["u"] = [_formula_utilization(r) for _, r in ok.iterrows()]
    ok = ok[ok["u"].notna() & (ok["u"] <= 1.0)]  # above 1: the peak it was measured against was wrong
    if ok.empty:
        return None
    ok["per_user"] = ok["interactivity_tokens_per_s"].where(
        ok["mode"] == "serve", 1000 / ok["decode_step_ms"].where(ok["mode"] == "decode")
    )
    ok["gpu"] = ok["device_kind"] == prefer_kind
    speed = reference_deployment().tokens_per_s_per_user if tokens_per_s_per_user is None else tokens_per_s_per_user
    ok["meets"] = ok["per_user"] >= speed
    row = ok.sort_values(["gpu", "meets", "u", "run_file"], ascending=[False, False, False, True]).iloc[0]
    size = row["batch_size"] if not pd.isna(row["batch_size"]) else row["concurrency"]
    return {
        "utilization": float(row["u"]),
        "device_name": row["device_name"],
        "device_kind": row["device_kind"],
        "model": row["model"],
        "engine": row["engine"],
        "mode": row["mode"],
        "size": int(size),
        "dtype": row["dtype"],
        "tokens_per_s_per_user": None if pd.isna(row["per_user"]) else round(float(row["per_user"]), 1),
        "against": f"{row['dtype']} datasheet peak" if pd.notna(row["mfu"]) else f"measured {row['dtype']} matmul peak",
    }
