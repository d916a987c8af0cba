"""Integrity checks on an expert's weights as they are read into the host pool. A safetensors
header says where each tensor lies but nothing about what its bytes should be, so a flipped
bit, a bad copy or a NaN written by a broken export would otherwise be served without a word.

- The checksum (when the CoE file gives an expert's `sha256`): the sha256 of the checkpoint's
  safetensors files concatenated in `checkpoint_files` order (`model.safetensors` alone, or
  the shards the index names, sorted by name). For a single-file checkpoint that is the
  file's own sha256, the one `sha256sum` prints and the Hugging Face Hub lists, so it can be
  checked with standard tools. Whole files, headers included, so a changed shape or dtype is
  caught as surely as a changed weight.
- The finite scan: every tensor in the pool, in the serving dtype, must hold no NaN and no
  infinity (a conversion that overflows is caught too)."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Sequence

import torch

from coeflow.errors import CheckpointError
from coeflow.model.checkpoint import checkpoint_files
from coeflow.backend.real.layout import ExpertLayout

READ_BYTES = 1 << 20


class FileOrderDigest:
    """sha256 over `files` concatenated. The load feeds it the pieces it has read into memory,
    in file order; the bytes between them (the headers, and any no tensor covers) it reads
    itself, so a tensor's bytes are never read from disk twice."""

    def __init__(self, files: Sequence[Path]):
        self._files = list(files)
        self._current = 0  # index in _files of the file being hashed
        self._pos = 0      # bytes of it hashed so far
        self._sha = hashlib.sha256()
        self._buf = memoryview(bytearray(READ_BYTES))

    def update(self, file: Path, start: int, data: memoryview) -> None:
        """Hash `data`, the bytes of `file` from `start`, after any bytes before them not yet hashed."""
        self._finish_files_before(file)
        if start > self._pos:
            self._read(file, self._pos, start)
        skip = self._pos - start  # bytes already hashed: only if tensors overlapped
        if skip < len(data):
            self._sha.update(data[skip:])
            self._pos = start + len(data)

    def hexdigest(self) -> str:
        """The digest, once the rest of every file has been read and hashed."""
        self._finish_files_before(None)
        return self._sha.hexdigest()

    def _finish_files_before(self, file: Path | None) -> None:
        while self._current < len(self._files) and self._files[self._current] != file:
            self._read(self._files[self._current], self._pos, None)
            self._current, self._pos = self._current + 1, 0
        if file is not None and self._current == len(self._files):
            raise ValueError(f"{file}: not one of the files hashed, or fed out of file order")

    def _read(self, file: Path, start: int, end: int | None) -> None:
        """Hash file[start:end] (to the end of the file when `end` is None)."""
        try:
            with open(file, "rb", buffering=0) as f:
                f.seek(start)
                pos = start
                while end is None or pos < end:
                    want = READ_BYTES if end is None else min(READ_BYTES, end - pos)
                    n = f.readinto(self._buf[:want])
                    if not n:
                        break
                    self._sha.update(self._buf[:n])
                    pos += n
        except OSError as e:
            raise CheckpointError(f"{file}: cannot read ({e.strerror or e})") from None
        if end is not None and pos < end:
            raise CheckpointError(f"{file}: truncated: no bytes at offset {pos}")
        self._pos = pos


def checkpoint_sha256(path: str | Path) -> str:
    """The checksum of the checkpoint directory `path` (see the module's docstring), read from
    disk: what `coeflow coe hash` prints and a load with a given `sha256` must match."""
    return FileOrderDigest(checkpoint_files(Path(path))).hexdigest()


def check_finite(layout: ExpertLayout, pool: torch.Tensor, base: int) -> None:
    """Raise CheckpointError naming the first tensor of the expert at pool[base:] that holds a
    NaN or an infinity, and how many. Every tensor of a dense expert is in the serving dtype, so
    once the padding between them is zeroed the whole block is scanned as one tensor: a single
    `aminmax` (a NaN or an infinity anywhere shows in its minimum or maximum) reads each byte
    once, allocates nothing its size, and pays the start of a parallel reduction once rather
    than per tensor. A quantized expert's float tensors are scanned one by one."""
    block = pool[base:base + layout.block_bytes]
    for start, end in _padding(layout):
        block[start:end].zero_()
    floats = [p for p in layout.tensors if p.dtype.is_floating_point]
    if len(floats) == len(layout.tensors):
        lo, hi = torch.aminmax(block.view(layout.dtype))
        if math.isfinite(lo.item()) and math.isfinite(hi.item()):
            return
    # here, or with packed quantized weights (integers, no NaN to hold): the float tensors one by one
    weights = layout.views(pool, base)
    bad = [p for p in floats if weights[p.name].numel() and not torch.isfinite(weights[p.name]).all()]
    if not bad:
        return
    p = bad[0]
    t = weights[p.name]
    n = int(t.numel() - torch.isfinite(t).sum().item())
    how = f" (read as {p.source.dtype}, converted to {p.dtype})" if p.converted else ""
    more = f"; {len(bad) - 1} more tensors hold some too" if len(bad) > 1 else ""
    raise CheckpointError(f"{p.source.file}: tensor {p.name!r} holds {n} non-finite values (NaN or "
                          f"infinity) among {t.numel()}{how}{more}")


def _padding(layout: ExpertLayout) -> list[tuple[int, int]]:
    """The byte ranges of the block no tensor covers (alignment), in block offsets."""
    gaps, pos = [], 0
    for p in sorted(layout.tensors, key=lambda p: p.offset):
        if p.offset > pos:
            gaps.append((pos, p.offset))
        pos = max(pos, p.offset + p.nbytes)
    if layout.block_bytes > pos:
        gaps.append((pos, layout.block_bytes))
    return gaps
