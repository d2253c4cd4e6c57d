"""``fleetcal predict`` on this machine's CPU: the model's operator curves measured here plus the engine overhead
fitted here, by phase and batch or per-user target."""

from __future__ import annotations

import sys
from typing import Any

from core.errors import UsageError
from core.identity import cpu_has_native_bf16, describe_cpu
from core.models import ModelSpec, get_model, resolve_model_key
from estimator.cpu_steps import OperatorCurves, Overhead, UndeterminedError, build_curves, decode_ops, prefill_ops
from estimator.cpu_validation import REFERENCE_MODEL, validate
from estimator.operators import load_ops
from estimator.runs import load_runs
from fleetcal.commands.predict_gpu import KEYS, PredictInputs


def _cpu_steps(x: PredictInputs) -> tuple[OperatorCurves, Overhead, str]:
    """This CPU's operator curves for the model and the engine overheads fitted here (matched by device identity, never another CPU's)."""
    here = describe_cpu()
    label = f"[{here['id']}]"
    ops = load_ops(x.results)
    model = x.request.model
    mine = ops[ops["device_name"].fillna("").str.endswith(label)]
    key = resolve_model_key(model)
    names = sorted({m for m in mine["model"] if key is not None and resolve_model_key(m) == key})
    how = f"run `bash scripts/measure_cpu_steps.sh` here (or `fleetcal bench --mode ops --model {model} --load-format dummy`)"
    if mine.empty or not names:
        what = "has not been measured" if mine.empty else f"has no operator curves for {model}"
        raise UsageError(f"this CPU ({here['name']} {label}) {what}: {how}")
    device_name = mine["device_name"].iloc[0]
    dtypes = set(mine.loc[mine["model"] == names[0], "dtype"])
    dtype = "bf16" if cpu_has_native_bf16(here) and "bf16" in dtypes else "fp32"  # what `--dtype auto` runs here
    try:
        runs = load_runs(x.results, warn=False)  # load_ops named the skipped files
        if runs.empty or "device_name" not in runs:
            raise UndeterminedError(f"{x.results} holds operator curves but no measured decode steps to fit the engine's overhead to")
        v = validate(runs, ops, device_name)
        # curves and overhead of one measuring session, the latest that timed this model's operators: this machine drifts between sessions
        files, model_ops = v.session_files, mine[mine["model"] == names[0]]
        timed = [name for name, fs in files.items() if model_ops["run_file"].isin(fs).any()]
        if not timed:
            raise UndeterminedError(f"no measuring session with fitted decode steps timed the operators of {names[0]}")
        session = max(timed)
        curves, over = (
            build_curves(model_ops[model_ops["run_file"].isin(files[session])], device_name, names[0], dtype),
            v.overheads[session],
        )
    except UndeterminedError as exc:
        raise UsageError(f"this CPU's step model cannot be built: {exc}; {how}") from exc
    for what in over.undetermined:  # said, not hidden: the prediction leans on a term the fitted steps do not pin down
        print(f"fleetcal predict: warning: the engine overhead fit of this CPU cannot determine its {what}", file=sys.stderr)
    source = (f"operator curves of {names[0]} on this CPU, {device_name}, {dtype}, and the engine overhead fitted on "
              f"{over.fitted_on} decode steps of {REFERENCE_MODEL}, all from the measuring session {session}")  # fmt: skip
    return curves, over, source


def cpu_uncosted(spec: ModelSpec) -> list[str]:
    """What the CPU step model (estimator/cpu_steps.py: a dense model's GEMMs, attention over the whole context, norms)
    does not cost: routed experts, attention kinds other than global (windows, chunks, latent, state layers)."""
    s = spec.shapes
    kinds = [k for k in s.layer_kinds if k != "global"]
    return (["routed experts"] if s.num_experts else []) + [f"{k} layers" for k in kinds]


def predict_cpu(x: PredictInputs) -> dict[str, Any]:
    """The CPU step model of this machine (one device, no layout): operator curves plus the engine's overhead."""
    r = x.request
    spec = get_model(r.model, x.weight_dtype)  # its context was checked at the edge
    missing = cpu_uncosted(spec)
    if missing:
        raise UsageError(f"{spec.name}: the CPU step model costs dense models of global attention; this one has {', '.join(missing)}: "
                         "use --gpu")  # fmt: skip
    curves, over, source = _cpu_steps(x)
    ctx = x.mean_kv_len

    def decode(b: int) -> tuple[float, dict[str, float]]:
        parts = {**decode_ops(curves, b, ctx), "overhead": over.per_step + over.per_sequence * b}
        return sum(parts.values()), parts

    how, n = x.batch
    if how == "speed":
        b = 0
        while b < 4096 and 1 / decode(b + 1)[0] >= (r.tokens_per_s_per_user or 0.0):
            b += 1
        if b < 1:
            raise UsageError(f"{r.tokens_per_s_per_user:g} tokens/s per user is out of reach on this CPU: one sequence decodes at "
                             f"{1 / decode(1)[0]:.1f}; lower --tokens-per-user")  # fmt: skip
    else:
        b = int(n)
    dec_s, dec_parts = decode(b)
    pre_parts, chunks = prefill_ops(curves, b, r.input_len)
    pre_parts["overhead"] = chunks * over.per_step + over.per_sequence * b
    pre_s = sum(pre_parts.values())
    out: dict[str, Any] = {k: None for k in KEYS}
    out.update(model=spec.name, device=curves.device_name, efficiency_source=source, batch_per_gpu=b, breakdown_ms={}, request=r.as_dict())
    if x.phase in ("decode", "request"):
        out.update(output_tokens_per_s_per_gpu=b / dec_s, output_tokens_per_s=b / dec_s, tokens_per_s_per_user=1 / dec_s,
                   step_ms=dec_s * 1000, bound="operator sum")  # fmt: skip
        out["breakdown_ms"]["decode"] = {k: v * 1000 for k, v in dec_parts.items()}
    if x.phase in ("prefill", "request"):
        out["input_tokens_per_s_per_gpu"] = b * r.input_len / pre_s
        out["breakdown_ms"]["prefill"] = {k: v * 1000 for k, v in pre_parts.items()}
        if x.phase == "prefill":
            out.update(step_ms=pre_s * 1000, bound="operator sum")
    if x.phase == "request":  # whole requests as vLLM's offline throughput runs them here: prefill, then decode, one batch at a time
        t = pre_s + dec_s * max(r.output_len - 1, 0)
        out["output_tokens_per_s"] = out["output_tokens_per_s_per_gpu"] = b * r.output_len / t
        # tokens_per_s_per_user is 1000 / TPOT on the CPU as on a GPU; the end-to-end rate (prefill included) has its own name
        out.update(mode="one batch at a time", total_tokens_per_s_per_gpu=b * (r.input_len + r.output_len) / t, ttft_ms=pre_s * 1000,
                   tpot_ms=dec_s * 1000, tokens_per_s_per_user=1 / dec_s, e2e_tokens_per_s_per_user=r.output_len / t)  # fmt: skip
    return out
