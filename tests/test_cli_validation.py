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
    for sub in ("bench", "estimate", "predict", "backtest", "report"):
        with pytest.raises(SystemExit) as exc_info:
            main([sub, "--help"])
        assert exc_info.value.code == 0
        assert "usage: fleetcal " + sub in capsys.readouterr().out
