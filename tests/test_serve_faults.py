"""The serving client against a server that fails on purpose (tests/fixtures/faulty_server.py): failed requests are
counted, never raised; a server that dies leaves the run recorded; workloads from a dataset, a time budget, and the
prefix-cache hit rate read from the server's counters (bad dataset files: tests/test_cli_contract.py)."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from bench.workload import Workload
from core.schema import load_document
from fleetcal.cli import main

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "faulty_server.py"


@contextlib.contextmanager
def faulty_server(*flags: str) -> Iterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, str(FIXTURE), str(port), *flags], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{url}/v1/models", timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.1)
        yield url
    finally:
        proc.kill()
        proc.wait(timeout=10)


def _bench(url: str, out: Path, *extra: str) -> int:
    return main(
        [
            "bench",
            "--mode",
            "serve",
            "--base-url",
            url,
            "--input-lens",
            "16",
            "--output-lens",
            "8",
            "--microbench",
            "off",
            "--out",
            str(out),
            *extra,
        ]
    )


def test_errors_and_dropped_streams_are_counted_failed_and_the_hit_rate_is_the_servers(tmp_path):
    out = tmp_path / "runs"
    with faulty_server("--http-error-every", "3", "--cut-every", "4") as url:
        assert _bench(url, out, "--concurrencies", "2", "--num-prompts", "12") == 0
    (path,) = out.glob("*.json")
    (rec,) = load_document(path)["records"]
    # requests 1-2 are the warm-ups; of 3..14, those divisible by 3 (HTTP 500) or by 4 (cut) fail: 3 4 6 8 9 12
    assert rec["status"] == "ok" and rec["sent"] == 12 and rec["failed"] == 6 and rec["completed"] == 6
    assert any(e.startswith("HTTP 500") for e in rec["errors"]) and len(rec["errors"]) >= 2, rec["errors"]
    assert rec["prefix_cache_hit_rate"] == 0.5  # the server counts half of every prompt after its first as hits
    assert rec["mean_prompt_tokens"] == 16 and rec["mean_output_tokens"] == 8


def test_a_server_that_dies_mid_run_leaves_the_run_recorded(tmp_path, capsys):
    out = tmp_path / "runs"
    with faulty_server("--exit-after", "6") as url:
        assert _bench(url, out, "--concurrencies", "2,4", "--num-prompts", "10") == 0
    (path,) = out.glob("*.json")
    first, second = load_document(path)["records"]
    assert first["status"] == "ok" and first["sent"] == 10 and first["completed"] >= 1 and first["failed"] >= 1
    assert first["completed"] + first["failed"] == 10
    assert second["status"] == "failed" and second["concurrency"] == 4 and "no request completed" in second["error"]
    assert "failed" in capsys.readouterr().out


def test_a_dataset_gives_prompts_and_output_lengths_and_the_budget_stops_sending(tmp_path, bundled_model_dir):
    data = tmp_path / "chats.jsonl"
    data.write_text(
        "".join(json.dumps({"prompt": f"question number {i} " * (i + 1), "output_tokens": n}) + "\n" for i, n in enumerate((5, 7, 9)))
    )
    out = tmp_path / "runs"
    with faulty_server() as url:
        assert main(["bench", "--mode", "serve", "--base-url", url, "--dataset", str(data), "--concurrencies", "1", "--num-prompts", "6",
                     "--microbench", "off", "--out", str(out / "a")]) == 0  # fmt: skip
        assert (
            _bench(
                url,
                out / "b",
                "--concurrencies",
                "1",
                "--num-prompts",
                "400",
                "--serve-budget-s",
                "0.2",
                "--tokenizer",
                str(bundled_model_dir),
            )
            == 0
        )
    doc = load_document(next((out / "a").glob("*.json")))
    (rec,) = doc["records"]
    assert rec["sent"] == 6 and rec["failed"] == 0 and rec["mean_output_tokens"] == 7  # each entry twice, in a seeded order
    assert rec["workload"] == "dataset chats.jsonl" and doc["run"]["workload"]["dataset"]["entries"] == 3
    assert len(doc["run"]["workload"]["dataset"]["sha256"]) == 64
    (budgeted,) = load_document(next((out / "b").glob("*.json")))["records"]
    assert budgeted["unsent_over_budget"] > 0 and budgeted["sent"] + budgeted["unsent_over_budget"] == 400
    assert budgeted["failed"] == 0


def test_random_lengths_and_a_shared_prefix_are_drawn_as_asked():
    w = Workload(range_ratio=0.5, prefix_fraction=0.25)
    reqs = w.requests(400, 64, 32, vocab_size=49152, seed=0, salt="c1")
    ins, outs = [r.prompt_len for r in reqs], [r.output_len for r in reqs]
    assert min(ins) >= 32 and max(ins) <= 96 and min(outs) >= 16 and max(outs) <= 48
    assert abs(sum(ins) / 400 - 64) < 3 and abs(sum(outs) / 400 - 32) < 2  # uniform around the nominal lengths
    assert all(len(r.prompt) == r.prompt_len for r in reqs)
    assert all(r.prompt[:16] == reqs[0].prompt[:16] for r in reqs), "the first quarter of the nominal length is shared"
    assert len({tuple(r.prompt[16:]) for r in reqs}) == 400, "the rest is each request's own"
    other = w.requests(5, 64, 32, vocab_size=49152, seed=0, salt="c2")
    assert other[0].prompt[:16] == reqs[0].prompt[:16] and other[0].prompt[16:] != reqs[0].prompt[16:], (
        "no configuration repeats another's prompts"
    )
    assert w.requests(5, 64, 32, vocab_size=49152, seed=0, salt="c1") == reqs[:5]
    assert w.label() == "prefix 25%, range 0.5"


