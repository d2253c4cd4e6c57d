"""The record schema, atomic writes, and what --resume considers done."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from bench.records import RunFile
from core.errors import SchemaError
from core.schema import config_key, load_document, validate_document

ROOT = Path(__file__).resolve().parent.parent


def _run():
    return {
        "started_utc": "2026-01-01T00:00:00Z",
        "git_commit": "abc",
        "versions": {"python": "3.11", "vllm": "0", "torch": "0", "transformers": "0"},
        "device": {"kind": "cpu", "name": "test cpu", "cores": 2},
        "model": {"name": "m", "parameters": 1},
        "engine": {"name": "vllm", "num_gpus": 1},
        "args": {},
    }


def _ok(batch):
    return {
        "mode": "throughput", "status": "ok", "batch_size": batch, "concurrency": None, "input_len": 8,
        "output_len": 4, "num_prompts": 4, "output_tokens_per_s": 10.0, "total_tokens_per_s": 30.0,
        "mfu": None, "mbu": None, "mfu_measured_peak": 0.1, "mbu_measured_peak": 0.2,
    }  # fmt: skip


def test_runfile_writes_valid_document_after_each_record(tmp_path):
    rf = RunFile(tmp_path / "r.json", _run())
    rf.save()
    assert load_document(rf.path)["records"] == []
    rf.add(_ok(1))
    rf.add({**_ok(8), "status": "failed", "error": "out of memory"})
    doc = load_document(rf.path)
    assert [r["batch_size"] for r in doc["records"]] == [1, 8]
    assert not list(tmp_path.glob(".*.tmp")), "temporary files must be renamed away"


def test_done_keys_hold_measured_configurations_but_not_failed_ones(tmp_path):
    rf = RunFile(tmp_path / "r.json", _run())
    rf.add(_ok(1))
    rf.add({**_ok(8), "status": "failed", "error": "boom"})
    rf.add({**_ok(32), "status": "suspect", "reason": "mfu 120% exceeds 100%"})
    done = rf.done_keys()
    assert config_key(_ok(1)) in done
    assert config_key(_ok(8)) not in done, "a failed configuration is measured again on --resume"
    assert config_key(_ok(32)) in done, "a suspect one is kept as it is: measuring again would not make it plausible"


def test_adding_a_configuration_again_replaces_it(tmp_path):
    rf = RunFile(tmp_path / "r.json", _run())
    rf.add({**_ok(8), "status": "failed", "error": "boom"})
    rf.add(_ok(8))
    assert len(rf.records) == 1 and rf.records[0]["status"] == "ok"


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.update(schema_version=99),
        lambda d: d["run"].pop("device"),
        lambda d: d["run"]["device"].update(kind="tpu"),
        lambda d: d["records"].append({**_ok(2), "mode": "warp"}),
        lambda d: d["records"].append({**_ok(2), "status": "failed"}),
        lambda d: d["records"].append({k: v for k, v in _ok(2).items() if k != "mfu"}),
        lambda d: d["records"].append({**_ok(2), "mode": "serve", "ttft_ms": {"mean": 1.0}}),
    ],
)
def test_schema_violations_are_caught(mutate):
    doc = {"schema_version": 1, "run": _run(), "records": [_ok(1)]}
    validate_document(doc)
    mutate(doc)
    with pytest.raises(SchemaError):
        validate_document(doc)


def test_unreadable_file_is_a_schema_error(tmp_path):
    p = tmp_path / "bad.json"
    p.write_text("{not json")
    with pytest.raises(SchemaError):
        load_document(p)
    p.write_text(json.dumps({"schema_version": 1}))
    with pytest.raises(SchemaError):
        load_document(p)


# --- typed records (core/records.py) ------------------------------------------------------------------------------


def test_every_committed_run_parses_into_its_typed_models():
    """The committed runs and fixtures (schema version 1, written before the models) read as typed records, none skipped:
    every key on disk is a field of its mode's model."""
    from core.records import MODELS
    from core.schema import read_run_files

    for where in (ROOT / "results" / "runs", ROOT / "tests" / "fixtures" / "runs"):
        docs, skipped = read_run_files(where)
        assert skipped == [] and docs
        for doc in docs:
            assert all(type(r) is MODELS[r.mode] for r in doc.records)


