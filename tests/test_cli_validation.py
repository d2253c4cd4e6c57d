"""Bad input: one line on stderr that says what to fix, exit status 2, nothing written."""

from __future__ import annotations

import pytest

from fleetcal.cli import main

BAD_BENCH = [
    (["--model", "/no/such/model"], "no config.json"),
    (["--batch-sizes", "0"], "positive integer"),
    (["--batch-sizes", "-4"], "positive integer"),
    (["--batch-sizes", "1,,x"], "comma-separated list"),
    (["--input-lens", "8000", "--output-lens", "500"], "exceeds the model's context of 8192"),
    (["--mode", "warp"], "unknown"),
    (["--num-prompts", "0"], "--num-prompts"),
    (["--engine", "transformers", "--mode", "serve"], "needs --engine vllm"),
    (["--resume", "/no/such/file.json"], "no such results file"),
    (["--dtype", "int3"], "invalid choice"),
    (["--budget-s", "0"], "--budget-s"),
    (["--kv-cache-gb", "inf"], "--kv-cache-gb"),
    (["--mode", "ops", "--operators", "gemm,warp"], "--operators"),
    (["--engine", "transformers", "--quantization", "fp8"], "need --engine vllm"),
    (["--max-num-seqs", "0"], "--max-num-seqs"),
    (["--max-model-len", "-5"], "below the shortest input + output"),
    (["--max-model-len", "0"], "below the shortest input + output"),
    (
        ["--max-model-len", "12", "--input-lens", "8", "--output-lens", "16"],
        "--max-model-len 12 is below the shortest input + output (24 tokens)",
    ),
    (["--temperature", "nan"], "--temperature"),
    (["--temperature", "inf"], "--temperature"),
    (["--batch-sizes", "1000000"], "at most 65,536 sequences"),
    (["--batch-sizes", "2000000"], "at most 1,048,576"),
    (["--mode", "serve", "--concurrencies", "100000"], "at most 65,536 sequences"),
    (["--num-prompts", "1000000000"], "at most 100,000"),
    (["--batch-sizes", ",".join(str(i) for i in range(1, 5001))], "at most 64 values per list"),
    (["--device", "cpu", "--tensor-parallel-size", "4096"], "cores on the CPU"),
]


@pytest.mark.parametrize(("argv", "needle"), BAD_BENCH)
def test_bench_bad_input_exits_2_and_writes_nothing(argv, needle, tmp_path, capsys):
    out = tmp_path / "runs"
    with pytest.raises(SystemExit) as exc_info:
        raise SystemExit(main(["bench", "--out", str(out), *argv]))
    assert exc_info.value.code == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert needle in lines[0]
    assert not out.exists() or not any(out.iterdir())


