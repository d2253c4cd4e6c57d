"""A measured run predicted from the operators measured with it, configuration by configuration, beside what was measured.

``predict_run`` takes run files (one run, or the run files of one device's measuring session: its operator records and
its engine records) and predicts every configuration measured end to end from the operators alone:

- on a CPU, with the CPU step model (estimator/cpu_steps.py): operator curves timed with vLLM's own CPU kernels in the
  same session, and the engine overheads fitted only where estimator/cpu_validation.py fits them (the reference model's
  decode steps at batches up to 32, at its shortest prompt), so each row says ``fitted`` or ``held out``;
- on a catalogued GPU, with the serving model (estimator/serving.step, and estimator/planning.py for whole requests
  under load) on the kernel efficiencies of the session's own operator records (``kernels_for``: measured operator
  classes replace the published ones); nothing is fitted, every row is held out.

Per mode, the metric compared: offline ``throughput``, output tokens/s of waves of B prompts (a wave is prefilled, then
decoded output_len - 1 more steps at its mean context: ``wave_output_tokens_per_s``); ``decode``, the step (ms);
``prefill``, the wave's prompts to their first token (ms, in chunks of the engine's token budget); ``serve`` at a
concurrency C, TTFT and TPOT p50 (ms) from the whole-request model (C sequences decoding while the prompts of the
requests replacing finished ones are prefilled in the same steps; queueing not counted). A configuration or metric the
model cannot say (open-loop arrivals, an engine the model does not describe, a model without operator curves) is
listed with why, never dropped. error = (predicted - measured) / measured.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from core.errors import UsageError
from estimator.cpu_validation import sessions
from estimator.operators import load_ops
from estimator.runs import load_run_table, read_runs
from estimator.traffic import Request
from estimator.utilization import ARTICLE_UTILIZATION

METRICS = {  # mode -> the record fields compared, each with its unit
    "throughput": (("output_tokens_per_s", "tok/s"),),
    "decode": (("decode_step_ms", "ms"),),
    "prefill": (("time_to_first_token_ms", "ms"),),
    "serve": (("ttft_ms_p50", "ms"), ("tpot_ms_p50", "ms")),
}
CONFIG_KEYS = ["device_name", "model", "model_key", "dtype", "engine", "mode", "batch_size", "concurrency", "request_rate",
               "input_len", "output_len", "run_file"]  # fmt: skip
CONTEXT = ["device_kind", "catalog_name", "max_num_batched_tokens", "mean_prompt_tokens", "mean_output_tokens", "prefix_cache_hit_rate"]
ROW_COLUMNS = ["session", "device_name", "model", "engine", "mode", "batch_size", "concurrency", "input_len", "output_len", "metric",
               "unit", "role", "measured", "predicted", "error", "mfu", "mbu", "peak", "run_file"]  # fmt: skip


OPEN_LOOP = ("open-loop arrivals: how many requests are in flight depends on queueing, which the whole-request model does not count; "
             "closed-loop concurrencies are predicted")  # why a configuration of a request rate is not predicted, on a CPU or a GPU


class Unpredictable(ValueError):
    """A configuration (or one of its metrics) the model cannot predict; the message says why."""


@dataclass(frozen=True)
class RunPrediction:
    """Every measured configuration's metrics, predicted and measured; what could not be predicted and why; how each
    measuring session was predicted."""

    rows: pd.DataFrame  # ROW_COLUMNS, one row per configuration and metric
    unpredicted: pd.DataFrame  # session, configuration, why
    methods: dict[str, str]  # session (device and first file's time) -> the model and where its operators come from


def wave_output_tokens_per_s(prefill_s: float, decode_step_s: float, batch: int, output_len: int) -> float:
    """Output tokens/s of offline waves (``fleetcal bench --mode throughput``): each wave of ``batch`` prompts is prefilled
    to its first token, then decoded ``output_len - 1`` more steps: batch x output_len / (prefill_s + (output_len - 1) x step)."""
    return batch * output_len / (prefill_s + (output_len - 1) * decode_step_s)


def mean_request(c: Any, model: str, kv_dtype: str = "bf16") -> Request:
    """A serve configuration's requests as they were on average: the mean prompt and reply tokens sent (the configured
    lengths where the record has none; at least one reply token), the prefix-cache hit rate as each prompt's cached share."""
    i = int(c.mean_prompt_tokens if pd.notna(c.mean_prompt_tokens) else c.input_len)
    o = max(int(c.mean_output_tokens if pd.notna(c.mean_output_tokens) else c.output_len), 1)
    cached = float(c.prefix_cache_hit_rate) if pd.notna(c.prefix_cache_hit_rate) else 0.0
    return Request(model, i, o, cached_fraction=cached, kv_dtype=kv_dtype)