@pytest.mark.parametrize(
    ("record", "says"),
    [
        ({**_ok(1), "output_tokens_per_sec": 3.0}, "no 'output_tokens_per_sec'"),  # a misspelt key
        ({**_ok(1), "decode_step_ms": 2.0}, "no 'decode_step_ms'"),  # a key of another mode
        ({k: v for k, v in _ok(1).items() if k != "total_tokens_per_s"}, "lacks 'total_tokens_per_s'"),
        ({**_ok(1), "batch_size": "8"}, "batch_size must be a number"),
        ({**_ok(1), "mode": "decode", "decode_tokens_per_s": 1.0}, "lacks 'decode_step_ms'"),
        ({**_ok(1), "mode": "serve", "status": "failed", "error": "x", "request_rate": "fast"}, "request_rate must be a number"),
        ({"mode": "ops", "status": "failed", "error": "x", "input_len": None, "output_len": None, "num_prompts": None,
          "operator": "matmul", "shape": {}, "dtype": "bf16"}, "unknown operator 'matmul'"),
    ],
)  # fmt: skip
def test_writing_a_record_goes_through_its_model(tmp_path, record, says):
    """An unknown key, a missing one, a value of the wrong kind: refused when the record is added, the file unchanged."""
    rf = RunFile(tmp_path / "r.json", _run())
    rf.add(_ok(2))
    before = rf.path.read_bytes()
    with pytest.raises(SchemaError, match=re.escape(says)):
        rf.add(record)
    assert rf.path.read_bytes() == before and len(rf.records) == 1


def test_the_offline_writers_fill_only_fields_their_models_have(tmp_path, monkeypatch):
    """Throughput, prefill and decode records as a sweep writes them (engine, energy, cost, repeats), on a fake engine:
    every record passes its model on the way into the file, and reads back typed."""
    import bench.sweep
    from bench.sweep import run_plan
    from core.records import DecodeRecord, PrefillRecord, ThroughputRecord
    from core.schema import read_run_files
    from fleetcal.cli import build_parser
    from fleetcal.commands.bench import validate_args

    class Fake:  # prefill 1e-4 s a prompt token, 0.01 s a decode step of the batch
        vocab_size = 5000

        def generate(self, prompts, output_len):
            return sum(len(p) for p in prompts) * 1e-4 + (output_len - 1) * 0.01, len(prompts) * output_len

        def close(self):
            pass

    monkeypatch.setattr(bench.sweep, "start_engine", lambda cfg: Fake())
    args = build_parser().parse_args(["bench", "--device", "cpu", "--mode", "throughput,prefill,decode", "--batch-sizes", "2",
                                      "--input-lens", "8", "--output-lens", "4", "--num-prompts", "2", "--microbench", "off",
                                      "--gpu-hour-usd", "2", "--repeats", "2", "--out", str(tmp_path)])  # fmt: skip
    runfile = run_plan(validate_args(args), progress=False)
    (doc,), _ = read_run_files(runfile.path)
    kinds = [type(r) for r in doc.records]
    assert kinds == [ThroughputRecord, PrefillRecord, DecodeRecord] * 2 and all(r.ok for r in doc.records)
    assert all(r.usd_per_million_output_tokens > 0 and r.repeat in (1, 2) for r in doc.records)


def test_the_report_names_only_columns_the_run_table_has():
    """The column lists of the report's tables name record fields through the run table: a field renamed in
    core/records.py fails here instead of becoming a column of blanks (the lists' own derived columns aside)."""
    from estimator.operators import OPS_COLUMNS
    from estimator.runs import RUN_TABLE_COLUMNS, run_columns
    from fleetcal.report import ops, repeats, serving

    derived = {"output_tokens_per_s_per_device", "tokens_per_s_per_user", "on_frontier", "tokens_per_s", "step_ms", "joules_per_token"}
    for names in (serving.SERVING_COLUMNS, repeats.KEYS, repeats.RATES, ops.ENGINE_COLUMNS):
        assert [n for n in names if n not in RUN_TABLE_COLUMNS and n not in derived] == []
    with pytest.raises(ValueError, match="output_tokens_per_sec"):
        run_columns("device_name", "output_tokens_per_sec")
    assert {"operator", "shape", "dtype", "tflops", "gb_per_s", "mfu", "mbu", "m"} <= set(OPS_COLUMNS)


def test_every_planned_operator_case_is_a_record_operator():
    """bench plans operator cases only of the operators records may name (a renamed one would be refused when written),
    and the ones rated in GB/s are the memory-bound ones of the enum (bench's summary and the operator tables agree)."""
    from bench.ops import plan_cases
    from core.models import get_model
    from core.records import MEMORY_BOUND, Operator

    for model in ("smollm2-135m", "deepseek-v3"):  # dense (layer elementwise) and MoE (grouped GEMMs)
        cases = plan_cases(get_model(model).shapes, "cpu", ("fp32", "bf16"), False)
        assert {c.operator for c in cases} <= {o.value for o in Operator}
    assert set(MEMORY_BOUND) == {"attention_decode", "rmsnorm", "sampling", "copy"}
