"""Distilling a delta's scales (BitDelta's second stage): the packed signs or values stay, and
only the scales move, so that base + delta predicts the next token as the fine-tune does on
some of the fine-tune's own text (KL divergence of the two next-token distributions; Adam).
A few hundred thousand scales fit in seconds on a CPU for a small model."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor
from torch.func import functional_call

from coeflow.errors import ConfigError
from coeflow.model.delta import DeltaSpec, decompress, scaled

WINDOW, BATCH = 128, 8  # tokens a row, rows a step


def token_windows(ids: list[int], window: int = WINDOW) -> Tensor:
    """The calibration text's tokens as one stream to draw windows of `window` + 1 from."""
    if len(ids) < window + 2:
        raise ConfigError(f"the distillation text has {len(ids)} tokens; it needs at least {window + 2}")
    return torch.tensor(ids, dtype=torch.long)


def distill_scales(base: Path, finetune: Path, tensors: dict[str, Tensor], spec: DeltaSpec, stream: Tensor,
                   steps: int, lr: float, seed: int = 0,
                   progress: Callable[[int, float], None] | None = None) -> float:
    """Move the `*.delta_scale` tensors of `tensors` (a delta of `finetune` from `base`, in
    place, in their dtype) to lower the KL divergence from the fine-tune's next-token
    distribution on windows of `stream`; returns the last step's divergence. `progress(step,
    loss)` after each step."""
    from coeflow.model import load_model
    teacher, student = load_model(finetune).eval(), load_model(base).eval()
    fixed = {k: v.detach() for k, v in student.state_dict().items()}
    values, scales = {}, {}
    for name in fixed:
        module = name.removesuffix(".weight")
        if f"{module}.delta_packed" in tensors:
            packed = tensors[f"{module}.delta_packed"]
            values[name] = decompress(packed, torch.ones_like(tensors[f"{module}.delta_scale"], dtype=torch.float32),
                                      spec.bits)  # the delta with every scale 1
            scales[name] = torch.nn.Parameter(tensors[f"{module}.delta_scale"].float().clone())
        elif name in tensors:
            fixed[name] = tensors[name].float()
    tied = student.config.tie_word_embeddings

    def weights() -> dict[str, Tensor]:
        out = dict(fixed)
        for name, v in values.items():
            out[name] = fixed[name] + scaled(v, scales[name])
        if tied:
            out["lm_head.weight"] = out["model.embed_tokens.weight"]
        return out

    opt = torch.optim.Adam(scales.values(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    loss_value = float("nan")
    for step in range(steps):
        starts = torch.randint(0, len(stream) - WINDOW - 1, (BATCH,), generator=gen)
        x = torch.stack([stream[s:s + WINDOW] for s in starts.tolist()])
        with torch.no_grad():
            want = teacher(x).log_softmax(-1).flatten(0, 1)
        got = functional_call(student, weights(), (x,)).log_softmax(-1).flatten(0, 1)
        loss = torch.nn.functional.kl_div(got, want, log_target=True, reduction="batchmean")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            for s in scales.values():
                s.clamp_(min=0)  # a scale is a magnitude
        loss_value = float(loss.detach())
        if progress is not None:
            progress(step, loss_value)
    for name, s in scales.items():
        key = f"{name.removesuffix('.weight')}.delta_scale"
        tensors[key] = s.detach().to(tensors[key].dtype)
    return loss_value
