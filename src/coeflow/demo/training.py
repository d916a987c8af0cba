"""Training one tiny Llama expert on the CPU with plain PyTorch: rows drawn from sources mixed
by weight (windows of a token stream, repeats, packed chat examples: demo/curriculum.py), the loss on
the tokens each source marks, AdamW, warm-up then cosine decay. Deterministic for a seed:
every random choice comes from one seeded generator, in one order."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch and transformers load in seconds: only when training
    from transformers import LlamaConfig, LlamaForCausalLM

    from coeflow.demo.curriculum import Source


@dataclass(frozen=True)
class ExpertShape:
    vocab_size: int
    hidden_size: int = 192
    num_layers: int = 3
    num_heads: int = 6
    num_kv_heads: int = 2  # grouped-query attention, as in Llama 3
    intermediate_size: int = 512
    max_positions: int = 512


@dataclass(frozen=True)
class TrainSettings:
    steps: int = 250
    batch_size: int = 16
    seq_len: int = 128
    lr: float = 3e-3
    warmup: int = 20
    weight_decay: float = 0.05


def llama_config(shape: ExpertShape, bos_id: int, eos_id: int, pad_id: int) -> LlamaConfig:
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=shape.vocab_size,
        hidden_size=shape.hidden_size,
        intermediate_size=shape.intermediate_size,
        num_hidden_layers=shape.num_layers,
        num_attention_heads=shape.num_heads,
        num_key_value_heads=shape.num_kv_heads,
        max_position_embeddings=shape.max_positions,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        tie_word_embeddings=True,
        bos_token_id=bos_id,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
    )


def train_expert(
    sources: list[Source],
    weights: list[float],
    config: LlamaConfig,
    settings: TrainSettings,
    seed: int,
    desc: str = "expert",
    progress: bool = True,
    position: int = 0,
    init: Path | None = None,
) -> tuple[LlamaForCausalLM, float]:
    """Train a model on rows drawn from `sources` with the given mixture weights: a fresh one,
    or a fine-tune of the checkpoint `init`. Returns the model and its final training loss
    (smoothed, over the tokens the sources mark)."""
    import torch
    from tqdm import tqdm
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    if init is None:
        model = LlamaForCausalLM(config)
    else:
        from transformers.utils import logging as hf_logging
        hf_logging.disable_progress_bar()  # the training's own bar is enough
        model = LlamaForCausalLM.from_pretrained(init, dtype=torch.float32)
    model.train()
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": settings.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=settings.lr, betas=(0.9, 0.95),
    )
    mix = torch.tensor(weights, dtype=torch.float)
    t = settings.seq_len + 1
    smoothed = float("nan")
    bar = tqdm(range(settings.steps), desc=f"{desc:>8}", disable=not progress, position=position, leave=False,
               unit="step", mininterval=1.0)
    for step in bar:
        lr = _lr_at(step, settings)
        for group in opt.param_groups:
            group["lr"] = lr
        which = torch.multinomial(mix, settings.batch_size, replacement=True, generator=gen)
        rows, marks = zip(*(sources[s].row(t, gen) for s in which.tolist()))
        batch, counted = torch.stack(rows), torch.stack(marks)[:, 1:].reshape(-1)
        logits = model(input_ids=batch[:, :-1]).logits
        losses = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), batch[:, 1:].reshape(-1),
                                                   reduction="none")
        loss = losses[counted].mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        value = loss.item()
        smoothed = value if math.isnan(smoothed) else 0.9 * smoothed + 0.1 * value
        bar.set_postfix(loss=f"{smoothed:.3f}")
    model.eval()
    return model, smoothed


def _lr_at(step: int, s: TrainSettings) -> float:
    if step < s.warmup:
        return s.lr * (step + 1) / s.warmup
    progress = (step - s.warmup) / max(1, s.steps - s.warmup)
    return s.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))
