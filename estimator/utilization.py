"""Measured utilization: each run's MFU and MBU beside the article's 50%, and the one that replaces it.

The ``measured`` scenario's policy lives here: the best MFU any throughput or serving run reached,
GPU runs first, never a figure above 100% of the peak it was measured against.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

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
    ok["tokens_per_s"] = ok["prefill_tokens_per_s"].where(ok["mode"] == "prefill", ok["decode_tokens_per_s"].where(ok["mode"] == "decode", ok["output_tokens_per_s"]))
    ok["article_utilization"] = ARTICLE_UTILIZATION
    ok["mfu_vs_article"] = ok["mfu_used"] / ARTICLE_UTILIZATION
    cols = ["device_name", "model", "engine", "mode", "size", "input_len", "output_len", "tokens_per_s",
            "mfu_used", "mbu_used", "peak", "article_utilization", "mfu_vs_article"]  # fmt: skip
    return ok[cols].rename(columns={"mfu_used": "mfu", "mbu_used": "mbu"}).reset_index(drop=True)


def measured_utilization(df: pd.DataFrame, prefer_kind: str = "cuda") -> dict[str, Any] | None:
    """The best MFU any throughput or serve run reached: what replaces the article's 50%.

    GPU runs (against datasheet peaks) are preferred; CPU runs count against their measured peaks.
    """
    if df.empty:
        return None
    ok = df[(df["status"] == "ok") & df["mode"].isin(["throughput", "serve"]) & (df["batch_size"].notna() | df["concurrency"].notna())].copy()
    if ok.empty:
        return None
    ok["mfu_used"] = ok["mfu"].fillna(ok["mfu_measured_peak"])
    ok = ok[ok["mfu_used"].notna() & (ok["mfu_used"] <= 1.0)]  # above 1: the peak it was measured against was wrong
    if ok.empty:
        return None
    preferred = ok[ok["device_kind"] == prefer_kind]
    pool = preferred if not preferred.empty else ok
    row = pool.sort_values(["mfu_used", "run_file"], ascending=[False, True]).iloc[0]
    size = row["batch_size"] if not pd.isna(row["batch_size"]) else row["concurrency"]
    return {
        "utilization": float(row["mfu_used"]),
        "device_name": row["device_name"],
        "device_kind": row["device_kind"],
        "model": row["model"],
        "engine": row["engine"],
        "mode": row["mode"],
        "size": int(size),
        "against": "datasheet peak" if not pd.isna(row["mfu"]) else "measured peak",
    }
