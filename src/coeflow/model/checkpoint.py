"""Reading Hugging Face checkpoint directories: config.json plus one safetensors file or
shards with an index. Everything is validated against the config *before* a byte of weight
data is read, so a bad checkpoint fails with the name of the file or tensor at fault."""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open

from coeflow.errors import CheckpointError, UnsupportedModelError
from coeflow.model import hostmem
from coeflow.model.config import CACHE_LINE, ModelConfig, dense_dtype, expected_shapes, weight_groups

SAFETENSORS_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
    "U8": torch.uint8, "BOOL": torch.bool,
}
# Tensors some exporters write that the model recomputes; skipped rather than refused.
IGNORED_SUFFIXES = (".rotary_emb.inv_freq",)
# ... and in a quantized checkpoint, each layer's dense shape (config.json implies it).
QUANT_IGNORED_SUFFIXES = (".weight_shape",)
MAX_HEADER_BYTES = 100 * 1024 * 1024


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor's bytes lie: absolute offsets [start, end) in `file`."""
    name: str
    file: Path
    dtype: torch.dtype
    shape: tuple[int, ...]
    start: int
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.start


def read_safetensors_header(path: Path) -> dict[str, TensorInfo]:
    """Parse a safetensors header and check that every tensor's bytes lie inside the file
    (a truncated download fails here, naming the file)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path}: truncated safetensors file ({size} bytes, no header)")
        (n,) = struct.unpack("<Q", head)
        if n > MAX_HEADER_BYTES or 8 + n > size:
            raise CheckpointError(f"{path}: corrupt or truncated safetensors header "
                                  f"(header says {n} bytes, file has {size})")
        try:
            header = json.loads(f.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CheckpointError(f"{path}: corrupt safetensors header ({e})") from None
    base, infos = 8 + n, {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = SAFETENSORS_DTYPES[meta["dtype"]]
            start, end = (base + int(o) for o in meta["data_offsets"])
            shape = tuple(int(s) for s in meta["shape"])
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"{path}: tensor {name!r} has a malformed header entry ({e})") from None
        numel = 1
        for s in shape:
            numel *= s
        if end - start != numel * dtype.itemsize:
            raise CheckpointError(f"{path}: tensor {name!r} has {end - start} bytes for shape {shape} "
                                  f"{meta['dtype']}")
        if end > size:
            raise CheckpointError(f"{path}: truncated: tensor {name!r} ends at byte {end} but the "
                                  f"file has {size} bytes")
        infos[name] = TensorInfo(name, path, dtype, shape, start, end)
    return infos


def checkpoint_files(path: Path) -> list[Path]:
    """The safetensors files of a checkpoint directory, single-file or sharded."""
    if not path.is_dir():
        raise CheckpointError(f"{path}: no such checkpoint directory")
    single = path / "model.safetensors"
    if single.is_file():
        return [single]
    index = path / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise CheckpointError(f"{index}: malformed index ({e})") from None
        files = [path / f for f in sorted(set(weight_map.values()))]
        for f in files:
            if not f.is_file():
                raise CheckpointError(f"{f}: missing shard named by {index.name}")
        return files
    if (path / "pytorch_model.bin").exists():
        raise UnsupportedModelError(f"{path}: only pickled pytorch_model.bin weights; coeflow "
                                    "reads safetensors (convert with save_pretrained(safe_serialization=True))")
    raise CheckpointError(f"{path}: no model.safetensors or model.safetensors.index.json")


def index_checkpoint(path: str | Path, cfg: ModelConfig) -> dict[str, TensorInfo]:
    """Every tensor the checkpoint must hold (a delta checkpoint's own: coeflow.model.delta),
    located and checked against the config's shapes."""
    from coeflow.model.delta import DeltaSpec
    path = Path(path)
    found: dict[str, TensorInfo] = {}
    for file in checkpoint_files(path):
        found.update(read_safetensors_header(file))
    delta = DeltaSpec.of(path)
    expected = delta.shapes(cfg) if delta is not None else expected_shapes(cfg)
    ignored = IGNORED_SUFFIXES + (QUANT_IGNORED_SUFFIXES if cfg.quant else ())
    for name, info in found.items():
        if name in expected:
            if info.shape != expected[name]:
                raise CheckpointError(f"{info.file}: tensor {name!r} has shape {list(info.shape)} but "
                                      f"config.json implies {list(expected[name])}")
            if dense_dtype(name) and not info.dtype.is_floating_point:
                raise CheckpointError(f"{info.file}: tensor {name!r} has dtype {info.dtype}, "
                                      "expected a floating-point type")
            if not dense_dtype(name) and info.dtype != torch.int32:
                raise CheckpointError(f"{info.file}: tensor {name!r} has dtype {info.dtype}, "
                                      "expected int32 (packed values)")
        elif not name.endswith(ignored) and not (
                name == "lm_head.weight" and cfg.tie_word_embeddings):
            raise CheckpointError(f"{info.file}: unexpected tensor {name!r}; does config.json "
                                  "describe this checkpoint?")
    missing = [n for n in expected if n not in found]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise CheckpointError(f"{path}: tensor {missing[0]!r}{more} missing from the checkpoint")
    return {n: found[n] for n in expected}


def load_weights(path: str | Path, cfg: ModelConfig, dtype: torch.dtype,
                 device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Read the checkpoint's tensors (Hugging Face names) in `dtype` on `device`; a delta
    checkpoint's are rebuilt as its base's plus the delta."""
    from coeflow.model import delta
    spec = delta.DeltaSpec.of(path)
    if spec is not None:
        delta.check_base(spec, cfg, path)
        out = pooled_views(expected_shapes(cfg), cfg, dtype, torch.device(device))
        delta.rebuild(load_weights(spec.base, cfg, dtype, device), _read(path, cfg, torch.float32, device),
                      spec.bits, out)
        return out
    return _read(path, cfg, dtype, device)


def _read(path: str | Path, cfg: ModelConfig, dtype: torch.dtype,
          device: str | torch.device) -> dict[str, torch.Tensor]:
    infos = index_checkpoint(path, cfg)
    by_file: dict[Path, list[str]] = {}
    for name, info in infos.items():
        by_file.setdefault(info.file, []).append(name)
    device = torch.device(device)
    views = pooled_views({n: i.shape for n, i in infos.items()}, cfg, dtype, device)
    out: dict[str, torch.Tensor] = {}
    for file, names in by_file.items():
        try:
            with safe_open(str(file), framework="pt") as f:
                for name in names:
                    out[name] = views[name].copy_(f.get_tensor(name))
        except Exception as e:  # safetensors raises its own error types
            raise CheckpointError(f"{file}: cannot read tensors ({e})") from None
    return out


def pooled_views(shapes: dict[str, tuple[int, ...]], cfg: ModelConfig, dtype: torch.dtype,
                 device: torch.device) -> dict[str, torch.Tensor]:
    """Uninitialised tensors of these shapes, views of one buffer: on the CPU in huge pages
    (a decode step streams every weight: hostmem). Each starts on a cache line, except that
    a weight group's later members (coeflow.engine.layers.cuda.join_groups) lie right after
    the one before, so the group reads as one matrix. Floating-point tensors are in `dtype`,
    packed quantized weights in int32."""
    follows = {n for g in weight_groups(cfg) for n in g[1:]}
    offsets, total = {}, 0
    dtypes = {n: dtype if dense_dtype(n) else torch.int32 for n in shapes}
    for name, shape in shapes.items():
        if name not in follows:
            total = -(-total // CACHE_LINE) * CACHE_LINE
        offsets[name] = total
        total += math.prod(shape) * dtypes[name].itemsize
    pool = hostmem.empty(total) if device.type == "cpu" else torch.empty(total, dtype=torch.uint8, device=device)
    return {n: pool[o:o + math.prod(shapes[n]) * dtypes[n].itemsize].view(dtypes[n]).view(shapes[n])
            for n, o in offsets.items()}
