"""fleetcal beside AIConfigurator on the published rows (docs/peer.md): the mapping of each row kind, the run in the peer's
own environment (here a stand-in Python, CI installs no peer), the committed predictions (results/peer/) read back, the
generated page, and the gate on the two medians over the rows both express."""

from __future__ import annotations

import json
import math
import stat
import sys
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

import fleetcal.peers.aic as aic
from core.paths import RESULTS_DIR
from estimator.operators import load_ops
from estimator.validation import Row, load_rows, validate
from fleetcal.cli import main
from fleetcal.peers.aic_runner import kv_room_sequences
from fleetcal.peers.side_by_side import (
    NAME,
    PEER_END,
    PEER_PAGE,
    PEER_START,
    load_peer,
    not_expressed,
    not_run,
    peer_block,
    shared_summary,
    side_by_side,
)


@pytest.fixture(scope="module")
def rows() -> dict[str, Row]:
    return {r.id: r for r in load_rows()[0]}


@pytest.fixture(scope="module")
def validation(rows) -> pd.DataFrame:
    return validate(list(rows.values()), load_ops(RESULTS_DIR, warn=False))


@pytest.fixture(scope="module")
def committed() -> dict:
    peer = load_peer()
    assert peer is not None, "no committed AIConfigurator run under results/peer/"
    return peer


# --- what each row becomes --------------------------------------------------------------------------------------------


def test_a_max_load_row_is_the_peers_aggregated_run_under_the_rows_kv_fraction_and_token_budget(rows):
    req = aic.peer_request(rows["trtllm-llama3.3-70b-h100-tp2-2048-2048"])
    assert req["system"] == "h100_sxm" and req["backend"] == "trtllm" and req["version"] == "current"
    assert (req["kind"], req["tp"], req["attention_dp"], req["moe_ep"]) == ("max_load", 2, 1, None)
    assert (req["gemm_quant"], req["kv_quant"], req["kv_fraction"], req["max_batch"]) == ("fp8", "fp8", 0.95, 2048)
    # TensorRT-LLM's default max_num_tokens (BaseLlmArgs, core/data/engines/tensorrt-llm-1.0.toml): 8,192
    assert req["ctx_tokens"] == 8192 and req["model_dir"] == "core/data/models/llama-3.1-70b"


def test_a100_fp16_rows_are_the_peers_16_bit_gemms_and_h100_static_rows_keep_their_batch(rows):
    a100 = aic.peer_request(rows["trtllm061-llama-2-7b-a100-tp1-b384-128-128"])
    assert (a100["system"], a100["gemm_quant"], a100["kv_quant"], a100["batch"]) == ("a100_sxm", "bfloat16", "bfloat16", 384)
    h100 = aic.peer_request(rows["trtllm061-llama-2-70b-h100-tp4-b480-128-2048"])
    assert (h100["kind"], h100["tp"], h100["batch"], h100["gemm_quant"]) == ("static_batch", 4, 480, "fp8")


def test_deepseek_prefill_is_sglangs_wide_ep_with_the_rows_expert_balance(rows):
    default = aic.peer_request(rows["sglang-deepseek-prefill-ep32-4k-default-eplb"])
    perfect = aic.peer_request(rows["sglang-deepseek-prefill-ep32-4k-perfect-eplb"])
    for req in (default, perfect):
        assert (req["backend"], req["version"], req["allow_unlisted_version"]) == ("sglang", "0.5.6.post2", True)
        assert (req["tp"], req["attention_dp"], req["moe_ep"], req["moe_tp"]) == (1, 32, 32, 1)
        assert (req["gemm_quant"], req["moe_quant"], req["kv_quant"]) == ("fp8_block", "fp8_block", "fp8")  # block-scaled checkpoint
        assert req["tokens_per_gpu"] // req["input_len"] == 4
    assert default["enable_eplb"] and "workload_distribution" not in default
    assert perfect["workload_distribution"] == "uniform" and not perfect["enable_eplb"]


def test_a_gpu_the_peer_does_not_hold_is_not_expressed_with_why(rows):
    why = aic.peer_request(rows["deepseek-profile-prefill-ep32-4k"])
    assert isinstance(why, str) and "H800" in why
    odd = replace(rows["sglang-deepseek-prefill-ep32-4k-default-eplb"], tokens_per_gpu=16000)
    assert "whole number" in aic.peer_request(odd)


