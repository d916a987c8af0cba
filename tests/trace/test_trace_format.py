"""The trace format: what a user writes by hand or a server records, read back exactly, and
every mistake named by file and line."""

import json

import pytest

from coeflow.errors import ConfigError
from coeflow.trace import TraceRequest, read_trace, write_trace


def test_written_traces_read_back_identically_sorted_by_arrival(tmp_path):
    reqs = [TraceRequest(0.5, "sql", 20, prompt_tokens=40),
            TraceRequest(0.1, "coe", 64, prompt="count orders per status", route="sql", id="r2"),
            TraceRequest(0.3, "shell", 8, prompt="ls", prompt_tokens=2, output_tokens=5)]
    path = tmp_path / "t.jsonl"
    assert write_trace(path, reqs) == 3
    assert read_trace(path) == sorted(reqs, key=lambda r: r.arrival_s)


def test_output_tokens_when_known_is_what_gets_costed():
    assert TraceRequest(0, "a", 20, prompt_tokens=1).gen_tokens == 20
    assert TraceRequest(0, "a", 20, prompt_tokens=1, output_tokens=7).gen_tokens == 7


@pytest.mark.parametrize("line, message", [
    ('{"arrival_s": 1, "expert": "a", "max_tokens": 5}', "give 'prompt' or 'prompt_tokens'"),
    ('{"arrival_s": -1, "expert": "a", "prompt_tokens": 3, "max_tokens": 5}', "'arrival_s' must be a number >= 0"),
    ('{"arrival_s": 1, "expert": "a", "prompt_tokens": 3}', "'max_tokens' is required"),
    ('{"arrival_s": 1, "expert": "a", "prompt_tokens": 0, "max_tokens": 5}', "'prompt_tokens' must be an integer >= 1"),
    ('{"arrival_s": 1, "expert": "a", "prompt_tokens": 3, "max_tokens": 5, "max_token": 5}', "unknown field(s) max_token"),
    ('{"arrival_s": 1, "expert": "coe", "prompt_tokens": 3, "max_tokens": 5}', "routed request"),
    ('{"arrival_s": 1, "expert": "a", "prompt_tokens": 3, "max_tokens": 5', "not valid JSON"),
    ('[1, 2]', "expected a JSON object"),
])
def test_a_bad_line_is_a_config_error_naming_file_and_line(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    good = json.dumps({"arrival_s": 0, "expert": "a", "prompt_tokens": 3, "max_tokens": 5})
    path.write_text(f"# a comment\n{good}\n\n{line}\n")
    with pytest.raises(ConfigError) as e:
        read_trace(path)
    assert f"{path}:4:" in str(e.value) and message in str(e.value)


def test_missing_and_empty_files_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        read_trace(tmp_path / "nope.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n# nothing\n")
    with pytest.raises(ConfigError, match="no requests"):
        read_trace(tmp_path / "empty.jsonl")
