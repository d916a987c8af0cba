"""`coeflow bench switch`: what a user waits for when the CoE switches experts.

For each source tier (disk with a cold page cache, disk warm, host, device) it times coeflow's
store from "acquire" to "ready" and to the first token (eager engine, the skeleton kept
across switches, as the server does), against the two ways a Python user loads a checkpoint
(`transformers` `from_pretrained`, and `safetensors.torch.load_file` + `load_state_dict` into
a model already built), all on the same files, in one run. The physical limits are measured
in the same run: a raw sequential read of the same file into a preallocated buffer, and the
memory copy bandwidth (pinned host -> device on a GPU). Each figure is the median of
`repeats` runs. A delta expert (a fine-tune of the first checkpoint stored as a 1-bit delta,
coeflow.model.delta) switches from the same tiers: its rows count the bytes it moves (the delta),
and its time includes rebuilding the expert from its base on the device."""

from __future__ import annotations

import ctypes
import mmap
import os
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

from coeflow.bench.experts import hf_from_pretrained
from coeflow.bench.machine import machine_name
from coeflow.model import hostmem
from coeflow.backend.real.layout import plan_layout

# Random-weight Llama shapes. 300MB: 74M parameters in fp32; 1.2GB: 300M; tiny: for tests.
SIZES: dict[str, dict] = {
    "tiny": dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256),
    "300MB": dict(vocab_size=32000, hidden_size=768, intermediate_size=2048, num_hidden_layers=4,
                  num_attention_heads=12, num_key_value_heads=4, max_position_embeddings=2048),
    "1.2GB": dict(vocab_size=32000, hidden_size=1536, intermediate_size=4096, num_hidden_layers=8,
                  num_attention_heads=12, num_key_value_heads=4, max_position_embeddings=2048),
}
TIERS = ("disk-cold", "disk-warm", "host", "device")
PROMPT_LEN = 16
READ_CHUNK = 64 << 20


@dataclass
class Row:
    size: str
    method: str
    source_tier: str
    bytes: int
    seconds: float        # time until the weights are ready to run
    gbps: float           # bytes / seconds
    ttft_s: float | None  # time until the first token (load included)


def make_delta(root: Path, base: Path, bits: int = 1) -> Path:
    """A fine-tune of `base` (every weight moved by noise of 5% of its tensor's mean magnitude)
    written as a `bits`-bit delta from it; the speed of a switch does not depend on the values."""
    from safetensors.torch import load_file, save_file

    from coeflow.model.convert import delta_checkpoint
    out = root / f"{base.name}-delta{bits}"
    if not (out / "config.json").exists():
        ft = root / f"{base.name}-ft"
        ft.mkdir(exist_ok=True)
        g = torch.Generator().manual_seed(1)
        tensors = {n: t + 0.05 * t.abs().mean() * torch.randn(t.shape, generator=g)
                   for n, t in load_file(base / "model.safetensors").items()}
        save_file(tensors, str(ft / "model.safetensors"), metadata={"format": "pt"})
        (ft / "config.json").write_text((base / "config.json").read_text())
        delta_checkpoint(ft, base, out, bits)
    return out


def make_experts(root: Path, size: str, n: int = 2) -> list[Path]:
    """n random-weight checkpoints written by transformers' save_pretrained (fp32)."""
    from transformers import LlamaConfig, LlamaForCausalLM
    paths = []
    for i in range(n):
        path = root / f"{size}-{i}"
        if not (path / "config.json").exists():
            torch.manual_seed(i)
            LlamaForCausalLM(LlamaConfig(**SIZES[size])).save_pretrained(path)
        paths.append(path)
    return paths


