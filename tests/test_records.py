"""The record schema, atomic writes, and what --resume considers done."""

from __future__ import annotations

import json

import pytest

from bench.records import RunFile
from core.errors import SchemaError
from core.schema import config_key, load_document, validate_document


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
