"""Checkpoint layouts for the real backend: where each expert's tensors lie on disk and where
they will lie in a tier's buffer. Computed once at start-up from config.json and the
safetensors headers (no weight bytes read), so sizes are exact before anything is loaded and
a broken checkpoint is found before the first request."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from coeflow.model import ModelConfig, index_checkpoint
from coeflow.model.checkpoint import TensorInfo, checkpoint_files
from coeflow.model.config import CACHE_LINE, dense_dtype, weight_groups
from coeflow.model.delta import DeltaSpec, check_base
from coeflow.store.tiers import PAGE, align_up


@dataclass(frozen=True)
class TensorSlot:
    """One tensor inside an expert's block: `offset` bytes from the block's start."""
    name: str
    offset: int
    shape: tuple[int, ...]
    dtype: torch.dtype  # the serving dtype (packed quantized weights: their own, int32)
    source: TensorInfo  # where it is on disk (maybe another dtype)

    @property
    def nbytes(self) -> int:
        return _numel(self.shape) * self.dtype.itemsize

    @property
    def converted(self) -> bool:
        return self.source.dtype != self.dtype


@dataclass(frozen=True)
class Run:
    """A contiguous byte range of one file that lands unchanged at `offset` in the block:
    the unit of the chunked parallel read."""
    file: Path
    file_start: int
    length: int
    offset: int


@dataclass(frozen=True)
class FileStamp:
    """Size and mtime at start-up: a file changed since is refused, not half-trusted."""
    file: Path
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class ExpertLayout:
    config: ModelConfig
    tensors: tuple[TensorSlot, ...]
    runs: tuple[Run, ...]
    files: tuple[FileStamp, ...]  # every safetensors file, in checkpoint_files order
    nbytes: int        # real tensor bytes in the serving dtype
    block_bytes: int   # nbytes plus alignment padding: what a tier grants
    # a delta expert's: what its checkpoint says, and the layout of the dense expert rebuilt
    # on the device (its base's)
    delta: DeltaSpec | None = None
    dense: "ExpertLayout | None" = None

    @property
    def dtype(self) -> torch.dtype:
        """The serving dtype: every floating-point tensor of the block is in it."""
        return next(p.dtype for p in self.tensors if p.dtype.is_floating_point)

    @property
    def device_block_bytes(self) -> int:
        """What the device tier grants: the dense expert's bytes (a delta is rebuilt there)."""
        return self.dense.block_bytes if self.dense is not None else self.block_bytes

    @property
    def converted(self) -> tuple[TensorSlot, ...]:
        return tuple(p for p in self.tensors if p.converted)

    def views(self, buffer: torch.Tensor, base: int) -> dict[str, torch.Tensor]:
        """The expert's tensors as views of `buffer` (uint8) at `base`: no allocation of data."""
        return {p.name: buffer[base + p.offset: base + p.offset + p.nbytes].view(p.dtype).view(p.shape)
                for p in self.tensors}


def stored_dtype(infos: dict[str, TensorInfo]) -> torch.dtype:
    """The floating-point dtype most of a checkpoint's weight bytes are stored in."""
    by_dtype: dict[torch.dtype, int] = {}
    for t in infos.values():
        if t.dtype.is_floating_point:
            by_dtype[t.dtype] = by_dtype.get(t.dtype, 0) + t.nbytes
    return max(by_dtype, key=by_dtype.__getitem__)


def plan_layout(path: str | Path, dtype: torch.dtype | None) -> ExpertLayout:
    """Read config.json and the safetensors headers (validated by `index_checkpoint`) and lay
    the tensors out in file order, except that a weight group's members go together
    (`_layout_order`); tensors adjacent on disk and in the block, and already in `dtype`,
    form one run copied straight from the file. A run starts at the same offset within a page
    as in its file (blocks start on a page): the kernel's page-cache copy then moves whole
    aligned pages, which is faster than copying misaligned ones. A
    group's later members start right after the one before, which keeps that alignment only
    where the tensors between them in the file fill whole pages (a matter of speed only).
    `dtype` None: the checkpoint's own (`stored_dtype`); a delta's is its base's. Raises
    CheckpointError for a bad checkpoint (a delta: also for a base missing or of other shapes)."""
    cfg = ModelConfig.from_dir(path)
    delta = DeltaSpec.of(path)
    dense = None
    if delta is not None:
        check_base(delta, cfg, path)
        dense = plan_layout(delta.base, dtype)
    infos = index_checkpoint(path, cfg)
    dtype = dense.dtype if dense is not None else dtype or stored_dtype(infos)
    slots: list[TensorSlot] = []
    runs: list[Run] = []
    offset = 0
    cur: Run | None = None
    for t, follows in _layout_order(cfg, infos):
        dt = dtype if dense_dtype(t.name) else t.dtype
        direct = t.dtype == dt
        joins = (direct and cur is not None and cur.file == t.file
                 and cur.file_start + cur.length == t.start
                 and (t.start - cur.file_start) % dt.itemsize == 0)
        if joins:
            assert cur is not None
            slots.append(TensorSlot(t.name, cur.offset + cur.length, t.shape, dt, t))
            cur = Run(cur.file, cur.file_start, cur.length + t.nbytes, cur.offset)
            runs[-1] = cur
            offset = cur.offset + cur.length
            continue
        if not follows:  # a group's later members lie right after the one before
            offset = align_up(offset, CACHE_LINE)
            if direct:
                offset += (t.start - offset) % PAGE
        slots.append(TensorSlot(t.name, offset, t.shape, dt, t))
        if direct:
            cur = Run(t.file, t.start, t.nbytes, offset)
            runs.append(cur)
        else:
            cur = None
        offset += _numel(t.shape) * dt.itemsize
    by_name = {p.name: p for p in slots}
    stamps = []
    for f in checkpoint_files(Path(path)):  # all of them: a checksum covers every file
        st = os.stat(f)
        stamps.append(FileStamp(f, st.st_size, st.st_mtime_ns))
    return ExpertLayout(
        config=cfg,
        tensors=tuple(by_name[n] for n in infos),  # Hugging Face order
        runs=tuple(sorted(runs, key=lambda r: (str(r.file), r.file_start))),  # read in file order
        files=tuple(stamps),
        nbytes=sum(p.nbytes for p in slots),
        block_bytes=align_up(offset, PAGE),
        delta=delta, dense=dense,
    )


def _layout_order(cfg: ModelConfig, infos: dict[str, TensorInfo]) -> list[tuple[TensorInfo, bool]]:
    """(tensor, follows the one before) in file order, except that the members of a weight
    group (q/k/v, gate/up) are placed together, in the group's order, where the first of them
    comes in the file: the engine then reads them as one matrix
    (coeflow.engine.layers.cuda.join_groups)."""
    group_of = {n: g for g in weight_groups(cfg) for n in g}
    order: list[tuple[TensorInfo, bool]] = []
    placed: set[str] = set()
    for t in sorted(infos.values(), key=lambda t: (str(t.file), t.start)):
        if t.name in placed:
            continue
        members = group_of.get(t.name, [t.name])
        order += [(infos[n], k > 0) for k, n in enumerate(members)]
        placed.update(members)
    return order


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n