# ------------------------------------------------------------------ page cache
def cached_fraction(files: list[Path]) -> float:
    """Share of the files' pages present in the page cache, by mincore(2) on a mapping that
    is never touched (probing with reads would itself start readahead)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    page = mmap.PAGESIZE
    resident = total = 0
    for f in files:
        size = f.stat().st_size
        if size == 0:
            continue
        with open(f, "rb") as fh, mmap.mmap(fh.fileno(), size, access=mmap.ACCESS_COPY) as mm:
            pages = (size + page - 1) // page
            vec = (ctypes.c_ubyte * pages)()
            anchor = ctypes.c_char.from_buffer(mm)
            try:
                if libc.mincore(ctypes.addressof(anchor), size, vec) != 0:
                    raise OSError(ctypes.get_errno(), "mincore failed")
                resident += sum(v & 1 for v in vec)
                total += pages
            finally:
                del anchor
    return resident / max(total, 1)


def drop_page_cache(files: list[Path]) -> str:
    """Evict `files` from the page cache; returns the method that worked, or 'none'."""
    os.sync()
    for f in files:
        fd = os.open(f, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    if cached_fraction(files) < 0.05:
        return "posix_fadvise"
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("1\n")
    except OSError:
        return "none"
    return "drop_caches" if cached_fraction(files) < 0.05 else "none"


def warm_page_cache(files: list[Path]) -> None:
    buf = bytearray(READ_CHUNK)
    for f in files:
        with open(f, "rb", buffering=0) as fh:
            while fh.readinto(buf):
                pass


# ------------------------------------------------------------------ physical limits
def raw_read_s(file: Path, buffer: memoryview) -> float:
    """One thread, sequential, large reads straight into a preallocated buffer."""
    t = time.perf_counter()
    with open(file, "rb", buffering=0) as fh:
        pos = 0
        while True:
            n = fh.readinto(buffer[pos:pos + READ_CHUNK])
            if not n:
                break
            pos += n
    return time.perf_counter() - t


def memcpy_gbps(nbytes: int = 1 << 30, repeats: int = 5) -> float:
    """Memory copy bandwidth (bytes copied per second); on a GPU, pinned host -> device."""
    if torch.cuda.is_available():
        src = torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)
        dst = torch.empty(nbytes, dtype=torch.uint8, device="cuda")
        sync = torch.cuda.synchronize
    else:
        src, dst = hostmem.empty(nbytes).fill_(1), hostmem.empty(nbytes).zero_()
        sync = lambda: None  # noqa: E731
    dst.copy_(src, non_blocking=True)
    sync()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        dst.copy_(src, non_blocking=True)
        sync()
        best = min(best, time.perf_counter() - t)
    return nbytes / best / 1e9


# ------------------------------------------------------------------ the contenders
def _median(runs: list[tuple[float, float | None]]) -> tuple[float, float | None]:
    ttfts = [t for _, t in runs if t is not None]
    return statistics.median(s for s, _ in runs), statistics.median(ttfts) if ttfts else None


def _first_token_hf(model, ids: torch.Tensor) -> int:
    with torch.inference_mode():
        return int(model(input_ids=ids).logits[0, -1].argmax())


def run(sizes: tuple[str, ...] = ("300MB",), repeats: int = 3, load_threads: int = 4,
        compute_threads: int | None = 1, workdir: Path | None = None,
        progress: Callable[[str], None] = lambda s: None) -> dict:
    """`compute_threads` sets torch's thread count for every contender alike (None: leave
    torch's default). One is the default because on a small shared machine two OpenMP threads
    stall whenever another process holds a core, which makes first-token times bimodal."""
    from safetensors.torch import load_file
    from transformers import LlamaConfig, LlamaForCausalLM

    from coeflow.backend.real import RealBackend
    from coeflow.coefile import parse_coe
    from coeflow.engine import Engine
    from coeflow.store import ExpertStore

    progress("measuring memory copy bandwidth (all threads)")
    mem_gbps, machine = memcpy_gbps(), machine_name()
    if compute_threads:
        torch.set_num_threads(compute_threads)
    tmp = tempfile.TemporaryDirectory(prefix="coeflow-switch-") if workdir is None else None
    root = Path(tmp.name) if tmp else Path(workdir)
    root.mkdir(parents=True, exist_ok=True)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    rows: list[Row] = []
    cold_methods: set[str] = set()
    raw_gbps: dict[str, float] = {}
    try:
        for size in sizes:
            progress(f"{size}: writing two random-weight checkpoints with save_pretrained")
            a, b = make_experts(root, size)
            files = sorted(b.glob("*.safetensors"))
            nbytes = sum(f.stat().st_size for f in files)
            ids = torch.randint(3, SIZES[size]["vocab_size"], (1, PROMPT_LEN),
                                generator=torch.Generator().manual_seed(0))
            prompt = ids[0].tolist()

            # The raw read is measured next to each coeflow load from disk, under the same
            # conditions (cache state, load from other processes), into a buffer kept for it.
            # (in huge pages, as the host pool it is compared with: model.hostmem)
            buf = hostmem.empty(max(f.stat().st_size for f in files))
            buf.zero_()
            view = memoryview(buf.numpy()).cast("B")
            raw_times: dict[str, list[float]] = {"disk-cold": [], "disk-warm": []}

            def raw_read(source: str) -> None:
                if source == "disk-cold":
                    cold_methods.add(drop_page_cache(files))
                else:
                    warm_page_cache(files)
                raw_times[source].append(sum(raw_read_s(f, view) for f in files))

            # coeflow: device tier holds one expert, host two; the engine keeps its skeleton.
            coe = parse_coe({"name": "bench", "fallback": "a", "experts": [
                {"name": "a", "path": a.name}, {"name": "b", "path": b.name}]}, root / "coe.yaml")
            block = max(plan_layout(p, torch.float32).block_bytes for p in (a, b))  # with padding
            with RealBackend("fp32", device, load_threads=load_threads) as backend, \
                    ExpertStore(coe, backend, device_mem=int(1.01 * block), host_mem=int(2.02 * block)) as store:
                engine = Engine(store.config("a"), dtype="fp32", device=device, fused=False)

                def switch_to_b(source: str) -> tuple[float, float]:
                    return _switch(store, engine, prompt, sync, "a", "b", source, files, cold_methods,
                                   before=lambda: raw_read(source) if source.startswith("disk") else None)

                switch_to_b("disk-warm")  # warm-up: allocator, kernels
                raw_times["disk-warm"].clear()
                ours = []
                for source in TIERS:
                    progress(f"{size}: coeflow, switch from {source}")
                    s, ttft = _median([switch_to_b(source) for _ in range(repeats)])
                    ours.append(Row(size, "coeflow", source, nbytes, s, nbytes / s / 1e9, ttft))
                del engine
            progress(f"{size}: writing a fine-tune of the first checkpoint as a 1-bit delta")
            ours += _delta_rows(size, root, a, make_delta(root, a), prompt, device, load_threads, repeats, sync,
                                progress)
            for source, times in raw_times.items():
                raw_s = statistics.median(times)
                rows.append(Row(size, "raw-read", source, nbytes, raw_s, nbytes / raw_s / 1e9, None))
            raw_gbps[size] = rows[-1].gbps
            rows += ours
            del buf, view

            for source in ("disk-cold", "disk-warm"):
                progress(f"{size}: transformers from_pretrained, {source}")
                runs = []
                for _ in range(repeats):
                    (drop_page_cache if source == "disk-cold" else warm_page_cache)(files)
                    t = time.perf_counter()
                    model = hf_from_pretrained(b, torch.float32, device)
                    sync()
                    ready = time.perf_counter() - t
                    _first_token_hf(model, ids.to(device))
                    sync()
                    runs.append((ready, time.perf_counter() - t))
                    del model
                s, ttft = _median(runs)
                rows.append(Row(size, "hf-from_pretrained", source, nbytes, s, nbytes / s / 1e9, ttft))

            with torch.device("meta"):
                built = LlamaForCausalLM(LlamaConfig(**SIZES[size]))
            built = built.to_empty(device=device).eval()
            built.load_state_dict(load_file(a / "model.safetensors", device=str(device)))
            for source in ("disk-cold", "disk-warm"):
                progress(f"{size}: safetensors load_file + load_state_dict, {source}")
                runs = []
                for _ in range(repeats):
                    (drop_page_cache if source == "disk-cold" else warm_page_cache)(files)
                    t = time.perf_counter()
                    for f in files:
                        built.load_state_dict(load_file(f, device=str(device)), strict=False)
                    sync()
                    ready = time.perf_counter() - t
                    _first_token_hf(built, ids.to(device))
                    sync()
                    runs.append((ready, time.perf_counter() - t))
                s, ttft = _median(runs)
                rows.append(Row(size, "safetensors-load_state_dict", source, nbytes, s, nbytes / s / 1e9, ttft))
            del built
    finally:
        if tmp:
            tmp.cleanup()
    cold = sorted(cold_methods - {"none"}) or ["none (disk-cold rows are warm)"]
    return {"machine": machine, "device": str(device), "repeats": repeats,
            "load_threads": load_threads, "compute_threads": torch.get_num_threads(), "engine": "coeflow eager (fused=False)",
            "cold_cache_method": ", ".join(cold),
            "raw_read_gbps": raw_gbps[sizes[0]] if sizes else None, "raw_read_gbps_by_size": raw_gbps,
            "memcpy_gbps": mem_gbps, "load_avg": os.getloadavg(),
            "results": [asdict(r) for r in rows]}


def _switch(store, engine, prompt: list[int], sync: Callable[[], None], first: str, target: str, source: str,
            files: list[Path], cold_methods: set[str], before: Callable[[], None] = lambda: None) -> tuple[float, float]:
    """Run expert `first`, put `target` where `source` says (disk with the page cache cold or
    warm, host, device), then time acquiring `target`: (until ready, until its first token)."""
    from coeflow.engine import SamplingParams
    params = SamplingParams(max_tokens=1, ignore_eos=True)
    with store.acquire(first) as lease:
        engine.set_weights(lease.weights, first)
        engine.generate([prompt], params)
    before()
    if source.startswith("disk"):
        store.unload(target, tier="disk")
        if source == "disk-cold":
            cold_methods.add(drop_page_cache(files))
        else:
            warm_page_cache(files)
    elif source == "host":
        store.load(target, tier="host")
        store.unload(target, tier="host")
    else:
        store.load(target, tier="device")
    t = time.perf_counter()
    with store.acquire(target) as lease:
        assert lease.source_tier == source.split("-")[0], (lease.source_tier, source)
        ready = time.perf_counter() - t
        engine.set_weights(lease.weights, target)
        engine.generate([prompt], params)
        sync()
        return ready, time.perf_counter() - t


def _delta_rows(size: str, root: Path, base: Path, delta: Path, prompt: list[int], device: torch.device,
                load_threads: int, repeats: int, sync: Callable[[], None],
                progress: Callable[[str], None]) -> list[Row]:
    """coeflow switching from the base (served too) to a delta of it, from each tier: the host
    tier holds the base and the delta, the device the base and one rebuilt expert."""
    from coeflow.backend.real import RealBackend
    from coeflow.coefile import parse_coe
    from coeflow.engine import Engine
    from coeflow.store import ExpertStore

    files = sorted(delta.glob("*.safetensors"))
    nbytes = sum(f.stat().st_size for f in files)
    coe = parse_coe({"name": "bench-delta", "fallback": "base", "experts": [
        {"name": "base", "path": base.name}, {"name": "delta", "path": delta.name}]}, root / "coe-delta.yaml")
    dense, packed = plan_layout(base, torch.float32).block_bytes, plan_layout(delta, torch.float32).block_bytes
    rows = []
    with RealBackend("fp32", device, load_threads=load_threads) as backend, \
            ExpertStore(coe, backend, device_mem=int(2.02 * dense), host_mem=int(1.01 * (dense + packed))) as store:
        engine = Engine(store.config("base"), dtype="fp32", device=device, fused=False)

        def switch(source: str) -> tuple[float, float]:
            return _switch(store, engine, prompt, sync, "base", "delta", source, files, set())

        switch("disk-warm")  # warm-up
        for source in TIERS:
            progress(f"{size}: coeflow, switch to a 1-bit delta expert from {source}")
            s, ttft = _median([switch(source) for _ in range(repeats)])
            rows.append(Row(size, "coeflow-delta1", source, nbytes, s, nbytes / s / 1e9, ttft))
    return rows


def format_table(report: dict) -> str:
    """One line per row; '% raw read' compares with the warm raw read of the same size."""
    lines = [f"machine: {report['machine']} (device {report['device']})",
             f"memory copy bandwidth: {report['memcpy_gbps']:.2f} GB/s; cold page cache via "
             f"{report['cold_cache_method']}; first token: {report['engine']}, "
             f"{report['compute_threads']} compute thread(s), {report['load_threads']} read threads; "
             f"median of {report['repeats']}; load average {report['load_avg'][0]:.2f}",
             f"{'size':6} {'method':28} {'from':9} {'ready s':>9} {'GB/s':>7} {'TTFT s':>9} "
             f"{'% raw read':>10} {'TTFT vs from_pretrained':>24}"]
    base = {(r["size"], r["source_tier"]): r["ttft_s"] for r in report["results"]
            if r["method"] == "hf-from_pretrained"}
    for r in report["results"]:
        raw = report["raw_read_gbps_by_size"][r["size"]]
        ref = base.get((r["size"], r["source_tier"] if r["source_tier"].startswith("disk") else "disk-warm"))
        ttft = f"{r['ttft_s']:9.3f}" if r["ttft_s"] is not None else f"{'-':>9}"
        speed = f"{ref / r['ttft_s']:23.1f}x" if ref and r["ttft_s"] else f"{'-':>24}"
        lines.append(f"{r['size']:6} {r['method']:28} {r['source_tier']:9} {r['seconds']:9.3f} "
                     f"{r['gbps']:7.2f} {ttft} {100 * r['gbps'] / raw:9.0f}% {speed}")
    return "\n".join(lines)
