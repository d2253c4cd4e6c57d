"""The GPU catalog (core/data/gpus), a user's own GPU files (--gpu-file, $FLEETCAL_GPU_DIR), and the planner on every
catalogued GPU. Expected figures are the vendors' published ones, each derivation written beside it."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pandas as pd
import pytest

from core import hardware
from core.errors import CatalogError
from core.gpu_schema import FP4_FORMATS, LINKS, VENDORS
from core.hardware import GPU_DIR, get_gpu, gpu_catalog, use_gpu_files
from estimator.kernels import kernels_for, measured_efficiencies
from fleetcal.cli import main

NEW_GPUS = ("B300", "GB200", "L40S", "RTX-PRO-6000", "MI300X", "MI325X", "MI355X")


@pytest.fixture(autouse=True)
def no_user_gpus(tmp_path, monkeypatch):
    """Each test starts with an empty user directory and leaves no user GPU behind for the tests after it."""
    empty = tmp_path / "no-user-gpus"
    empty.mkdir()
    monkeypatch.setenv(hardware.USER_GPU_DIR_ENV, str(empty))
    yield
    hardware._user_gpus.clear()


def test_every_catalog_file_loads_with_a_source_an_architecture_a_vendor_a_link_and_a_dated_price():
    files = sorted(GPU_DIR.glob("*.toml"))
    assert len(gpu_catalog()) == len(files) >= 16
    for gpu in gpu_catalog().values():
        assert gpu.source and gpu.architecture and gpu.vendor in VENDORS, gpu.name
        assert gpu.scaleup_link in LINKS and gpu.scaleup_gb_per_s > 0 and gpu.scaleup_domain_gpus >= 1, gpu.name
        # issue 36: no GPU shows NaN or None for its price
        assert gpu.usd_per_gpu_hour and "as of" in gpu.price_source, gpu.name
    for path in files:  # every number's source: each file and each table that is not the datasheet's own says where from
        data = tomllib.loads(path.read_text())
        assert data["interconnect"].get("source") and data["price"].get("tier"), path.name
    assert {g.vendor for g in gpu_catalog().values()} == {"nvidia", "amd"}
    assert all(get_gpu(n) for n in NEW_GPUS)


@pytest.mark.parametrize(
    ("gpu", "dense_tflops"),
    [
        ("B200", 18_000 / 2),  # NVIDIA HGX B200: 18 PFLOPS FP4 per GPU with sparsity
        ("GB200", 20_000 / 2),  # NVIDIA GB200 NVL72: 20 PFLOPS FP4 per GPU with sparsity (1,440 for 72)
        ("B300", 105_000 / 8),  # NVIDIA HGX B300: 105 PFLOPS FP4 dense for 8 GPUs
        ("RTX-PRO-6000", 4_000 / 2),  # NVIDIA: 4,000 AI TOPS FP4 with sparsity
        ("MI355X", 2 * 8192 * 256 * 2.4e9 / 1e12),  # AMD: 8,192 FP8 FLOPS/clock/CU x 256 CUs x 2.4 GHz, FP4 twice FP8
    ],
)
def test_fp4_peaks_where_the_datasheet_gives_them(gpu, dense_tflops):
    assert get_gpu(gpu).peak_tflops["fp4"] == pytest.approx(dense_tflops, rel=1e-3)
    assert get_gpu(gpu).peak_flops_per_s("fp4") == pytest.approx(dense_tflops * 1e12, rel=1e-3)


def test_only_blackwell_and_cdna4_have_fp4_tensor_cores_and_only_nvidia_computes_nvfp4():
    for gpu in gpu_catalog().values():
        has_fp4 = gpu.architecture in ("blackwell", "blackwell-ultra", "cdna4")
        assert ("fp4" in gpu.peak_tflops) == has_fp4 == bool(gpu.fp4_formats), gpu.name
        assert set(gpu.fp4_formats) <= set(FP4_FORMATS)
    assert get_gpu("MI355X").fp4_formats == ("mxfp4",) and set(get_gpu("B200").fp4_formats) == {"nvfp4", "mxfp4"}
    with pytest.raises(CatalogError, match="no fp4 peak"):
        get_gpu("H100").peak_flops_per_s("fp4")


def test_scale_up_domains_follow_the_platforms():
    """HGX and the AMD platforms: 8 GPUs; GB200 NVL72: 72 on one NVLink domain; L40S and RTX PRO 6000: PCIe only."""
    domains = {n: get_gpu(n).scaleup_domain_gpus for n in ("H100", "B200", "B300", "MI300X", "MI355X", "GB200", "L40S", "RTX-PRO-6000")}
    assert domains == {"H100": 8, "B200": 8, "B300": 8, "MI300X": 8, "MI355X": 8, "GB200": 72, "L40S": 1, "RTX-PRO-6000": 1}
    assert get_gpu("L40S").scaleup_link == "pcie" and get_gpu("MI300X").scaleup_link == "infinity-fabric"
    assert get_gpu("MI300X").nvlink_gb_per_s == 7 * 128  # the serving model's all-reduce reads the scale-up link


def _ops(catalog_name: str) -> pd.DataFrame:
    """One measured bf16 GEMM on ``catalog_name`` at 80% of its datasheet peak and 50% of its bandwidth."""
    return pd.DataFrame(
        [{"catalog_name": catalog_name, "device_name": f"NVIDIA {catalog_name}", "operator": "gemm", "dtype": "bf16",
          "m": 4096, "mfu": 0.8, "mbu": 0.5}]
    )  # fmt: skip


def test_measured_efficiencies_cross_only_within_one_architecture_read_from_the_gpu_files():
    h200 = _ops("H200")
    assert measured_efficiencies(h200, get_gpu("H100"))["gemm_bf16"].compute == 0.8  # both hopper
    assert measured_efficiencies(h200, get_gpu("B200")) == {}  # blackwell
    assert measured_efficiencies(_ops("B200"), get_gpu("GB200"))["gemm_bf16"].compute == 0.8  # both blackwell
    assert measured_efficiencies(_ops("MI300X"), get_gpu("MI325X"))["gemm_bf16"].compute == 0.8  # both cdna3
    _, source = kernels_for(get_gpu("MI355X"), h200)
    assert source == "published kernel figures (measured on Hopper; none for cdna4)"
    _, source = kernels_for(get_gpu("H100"), None)
    assert source == "published kernel figures (no GPU of this architecture measured)"
    _, source = kernels_for(get_gpu("H100"), h200.iloc[:0])  # nothing measured here: the database's vLLM kernels, then these
    assert source == ("vllm 0.32.0 kernels measured on H100 (core/data/kernels) where held; "
                      "published kernel figures (no GPU of this architecture measured)")


def _user_file(tmp_path: Path, name: str = "MYGPU", **changes: str) -> Path:
    """The catalog's H100 file renamed ``name`` (no aliases), with text replacements ``old=new`` applied."""
    text = (GPU_DIR / "h100-sxm.toml").read_text()
    text = text.replace('name = "H100"', f'name = "{name}"').replace('aliases = ["H100-SXM", "H100 SXM5"]', "aliases = []")
    text = text.replace('full_name = "NVIDIA H100 SXM5 80GB"', f'full_name = "{name} accelerator"')
    for old, new in changes.items():
        assert old in text, old
        text = text.replace(old, new)
    path = tmp_path / f"{name.lower()}.toml"
    path.write_text(text)
    return path