def test_the_kv_room_is_the_peers_budget_over_one_sequences_kv():
    # 10 GiB of KV for 4 sequences (2.5 GiB each) and 30 GiB besides KV on an 80 GiB GPU; a budget of 0.9 x what is free
    memory = {"kvcache": 10.0, "total": 40.0}
    assert kv_room_sequences(memory, 4, 80.0, lambda cap, non_kv: 0.9 * (cap - non_kv)) == 18  # 45 GiB / 2.5 GiB
    assert kv_room_sequences(memory, 4, 80.0, lambda cap, non_kv: -1.0) == 0


# --- the run, through a stand-in for the peer's Python ----------------------------------------------------------------

FAKE_RUNNER = """
import json, sys
requests = json.load(open(sys.argv[3]))
rows = [{"id": r["id"], "system": r["system"], "backend": r["backend"], "error": "PerfDataNotAvailableError: no data"}
        if r["kind"] == "decode_step" else
        {"id": r["id"], "system": r["system"], "backend": r["backend"], "per_gpu_tokens_per_s": 1000.0, "batch": 1, "how": "stand-in",
         "per_op_ms": {}} for r in requests]
json.dump({"peer": {"aiconfigurator": "9.9.9", "aiconfigurator_core": "9.9.9", "databases": {}}, "rows": rows}, open(sys.argv[4], "w"))
"""


@pytest.fixture
def fake_python(tmp_path) -> Path:
    """An executable standing for the peer environment's Python: it runs the stand-in runner above instead of the real one
    (argv: -P RUNNER REQUESTS OUT), returning 1,000 tokens/s per GPU for every row and refusing decode steps."""
    script = tmp_path / "python"
    script.write_text(f"#!{sys.executable}\n{FAKE_RUNNER}")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script


def test_run_peer_scopes_the_peers_rate_as_the_row_counts_it_and_keeps_its_refusals(rows, fake_python):
    run = aic.run_peer(list(rows.values()), fake_python)
    got = {r["id"]: r for r in run["rows"]}
    assert set(got) == set(rows) and run["versions"]["aiconfigurator"] == "9.9.9"
    assert got["trtllm-llama3.3-70b-h100-tp2-128-128"]["predicted"] == 2000.0  # per instance of 2 GPUs
    assert got["sglang-deepseek-prefill-ep32-4k-perfect-eplb"]["predicted"] == 8000.0  # per node of 8
    assert got["trtllm061-llama-2-70b-h100-tp4-b480-128-2048"]["predicted"] == 1000.0  # per GPU
    refused = got["sglang-deepseek-decode-ep72-b256-2k"]
    assert not refused["expressed"] and "PerfDataNotAvailableError" in refused["why"]
    assert not got["deepseek-profile-decode-ep128-b128-4k"]["expressed"]  # H800: never sent to the peer


