"""The Llama decoder family: config, weights, skeleton and tokenizer. Knows nothing of tiers or HTTP."""

from __future__ import annotations

from pathlib import Path

import torch

from coeflow.model.checkpoint import index_checkpoint, load_weights
from coeflow.model.config import ModelConfig, expected_shapes
from coeflow.model.llama import Transformer, rope_inv_freq
from coeflow.model.tokenizer import Tokenizer

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
          "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}


def parse_dtype(name: str | torch.dtype) -> torch.dtype:
    from coeflow.errors import ConfigError
    if isinstance(name, torch.dtype):
        return name
    if name not in DTYPES:
        raise ConfigError(f"unknown dtype {name!r}; choose one of fp32, bf16, fp16")
    return DTYPES[name]


def dtype_name(dtype: torch.dtype) -> str:
    """coeflow's short name of a dtype: fp32, bf16 or fp16."""
    return {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


def resolve_device(name: str = "auto") -> torch.device:
    """"auto": CUDA when present, else the CPU. A device this machine lacks is refused here,
    with a message, rather than deep inside PyTorch at the first tensor."""
    from coeflow.errors import ConfigError
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        count = torch.cuda.device_count()
        if count == 0:
            raise ConfigError(f"device {name!r}: no CUDA GPU is available to this PyTorch "
                              f"({torch.__version__}); use --device cpu or auto")
        if device.index is not None and device.index >= count:
            raise ConfigError(f"device {name!r}: this machine has {count} CUDA GPU(s)")
    return device


def build_skeleton(cfg: ModelConfig, device: str | torch.device = "cpu") -> Transformer:
    """A model whose parameters hold no storage yet (meta); `attach_weights` fills it."""
    with torch.device("meta"):
        model = Transformer(cfg)
    model.inv_freq = rope_inv_freq(cfg.rope, cfg.head_dim).to(device)
    return model.eval().requires_grad_(False)


def attach_weights(model: Transformer, weights: dict[str, torch.Tensor]) -> None:
    """Point the skeleton's parameters at `weights` without copying. Parameter objects are
    kept once they exist (only their data changes), so a compiled step keeps its graph."""
    if model.config.tie_word_embeddings:
        weights = {**weights, "lm_head.weight": weights["model.embed_tokens.weight"]}
    params = dict(model.named_parameters(remove_duplicate=False))
    for name, tensor in weights.items():
        param = params[name]
        if param.is_meta:
            module_name, _, attr = name.rpartition(".")
            setattr(model.get_submodule(module_name), attr,
                    torch.nn.Parameter(tensor, requires_grad=False))
        else:
            param.data = tensor


def load_model(path: str | Path, dtype: str | torch.dtype = torch.float32,
               device: str | torch.device = "cpu") -> Transformer:
    """Load a Hugging Face checkpoint directory into a ready-to-run model."""
    cfg = ModelConfig.from_dir(path)
    device = resolve_device(device) if isinstance(device, str) else device
    model = build_skeleton(cfg, device)
    attach_weights(model, load_weights(path, cfg, parse_dtype(dtype), device))
    return model


__all__ = ["ModelConfig", "Transformer", "Tokenizer", "load_model", "build_skeleton",
           "attach_weights", "load_weights", "index_checkpoint", "expected_shapes", "parse_dtype",
           "resolve_device"]
