"""The real backend: checkpoint files, PyTorch tensors and the wall clock.

It owns everything the store and the scheduler must not know about: the pre-allocated
host pool and device slab (pool.py), the checkpoint layouts (layout.py), the threads that
read checkpoints into the pool (loader.py) and the checks on what they read (integrity.py:
checksums, no NaN or infinity), the CUDA copy stream, and one engine per model
shape (experts of the same shape share its skeleton and its compiled decode step, so a
switch is `set_weights`, never a rebuild). The store decides *what* goes where (slots,
budgets, eviction); this package moves the bytes and runs the batches, and reports how long
each took."""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch

from coeflow.backend.interface import Moved, WallClock
from coeflow.engine import Engine
from coeflow.engine.engine import KV_CACHE_BUDGET
from coeflow.errors import CheckpointError, ConfigError
from coeflow.model import ModelConfig, Tokenizer, hostmem, parse_dtype, resolve_device
from coeflow.model.delta import rebuild
from coeflow.backend.real.batch import RealBatch
from coeflow.backend.real.integrity import check_finite
from coeflow.backend.real.layout import ExpertLayout, plan_layout
from coeflow.backend.real.loader import copy_to_device, read_expert
from coeflow.backend.real.pool import DevicePool, HostPool

log = logging.getLogger(__name__)
SPARE_REBUILDS = 2  # evicted delta experts' buffers kept for reuse (CPU)


@dataclass
class ExpertRuntime:
    """What running an expert needs besides its weights: its tokenizer (to decode the text
    it streams), its end-of-sequence ids, its config (its shape's engine) and its sampling
    defaults (for the fields a request leaves unset)."""
    tokenizer: Tokenizer
    eos_ids: frozenset[int]
    config: ModelConfig
    sampling: dict[str, float] = field(default_factory=dict)


