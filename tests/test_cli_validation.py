"""Argument handling beyond the command-line contract (which tests/test_cli_contract.py checks for every subcommand):
multi-GPU sizes reaching vLLM, per-GPU efficiency, repeated list values."""

from __future__ import annotations


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


def test_per_gpu_efficiency_divides_by_gpu_count():
    from bench.efficiency import efficiency_fields
    from core.hardware import Peaks
    from core.work import Work

    one = efficiency_fields(Work(1e15, 1e12), 1.0, Peaks("gpu", 1e15, 1e12), None, num_gpus=1)
    eight = efficiency_fields(Work(1e15, 1e12), 1.0, Peaks("gpu", 1e15, 1e12), None, num_gpus=8)
    assert one["mfu"] == 1.0 and eight["mfu"] == 0.125 and eight["mbu"] == 0.125
    assert one["mfu_measured_peak"] is None


def test_a_value_repeated_in_a_list_is_one_configuration():
    from core.args import int_list

    assert int_list("8,1,8,32,1") == [8, 1, 32]
