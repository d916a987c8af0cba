"""`coeflow serve --record-trace`: the server appends one line per accepted request, and the
file is a trace the replay reads."""

import pytest
from openai import OpenAI

from coe_fixture import start
from coeflow.trace import TraceRecorder, read_trace

pytestmark = pytest.mark.e2e


def test_a_recording_server_writes_a_replayable_line_per_request(coe_file, tmp_path):
    path = tmp_path / "rec.jsonl"
    srv, ctx = start(coe_file)
    srv.recorder = TraceRecorder(path, clock=srv.scheduler.clock.now)
    with ctx as url:
        client = OpenAI(base_url=url, api_key="x", max_retries=0, timeout=60)
        client.completions.create(model="sql", prompt="select name from users", max_tokens=3)
        client.chat.completions.create(model="coe", max_tokens=2,
                                       messages=[{"role": "user", "content": "grep recursively in bash"}])
    srv.recorder.close()
    reqs = read_trace(path)
    assert [r.expert for r in reqs] == ["sql", "coe"]
    assert reqs[0].prompt == "select name from users" and reqs[0].max_tokens == 3
    assert reqs[0].prompt_tokens >= 1 and reqs[0].route is None
    assert reqs[1].prompt == "grep recursively in bash" and reqs[1].route in {"sql", "shell", "general"}
    assert 0 <= reqs[0].arrival_s <= reqs[1].arrival_s


def test_trace_run_plays_requests_on_time_and_times_them(coe_file, tmp_path, capsys):
    import json

    from coeflow.cli import main
    from coeflow.trace import TraceRequest, write_trace
    trace = tmp_path / "t.jsonl"
    write_trace(trace, [TraceRequest(0.0, "sql", 3, prompt="select 1"),
                        TraceRequest(0.3, "shell", 2, prompt_tokens=5)])
    srv, ctx = start(coe_file)
    with ctx as url:
        assert main(["trace", "run", "--url", url, "--trace", str(trace), "--out", str(tmp_path / "m.jsonl")]) == 0
    rows = [json.loads(line) for line in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert [r["served_by"] for r in rows] == ["sql", "shell"]
    assert all(r["latency_s"] > 0 and r["output_tokens"] >= 1 and r["source_tier"] in
               {"disk", "host", "device", "loading"} for r in rows)
    assert rows[1]["sent_late_s"] < 0.25  # left at its arrival time, not after the first finished
    assert json.loads(capsys.readouterr().out)["requests"] == 2