class RealBackend:
    """`device` is the one the experts are served on ("auto": CUDA when present), `dtype` the
    dtype they are served in ("auto": each checkpoint's own; fp16 on a CPU is served in bf16,
    of the same size: the CPU kernels take fp32 and bf16), or `dtypes` for some by name.
    `load_threads` read one checkpoint in parallel stripes; `fused` compiles the decode step;
    `kv_mem`: bytes of the KV cache of each model shape and dtype (its experts share it); `prefix_cache`:
    reuse the blocks of prompt prefixes computed before."""

    def __init__(self, dtype: str | torch.dtype = "auto", device: str | torch.device = "cpu", *,
                 fused: bool = True, load_threads: int = 4, kv_mem: int | None = None,
                 prefix_cache: bool = True, dtypes: dict[str, str] | None = None):
        self.dtype: torch.dtype | None = None if dtype == "auto" else parse_dtype(dtype)  # None: auto
        self.dtypes = {k: None if v == "auto" else parse_dtype(v) for k, v in (dtypes or {}).items()}
        self.device = resolve_device(device) if isinstance(device, str) else device
        self.fused = fused
        self.kv_mem = kv_mem if kv_mem is not None else KV_CACHE_BUDGET
        self.prefix_cache = prefix_cache
        self.load_threads = max(1, load_threads)
        self.clock = WallClock()
        self.runtimes: dict[str, ExpertRuntime] = {}
        self._layouts: dict[str, ExpertLayout] = {}
        self._sha256: dict[str, str | None] = {}  # expert -> the checksum its CoE entry gives
        self._host_slots: dict[str, tuple[int, dict[str, torch.Tensor]]] = {}  # expert -> (slot, views)
        self._bases: dict[Path, dict[str, torch.Tensor] | None] = {}  # a delta's base -> its device tensors
        self._dirs: dict[str, Path] = {}  # expert -> its checkpoint directory, resolved
        # CPU: the buffers of the delta experts rebuilt on the device tier, and a few of those
        # evicted since, reused by the next rebuild of the same size (faulting in fresh pages
        # costs more than the rebuild)
        self._rebuilt: dict[str, torch.Tensor] = {}
        self._spare: list[torch.Tensor] = []
        self._host: HostPool | None = None
        self._dev: DevicePool | None = None
        self._stream: torch.cuda.Stream | None = None
        self._io = ThreadPoolExecutor(self.load_threads, thread_name_prefix="coeflow-io")
        self._engines: dict[tuple, Engine] = {}
        self._batches: dict[str, RealBatch] = {}
        self._lock = threading.Lock()

    # -- tiers ----------------------------------------------------------------------------
    @property
    def device_copies(self) -> bool:
        return self.device.type != "cpu"

    def plan(self, expert: str, path: str | Path, sha256: str | None = None) -> ExpertLayout:
        """Read the checkpoint's headers (no weights) and lay the expert out in its serving
        dtype; raises CheckpointError/ConfigError/OSError for a checkpoint it cannot serve.
        With `sha256`, every read from disk checks the files against it (integrity.py)."""
        dtype = self.dtypes.get(expert, self.dtype)
        layout = plan_layout(path, dtype)
        if dtype is None and layout.dtype == torch.float16 and self.device.type == "cpu":
            layout = plan_layout(path, torch.bfloat16)
        self._layouts[expert], self._sha256[expert] = layout, sha256
        self._dirs[expert] = Path(path).resolve()
        if layout.delta is not None:
            self._bases.setdefault(layout.delta.base, None)
        return layout

    def serving_dtype(self, expert: str) -> torch.dtype:
        """The dtype the expert runs in: its layout's, or (an expert a store other than
        ExpertStore hands out, never planned here) the backend's, fp32 when that is auto."""
        layout = self._layouts.get(expert)
        return layout.dtype if layout is not None else self.dtypes.get(expert, self.dtype) or torch.float32

    def quantization(self, expert: str) -> str | None:
        """How the expert's linear layers are quantized ("int4-g128", "int8") or stored (a delta
        from its base: "delta1", "delta4-g128"), or None (dense)."""
        layout = self._layouts.get(expert)
        if layout is not None and layout.delta is not None:
            return layout.delta.name
        return layout.config.quant.name if layout is not None and layout.config.quant else None

    def expert_bytes(self, expert: str, tier: str = "host") -> int:
        layout = self._layouts[expert]
        return layout.device_block_bytes if tier == "device" else layout.block_bytes

    def default_device_budget(self, everything: int) -> int:
        """The device tier's bytes when the user gives none: `everything` (room for every
        expert the host tier holds), capped on CUDA at 90% of the memory free now (the rest
        is for KV caches and activations)."""
        if self.device.type == "cuda":
            return min(everything, int(0.9 * torch.cuda.mem_get_info(self.device)[0]))
        return everything

    def reserve(self, host_bytes: int, device_bytes: int) -> None:
        """Allocate the host pool (pinned when CUDA is present) and, where host -> device is a
        copy, the device slab: once, at start-up, so no load allocates."""
        self._host = HostPool(host_bytes, pinned=torch.cuda.is_available())
        if self.device_copies:
            self._dev = DevicePool(device_bytes, self.device)
            self._stream = torch.cuda.Stream(self.device)

    def move(self, expert: str, src: str, dst: str, slot: int = 0) -> Moved:
        """disk -> host: parallel striped reads of the checkpoint into the host pool at `slot`,
        then the integrity checks: the checksum when the CoE file gives one, and no NaN or
        infinity in any tensor (CheckpointError otherwise, and the store marks the expert failed).
        host -> device: one async copy on the copy stream into the device slab at `slot`; on a
        CPU the engine attaches the host pool's tensors, so the hop is free. A delta expert is
        rebuilt instead, its base's device tensors plus its delta, into the slot (on a CPU, into
        memory of its own); its base must be on the device already (the store sees to it)."""
        layout, host = self._layouts[expert], self._host
        assert host is not None, "reserve() the tiers first"
        t = time.perf_counter()
        if (src, dst) == ("disk", "host"):
            expected = self._sha256.get(expert)
            got = read_expert(layout, host.buffer, host.view, slot, self._io, self.load_threads,
                              digest=expected is not None)
            if got != expected:
                raise CheckpointError(f"expert {expert!r}: the sha256 of its files is {got}, but the CoE file "
                                      f"gives {expected}: a file in {layout.files[0].file.parent} changed or is "
                                      "corrupt (if the change is meant, `coeflow coe hash --write` records it)")
            check_finite(layout, host.buffer, slot)
            weights = layout.views(host.buffer, slot)
            self._host_slots[expert] = (slot, weights)
        elif (src, dst) == ("host", "device") and layout.delta is not None:
            weights = self._rebuild(expert, slot)
        elif (src, dst) == ("host", "device"):
            host_slot, host_weights = self._host_slots[expert]
            weights = host_weights
            if self.device_copies:
                assert self._dev is not None and self._stream is not None
                copy_to_device(host.buffer, host_slot, self._dev.buffer, slot, layout.block_bytes, self._stream)
                weights = layout.views(self._dev.buffer, slot)
            if self._dirs[expert] in self._bases:
                self._bases[self._dirs[expert]] = weights
            if not self.device_copies:
                return Moved(0.0, weights)
        else:
            raise ConfigError(f"no move from tier {src!r} to {dst!r}; moves are disk->host, host->device")
        return Moved(time.perf_counter() - t, weights)

    def _rebuild(self, expert: str, slot: int) -> dict[str, torch.Tensor]:
        """The delta expert's dense tensors, its base's plus its delta, in the device slot (on
        a CPU, in a buffer of its own: one an evicted delta left if one is the right size)."""
        layout = self._layouts[expert]
        assert layout.delta is not None and layout.dense is not None
        base = self._bases.get(layout.delta.base)
        if base is None:
            raise CheckpointError(f"expert {expert!r}: its base {layout.delta.base} is not on the device")
        delta = self._host_slots[expert][1]
        if not self.device_copies:
            size = layout.dense.block_bytes
            with self._lock:
                buf = next((b for b in self._spare if b.numel() == size), None)
                if buf is not None:
                    self._spare.remove(buf)
            if buf is None:
                buf = hostmem.empty(size)
            weights = layout.dense.views(buf, 0)
            rebuild(base, delta, layout.delta.bits, weights)
            with self._lock:
                self._rebuilt[expert] = buf
            return weights
        assert self._dev is not None and self._stream is not None
        weights = layout.dense.views(self._dev.buffer, slot)
        with torch.cuda.stream(self._stream):
            rebuild(base, delta, layout.delta.bits, weights)
        self._stream.synchronize()
        return weights

    def evicted(self, expert: str, tier: str) -> None:
        if tier != "device":
            return
        with self._lock:
            buf = self._rebuilt.pop(expert, None)
            if buf is not None:
                self._spare = [buf, *self._spare][:SPARE_REBUILDS]

    # -- compute --------------------------------------------------------------------------
    def engine(self, cfg: ModelConfig, dtype: torch.dtype) -> Engine:
        """The engine for this model shape and dtype, built (and, fused, compiled) on first use."""
        key = (cfg.shape_key, dtype)
        with self._lock:
            if key not in self._engines:
                self._engines[key] = Engine(cfg, dtype=dtype, device=self.device, fused=self.fused,
                                            kv_cache_budget=self.kv_mem)
            return self._engines[key]

    def batch(self, expert: str) -> RealBatch:
        """The expert's running sequences, on its shape's engine (whose KV pool every expert of
        the shape and dtype shares)."""
        engine = self.engine(self.runtimes[expert].config, self.serving_dtype(expert))
        with self._lock:  # the HTTP threads check requests against it as the worker steps
            if expert not in self._batches:
                self._batches[expert] = RealBatch(expert, engine, self.runtimes[expert], self.prefix_cache)
            return self._batches[expert]

    def kv_stats(self) -> dict[str, dict[str, int]]:
        """Each model shape's KV cache made so far, keyed by its experts: blocks used, free and
        cached (a prefix other prompts may reuse), prompt tokens of the sequences opened and
        how many of them came from the prefix cache."""
        with self._lock:
            by_engine: dict[int, list[str]] = {}
            for name, b in self._batches.items():
                by_engine.setdefault(id(b.engine), []).append(name)
            engines = {id(b.engine): b.engine for b in self._batches.values()}
        out = {}
        for key, names in by_engine.items():
            engine = engines[key]
            pool = engine.made_pool
            if pool is not None:
                out[",".join(sorted(names))] = {
                    "used": pool.num_blocks - 1 - pool.free_blocks, "free": pool.free_blocks,
                    "cached": pool.cached_blocks, "prompt_tokens": engine.prompt_tokens,
                    "reused_tokens": engine.reused_tokens}
        return out

    def route_s(self, batch: int, prompt: int) -> float:
        return 0.0  # the server routes on its HTTP threads, not on the engines' compute

    def close(self) -> None:
        self._io.shutdown(wait=True)

    def __enter__(self) -> "RealBackend":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
