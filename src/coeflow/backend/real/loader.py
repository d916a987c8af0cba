"""Moving an expert's bytes between tiers.

disk -> host: each run (a contiguous file range already in the serving dtype) is cut into
large chunks that several threads read with `os.preadv` straight into the host pool's
memory (the GIL is released during the read), each thread a contiguous stripe. No Python
object per tensor is created on this path. Tensors whose checkpoint dtype differs from the
serving dtype are read into one staging buffer per load and converted into the pool
afterwards: an extra pass over memory, single-threaded per tensor, so such loads are
markedly slower. When asked for a checksum, the bytes read are hashed in file order from
where they landed (the pool, or the staging buffer), so only the headers are read twice.

host -> device (CUDA): one asynchronous copy of the whole block on a dedicated stream from
pinned memory into a device slot, waited on by the loading thread only, so compute on the
default stream overlaps it."""

from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import Executor, wait
from pathlib import Path

import torch

from coeflow.errors import CheckpointError
from coeflow.backend.real.integrity import FileOrderDigest
from coeflow.backend.real.layout import ExpertLayout, Run, TensorSlot

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
                executor: Executor, threads: int = 4, chunk: int | None = None,
                digest: bool = False) -> str | None:
    """Fill pool[base : base + layout.block_bytes] with the expert's tensors. Returns only
    when every byte is in, or raises CheckpointError naming the file (and tensor). With
    `digest`, returns the sha256 of the checkpoint's files as read (integrity.FileOrderDigest)."""
    chunk = chunk or CHUNK_BYTES
    check_files(layout)
    hasher = FileOrderDigest([stamp.file for stamp in layout.files]) if digest else None
    try:
        _read_striped(executor, [(r.file, f, view[d:d + n]) for r in layout.runs
                                 for f, d, n in _chunks(r.file_start, r.length, base + r.offset, chunk)],
                      threads)
        _convert_and_hash(layout, pool, view, base, executor, threads, chunk, hasher)
    except CheckpointError as e:
        offset = getattr(e, "offset", None)
        hit = [p.name for p in layout.tensors if offset is not None and p.source.file == getattr(e, "file", None)
               and p.source.start <= offset < p.source.end]
        if hit:
            raise CheckpointError(f"{e} (inside tensor {hit[0]!r})") from None
        raise
    return hasher.hexdigest() if hasher is not None else None


def _convert_and_hash(layout: ExpertLayout, pool: torch.Tensor, view: memoryview, base: int,
                      executor: Executor, threads: int, chunk: int, hasher: FileOrderDigest | None) -> None:
    """Once the runs are in: read each tensor stored in another dtype into the staging buffer
    and convert it into the pool; with a hasher, feed it every run and staged tensor in file
    order (a sha256 cannot be computed out of order)."""
    pieces: list[Run | TensorSlot] = list(layout.converted)
    if hasher is not None:
        pieces += layout.runs
    rank = {stamp.file: i for i, stamp in enumerate(layout.files)}
    pieces.sort(key=lambda x: (rank[x.file], x.file_start) if isinstance(x, Run)
                else (rank[x.source.file], x.source.start))
    staging = torch.empty(max((p.source.nbytes for p in layout.converted), default=0), dtype=torch.uint8)
    sview = memoryview(staging.numpy()).cast("B")
    for piece in pieces:
        if isinstance(piece, Run):
            assert hasher is not None
            start = base + piece.offset
            hasher.update(piece.file, piece.file_start, view[start:start + piece.length])
            continue
        src = piece.source
        _read_striped(executor, [(src.file, f, sview[d:d + n])
                                 for f, d, n in _chunks(src.start, src.nbytes, 0, chunk)], threads)
        if hasher is not None:
            hasher.update(src.file, src.start, sview[:src.nbytes])
        dst = pool[base + piece.offset: base + piece.offset + piece.nbytes].view(piece.dtype).view(piece.shape)
        dst.copy_(staging[:src.nbytes].view(src.dtype).view(src.shape))


Read = tuple[Path, int, memoryview]  # file, file offset, destination


def _read_striped(executor: Executor, reads: list[Read], threads: int) -> None:
    """Split the chunks, in file order, into `threads` contiguous stripes of about equal
    bytes; one thread reads each stripe in order through a descriptor of its own. The kernel
    then sees a few sequential streams and its readahead serves each (interleaved chunks on
    one shared descriptor defeat readahead on a cold page cache). Returns when every stripe
    has stopped, so no thread still writes once the caller frees the block on failure."""
    total = sum(len(dst) for _, _, dst in reads)
    stripes: list[list[Read]] = [[]]
    done = 0
    for r in reads:
        if stripes[-1] and done >= total * len(stripes) / threads:
            stripes.append([])
        stripes[-1].append(r)
        done += len(r[2])
    stop = threading.Event()
    futures = [executor.submit(_read_stripe, s, stop) for s in stripes if s]
    wait(futures)
    errors = [f.exception() for f in futures if f.exception() is not None]
    if errors:
        raise errors[0]


def _read_stripe(reads: list[Read], stop: threading.Event) -> None:
    fds: dict[Path, int] = {}
    try:
        for file, offset, dst in reads:
            if stop.is_set():
                return
            try:
                if file not in fds:
                    fds[file] = os.open(file, os.O_RDONLY)
                    if hasattr(os, "posix_fadvise"):  # Linux: double the readahead window
                        os.posix_fadvise(fds[file], 0, 0, os.POSIX_FADV_SEQUENTIAL)
                _pread_full(fds[file], dst, offset, file)
            except CheckpointError:
                stop.set()
                raise
            except OSError as err:
                stop.set()
                wrapped = CheckpointError(f"{file}: read failed at byte {offset}: {err}")
                wrapped.file, wrapped.offset = file, offset  # type: ignore[attr-defined]
                raise wrapped from err
    finally:
        for fd in fds.values():
            os.close(fd)


def copy_to_device(host: torch.Tensor, host_off: int, device_buf: torch.Tensor, dev_off: int,
                   nbytes: int, stream: "torch.cuda.Stream") -> None:
    """One async copy host pool -> device slot on `stream`; returns once it has landed."""
    with torch.cuda.stream(stream):
        device_buf[dev_off:dev_off + nbytes].copy_(host[host_off:host_off + nbytes], non_blocking=True)
    stream.synchronize()
