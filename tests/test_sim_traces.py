"""The trace loader against the published figures of both bundled traces, and bad trace files refused in one line."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from core.errors import UsageError
from core.traces import BUNDLED, load_trace


def test_mooncake_conversation_matches_its_published_means():
    # kvcache-ai/Mooncake FAST25-release/README.md: conversation trace, average input 12035, average output 343 tokens
    t = load_trace("mooncake-conv")
    assert len(t.arrival_s) == 12031
    assert t.input_tokens.mean() == pytest.approx(12035, abs=0.5)
    assert t.output_tokens.mean() == pytest.approx(343, abs=0.5)
    assert t.hash_ids is not None and all(len(h) == -(-n // 512) for h, n in zip(t.hash_ids, t.input_tokens))
    assert t.span_s == pytest.approx(3536.999)  # timestamps in ms from the start


def test_azure_conversation_matches_its_figures():
    # the figures computed from the file as published (its README beside it): prompt mean 1,154.7, median 1,020;
    # output mean 211.1, median 129; 19,366 requests over 58 minutes
    t = load_trace("azure-conv")
    assert len(t.arrival_s) == 19366
    assert t.input_tokens.mean() == pytest.approx(1154.7, abs=0.05)
    assert np.median(t.input_tokens) == 1020
    assert t.output_tokens.mean() == pytest.approx(211.1, abs=0.05)
    assert np.median(t.output_tokens) == 129
    assert t.arrival_s[0] == 0 and 58 * 60 <= t.span_s < 59 * 60
    assert t.hash_ids is None


AZURE_HEAD = "TIMESTAMP,ContextTokens,GeneratedTokens\n"


@pytest.mark.parametrize(
    ("name", "text", "says"),
    [
        ("empty.csv", "", "empty"),
        ("header.csv", AZURE_HEAD, "empty"),
        ("cols.csv", "TIMESTAMP,ContextTokens\n2023-11-16 18:15:46.1,3\n", "missing column(s) GeneratedTokens"),
        ("back.csv", AZURE_HEAD + "2023-11-16 18:15:47.0,3,4\n2023-11-16 18:15:46.0,3,4\n", "go back in time at request 2"),
        ("nan.csv", AZURE_HEAD + "2023-11-16 18:15:46.0,three,4\n", "not a number"),
        ("zero.csv", AZURE_HEAD + "2023-11-16 18:15:46.0,3,0\n", "not a whole number of tokens"),
        ("date.csv", AZURE_HEAD + "yesterday,3,4\n", "not a date"),
        ("neg.jsonl", '{"timestamp": -5, "input_length": 3, "output_length": 4}\n', "negative"),
        ("back.jsonl", '{"timestamp": 5, "input_length": 3, "output_length": 4}\n{"timestamp": 4, "input_length": 3, "output_length": 4}\n',
         "go back in time at request 2"),
        ("keys.jsonl", '{"timestamp": 5, "input_length": 3}\n', "missing key(s) output_length"),
        ("text.jsonl", '{"timestamp": 5, "input_length": "many", "output_length": 4}\n', "not a number"),
        ("broken.jsonl", '{"timestamp": 5,\n', "line 1 is not JSON"),
    ],
)
def test_bad_trace_refused_in_one_line(tmp_path, name, text, says):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(UsageError) as err:
        load_trace(path)
    assert says in str(err.value) and "\n" not in str(err.value)


def test_gzip_read_as_published_and_missing_file_named(tmp_path):
    path = tmp_path / "t.csv.gz"
    path.write_bytes(gzip.compress((AZURE_HEAD + "2023-11-16 18:15:46.0,3,4\n2023-11-16 18:15:48.5,5,6\n").encode()))
    t = load_trace(path)
    assert t.arrival_s.tolist() == [0.0, 2.5] and t.input_tokens.tolist() == [3, 5] and t.rate_per_s == pytest.approx(0.4)
    with pytest.raises(UsageError, match="no such file"):
        load_trace(tmp_path / "nothing.csv")
    assert set(BUNDLED) == {"azure-conv", "mooncake-conv"}
