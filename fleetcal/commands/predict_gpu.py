"""``fleetcal predict`` on a catalogued GPU: one serving instance of the per-operator serving model, by phase, layout,
batch or per-user target; a layout the model cannot be laid out on, weights or a batch whose KV does not fit, are refused
(one line, exit 2), not given figures."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from core.engines import engine_rules
from core.errors import UsageError
from core.hardware import Device, get_gpu
from estimator.arch import Arch, Layout, check_layout, check_mtp, load_arch, tp_limit
from estimator.kernels import Kernels, kernels_for
from estimator.memory import kv_room_sequences, largest_batch, weight_bytes_per_gpu
from estimator.operators import load_ops
from estimator.options import disaggregated_point
from estimator.planning import UNREACHABLE, aggregated_point, prefill_step, prefill_tokens_for_ttft
from estimator.serving import Step, step
from estimator.sizing import default_layouts
from estimator.traffic import Request

# what every prediction answers, on a GPU or on this machine's CPU (fleetcal/commands/predict_cpu.py)
KEYS = ("output_tokens_per_s_per_gpu", "input_tokens_per_s_per_gpu", "output_tokens_per_s", "tokens_per_s_per_user", "batch_per_gpu",
        "step_ms", "bound", "breakdown_ms", "efficiency_source", "mode", "total_tokens_per_s_per_gpu", "ttft_ms", "tpot_ms")  # fmt: skip


@dataclass(frozen=True)
class PredictInputs:
    """What ``predict`` runs on, validated at the edge. ``batch``: ("per_gpu", n), ("max", 0), ("speed", 0): the largest
    meeting the request's TPOT, ("per_instance", n) or ("concurrency", n)."""

    request: Request
    gpu: str | None  # None: this machine's CPU
    phase: str
    disaggregated: bool
    num_gpus: int | None
    tp: int | None
    ep: int | None
    dp_attention: bool | None
    batch: tuple[str, float]
    context_len: float | None
    tokens_per_gpu: int | None
    weight_dtype: str | None
    mtp_acceptance: float | None
    results: Path
    pp: int | None = None

    @property
    def mean_kv_len(self) -> float:
        """KV length during decode: --context-len, else the request's mean."""
        return self.context_len or self.request.mean_kv_len


def _layout(x: PredictInputs, default: Layout, gpu: Device) -> Layout:
    """The layout asked for, the default's where not: TP within a node, or the GPU's scale-up domain where larger (NVL72);
    --tp or --pp without --num-gpus: TP x PP GPUs."""
    pp = x.pp or 1
    tp = x.tp or (default.tp if pp == 1 and x.num_gpus in (None, default.num_gpus) else 1)
    n = x.num_gpus or (tp * pp if x.tp or pp > 1 else default.num_gpus)
    ep = x.ep or (min(default.ep, n) if default.ep > 1 and pp == 1 else 1)
    dp = default.dp_attention if x.dp_attention is None else x.dp_attention
    return Layout(n, tp=tp, ep=ep, dp_attention=dp and tp == 1 and pp == 1, redundant_experts=default.redundant_experts if ep == default.ep
                  else 0, gpus_per_node=max(tp_limit(gpu), default.gpus_per_node), step_tokens=default.step_tokens, pp=pp)  # fmt: skip


def _fits_weights(a: Arch, gpu: Device, lay: Layout, k: Kernels, mtp: int) -> float:
    """Weight bytes per GPU, refused where they leave no room in the engine's share of memory (the reserve kept aside)."""
    w = weight_bytes_per_gpu(a, lay, mtp)["total"]
    usable = engine_rules().memory_fraction * gpu.memory_bytes - k.reserve_bytes  # the engine's share, less the reserve
    if w >= usable:
        where = f"{lay.num_gpus} GPU(s) (TP {lay.tp}, EP {lay.ep})"
        raise UsageError(f"{a.shapes.name}'s {a.weight_dtype} weights take {w / 1e9:,.1f} GB per GPU on {where}, more than the "
                         f"{usable / 1e9:,.1f} GB a {gpu.name} leaves: use more GPUs (--num-gpus/--tp) or --weight-dtype fp8")  # fmt: skip
    return w


