"""`fleetcal models` (the support matrix from the reader's own tables) and the planner commands' imports: none of them
imports torch or transformers, since reading a model is parsing its config.json."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from core.config_fields import RULE_KINDS
from core.families import families
from core.models import get_model, model_catalog
from core.paths import ROOT
from fleetcal.cli import main
from fleetcal.commands.models import MODELS_END, MODELS_START, docs_block


def test_models_json_lists_every_family_and_catalogued_model_with_the_serving_models_answer(capsys):
    assert main(["models", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert {r["model_type"] for r in doc["families"]} == set(families())
    rows = {r["model"]: r for r in doc["models"]}
    assert set(rows) == set(model_catalog())
    assert rows["llama-3.1-8b"]["serving_model"] == "modelled" and rows["qwen3-30b-a3b"]["experts"] == "128 x top 8"
    assert {r["serving_model"] for r in rows.values()} == {"modelled"}  # every catalogued model is costed
    assert rows["gemma-3-27b"]["layers"] == "52 sliding 1024, 10 global" and rows["kimi-k2"]["weights"] == "fp8"
    assert "deepseek_v32" in doc["refused"] and "mxfp4" in doc["quantization_methods"] and "nvfp4" in doc["weight_formats"]


def test_the_table_prints_and_the_docs_page_holds_the_current_block(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "| qwen3_next" in out and "Refused by name:" in out
    page = (ROOT / "docs" / "models.md").read_text()
    block = page[page.index(MODELS_START) : page.index(MODELS_END) + len(MODELS_END)]
    assert block == docs_block(), "docs/models.md is stale: run fleetcal report"


def test_every_catalogued_models_kinds_are_among_its_familys():
    for key in model_catalog():
        s = get_model(key).shapes
        fam = families()[s.model_type]
        if fam.text_config:  # a wrapper: its text model's family says
            fam = families()[{"gemma3": "gemma3_text", "llama4": "llama4_text"}[s.model_type]]
        assert set(s.layer_kinds) <= set(RULE_KINDS[fam.attention]), key
    assert {f.attention for f in families().values() if not f.text_config} <= set(RULE_KINDS)


PLANNER = {
    "predict": ["predict", "--model", "qwen3-30b-a3b", "--gpu", "H200", "--phase", "decode", "--batch-per-gpu", "1",
                "--context-len", "1000"],
    "plan": ["plan", "--model", "llama-3.1-8b", "--gpu", "H100", "--input-len", "1000", "--output-len", "200", "--request-rate", "5",
             "--ttft-ms", "2000", "--tpot-ms", "50", "--samples", "4"],
    "estimate": ["estimate", "--scenario", "article"],
    "validate": ["validate"],
    "backtest": ["backtest"],
    "models": ["models"],
}  # fmt: skip
CHECK = """
import contextlib, io, sys
from fleetcal.cli import main
with contextlib.redirect_stdout(io.StringIO()):
    code = main(sys.argv[1:])
print(code, sorted(m for m in ("torch", "transformers", "vllm") if m in sys.modules))
"""


@pytest.mark.parametrize("command", sorted(PLANNER))
def test_planner_commands_import_neither_torch_nor_transformers(command, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", CHECK, *PLANNER[command]], capture_output=True, text=True, env=env, timeout=300,
                          cwd=tmp_path)  # plan writes its frontier plot where it runs  # fmt: skip
    assert done.stdout.strip().splitlines()[-1] == "0 []", done.stderr[-2000:]