def test_validate_with_a_peer_prints_both_errors_and_both_medians(fake_python, capsys):
    assert main(["validate", "--peer", NAME, "--peer-python", str(fake_python), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["summary"]["rows"] == sum(r["peer"] is not None for r in out["rows"]) > 0  # rows the peer expressed
    row = next(r for r in out["rows"] if r["id"] == "trtllm061-llama-2-7b-a100-tp1-b384-128-128")
    assert row["peer_error_pct"] == round((1000.0 - 5586) / 5586 * 100, 1) and row["closer"] in ("fleetcal", NAME, "tie")
    assert any(n["id"] == "deepseek-profile-prefill-ep32-4k" and "H800" in n["why"] for n in out["not_expressed"])


def test_write_commits_the_peers_run_dated_under_the_results_and_leaves_the_page_to_the_committed_data(fake_python, tmp_path, capsys):
    page = PEER_PAGE.read_text()
    assert main(["validate", "--peer", NAME, "--peer-python", str(fake_python), "--results", str(tmp_path), "--write"]) == 0
    written = json.loads((tmp_path / "peer" / f"{NAME}-9.9.9.json").read_text())
    assert written["date"] and written["versions"][NAME] == "9.9.9" and len(written["rows"]) == len(load_rows()[0])
    assert load_peer(tmp_path / "peer")["date"] == written["date"]
    assert PEER_PAGE.read_text() == page  # a run written elsewhere than results/ does not rewrite docs/peer.md
    assert f"{NAME}-9.9.9.json" in capsys.readouterr().err


def test_a_missing_peer_environment_is_one_line_and_exit_2(tmp_path, capsys):
    assert main(["validate", "--peer", NAME, "--peer-python", str(tmp_path / "nowhere" / "python")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "setup_peers.sh" in err
    assert main(["validate", "--write"]) == 2  # --write without a peer
    assert list(tmp_path.iterdir()) == []


# --- the committed data, the page, the gate ---------------------------------------------------------------------------


def test_the_committed_run_holds_every_row_with_its_prediction_or_why(committed, rows):
    assert committed["peer"] == NAME and committed["versions"][NAME] and committed["date"]
    assert committed["versions"]["databases"], "the database version of every system and backend used"
    for r in committed["rows"]:
        assert r["id"] in rows
        assert (r["predicted"] > 0 and r["request"]["system"]) if r["expressed"] else r["why"]


def test_rows_added_after_the_peers_run_are_named_on_the_page(validation, committed):
    newer = pd.concat([validation, validation.head(1).assign(id="a-row-added-later")], ignore_index=True)
    assert not_run(newer, committed)[-1] == "a-row-added-later"
    assert "`a-row-added-later`" in peer_block(newer)


def test_side_by_side_counts_errors_medians_and_closer_rows():
    v = pd.DataFrame({"id": ["a", "b", "c"], "published": [100.0, 100.0, 100.0], "predicted": [110.0, 70.0, 100.0],
                      "error_pct": [10.0, -30.0, 0.0], "gate": [True, True, True], "source": "s", "kind": "max_load", "gpu": "H100",
                      "precision": "fp8/fp8 KV"})  # fmt: skip
    peer = {"peer": NAME, "versions": {}, "rows": [{"id": "a", "expressed": True, "predicted": 95.0},
                                                   {"id": "b", "expressed": True, "predicted": 120.0},
                                                   {"id": "c", "expressed": False, "why": "no data"}]}  # fmt: skip
    df = side_by_side(v, peer)
    assert df["peer_error_pct"].tolist()[:2] == [-5.0, 20.0] and math.isnan(df["peer_error_pct"][2])
    assert df["closer"].tolist() == [NAME, NAME, ""]
    s = shared_summary(df)
    assert (s["rows"], s["fleetcal_median_abs_error_pct"], s["peer_median_abs_error_pct"]) == (2, 20.0, 12.5)
    assert (s["fleetcal_closer"], s["peer_closer"]) == (0, 2) and not_expressed(peer) == [("c", "no data")]


def test_the_committed_page_is_what_the_data_and_the_current_model_generate(validation):
    text = PEER_PAGE.read_text()
    committed_block = text[text.index(PEER_START) : text.index(PEER_END) + len(PEER_END)]
    assert committed_block == peer_block(validation), "run `fleetcal report` (or `fleetcal validate --peer aiconfigurator --write`)"


def test_fleetcal_is_at_least_as_close_as_the_peer_over_the_rows_both_express(validation, committed):
    """Issue 34's bar, from the committed peer predictions and the model as it is: over the rows both express, fleetcal's
    median |error| is at or below AIConfigurator 0.12.0's (6.0% against 6.5% over 118 rows when this stopped failing)."""
    s = shared_summary(side_by_side(validation, committed))
    assert s["rows"] >= 50, s
    assert s["fleetcal_median_abs_error_pct"] <= s["peer_median_abs_error_pct"], s


@pytest.mark.skipif(not aic.DEFAULT_PYTHON.is_file(), reason="no AIConfigurator environment here (bash scripts/setup_peers.sh makes one)")
def test_the_installed_peer_reproduces_the_committed_predictions(rows, committed):
    """Where the peer is installed: one row of each kind the peer expresses, run again, gives the committed figure (the
    runner and the peer's API have not drifted apart)."""
    ids = ["trtllm-llama3.3-70b-h100-tp2-2048-2048", "trtllm061-llama-2-7b-a100-tp1-b52-2048-128",
           "sglang-deepseek-prefill-ep32-4k-perfect-eplb", "sglang-deepseek-decode-ep72-b256-2k"]  # fmt: skip
    again = {r["id"]: r for r in aic.run_peer([rows[i] for i in ids], aic.DEFAULT_PYTHON)["rows"]}
    before = {r["id"]: r for r in committed["rows"]}
    for i in ids:
        assert again[i]["expressed"] == before[i]["expressed"], again[i]
        if before[i]["expressed"]:
            assert again[i]["predicted"] == pytest.approx(before[i]["predicted"], rel=1e-3)
