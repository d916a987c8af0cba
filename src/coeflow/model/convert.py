"""Writing converted checkpoints: a dense Hugging Face checkpoint quantized to int8 or int4
weights (`coeflow quantize`), as a checkpoint directory any compressed-tensors reader loads;
the copies a CoE entry's `quantize:` serves, made once into coeflow's cache; and a fine-tune
stored as a compressed delta from its base (`coeflow delta`, coeflow.model.delta)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from coeflow.cache import cache_root
from coeflow.coefile import CoEFile
from coeflow.errors import CheckpointError, CoeflowError, ConfigError, UnsupportedModelError
from coeflow.model.checkpoint import TensorInfo, checkpoint_files, index_checkpoint
from coeflow.model.config import ModelConfig, expected_shapes
from coeflow.model.delta import KEY as DELTA_KEY, DeltaSpec, check_base, compress
from coeflow.model.quant import quantize
from coeflow.quantization import BITS, DEFAULT_GROUP, DELTA_GROUP, QuantScheme

log = logging.getLogger(__name__)
DISTILL_STEPS, DISTILL_LR = 100, 1e-4


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
    if DeltaSpec.of(src) is not None:
        raise ConfigError(f"{src}: a delta checkpoint; quantize its base, or the fine-tune it was made from")
    _check_out(out)
    infos = index_checkpoint(src, cfg)
    config = {**json.loads((src / "config.json").read_text()), "quantization_config": scheme.to_config()}
    try:  # the copy's tensors; a layer the groups do not divide is refused before any writing
        packed = expected_shapes(ModelConfig.from_dict(config, str(out / "config.json")))
    except UnsupportedModelError as e:
        raise ConfigError(f"cannot quantize {src}: {e}; choose another --group-size") from None
    tensors: dict[str, torch.Tensor] = {}
    for name, t in _tensors(src, infos, progress):
        module = name.removesuffix(".weight")
        if f"{module}.weight_packed" in packed:
            tensors[f"{module}.weight_packed"], tensors[f"{module}.weight_scale"] = quantize(
                t, scheme.bits, scheme.group)
            tensors[f"{module}.weight_shape"] = torch.tensor(t.shape, dtype=torch.int64)
        else:
            tensors[name] = t.contiguous()
    _write(src, out, tensors, config)
    return out


def delta_checkpoint(src: str | Path, base: str | Path, out: str | Path, bits: int, group: int | None = None,
                     progress: Callable[[int], None] | None = None, distill: str | None = None,
                     distill_steps: int = DISTILL_STEPS, distill_lr: float = DISTILL_LR,
                     distill_progress: Callable[[int, float], None] | None = None) -> Path:
    """Write the fine-tune `src` to the new directory `out` as a delta from `base`
    (coeflow.model.delta: sign bits and a scale a row at 1 bit; groups of `group` inputs at 2,
    4 or 8: by default 128, or 64 or 32 where a matrix's inputs do not split into 128s), recording `base`'s path (relative to `out`) and checksum; the
    tokenizer and other files are `src`'s. With `distill` (some of the fine-tune's own text),
    the scales are then distilled on it for `distill_steps` (coeflow.model.distill). Refuses a
    base of another shape, a quantized or delta checkpoint on either side, and an `out` that
    exists and is not empty."""
    from coeflow.backend.real.integrity import checkpoint_sha256
    src, base, out = Path(src), Path(base), Path(out)
    cfg = ModelConfig.from_dir(src)
    for path, c in ((src, cfg), (base, ModelConfig.from_dir(base))):
        if c.quant is not None or DeltaSpec.of(path) is not None:
            raise ConfigError(f"{path}: quantized or a delta already; a delta is made between dense checkpoints")
    if bits not in (1, 2, 4, 8):
        raise ConfigError(f"cannot store a delta in {bits} bits; choose 1, 2, 4 or 8")
    _check_out(out)
    if bits > 1 and group is None:  # 128 inputs a scale, or the largest smaller group every matrix splits into
        inputs = (cfg.hidden_size, cfg.num_heads * cfg.head_dim, cfg.intermediate_size)
        group = next((g for g in (DELTA_GROUP, 64, 32) if all(n % g == 0 for n in inputs)), None)
    spec = DeltaSpec(base.resolve(), bits, None if bits == 1 else group)
    check_base(spec, cfg, src)
    shapes = spec.shapes(cfg)  # refuses groups that do not divide a matrix, before any writing
    base_infos = index_checkpoint(base, cfg)
    tensors: dict[str, torch.Tensor] = {}
    for name, t in _tensors(src, index_checkpoint(src, cfg), progress):
        module = name.removesuffix(".weight")
        if f"{module}.delta_packed" in shapes:
            packed, scale = compress(t.float() - _tensor(base_infos[name]).float(), bits, spec.group)
            tensors[f"{module}.delta_packed"], tensors[f"{module}.delta_scale"] = packed, scale.to(t.dtype)
        else:
            tensors[name] = t.contiguous()
    spec = DeltaSpec(spec.base, bits, spec.group, checkpoint_sha256(base))
    record = spec.to_config(out)
    if distill is not None:
        from coeflow.model.distill import distill_scales, token_windows
        from coeflow.model.tokenizer import Tokenizer
        stream = token_windows(Tokenizer.from_dir(src).encode(distill))
        kl = distill_scales(base, src, tensors, spec, stream, distill_steps, distill_lr, progress=distill_progress)
        record["distilled"] = {"steps": distill_steps, "tokens": len(stream), "kl": round(kl, 6)}
    config = {**json.loads((src / "config.json").read_text()), DELTA_KEY: record}
    _write(src, out, tensors, config)
    return out


def _check_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"{out}: exists and is not an empty directory; choose a new --out")


def _tensors(src: Path, infos: dict[str, TensorInfo],
             progress: Callable[[int], None] | None) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) of every tensor `infos` locates, file by file; `progress(bytes)` after each."""
    by_file: dict[Path, list[str]] = {}
    for name, info in infos.items():
        by_file.setdefault(info.file, []).append(name)
    for file, names in by_file.items():
        try:
            with safe_open(str(file), framework="pt") as f:
                for name in names:
                    yield name, f.get_tensor(name)
                    if progress is not None:
                        progress(infos[name].nbytes)
        except (OSError, RuntimeError) as e:
            raise CheckpointError(f"{file}: cannot read tensors ({e})") from None


