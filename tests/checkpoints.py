"""Tiny checkpoints written by `transformers` itself (random weights), with a
real tokenizer.json trained here, so every test reads files exactly as a user's would be."""

from __future__ import annotations

import json
from pathlib import Path

import torch

VOCAB = 320  # byte-level alphabet (256) + specials + a few merges
CORPUS = ("the quick brown fox jumps over the lazy dog. select name from users where id = 1; "
          "def add(a, b): return a + b. ls -la /tmp && grep -r foo . | wc -l. 12 + 30 = 42. ") * 20
CHAT_TEMPLATE = ("{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{{ eos_token }}"
                 "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}")


def write_tokenizer(path: Path, vocab_size: int = VOCAB) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<unk>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([CORPUS], trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tok.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(json.dumps(
        {"bos_token": "<s>", "eos_token": "</s>", "chat_template": CHAT_TEMPLATE}))


FAMILIES = {
    "llama": dict(model_type="llama", num_attention_heads=4, num_key_value_heads=4),
    "llama-gqa": dict(model_type="llama", num_attention_heads=4, num_key_value_heads=2),
    "llama3-rope": dict(model_type="llama", num_attention_heads=4, num_key_value_heads=1, rope_scaling={
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 32}),
    "llama-tied": dict(model_type="llama", num_attention_heads=4, num_key_value_heads=2,
                       tie_word_embeddings=True),
    "llama-bias": dict(model_type="llama", num_attention_heads=4, num_key_value_heads=2,
                       attention_bias=True, mlp_bias=True),
    "mistral-window": dict(model_type="mistral", num_attention_heads=4, num_key_value_heads=2,
                           sliding_window=8),
    "qwen2": dict(model_type="qwen2", num_attention_heads=4, num_key_value_heads=2),
}


def make_checkpoint(path: Path, family: str = "llama-gqa", seed: int = 0, tokenizer: bool = True,
                    **overrides) -> Path:
    from transformers import AutoConfig, AutoModelForCausalLM
    spec = {**FAMILIES[family], **overrides}
    model_type = spec.pop("model_type")
    base = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                max_position_embeddings=512, bos_token_id=1, eos_token_id=2)
    cfg = AutoConfig.for_model(model_type, **{**base, **spec})
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg)
    # random init is close to uniform; scale up so greedy paths are decisive, not near-ties
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(4.0)
    model.save_pretrained(path)
    if tokenizer:
        write_tokenizer(path)
    return path
