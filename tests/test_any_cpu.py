"""Any CPU: precision by capability, device identities that tell machines apart, sanity bounds on records."""

from __future__ import annotations

import pytest

from bench.precision import choose_dtype
from bench.sanity import checked
from core.identity import describe_cpu, device_id, device_label
from core.models import get_model

AVX2_ONLY = {"kind": "cpu", "name": "AMD EPYC", "vendor": "AuthenticAMD", "family": 25, "model": 17, "stepping": 1,
             "flags": ["avx2"], "cores": 2, "memory_gb": 25.28}  # fmt: skip
AVX512_BF16 = {**AVX2_ONLY, "model": 160, "flags": ["avx2", "avx512_bf16", "avx512f"]}
AMX = {"kind": "cpu", "name": "Intel(R) Xeon(R) Processor", "vendor": "GenuineIntel", "family": 6, "model": 207, "stepping": 2,
       "flags": ["amx_bf16", "amx_tile", "avx2", "avx512_bf16", "avx512f"], "cores": 2, "memory_gb": 25.28}  # fmt: skip


@pytest.mark.parametrize(
    ("device", "dtype", "why"),
    [
        (AVX2_ONLY, "float32", "emulated"),
        (AVX512_BF16, "bfloat16", "avx512_bf16"),
        (AMX, "bfloat16", "amx_bf16"),
        ({"kind": "cuda", "compute_capability": "9.0"}, "bfloat16", "natively"),
        ({"kind": "cuda", "compute_capability": "7.5"}, "float16", "no native bf16"),
    ],
)
def test_auto_precision_follows_what_the_device_runs_natively(device, dtype, why):
    chosen, reason = choose_dtype("auto", device)
    assert chosen == dtype and why in reason


def test_an_asked_for_precision_is_kept_and_says_so():
    assert choose_dtype("bfloat16", AVX2_ONLY) == ("bfloat16", "asked for with --dtype")


def test_device_ids_tell_cpus_sold_under_one_name_apart():
    ids = {device_id(d) for d in (AVX2_ONLY, AVX512_BF16, AMX)}
    assert len(ids) == 3
    assert all(i.startswith("cpu-") and len(i) == 12 for i in ids)
    assert device_id({**AVX2_ONLY, "memory_gb": 25.31}) == device_id(AVX2_ONLY), "a few MB of VM memory is the same machine"
    assert device_id({**AVX2_ONLY, "cores": 4}) != device_id(AVX2_ONLY)
    assert device_label(AVX2_ONLY) == f"AMD EPYC [{device_id(AVX2_ONLY)}]"


def test_this_cpu_is_described_with_its_identity():
    d = describe_cpu()
    assert d["kind"] == "cpu" and d["cores"] >= 1 and d["vendor"]
    assert d["id"] == device_id(d)
    assert describe_cpu()["id"] == d["id"], "the id is stable across calls"


def _record(**kw):
    base = {"mode": "throughput", "status": "ok", "batch_size": 8, "input_len": 32, "output_len": 64, "num_prompts": 8,
            "elapsed_s": 2.0, "output_tokens_per_s": 256.0, "total_tokens_per_s": 384.0,
            "mfu": None, "mbu": None, "mfu_measured_peak": 0.3, "mbu_measured_peak": 0.4, "model_tflops_per_s": 0.1}  # fmt: skip
    return {**base, **kw}


@pytest.mark.parametrize(
    ("record", "needle"),
    [
        (_record(mfu_measured_peak=44.6), "mfu_measured_peak 4460.0% exceeds 100%"),
        (_record(mbu=1.2), "mbu 120.0% exceeds 100%"),
        (_record(elapsed_s=0.0), "elapsed_s 0.0 is not positive"),
        (_record(mode="decode", decode_s=-0.1), "decode_s -0.1 is not positive"),
        ({"mode": "microbench", "status": "ok", "peak_dtype": "bf16", "matmul_tflops": 0.0, "memory_bandwidth_gb_per_s": 20.0},
         "implausible"),
        ({"mode": "microbench", "status": "ok", "matmul_bf16_tflops": 0.7, "memory_bandwidth_gb_per_s": 0.0}, "copy bandwidth"),
        ({"mode": "ops", "status": "ok", "operator": "gemm", "mfu": 1.3, "mfu_measured_peak": 1.3}, "mfu 130.0%"),
    ],
)
def test_each_sanity_rule_marks_a_hand_built_record_suspect_and_keeps_its_figures(record, needle):
    out = checked(record)
    assert out["status"] == "suspect" and needle in out["reason"]
    assert {k: v for k, v in out.items() if k not in ("status", "reason")} == {k: v for k, v in record.items() if k != "status"}


def test_plausible_records_pass_unchanged():
    rec = _record()
    assert checked(rec) is rec
    ops = {"mode": "ops", "status": "ok", "operator": "gemm", "mfu": 0.7, "mfu_measured_peak": 1.4}
    assert checked(ops) is ops, "an operator can beat the one-size microbenchmark (caches); only the datasheet bounds it"
    failed = {"mode": "throughput", "status": "failed", "error": "boom", "mfu": 9.0}
    assert checked(failed) is failed


def test_suspect_records_stay_out_of_calibration(tmp_path):
    import json

    from bench.records import SCHEMA_VERSION
    from estimator.runs import load_runs
    from estimator.utilization import measured_utilization

    run = {"started_utc": "2026-01-01T00:00:00Z", "git_commit": "x", "versions": {}, "device": AVX2_ONLY,
           "model": {"name": "m", "catalog_key": "smollm2-135m"}, "engine": {"name": "vllm", "num_gpus": 1}, "args": {}}  # fmt: skip
    micro = {"mode": "microbench", "status": "ok", "batch_size": None, "input_len": None, "output_len": None, "num_prompts": None,
             "peak_dtype": "bf16", "matmul_tflops": 2.0, "memory_bandwidth_gb_per_s": 20.0}  # fmt: skip
    recs = [micro, checked(_record(mfu_measured_peak=44.6)), _record(batch_size=1, mfu_measured_peak=0.05)]
    (tmp_path / "r.json").write_text(json.dumps({"schema_version": SCHEMA_VERSION, "run": run, "records": recs}))
    df = load_runs(tmp_path)
    assert set(df["status"]) == {"suspect", "ok"}
    # the formula's count, 2 x parameters x 256 output tok/s, over the peak the run's microbenchmark measured (2 TFLOP/s)
    params = get_model("smollm2-135m").matmul_params
    assert measured_utilization(df)["utilization"] == pytest.approx(2 * params * 256 / 2e12)
    assert df["device_name"].iloc[0] == device_label(AVX2_ONLY)
