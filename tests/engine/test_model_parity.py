"""coeflow computes what transformers computes, for every family we claim to support."""

from __future__ import annotations

import pytest
import torch

from coeflow.engine import Engine, SamplingParams
from coeflow.model import ModelConfig, attach_weights, build_skeleton, load_model, load_weights
from checkpoints import FAMILIES

PROMPTS = [[1, 17, 42, 99, 7, 250, 3, 64, 80, 81, 82, 83], [1, 5, 6]]


def hf_model(path, dtype=torch.float32):
    from transformers import AutoModelForCausalLM
    return AutoModelForCausalLM.from_pretrained(path, dtype=dtype).eval()


def hf_greedy(model, prompt, n):
    with torch.inference_mode():
        out = model.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                             max_new_tokens=n, min_new_tokens=n, do_sample=False, eos_token_id=None,
                             pad_token_id=0)
    return out[0, len(prompt):].tolist()


@pytest.mark.parametrize("family", list(FAMILIES))
def test_logits_match_transformers_fp32(checkpoints, family):
    ours = load_model(checkpoints[family])
    ref = hf_model(checkpoints[family])
    x = torch.tensor([PROMPTS[0] * 2])  # 24 tokens: longer than mistral's 8-token window
    with torch.inference_mode():
        torch.testing.assert_close(ours(x), ref(x).logits.float(), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("dtype,atol", [(torch.bfloat16, 0.15), (torch.float16, 0.02)])
def test_logits_match_transformers_half(checkpoints, dtype, atol):
    path = checkpoints["llama-gqa"]
    ours, ref = load_model(path, dtype=dtype), hf_model(path, dtype)
    x = torch.tensor([PROMPTS[0]])
    with torch.inference_mode():
        a, b = ours(x), ref(x).logits.float()
    assert ours.model.embed_tokens.weight.dtype == dtype
    assert (a - b).abs().max().item() < atol * b.abs().max().item()


@pytest.mark.parametrize("family", list(FAMILIES))
def test_greedy_tokens_equal_transformers_generate(checkpoints, family):
    path = checkpoints[family]
    engine = Engine.from_checkpoint(path, fused=False)
    ref = hf_model(path)
    got = engine.generate(PROMPTS, SamplingParams(max_tokens=20, ignore_eos=True))
    for prompt, completion in zip(PROMPTS, got):
        assert completion.token_ids == hf_greedy(ref, prompt, 20)
        assert completion.finish_reason == "length"


def test_batch_of_unequal_prompts_equals_one_by_one(checkpoints):
    engine = Engine.from_checkpoint(checkpoints["mistral-window"], fused=False)
    prompts = [[1, 9], PROMPTS[0], [1, 4, 4, 4, 4, 4, 4]]
    params = SamplingParams(max_tokens=16, ignore_eos=True)
    batched = [c.token_ids for c in engine.generate(prompts, params)]
    alone = [engine.generate([p], params)[0].token_ids for p in prompts]
    assert batched == alone


@pytest.mark.parametrize("family", ["llama-gqa", "llama-bias", "qwen2"])
def test_joined_products_compute_what_transformers_computes(checkpoints, family, monkeypatch):
    """The GPU's layers read q/k/v and gate/up as one matrix each (run here on the CPU): same
    logits, same greedy tokens, and only o/down/lm_head are left as products of their own."""
    from coeflow.engine.layers.cuda import CudaLayers, GemvLinear
    from coeflow.engine.runners import EagerRunner
    calls = []
    forward = GemvLinear.forward
    monkeypatch.setattr(GemvLinear, "forward", lambda self, x: calls.append(1) or forward(self, x))
    path = checkpoints[family]
    cfg = ModelConfig.from_dir(path)
    layers = CudaLayers(gemv=False)
    ours = build_skeleton(cfg)
    layers.swap(ours)
    attach_weights(ours, load_weights(path, cfg, torch.float32))
    assert all(layers.after_attach(ours)[0]), "the checkpoint's groups were not joined"
    ref = hf_model(path)
    x = torch.tensor([PROMPTS[0]])
    with torch.inference_mode():
        torch.testing.assert_close(ours(x), ref(x).logits.float(), atol=1e-4, rtol=1e-4)
    assert len(calls) == 2 * ours.config.num_layers + 1, "q/k/v or gate/up ran as products of their own"
    engine = Engine.from_checkpoint(path, runner=lambda m: EagerRunner(m, CudaLayers(gemv=False)))
    got = engine.generate(PROMPTS, SamplingParams(max_tokens=12, ignore_eos=True))
    for prompt, completion in zip(PROMPTS, got):
        assert completion.token_ids == hf_greedy(ref, prompt, 12)


@pytest.mark.parametrize("family", ["llama3-rope", "qwen2"])
def test_rope_tables_of_the_kv_pool_give_the_angles_the_step_would_compute(checkpoints, family):
    """The engine reads the rotary cos/sin from the pool's tables instead of computing them in
    the step (a compiler would recompute them inside the attention's loop): the same logits,
    rope scaling included, and the pool's size, tables counted, known before it is made.
    (Attention sees only relative rotations, so what this can catch is angles wrong between
    positions, not a table shifted as a whole, which would change nothing.)"""
    from coeflow.engine.paged import KVPool
    model = load_model(checkpoints[family])
    cfg = model.config
    tokens = torch.tensor([PROMPTS[0][:9]])
    pos = torch.arange(9)[None] + 20  # later positions too, as a long conversation reaches
    got = []
    for rope in (True, False):
        pool = KVPool(cfg, 4, torch.float32, torch.device("cpu"))
        blocks = torch.tensor([[1, 2, 3]])
        with torch.inference_mode():
            got.append(model.forward_cached(tokens, pos, pool.keys(), pool.values(), blocks,
                                            rope=pool.rope() if rope else None))
    torch.testing.assert_close(got[0], got[1], atol=1e-5, rtol=1e-5)
    assert KVPool.bytes_per_block(cfg, torch.float32) * 4 + 2 * pool.max_positions * cfg.head_dim * 4 == pool.nbytes
