"""`coeflow serve` as a user runs it: a real process on loopback, a request through the
official client, then Ctrl-C (SIGINT) stops it cleanly."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import httpx
import pytest
from openai import OpenAI

from coeflow.cli import build_parser
from coeflow.cli.serve import server_options
from coeflow.errors import ConfigError
from coeflow.server import Limits, ServerOptions, free_port

pytestmark = pytest.mark.e2e


def test_serve_without_flags_builds_the_default_options(monkeypatch, capsys):
    monkeypatch.delenv("COEFLOW_API_KEY", raising=False)
    args = build_parser().parse_args(["serve", "--coe", "coe.yaml"])
    assert server_options(args) == ServerOptions()
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert f"HTTP 429 (default {ServerOptions().max_queue})" in shown


def test_a_lower_max_tokens_lowers_the_default_and_nonsense_limits_are_refused():
    assert Limits(max_tokens=100).default_max_tokens == 100
    assert Limits().default_max_tokens == 256
    with pytest.raises(ConfigError, match="max_tokens"):
        Limits(max_tokens=0)
    with pytest.raises(ConfigError, match="max_batch"):
        ServerOptions(max_batch=0)


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_serve_process_answers_and_stops_cleanly_on_ctrl_c(coe_file, log_format):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "coeflow", "serve", "--coe", str(coe_file), "--port", str(port),
                             "--engine", "eager", "--api-key", "k", "--log-format", log_format,
                             "--log-level", "info" if log_format == "json" else "warning"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:  # readiness: the first moment /health answers
            assert proc.poll() is None, proc.stderr.read()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "server did not start in 120 s"
                time.sleep(0.1)  # poll interval while it starts, not a timing assumption
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="k", max_retries=0)
        r = client.chat.completions.create(model="coe", messages=[{"role": "user", "content": "ls -la"}],
                                           max_tokens=4, temperature=0)
        assert r.model_extra["coeflow"]["expert"] in ("sql", "shell", "general")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-2000:]
    assert f"at http://127.0.0.1:{port}/v1 (API key required)" in out
    assert "coeflow: stopped" in out and "Traceback" not in err
    if log_format == "json":  # every line a JSON object: coeflow's, uvicorn's and its access log alike
        lines = [json.loads(line) for line in err.splitlines() if line.strip()]
        assert all({"time", "level", "logger", "message"} <= set(x) for x in lines)
        assert any(x["logger"] == "uvicorn.access" for x in lines)
        assert any(x["message"].startswith("request ") and " ok on " in x["message"] for x in lines)


@pytest.mark.parametrize("flags,needle", [(["--record-trace", "t.jsonl"], "--record-trace"),
                                          (["--replicas", "0"], "--replicas")])
def test_serve_on_ray_refuses_what_it_cannot_do_before_starting_ray(flags, needle):
    pytest.importorskip("ray", reason="Ray is an optional extra: pip install -e '.[ray]'")
    from coeflow.cli.serve import run
    args = build_parser().parse_args(["serve", "--coe", "coe.yaml", "--ray", *flags])
    assert args.ray == "local"
    with pytest.raises(ConfigError, match=needle):
        run(args)