def test_predict_and_plan_take_a_users_gpu_file_and_the_user_directory(tmp_path, monkeypatch, capsys):
    faster = _user_file(tmp_path, **{"bandwidth_gb_per_s = 3350": "bandwidth_gb_per_s = 6700"})
    argv = ["predict", "--model", "llama-3.1-8b", "--phase", "decode", "--json"]
    assert main([*argv, "--gpu", "MYGPU", "--gpu-file", str(faster)]) == 0
    mine = json.loads(capsys.readouterr().out)
    assert main([*argv, "--gpu", "H100"]) == 0
    h100 = json.loads(capsys.readouterr().out)
    assert mine["device"] == "MYGPU"
    # batch-1 decode reads the weights: twice the bandwidth, the same file otherwise, is faster but not more than twice
    assert 1.2 < mine["output_tokens_per_s_per_gpu"] / h100["output_tokens_per_s_per_gpu"] <= 2.0
    folder = tmp_path / "gpus"
    folder.mkdir()
    faster.rename(folder / "mygpu.toml")
    monkeypatch.setenv(hardware.USER_GPU_DIR_ENV, str(folder))
    monkeypatch.chdir(tmp_path)  # plan writes its frontier into the working directory
    plan = ["plan", "--model", "llama-3.1-8b", "--gpu", "MYGPU", "--input-len", "1000", "--output-len", "300",
            "--request-rate", "5", "--ttft-ms", "2000", "--tpot-ms", "50", "--samples", "0", "--json"]  # fmt: skip
    assert main(plan) == 0
    (row,) = json.loads(capsys.readouterr().out)["rows"]
    assert row["gpu"] == "MYGPU" and row["gpus"] >= 1
    assert main(["estimate", "--scenario", "article", "--gpu", "MYGPU", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["rows"][0]["gpu"] == "MYGPU"


def test_the_same_gpu_under_a_catalogued_name_is_accepted(tmp_path, capsys):
    copy = tmp_path / "h100.toml"
    copy.write_text((GPU_DIR / "h100-sxm.toml").read_text().replace("usd_per_gpu_hour = 3.00", "usd_per_gpu_hour = 2.10"))
    assert use_gpu_files([copy]) == ()  # the same figures: the catalogued H100 stays
    assert get_gpu("H100").origin == "catalog" and get_gpu("H100").usd_per_gpu_hour == 3.0


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"capacity_gb = 80": 'capacity_gb = "eighty"'}, "memory.capacity_gb must be a number above 0"),
        ({"capacity_gb = 80\n": ""}, "memory.capacity_gb is missing"),
        ({'architecture = "hopper"': 'architecture = "Hopper 2"'}, "architecture must be a lowercase name"),
        ({'architecture = "hopper"\n': ""}, "architecture is missing"),
        ({'vendor = "nvidia"': 'vendor = "acme"'}, "vendor must be one of nvidia, amd"),
        ({"fp8 = 1978.9": "fp6 = 1978.9"}, "peak_tflops.fp6 is not a precision"),
        ({"fp8 = 1978.9": "fp4 = 3957.8"}, "fp4_formats must list the FP4 formats"),
        ({"tdp_w = 700": "tdp_watts = 700"}, "power.tdp_watts is not a field of [power]"),
        ({'kind = "nvlink"': 'kind = "ethernet"'}, "interconnect.kind must be one of nvlink, infinity-fabric, pcie"),
        ({"domain_gpus = 8": "domain_gpus = 0"}, "interconnect.domain_gpus must be a whole number"),
        ({'source = "NVIDIA H100 Tensor': 'sources = "NVIDIA H100 Tensor'}, "sources is not a field of a GPU file"),
        ({"[memory]": "[memory"}, "is not valid TOML"),
        ({"bandwidth_gb_per_s = 3350": "bandwidth_gb_per_s = 4000", 'name = "MYGPU"': 'name = "H100"'},
         "name 'H100' is taken by H100 (catalog) with another bandwidth_gb_per_s"),
    ],
)  # fmt: skip
def test_a_malformed_or_clashing_gpu_file_is_one_line_naming_file_and_field_exit_2(tmp_path, capsys, changes, says):
    path = _user_file(tmp_path, **changes)
    assert main(["predict", "--model", "llama-3.1-8b", "--gpu", "H100", "--gpu-file", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    (line,) = captured.err.splitlines()
    assert line.startswith(f"fleetcal predict: error: GPU file {path}: ") and says in line, line


def test_the_user_directory_is_checked_like_the_catalog(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(hardware.USER_GPU_DIR_ENV, str(tmp_path / "missing"))
    assert main(["estimate", "--gpu", "H100"]) == 2
    assert "FLEETCAL_GPU_DIR" in capsys.readouterr().err
    folder = tmp_path / "gpus"
    folder.mkdir()
    _user_file(folder, **{"tdp_w = 700": "tdp_w = -1"})
    monkeypatch.setenv(hardware.USER_GPU_DIR_ENV, str(folder))
    plan = ["plan", "--model", "llama-3.1-8b", "--gpu", "H100", "--input-len", "1000", "--output-len", "300",
            "--request-rate", "5", "--ttft-ms", "2000", "--tpot-ms", "50", "--samples", "0"]  # fmt: skip
    assert main(plan) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert "mygpu.toml: power.tdp_w must be a number above 0" in line
    monkeypatch.setenv(hardware.USER_GPU_DIR_ENV, str(tmp_path / "no-user-gpus"))
    with pytest.raises(CatalogError, match="cannot be read"):
        use_gpu_files([tmp_path / "nowhere.toml"])


def test_predict_and_plan_run_on_every_new_gpu_for_a_dense_model(tmp_path, monkeypatch, capsys):
    for name in NEW_GPUS:
        assert main(["predict", "--model", "llama-3.1-8b", "--gpu", name, "--json"]) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["output_tokens_per_s_per_gpu"] > 0, name
        if get_gpu(name).architecture != "hopper":
            assert "measured on Hopper" in out["efficiency_source"], name
    monkeypatch.chdir(tmp_path)
    gpus = [a for n in NEW_GPUS for a in ("--gpu", n)]
    plan = ["plan", "--model", "llama-3.1-8b", *gpus, "--input-len", "1000", "--output-len", "300", "--request-rate", "5",
            "--ttft-ms", "2000", "--tpot-ms", "50", "--samples", "0", "--json"]  # fmt: skip
    assert main(plan) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert {r["gpu"] for r in rows} == set(NEW_GPUS)
    assert all(r["usd_per_day"] and r["usd_per_day"] > 0 for r in rows)  # every catalogued GPU has a price
