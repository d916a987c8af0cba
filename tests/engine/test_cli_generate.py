"""`coeflow generate` as a user runs it: a real process, a real checkpoint directory."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from coeflow.engine import Engine, SamplingParams
from coeflow.model import Tokenizer

pytestmark = pytest.mark.e2e


def coeflow(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "coeflow", *args], capture_output=True, text=True,
                          timeout=300)


def test_generate_json_matches_engine(checkpoints):
    path = checkpoints["qwen2"]
    r = coeflow("generate", "--model", str(path), "--prompt", "select name", "--max-tokens", "8",
                "--engine", "eager", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    tok = Tokenizer.from_dir(path)
    want = Engine.from_checkpoint(path, fused=False).generate(
        [tok.encode("select name")], SamplingParams(max_tokens=8), tok.eos_ids, tok.decode)[0]
    assert out["token_ids"] == want.token_ids
    assert out["text"] == want.text
    assert out["usage"]["completion_tokens"] == len(want.token_ids)


def test_generate_bad_checkpoint_is_a_clear_error(tmp_path):
    r = coeflow("generate", "--model", str(tmp_path), "--prompt", "x")
    assert r.returncode == 2
    assert "config.json" in r.stderr and "Traceback" not in r.stderr


def test_a_device_the_machine_lacks_is_a_clear_error(checkpoints):
    import pytest
    import torch
    path = str(checkpoints["llama-gqa"])
    r = coeflow("generate", "--model", path, "--prompt", "x", "--device", "gpu")
    assert r.returncode == 2 and "unknown device 'gpu'" in r.stderr and "Traceback" not in r.stderr
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU; the no-GPU message cannot be seen here")
    r = coeflow("generate", "--model", path, "--prompt", "x", "--device", "cuda")
    assert r.returncode == 2 and "no CUDA GPU" in r.stderr and "Traceback" not in r.stderr