def test_device_cuda_without_gpu_is_refused(tmp_path, capsys):
    from bench.device import cuda_available

    if cuda_available():
        pytest.skip("a GPU is visible here, so --device cuda is valid input")
    assert main(["bench", "--device", "cuda", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no NVIDIA GPU" in err
    assert not any(tmp_path.iterdir())


def test_every_subcommand_has_help(capsys):
    for sub in ("bench", "estimate", "predict", "backtest", "validate", "report"):
        with pytest.raises(SystemExit) as exc_info:
            main([sub, "--help"])
        assert exc_info.value.code == 0
        assert "usage: fleetcal " + sub in capsys.readouterr().out


def test_parallel_sizes_reach_vllm_and_are_recorded(tmp_path, monkeypatch):
    """Multi-GPU arguments: validated, kept in the plan and passed to the engine and the server (as on a machine with GPUs)."""
    import fleetcal.commands.bench
    from bench.serve import server_command
    from fleetcal.cli import build_parser
    from fleetcal.commands.bench import validate_args

    monkeypatch.setattr(fleetcal.commands.bench, "resolve_device", lambda requested: "cuda")
    monkeypatch.setattr(
        fleetcal.commands.bench,
        "describe_device",
        lambda device: {"kind": "cuda", "name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"},
    )

    ns = build_parser().parse_args(["bench", "--tensor-parallel-size", "2", "--pipeline-parallel-size", "2", "--data-parallel-size", "2",
                                    "--distributed-executor-backend", "ray", "--out", str(tmp_path)])  # fmt: skip
    plan = validate_args(ns)
    assert (plan.tensor_parallel_size, plan.pipeline_parallel_size, plan.data_parallel_size) == (2, 2, 2)
    assert plan.args["tensor_parallel_size"] == 2 and plan.args["distributed_executor_backend"] == "ray"
    cfg = plan.engine_config()  # the engine and the server are started from the plan's config
    assert cfg.num_gpus == 8
    assert plan.saved()["tensor_parallel_size"] == 2, "the plan --resume rebuilds keeps the layout"
    cmd = " ".join(server_command(cfg, 8000))
    for flag in ("--tensor-parallel-size 2", "--pipeline-parallel-size 2", "--data-parallel-size 2", "--distributed-executor-backend ray"):
        assert flag in cmd
    assert not any(tmp_path.iterdir())


def test_parallel_sizes_need_vllm(tmp_path, capsys):
    assert main(["bench", "--engine", "transformers", "--tensor-parallel-size", "2", "--out", str(tmp_path)]) == 2
    assert "need --engine vllm" in capsys.readouterr().err


def test_per_gpu_efficiency_divides_by_gpu_count():
    from bench.efficiency import efficiency_fields
    from core.hardware import Peaks
    from core.work import Work

    one = efficiency_fields(Work(1e15, 1e12), 1.0, Peaks("gpu", 1e15, 1e12), None, num_gpus=1)
    eight = efficiency_fields(Work(1e15, 1e12), 1.0, Peaks("gpu", 1e15, 1e12), None, num_gpus=8)
    assert one["mfu"] == 1.0 and eight["mfu"] == 0.125 and eight["mbu"] == 0.125
    assert one["mfu_measured_peak"] is None


def test_first_run_conversion_stays_silent_on_bad_input(tmp_path, capfd, monkeypatch):
    """On a fresh machine the bundled model is converted during validation: still one line of error."""
    monkeypatch.setenv("FLEETCAL_CACHE", str(tmp_path / "cache"))
    assert main(["bench", "--input-lens", "8000", "--output-lens", "500", "--out", str(tmp_path / "runs")]) == 2
    err = capfd.readouterr().err
    assert err.count("\n") == 1 and "exceeds the model's context" in err
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
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and "--engine vllm cannot run here" in lines[0] and "--engine transformers" in lines[0]
    assert not out.exists()


BAD_ESTIMATE = [
    (["--daily-visits", "inf"], "daily-visits must be a finite number"),
    (["--daily-visits", "1e300"], "at most 1e+15"),
    (["--params-per-token", "inf"], "params-per-token must be a finite number"),
    (["--peak-to-average", "nan"], "peak-to-average must be a finite number"),
    (["--input-tokens-per-output-token", "nan"], "input-tokens-per-output-token"),
    (["--tokens-per-s-per-user", "inf"], "tokens-per-s-per-user"),
    (["--utilization", "nan"], "utilization"),
    (["--kv-dtype", "fp4"], "kv-dtype must be one of bf16, fp8"),
    (["--precision", "fp3"], "precision must be one of"),  # fp4 is a precision now (B200 has an FP4 peak)
    (["--gpu-hour-usd", "0"], "--gpu-hour-usd must be a price"),
    (["--gpu-hour-usd", "nan"], "--gpu-hour-usd must be a price"),
]


@pytest.mark.parametrize(("argv", "needle"), BAD_ESTIMATE)
def test_estimate_bad_values_exit_2_in_one_line(argv, needle, capsys):
    with pytest.raises(SystemExit) as exc_info:
        raise SystemExit(main(["estimate", *argv]))
    assert exc_info.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0], lines


@pytest.mark.parametrize(("text", "needle"), [('utilization = "0.5"', "utilization must be a number"),
                                              ("daily_visits = true", "daily-visits must be a number"),
                                              ("kv_dtype = 3", "kv-dtype must be one of")])  # fmt: skip
def test_estimate_config_values_are_type_checked(text, needle, tmp_path, capsys):
    cfg = tmp_path / "traffic.toml"
    cfg.write_text(text + "\n")
    with pytest.raises(SystemExit) as exc_info:
        raise SystemExit(main(["estimate", "--config", str(cfg)]))
    assert exc_info.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0], lines


def test_the_same_gpu_named_twice_is_counted_once(capsys):
    assert main(["estimate", "--gpu", "H100", "--gpu", "h100", "--scenario", "article", "--json"]) == 0
    import json

    doc = json.loads(capsys.readouterr().out)
    assert list(doc["gpus"]) == ["H100"]


def test_a_value_repeated_in_a_list_is_one_configuration():
    from core.args import int_list

    assert int_list("8,1,8,32,1") == [8, 1, 32]
