"""llama.cpp's server as a peer: the CoE's experts converted to GGUF by llama.cpp's converter
(coeflow.bench.gguf_convert) and served by one `llama-server` in router mode (no `-m`:
`--models-dir` holds one GGUF per expert, named after it; a request's `model` picks it, and the
router runs each model in a child llama-server, started on its first request). With
`--models-max` the number of experts, no model is evicted: one instance per expert."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

import httpx

from coeflow.errors import ConfigError

CONVERTER = "convert_hf_to_gguf.py"
OUTTYPES = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}  # coeflow's dtype names -> the converter's


def llama_tree(binary: Path, option: str = "--peer-llama-server") -> Path:
    """The llama.cpp source tree a built tool (llama-server, llama-bench) lives in (its converter
    is there); `option` is the command-line option that named it, for the errors."""
    if not binary.is_file():
        raise ConfigError(f"{option} {binary}: no such file (build llama.cpp's {binary.name} first)")
    for folder in binary.resolve().parents:
        if (folder / CONVERTER).is_file():
            return folder
    raise ConfigError(f"no {CONVERTER} in any folder above {binary}: name the {binary.name} built inside a "
                      f"llama.cpp source tree (e.g. llama.cpp/build/bin/{binary.name})")


def convert_experts(tree: Path, experts: dict[str, Path], out: Path, dtype: str,
                    progress: Callable[[str], None] = lambda s: None) -> Path:
    """One GGUF per expert, `out`/NAME.gguf, at coeflow's `dtype`; reused while it is newer
    than every file of its checkpoint (a retrained expert is converted again)."""
    if dtype not in OUTTYPES:
        raise ConfigError(f"no GGUF type for dtype {dtype!r}; one of {', '.join(OUTTYPES)}")
    out.mkdir(parents=True, exist_ok=True)
    for name, checkpoint in experts.items():
        target = out / f"{name}.gguf"
        if target.is_file() and target.stat().st_mtime > max(f.stat().st_mtime for f in checkpoint.iterdir()):
            continue
        progress(f"peer: converting {name} to GGUF ({OUTTYPES[dtype]})")
        run = subprocess.run([sys.executable, "-m", "coeflow.bench.gguf_convert", str(tree), str(checkpoint),
                              "--outtype", OUTTYPES[dtype], "--outfile", str(target)],
                             capture_output=True, text=True)
        if run.returncode != 0 or not target.is_file():
            target.unlink(missing_ok=True)
            raise ConfigError(f"llama.cpp's converter failed on {checkpoint}: {run.stderr.strip()[-1500:]}")
    return out


@contextlib.contextmanager
def llama_router(server: Path, models: Path, count: int, port: int, slots: int, context: int,
                 threads: int | None, log: Path, timeout_s: float = 120.0) -> Iterator[str]:
    """Run `server` in router mode over the GGUF files in `models` (all `count` kept loaded),
    each with `slots` parallel sequences of `context` tokens and `threads` threads (None:
    llama.cpp's default, every core, for each model); yields its base URL (.../v1)."""
    cmd = [str(server), "--models-dir", str(models), "--models-max", str(count), "--host", "127.0.0.1",
           "--port", str(port), "-c", str(slots * context), "-np", str(slots)]
    cmd += ["-t", str(threads)] if threads is not None else []
    with log.open("w") as sink:
        proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                raise ConfigError(f"llama-server exited with {proc.returncode}: {log.read_text()[-1500:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise ConfigError(f"llama-server did not answer /health in {timeout_s:.0f} s: {log.read_text()[-1500:]}")
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()  # the router stops its children
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