def run_files(paths: Iterable[Path]) -> list[Path]:
    """The run files under ``paths`` (files, or directories of them, or results directories with runs/), each once."""
    out: dict[str, Path] = {}
    for p in paths:
        if not Path(p).exists():
            raise UsageError(f"--run {p}: no such run file or directory")
        for doc in read_runs(Path(p), warn=True)[0]:
            out.setdefault(doc.path.name, doc.path)
    return [out[name] for name in sorted(out)]


def load_session(paths: Iterable[Path]) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, dict[str, Any]]]:
    """(engine records, operator records, each run file's engine settings) of the run files under ``paths``."""
    files = run_files(paths)
    if not files:
        raise UsageError("--run: no valid run file there; give a results file of `fleetcal bench` or a directory of them")
    runs = pd.concat([load_run_table(f, warn=False)[0] for f in files], ignore_index=True)
    ops = pd.concat([load_ops(f, warn=False) for f in files], ignore_index=True)
    engines = {f.name: doc.run["engine"] for f in files for doc in read_runs(f, warn=False)[0]}
    return runs, ops, engines


def configurations(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per measured configuration (repeats at their median), with the compared metrics and the measured MFU and
    MBU (against the datasheet peak where the device is catalogued, else the run's own microbenchmark peak)."""
    fields = [f for pairs in METRICS.values() for f, _ in pairs]
    cols = CONFIG_KEYS + CONTEXT + fields + ["mfu", "mbu", "mfu_measured_peak", "mbu_measured_peak"]
    if runs.empty or "mode" not in runs:
        return pd.DataFrame(columns=[*CONFIG_KEYS, *CONTEXT, *fields, "mfu", "mbu", "peak"])
    ok = runs[(runs["status"] == "ok") & runs["mode"].isin(list(METRICS))].reindex(columns=cols)
    ok = ok.assign(peak=ok["mfu"].notna().map({True: "datasheet", False: "measured"}), mfu=ok["mfu"].fillna(ok["mfu_measured_peak"]),
                   mbu=ok["mbu"].fillna(ok["mbu_measured_peak"]))  # fmt: skip
    agg = {**{c: "first" for c in [*CONTEXT, "peak"]}, **{c: "median" for c in [*fields, "mfu", "mbu"]}}
    return ok.groupby(CONFIG_KEYS, dropna=False, sort=False).agg(agg).reset_index()


def label(c: Any) -> str:
    """A configuration in a few words: mode, size, lengths, model, engine."""
    if pd.notna(c.request_rate):
        size = f"rate={c.request_rate}/s"
    else:
        size = f"c={c.concurrency:g}" if c.mode == "serve" else f"b={c.batch_size:g}"
    return f"{c.mode} {size} in={int(c.input_len)} out={int(c.output_len)} ({c.model}, {c.engine}, {c.run_file})"


def predict_run(paths: Iterable[Path]) -> RunPrediction:
    """Every configuration measured end to end in the run files under ``paths``, predicted from the operators measured in
    the same session (module docstring). A run of operator records only is refused in one line."""
    from estimator.run_prediction_cpu import predict_cpu_device
    from estimator.run_prediction_gpu import predict_gpu_device

    runs, ops, engines = load_session(paths)
    cfgs = configurations(runs)
    if cfgs.empty:
        what = "operator records only" if not ops.empty else "no successful measurement"
        raise UsageError(f"--run: the run holds {what}: nothing measured end to end to predict; measure with "
                         "`fleetcal bench --mode throughput,prefill,decode,serve` (its operators with --mode ops)")  # fmt: skip
    rows: list[dict[str, Any]] = []
    unpredicted: list[dict[str, str]] = []
    methods: dict[str, str] = {}
    for device, dev_runs in runs.groupby("device_name", sort=True):
        dev_ops = ops[ops["device_name"] == device]
        names = sessions([*dev_runs["run_file"], *dev_ops["run_file"]])
        for name in sorted(set(names.values())):
            files = {f for f, s in names.items() if s == name}
            session, mine = f"{device} {name}", cfgs[cfgs["run_file"].isin(files)]
            unpredicted += [{"session": session, "configuration": what, "why": why} for what, why in not_measured(dev_runs, files)]
            if mine.empty:
                continue  # operators only, or nothing measured successfully
            side = predict_cpu_device if mine["device_kind"].iloc[0] == "cpu" else predict_gpu_device
            r, u, how = side(mine, dev_runs[dev_runs["run_file"].isin(files)], dev_ops[dev_ops["run_file"].isin(files)], engines)
            rows += [{**x, "session": session} for x in r]
            unpredicted += [{"session": session, "configuration": what, "why": why} for what, why in u]
            methods[session] = how
    return RunPrediction(pd.DataFrame(rows, columns=ROW_COLUMNS), pd.DataFrame(unpredicted, columns=["session", "configuration", "why"]),
                         methods)


def not_measured(runs: pd.DataFrame, files: set[str]) -> list[tuple[str, str]]:
    """The configurations of ``files`` that failed or were flagged suspect: nothing measured to set a prediction beside."""
    bad = runs[runs["run_file"].isin(files) & runs["mode"].isin(list(METRICS)) & (runs["status"] != "ok")]
    bad = bad.reindex(columns=[*CONFIG_KEYS, "status", "error", "reason"])
    return [(label(c), f"not measured ({c.status}: {str(c.error if pd.notna(c.error) else c.reason)[:160]})") for c in bad.itertuples()]


def metric_rows(c: Any, predicted: dict[str, float], role: str, measured: dict[str, float] | None = None) -> list[dict[str, Any]]:
    """The rows of one configuration: each metric of its mode, measured (``measured`` overrides the record's), predicted."""
    out = []
    for field, unit in METRICS[c.mode]:
        m = (measured or {}).get(field, getattr(c, field))
        if field not in predicted or pd.isna(m):
            continue
        p = predicted[field]
        out.append({"device_name": c.device_name, "model": c.model, "engine": c.engine, "mode": c.mode, "batch_size": c.batch_size,
                    "concurrency": c.concurrency, "input_len": c.input_len, "output_len": c.output_len, "metric": field, "unit": unit,
                    "role": role, "measured": float(m), "predicted": float(p), "error": float(p) / float(m) - 1, "mfu": c.mfu,
                    "mbu": c.mbu, "peak": c.peak, "run_file": c.run_file})  # fmt: skip
    return out


def summary(rows: pd.DataFrame) -> dict[str, Any]:
    """The median |error| over held-out and over fitted rows (and per metric), beside the measured MFU and MBU and the
    article's assumed utilization."""
    held, fitted = rows[rows["role"] == "held out"], rows[rows["role"] == "fitted"]
    per_config = rows.drop_duplicates(["session", "mode", "batch_size", "concurrency", "input_len", "output_len", "run_file"])

    def med(s: pd.Series) -> float | None:
        return None if s.dropna().empty else float(s.abs().median())

    return {
        "held_out": len(held), "held_out_median_abs_error": med(held["error"]),
        "held_out_median_signed_error": None if held.empty else float(held["error"].median()),
        "fitted": len(fitted), "fitted_median_abs_error": med(fitted["error"]),
        "by_metric": {m: med(g["error"]) for m, g in held.groupby("metric")},
        "mfu_median": None if per_config["mfu"].dropna().empty else float(per_config["mfu"].median()),
        "mfu_max": None if per_config["mfu"].dropna().empty else float(per_config["mfu"].max()),
        "mbu_max": None if per_config["mbu"].dropna().empty else float(per_config["mbu"].max()),
        "article_utilization": ARTICLE_UTILIZATION,
    }  # fmt: skip
