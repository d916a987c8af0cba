"""The demo's shared byte-level BPE tokenizer, trained with the `tokenizers` library and
written as the Hugging Face files (tokenizer.json, tokenizer_config.json) every expert
checkpoint carries. One shared vocabulary makes per-token perplexities comparable across
experts."""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

BOS, EOS, PAD = "<s>", "</s>", "<pad>"
SPECIAL_TOKENS = [BOS, EOS, PAD, "<|system|>", "<|user|>", "<|assistant|>"]
# Each message on its own role line, closed by EOS; the model answers after <|assistant|>.
# Tools as Hermes-style models take them (server/tools.py reads the calls back): the functions
# in a system turn first, calls in <tool_call> blocks, results in <tool_response> blocks. With
# no tools and no tool turns it writes what it always did (the experts were trained on that).
CHAT_TEMPLATE = (
    "{{ bos_token }}{% if tools %}<|system|>\nYou can call these functions; to call one, answer "
    "<tool_call>{\"name\": NAME, \"arguments\": {...}}</tool_call>.\n{% for t in tools %}{{ t.function | tojson }}"
    "\n{% endfor %}{{ eos_token }}\n{% endif %}"
    "{% for message in messages %}"
    "{% if message['role'] == 'tool' %}<|user|>\n<tool_response>{{ message['content'] }}</tool_response>"
    "{{ eos_token }}\n"
    "{% elif message.get('tool_calls') %}<|assistant|>\n{% for c in message['tool_calls'] %}<tool_call>"
    "{{ {'name': c['function']['name'], 'arguments': c['function']['arguments']} | tojson }}</tool_call>"
    "{% endfor %}{{ eos_token }}\n"
    "{% else %}<|{{ message['role'] }}|>\n{{ message['content'] }}{{ eos_token }}\n{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def train_tokenizer(texts: list[str], vocab_size: int) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    bos_id = tok.token_to_id(BOS)
    # Like Llama: a plain encode starts with BOS (transformers and coeflow both apply this).
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
    )
    return tok


def save_tokenizer(tok: Tokenizer, directory: Path, max_length: int) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    tok.save(str(directory / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS,
        "eos_token": EOS,
        "pad_token": PAD,
        "model_max_length": max_length,
        "clean_up_tokenization_spaces": False,
        "chat_template": CHAT_TEMPLATE,
    }
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=1) + "\n", encoding="utf-8")
