"""Writing converted checkpoints: a dense Hugging Face checkpoint quantized to int8 or int4
weights (`coeflow quantize`), as a checkpoint directory any compressed-tensors reader loads."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from coeflow.errors import CheckpointError, ConfigError, UnsupportedModelError
from coeflow.model.checkpoint import checkpoint_files, index_checkpoint
from coeflow.model.config import ModelConfig, expected_shapes
from coeflow.model.quant import BITS, DEFAULT_GROUP, QuantScheme, quantize


def quant_scheme(bits: int, group: int | None = None, lm_head: bool = False) -> QuantScheme:
    """The scheme `coeflow quantize --to int{bits}` writes: int4 in groups of 128 inputs, int8
    one scale a row, unless `group` says otherwise; the output head stays dense (as
    compressed-tensors' tools leave it) unless `lm_head`."""
    if bits not in BITS:
        raise ConfigError(f"cannot quantize to {bits} bits; choose int8 or int4")
    return QuantScheme(bits, group if group is not None else DEFAULT_GROUP[bits], () if lm_head else ("lm_head",))


def quantize_checkpoint(src: str | Path, out: str | Path, scheme: QuantScheme,
                        progress: Callable[[int], None] | None = None) -> Path:
    """Write `src` (a dense checkpoint) to the new directory `out` with its linear layers
    quantized by round-to-nearest (`quant.quantize`); every other file (tokenizer, generation
    config, chat template) is copied. `progress(n)` is called after each tensor with its
    bytes read. Refuses a checkpoint already quantized, a layer the scheme cannot split into
    groups, and an `out` that exists and is not empty."""
    src, out = Path(src), Path(out)
    cfg = ModelConfig.from_dir(src)
    if cfg.quant is not None:
        raise ConfigError(f"{src}: already quantized ({cfg.quant.name}); quantize its dense checkpoint")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"{out}: exists and is not an empty directory; choose a new --out")
    infos = index_checkpoint(src, cfg)
    target = ModelConfig.from_dict({**json.loads((src / "config.json").read_text()),
                                    "quantization_config": scheme.to_config()}, str(out / "config.json"))
    try:
        expected_shapes(target)  # a layer the groups do not divide, before any writing
    except UnsupportedModelError as e:
        raise ConfigError(f"cannot quantize {src}: {e}; choose another --group-size") from None
    tensors: dict[str, torch.Tensor] = {}
    by_file: dict[Path, list[str]] = {}
    for name, info in infos.items():
        by_file.setdefault(info.file, []).append(name)
    for file, names in by_file.items():
        try:
            with safe_open(str(file), framework="pt") as f:
                for name in names:
                    t = f.get_tensor(name)
                    module = name.removesuffix(".weight")
                    if name.endswith(".weight") and t.dim() == 2 and target.quantized(module) \
                            and name != "model.embed_tokens.weight":
                        packed, scale = quantize(t, scheme.bits, scheme.group)
                        tensors[f"{module}.weight_packed"] = packed
                        tensors[f"{module}.weight_scale"] = scale
                        tensors[f"{module}.weight_shape"] = torch.tensor(t.shape, dtype=torch.int64)
                    else:
                        tensors[name] = t.contiguous()
                    if progress is not None:
                        progress(infos[name].nbytes)
        except (OSError, RuntimeError) as e:
            raise CheckpointError(f"{file}: cannot read tensors ({e})") from None
    out.mkdir(parents=True, exist_ok=True)
    skip = {"config.json", "model.safetensors.index.json", *(f.name for f in checkpoint_files(src))}
    for f in src.iterdir():
        if f.is_file() and f.name not in skip:
            shutil.copy2(f, out / f.name)
    config = json.loads((src / "config.json").read_text())
    config["quantization_config"] = scheme.to_config()
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")  # last: a whole checkpoint
    return out