def _decode_batch(x: PredictInputs, a: Arch, gpu: Device, k: Kernels, lay: Layout, room: int) -> tuple[float, str]:
    """Sequences per GPU and why: the largest meeting the TPOT asked for, the KV room (max), or as asked, within the room."""
    r, (how, n) = x.request, x.batch
    if how == "speed":
        b, why = largest_batch(a, gpu, lay, k, context=x.mean_kv_len, tokens_per_s_per_user=r.tokens_per_s_per_user or 0.0,
                               mtp_tokens=r.mtp_tokens, kv_dtype=r.kv_dtype, limit=room)  # fmt: skip
        if room < 1:
            raise UsageError(f"no KV room for one {r.full_len:,.0f}-token request beside the weights on this layout: use more GPUs "
                             "(--num-gpus/--tp), --kv-dtype fp8 or shorter requests")  # fmt: skip
        if b < 1:
            raise UsageError(f"{r.tokens_per_s_per_user:g} tokens/s per user is out of reach on this layout: one sequence decodes "
                             "slower; lower --tokens-per-user or use more GPUs per instance")  # fmt: skip
        return b, why
    if room < 1:
        raise UsageError(f"no KV room for one {r.full_len:,.0f}-token request beside the weights on this layout: use more GPUs "
                         "(--num-gpus/--tp), --kv-dtype fp8 or shorter requests")  # fmt: skip
    if how == "max":
        return room, "KV room"
    b = n / lay.num_gpus if how in ("per_instance", "concurrency") else n
    if b > room:
        raise UsageError(f"{b:g} sequences per GPU of {r.full_len:,.0f} tokens do not fit: the KV room holds {room} per GPU on this "
                         "layout; ask for fewer (--batch-per-gpu max takes what fits) or use more GPUs")  # fmt: skip
    return b, "asked for"


def _decode(x: PredictInputs, a: Arch, gpu: Device, k: Kernels, lay: Layout) -> dict[str, Any]:
    """One decode step of the layout at the batch asked for (or found), with its memory."""
    r, mtp = x.request, a.mtp_served(x.request.mtp_tokens)
    w = _fits_weights(a, gpu, lay, k, mtp)
    room = kv_room_sequences(a, gpu, lay, k, r.full_len, r.kv_dtype, mtp=mtp)  # at a request's full length, as plan sizes it
    b, why = _decode_batch(x, a, gpu, k, lay, room)
    st = step(a, gpu, lay, k, "decode", batch_per_gpu=b, context=x.mean_kv_len, mtp_tokens=r.mtp_tokens, kv_dtype=r.kv_dtype)
    rate = st.tokens / st.seconds
    return dict(output_tokens_per_s_per_gpu=rate, output_tokens_per_s=rate * lay.num_gpus, tokens_per_s_per_user=rate / b, batch_per_gpu=b,
                step_ms=st.seconds * 1000, bound=st.bound, breakdown_ms={"decode": st.breakdown_ms},
                operator_bounds={"decode": st.op_bounds}, operator_sources={"decode": st.op_sources}, batch_limited_by=why,
                kv_room_sequences_per_gpu=room,
                layout={"decode": lay.__dict__}, weight_gb_per_gpu=w / 1e9)  # fmt: skip


