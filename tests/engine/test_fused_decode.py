"""The compiled decode step gives the eager engine's tokens, and a second expert of the same
shape reuses it: a switch never recompiles."""

from __future__ import annotations

import torch
from torch._dynamo.utils import counters

from coeflow.engine import Engine, SamplingParams
from coeflow.model import ModelConfig, load_weights
from checkpoints import make_checkpoint

PROMPTS = [[1, 17, 42, 99, 7], [1, 5, 6, 250, 251, 252, 253]]


def test_second_expert_reuses_compiled_step_and_matches_eager(tmp_path):
    a = make_checkpoint(tmp_path / "a", "llama-gqa", seed=1)
    b = make_checkpoint(tmp_path / "b", "llama-gqa", seed=2)
    params = SamplingParams(max_tokens=12, ignore_eos=True)
    eager = Engine.from_checkpoint(a, fused=False)
    want_a = [c.token_ids for c in eager.generate(PROMPTS, params)]
    eager.load(b)
    want_b = [c.token_ids for c in eager.generate(PROMPTS, params)]
    assert want_a != want_b  # different experts, different answers: the swap is observable

    fused = Engine.from_checkpoint(a, fused=True)
    assert [c.token_ids for c in fused.generate(PROMPTS, params)] == want_a
    graphs = counters["stats"]["unique_graphs"]
    assert fused.fused and graphs >= 1, "the decode step was not compiled"

    fused.load(b)  # a switch: new tensors pointed into the same skeleton
    assert [c.token_ids for c in fused.generate(PROMPTS, params)] == want_b
    cfg = ModelConfig.from_dir(a)
    fused.set_weights(load_weights(a, cfg, torch.float32), name="a again")
    assert [c.token_ids for c in fused.generate(PROMPTS, params)] == want_a
    assert counters["stats"]["unique_graphs"] == graphs, "switching experts recompiled the decode step"
