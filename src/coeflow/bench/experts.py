"""Random-weight expert checkpoints for benchmarks, written by `transformers` itself with a
small byte-level BPE tokenizer, so benchmarks read the same files a user's experts would be."""

from __future__ import annotations

import json
from pathlib import Path

import torch

TOKENIZER_TEXT = ("select name from users where id = 1; def add(a, b): return a + b; "
                  "ls -la /tmp | grep log; the quick brown fox jumps over the lazy dog; 12 * 7 = 84. ")


# A plain chat template, as a real checkpoint carries one (the server refuses chat without)
CHAT_TEMPLATE = ("{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")


def write_tokenizer(path: Path, vocab_size: int) -> int:
    """Returns the tokenizer's vocabulary size (the model's must match it)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=min(vocab_size, 400), special_tokens=["<unk>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([TOKENIZER_TEXT * 50], trainer)
    tok.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<s>", "eos_token": "</s>",
                                                           "chat_template": CHAT_TEMPLATE}))
    return tok.get_vocab_size()


def make_expert(path: Path, config: dict, seed: int, tokenizer: bool = True,
                dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu") -> Path:
    """Write a Llama checkpoint with random weights in `dtype` unless one is already there,
    initialised on `device` (a GPU makes a 7B model's weights in a second, a CPU in minutes).
    With a tokenizer, the model's vocabulary is the tokenizer's, so every generated id decodes."""
    from transformers import LlamaConfig, LlamaForCausalLM
    if (path / "config.json").exists():
        return path
    path.mkdir(parents=True, exist_ok=True)
    if tokenizer:
        config = {**config, "vocab_size": write_tokenizer(path, config["vocab_size"])}
    torch.manual_seed(seed)
    with torch.device(device):
        model = LlamaForCausalLM(LlamaConfig(**config))
    model.to(dtype).save_pretrained(path)
    return path


def hf_from_pretrained(path: Path, dtype: torch.dtype, device: str | torch.device = "cpu"):
    """`transformers` loading as its users do: on a GPU straight onto the device
    (`device_map`), which is faster there than loading on the CPU and moving."""
    from transformers import AutoModelForCausalLM
    if torch.device(device).type == "cuda":
        return AutoModelForCausalLM.from_pretrained(path, dtype=dtype, device_map=str(device)).eval()
    return AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device).eval()