def _prefill(x: PredictInputs, a: Arch, gpu: Device, k: Kernels, lay: Layout) -> tuple[Step, int, str]:
    """One prefill step of the layout at the most tokens per GPU that meet --ttft-ms (or its own step size)."""
    tokens, why = prefill_tokens_for_ttft(a, gpu, lay, k, x.request, x.request.ttft_ms)
    if why == UNREACHABLE:
        raise UsageError(f"a {x.request.ttft_ms:g} ms time to first token cannot be met for {x.request.input_len:g}-token prompts on this "
                         "layout; raise --ttft-ms or change the layout")  # fmt: skip
    return prefill_step(a, gpu, lay, k, x.request, tokens), tokens, why


def _whole_requests(x: PredictInputs, a: Arch, gpu: Device, k: Kernels, dec: Layout, pre: Layout, b: float, tokens: int) -> dict[str, Any]:
    """Whole requests at ``b`` sequences per GPU: aggregated (estimator/planning.py) or disaggregated pools."""
    r = x.request
    pt = disaggregated_point(a, gpu, pre, dec, k, r, b, tokens)[0] if x.disaggregated else aggregated_point(a, gpu, dec, k, r, b)
    return {"mode": "disaggregated" if x.disaggregated else "aggregated", "output_tokens_per_s_per_gpu": pt.output_tokens_per_s_per_gpu,
            "output_tokens_per_s": pt.output_tokens_per_s_per_gpu * dec.num_gpus,
            "total_tokens_per_s_per_gpu": pt.total_tokens_per_s_per_gpu, "tokens_per_s_per_user": pt.tokens_per_s_per_user,
            "ttft_ms": pt.ttft_ms, "tpot_ms": pt.tpot_ms, "fits_token_budget": pt.fits}  # fmt: skip


def predict_gpu(x: PredictInputs) -> dict[str, Any]:
    """The serving model for one instance on a catalogued GPU."""
    gpu, r = get_gpu(x.gpu or ""), x.request
    arch = load_arch(r.model, x.weight_dtype)
    check_mtp(arch, r.mtp_tokens)
    kernels, source = kernels_for(gpu, load_ops(x.results, kind="cuda"), arch.fp8_block_scaled)  # no CPU run counts on a GPU
    if x.mtp_acceptance is not None:
        kernels = replace(kernels, mtp_acceptance=x.mtp_acceptance)
    dec_default, pre_default = default_layouts(arch, r.model, gpu, kernels)
    out: dict[str, Any] = {k: None for k in KEYS}
    out.update(model=arch.shapes.name, device=gpu.name, efficiency_source=source, breakdown_ms={}, request=r.as_dict())
    dec = _layout(x, dec_default, gpu)
    if x.phase in ("decode", "request"):
        check_layout(arch, dec)
        out.update(_decode(x, arch, gpu, kernels, dec))
    if x.phase in ("prefill", "request"):
        lay = _layout(x, pre_default, gpu) if x.phase == "prefill" else pre_default
        lay = replace(lay, step_tokens=x.tokens_per_gpu or lay.step_tokens)
        check_layout(arch, lay)
        st, tokens, why = _prefill(x, arch, gpu, kernels, lay)
        out.update(input_tokens_per_s_per_gpu=st.tokens / st.seconds, prefill_tokens_per_gpu=tokens, prefill_limited_by=why)
        out["breakdown_ms"]["prefill"] = st.breakdown_ms
        out.setdefault("operator_bounds", {})["prefill"] = st.op_bounds
        out.setdefault("operator_sources", {})["prefill"] = st.op_sources
        out.setdefault("layout", {})["prefill"] = lay.__dict__
        if x.phase == "prefill":
            out.update(step_ms=st.seconds * 1000, bound=st.bound)
    if x.phase == "request":  # the decode step's own rates stay beside the whole requests'
        out.update(decode_tokens_per_s_per_gpu=out["output_tokens_per_s_per_gpu"],
                   decode_tokens_per_s_per_user=out["tokens_per_s_per_user"])  # fmt: skip
        out.update(_whole_requests(x, arch, gpu, kernels, dec, lay, out["batch_per_gpu"], out["prefill_tokens_per_gpu"]))
    return out
