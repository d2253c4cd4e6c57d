"""The report's operator and engine tables: what each measured device reaches per operator, eager against
compiled engines, and energy per token. Used by ``fleetcal report``."""

from __future__ import annotations

import pandas as pd

from fleetcal.report.files import round_floats

ENGINE_COLUMNS = ["device_name", "model", "engine", "mode", "batch_size", "input_len", "output_len", "tokens_per_s",
                  "step_ms", "mfu", "mbu", "joules_per_token", "energy_window", "run_file"]  # fmt: skip


def engine_table(runs: pd.DataFrame) -> pd.DataFrame:
    """GPU decode and prefill records: rate, utilization and joules per token, eager and compiled side by side.

    Joules per token are shown only where the energy counter was read around the timed work
    (``energy_window: timed``). Earlier records read it over the whole configuration, which holds the
    engine's start (first configuration) and compilation, with the GPU idle: their figure is left out.
    """
    if runs.empty:
        return pd.DataFrame(columns=ENGINE_COLUMNS)
    g = runs[(runs["device_kind"] == "cuda") & (runs["status"] == "ok") & runs["mode"].isin(["decode", "prefill"])].copy()
    if g.empty:
        return pd.DataFrame(columns=ENGINE_COLUMNS)
    g["tokens_per_s"] = g["decode_tokens_per_s"].where(g["mode"] == "decode", g["prefill_tokens_per_s"])
    g["step_ms"] = g["decode_step_ms"].where(g["mode"] == "decode", g["time_to_first_token_ms"])
    window = g["energy_window"].fillna("configuration")
    g["energy_window"] = window.where(g["power_w_mean"].notna(), None)
    jpt = g["joules_per_output_token"].where(g["mode"] == "decode", g["joules_per_prefill_token"])
    g["joules_per_token"] = jpt.where(window == "timed")
    return g[ENGINE_COLUMNS].sort_values(["device_name", "model", "mode", "batch_size", "engine"], kind="mergesort").reset_index(drop=True)


def compiled_speedup(engines: pd.DataFrame) -> pd.DataFrame:
    """Compiled over eager tokens/s at each configuration measured both ways (same device, model, mode, lengths)."""
    if engines.empty:
        return pd.DataFrame(
            columns=["device_name", "model", "mode", "batch_size", "eager_tokens_per_s", "compiled_tokens_per_s", "speedup"]
        )
    keys = ["device_name", "model", "mode", "batch_size", "input_len", "output_len"]
    eager = engines[~engines["engine"].str.endswith("compiled")]
    comp = engines[engines["engine"].str.endswith("compiled")]
    m = eager.merge(comp, on=keys, suffixes=("_eager", "_compiled"))
    out = m[keys].copy()
    out["eager_tokens_per_s"] = m["tokens_per_s_eager"]
    out["compiled_tokens_per_s"] = m["tokens_per_s_compiled"]
    out["speedup"] = m["tokens_per_s_compiled"] / m["tokens_per_s_eager"]
    return out.reset_index(drop=True)


def gpu_section(operators: pd.DataFrame, engines: pd.DataFrame, speedup: pd.DataFrame) -> list[str]:
    """README lines: per measured GPU, operators against the datasheet, eager against compiled, energy."""
    lines = ["### Operators and engines measured on GPUs", ""]
    ops = operators[operators["device_name"].isin(set(engines["device_name"])) | operators["of"].str.startswith("datasheet")]
    if ops.empty and engines.empty:
        return lines + ["No GPU has been measured yet: run `scripts/gpu_run.sh` on one (about 6 minutes on an H200).", ""]
    if not ops.empty:
        lines += ["Best rate per operator and precision (`fleetcal bench --mode ops`, fastest implementation per shape), against the "
                  "datasheet peak of that precision (FLOP/s) or the datasheet bandwidth (memory-bound operators). All shapes: "
                  "`results/tables/operators.csv` and `results/tables/gemm_curve.csv` (GEMM efficiency against tokens).", ""]  # fmt: skip
        show = ops[["device_name", "model", "operator", "dtype", "best_tflops", "best_gb_per_s", "efficiency", "of", "at"]]
        lines += [round_floats(show, 3).to_markdown(index=False), ""]
    if not speedup.empty:
        lines += ["Transformers decode, eager against compiled (static KV cache, the decoding step compiled with CUDA graphs), "
                  "same device and workload:", "", round_floats(speedup, 3).to_markdown(index=False), ""]  # fmt: skip
    if not engines.empty:
        e = engines.drop(columns=["run_file"])
        lines += ["Decode and prefill on GPUs, with joules per token from NVML's energy counter (decode: per output token; "
                  "prefill: per prompt token), shown where the counter was read around the timed work only (`energy_window` "
                  "`timed`); records that read it over a whole configuration (engine start and compilation included) show none.", "",
                  round_floats(e, 3).to_markdown(index=False), ""]  # fmt: skip
    return lines