def _tensor(info: TensorInfo) -> torch.Tensor:
    """One tensor, read alone (a delta holds one base tensor in memory at a time)."""
    try:
        with safe_open(str(info.file), framework="pt") as f:
            return f.get_tensor(info.name)
    except (OSError, RuntimeError) as e:
        raise CheckpointError(f"{info.file}: cannot read tensor {info.name!r} ({e})") from None


def _write(src: Path, out: Path, tensors: dict[str, torch.Tensor], config: dict) -> None:
    """`out` as a checkpoint: `tensors`, `config` and `src`'s other files (tokenizer, chat template)."""
    out.mkdir(parents=True, exist_ok=True)
    skip = {"config.json", "model.safetensors.index.json", *(f.name for f in checkpoint_files(src))}
    for f in src.iterdir():
        if f.is_file() and f.name not in skip:
            shutil.copy2(f, out / f.name)
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")  # last: a whole checkpoint


def cached_quantized(src: str | Path, bits: int, sha256: str | None = None) -> tuple[Path, str | None]:
    """A quantized copy of `src` (`quant_scheme(bits)`; int4 in smaller groups where a layer's
    inputs do not split into 128s) in coeflow's cache, made on first use
    and reused while `src`'s files are unchanged (same names, sizes and times): what a CoE
    entry's `quantize:` serves. With `sha256` (the CoE file's, of `src`), `src` is checked
    against it before it is quantized, and the copy's own checksum is returned for the store
    to check on each load (None without)."""
    from coeflow.backend.real.integrity import checkpoint_sha256
    src = Path(src).resolve()
    cfg = ModelConfig.from_dir(src)
    inputs = (cfg.hidden_size, cfg.num_heads * cfg.head_dim, cfg.intermediate_size)
    # int4's groups of 128 inputs, or the largest smaller group every layer splits into
    group = next((g for g in (128, 64, 32) if all(n % g == 0 for n in inputs)), None) if bits == 4 else None
    scheme = quant_scheme(bits, group)
    stamp = [str(src), scheme.name] + [f"{f.name}:{f.stat().st_size}:{f.stat().st_mtime_ns}"
                                       for f in sorted(src.iterdir()) if f.is_file()]
    key = hashlib.sha256("\n".join(stamp).encode()).hexdigest()[:16]
    out = cache_root() / "quantized" / f"{src.name}-{scheme.name}-{key}"
    record = out / "coeflow-copy.json"
    if not record.is_file():
        if sha256 is not None and checkpoint_sha256(src) != sha256:
            raise CheckpointError(f"{src}: the sha256 of its files is not the CoE file's {sha256}: changed or "
                                  "corrupt, so it is not quantized")
        tmp = out.with_name(out.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        quantize_checkpoint(src, tmp, scheme)
        (tmp / record.name).write_text(json.dumps({"source": str(src), "scheme": scheme.name,
                                                   "sha256": checkpoint_sha256(tmp)}) + "\n")
        shutil.rmtree(out, ignore_errors=True)
        os.replace(tmp, out)  # whole or not at all: a copy cut short is made again
    return out, json.loads(record.read_text())["sha256"] if sha256 is not None else None


def with_quantized_experts(coe: CoEFile) -> tuple[CoEFile, dict[str, str]]:
    """`coe` with each expert whose entry says `quantize:` served from its quantized copy
    (`cached_quantized`, made now where missing, with a log line), and why any of those
    could not be made (expert -> message; such an expert keeps its entry and is to be marked
    failed by the caller)."""
    experts, errors = [], {}
    for spec in coe.experts:
        if spec.quantize is None:
            experts.append(spec)
            continue
        try:
            log.info("expert %s: its int%d copy (made once, then reused from %s)", spec.name, spec.quantize,
                     cache_root() / "quantized")
            path, digest = cached_quantized(spec.path, spec.quantize, spec.sha256)
        except CoeflowError as e:
            errors[spec.name] = f"cannot quantize to int{spec.quantize}: {e}"
            experts.append(spec)
            continue
        experts.append(dataclasses.replace(spec, path=path, sha256=digest))
    return dataclasses.replace(coe, experts=tuple(experts)), errors
