"""Moving an expert's bytes between tiers.

disk -> host: each run (a contiguous file range already in the store's dtype) is cut into
large chunks that several threads read with `os.preadv` straight into the host pool's
memory (the GIL is released during the read). No Python object per tensor is created on
this path. Tensors whose checkpoint dtype differs from the store's are read into one
staging buffer per load and converted into the pool afterwards: an extra pass over memory,
single-threaded per tensor, which typically halves the load rate (BENCHMARKS.md).

host -> device (CUDA): one asynchronous copy of the whole block on a dedicated stream from
pinned memory into a device slot, waited on by the loading thread only, so compute on the
default stream overlaps it."""

from __future__ import annotations

import logging
import os
from concurrent.futures import FIRST_EXCEPTION, Executor, Future, wait
from pathlib import Path

import torch

from coeflow.errors import CheckpointError
from coeflow.store.library import ExpertLayout

log = logging.getLogger(__name__)

CHUNK_BYTES = 32 << 20


def _pread_full(fd: int, dst: memoryview, offset: int, file: Path) -> None:
    done = 0
    while done < len(dst):
        n = os.preadv(fd, [dst[done:]], offset + done)
        if n == 0:
            err = CheckpointError(f"{file}: truncated: no bytes at offset {offset + done}")
            err.file, err.offset = file, offset + done  # type: ignore[attr-defined]
            raise err
        done += n


def _chunks(file_start: int, length: int, dst_start: int, chunk: int):
    for k in range(0, length, chunk):
        n = min(chunk, length - k)
        yield file_start + k, dst_start + k, n


def check_files(layout: ExpertLayout) -> None:
    """Refuse a checkpoint whose files changed since start-up (size or mtime): the layout
    computed then may not describe them any more."""
    for stamp in layout.files:
        try:
            st = os.stat(stamp.file)
        except OSError as e:
            raise CheckpointError(f"{stamp.file}: cannot read ({e.strerror})") from None
        if st.st_size != stamp.size or st.st_mtime_ns != stamp.mtime_ns:
            raise CheckpointError(f"{stamp.file}: changed since start-up (size {stamp.size} -> "
                                  f"{st.st_size}); reload the expert to re-read its header")


def read_expert(layout: ExpertLayout, pool: torch.Tensor, view: memoryview, base: int,
                executor: Executor, chunk: int | None = None) -> None:
    """Fill pool[base : base + layout.block_bytes] with the expert's tensors. Returns only
    when every byte is in, or raises CheckpointError naming the file (and tensor)."""
    chunk = chunk or CHUNK_BYTES
    check_files(layout)
    fds: dict[Path, int] = {}
    try:
        for stamp in layout.files:
            fds[stamp.file] = os.open(stamp.file, os.O_RDONLY)
            if hasattr(os, "posix_fadvise"):
                os.posix_fadvise(fds[stamp.file], 0, 0, os.POSIX_FADV_SEQUENTIAL)
        jobs = [(fds[r.file], r.file, view[d:d + n], f)
                for r in layout.runs for f, d, n in _chunks(r.file_start, r.length, base + r.offset, chunk)]
        _run_all(executor, jobs)
        converted = layout.converted
        if converted:
            staging = torch.empty(max(p.source.nbytes for p in converted), dtype=torch.uint8)
            sview = memoryview(staging.numpy()).cast("B")
            for p in converted:
                src = p.source
                _run_all(executor, [(fds[src.file], src.file, sview[d:d + n], f)
                                    for f, d, n in _chunks(src.start, src.nbytes, 0, chunk)])
                dst = pool[base + p.offset: base + p.offset + p.nbytes].view(p.dtype).view(p.shape)
                dst.copy_(staging[:src.nbytes].view(src.dtype).view(src.shape))
    except CheckpointError as e:
        offset = getattr(e, "offset", None)
        hit = [p.name for p in layout.tensors if offset is not None and p.source.file == getattr(e, "file", None)
               and p.source.start <= offset < p.source.end]
        if hit:
            raise CheckpointError(f"{e} (inside tensor {hit[0]!r})") from None
        raise
    finally:
        for fd in fds.values():
            os.close(fd)


def _run_all(executor: Executor, jobs: list[tuple[int, Path, memoryview, int]]) -> None:
    """Run the chunk reads in parallel; on the first failure cancel the rest and wait for
    those already running, so no thread is still writing when the caller frees the block."""
    futures: dict[Future, tuple[Path, int]] = {
        executor.submit(_pread_full, fd, dst, off, file): (file, off) for fd, file, dst, off in jobs}
    done, pending = wait(futures, return_when=FIRST_EXCEPTION)
    failed = [f for f in done if f.exception() is not None]
    if failed:
        for f in pending:
            f.cancel()
        wait(pending)
        err = failed[0].exception()
        if isinstance(err, CheckpointError):
            raise err
        file, off = futures[failed[0]]
        wrapped = CheckpointError(f"{file}: read failed at byte {off}: {err}")
        wrapped.file, wrapped.offset = file, off  # type: ignore[attr-defined]
        raise wrapped from err


def copy_to_device(host: torch.Tensor, host_off: int, device_buf: torch.Tensor, dev_off: int,
                   nbytes: int, stream: "torch.cuda.Stream") -> None:
    """One async copy host pool -> device slot on `stream`; returns once it has landed."""
    with torch.cuda.stream(stream):
        device_buf[dev_off:dev_off + nbytes].copy_(host[host_off:host_off + nbytes], non_blocking=True)
    stream.synchronize()
