"""`coeflow bench decode`: decode tokens/s of three engines on the same weights, side by side,
and the machine's memory read bandwidth measured in the same run.

Every engine is timed the same way: the time between its first and its last generated
token, from timestamps taken as each token is produced (a streamer for `generate`), so
prefill and the first token are excluded alike. Median over repeats. Each timed run sits
between two reads of memory, and each row is judged against the reads beside its own runs
(`pct_of_read`): the read rate of a shared machine swings within a second."""

from __future__ import annotations

import math
import shutil
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

from coeflow.bench.experts import hf_from_pretrained, make_expert
from coeflow.bench.machine import device_copy_gbps, machine_name, read_probe
from coeflow.engine import Engine, SamplingParams
from coeflow.errors import ConfigError
from coeflow.model import ModelConfig, parse_dtype, resolve_device
from coeflow.model.config import dense_dtype, expected_shapes

# Random-weight Llama configs. "tiny" is overhead-bound; "medium" streams ~0.6 GB/token (fp32);
# "1b" (TinyLlama-1.1B's shape) and "7b" are for the GPU check's "1B or more parameters".
CONFIGS: dict[str, dict] = {
    "tiny": dict(vocab_size=8000, hidden_size=256, intermediate_size=768, num_hidden_layers=4,
                 num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=2048),
    "medium": dict(vocab_size=32000, hidden_size=768, intermediate_size=2560, num_hidden_layers=12,
                   num_attention_heads=12, num_key_value_heads=4, max_position_embeddings=2048),
    "1b": dict(vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_hidden_layers=22,
               num_attention_heads=32, num_key_value_heads=4, max_position_embeddings=2048),
    # Llama 2 7B's shape: the paper's experts
    "7b": dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
               num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096),
}
ENGINES = ("hf-transformers", "coeflow-eager", "coeflow-fused")
# With `json_schema`, each coeflow engine also decodes under this schema ("ENGINE+json-schema"),
# greedily like its plain row: an array of at least 1,000 small integers, so no row may end
# within the timed steps (EOS is only allowed once the JSON is whole).
SCHEMA = {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 99}, "minItems": 1000}
WITH_SCHEMA = "+json-schema"
# Also selectable: "coeflow-fused-inductor", the fused engine without coeflow's CPU linear
# kernel (Inductor's code and MKL only), to show in the same run what the kernel changes; and
# "coeflow-fused-cublas", the fused engine without coeflow's Triton kernel for one-row products
# (on a GPU every product through cuBLAS; elsewhere the same as coeflow-fused).


@dataclass
class Row:
    engine: str
    model: str
    params: int
    dtype: str
    batch: int
    tokens_per_s: float
    weight_gbps: float
    ms_per_step: float
    mem_read_gbps: float = 0.0  # median over this row's runs of the mean of the reads around each
    # median over the row's runs of its weight GB/s over the mean of the two reads beside
    # that run: the row judged against the memory as it was while the row ran
    pct_of_read: float = 0.0
    mem_read_gbps_max: float = 0.0  # the fastest of those reads
    # fused on CUDA: one replay of the step's CUDA graph alone, timed on the device (the
    # step without the host's share: sampling, streaming, the copies in and out)
    replay_ms: float | None = None
    # a row timed in alternation with the one before it (its plain engine, for a schema row):
    # the median over their paired runs of this row's tokens/s over that one's
    vs_first: float | None = None


# Checkpoints written in fp32 (the engines convert on loading), but the largest in bf16: half
# the disk (13.5 GB) and its writing time.
CHECKPOINT_DTYPES = {"7b": torch.bfloat16}


def make_checkpoint(name: str, root: Path, device: str = "cpu") -> Path:
    return make_expert(root / name, CONFIGS[name], seed=0, tokenizer=False,
                       dtype=CHECKPOINT_DTYPES.get(name, torch.float32), device=device)


# Quantized rows: the checkpoint quantized by `coeflow quantize --to NAME --lm-head` (every
# product, as llama.cpp's Q8_0 and Q4_0 quantize theirs), served with bf16 activations.
QUANTIZED = {"int8": 8, "int4": 4}


def streamed_bytes(cfg: ModelConfig, dtype: torch.dtype) -> int:
    """Weight bytes one decode step must read: everything but the embedding table, of which a
    step reads one row per token (unless it doubles as the output head); packed quantized
    weights at their packed size."""
    shapes = expected_shapes(cfg)
    if not cfg.tie_word_embeddings:
        del shapes["model.embed_tokens.weight"]
    return sum(math.prod(s) * (dtype.itemsize if dense_dtype(n) else 4) for n, s in shapes.items())


# llama-quantize's type for a quantized row (the others are converted at their dtype).
PEER_TYPES = {"int8": "Q8_0", "int4": "Q4_0"}


def peer_tokens_per_s(llama_bench: Path, checkpoint: Path, dt_name: str, root: Path, new_tokens: int,
                      repeats: int, progress: Callable[[str], None]) -> float:
    """llama.cpp's decode rate (tokens/s, batch 1, this process's threads) on `checkpoint`
    converted to GGUF by its own converter, quantized by its own llama-quantize for int8 (Q8_0)
    and int4 (Q4_0, whose output head llama-quantize keeps at 6 bits): `llama-bench -p 0 -n`."""
    import json
    import subprocess

    from coeflow.bench.llama_peer import convert_experts, llama_tree
    source = "bf16" if dt_name in QUANTIZED else dt_name
    folder = convert_experts(llama_tree(llama_bench, "--peer-llama-bench"), {checkpoint.name: checkpoint},
                             root / "gguf" / source, source, progress)
    gguf = folder / f"{checkpoint.name}.gguf"
    if dt_name in QUANTIZED:
        dense, gguf = gguf, root / "gguf" / f"{checkpoint.name}-{PEER_TYPES[dt_name]}.gguf"
        if not gguf.is_file():
            run = subprocess.run([str(llama_bench.with_name("llama-quantize")), str(dense), str(gguf),
                                  PEER_TYPES[dt_name]], capture_output=True, text=True)
            if run.returncode != 0:
                raise ConfigError(f"llama-quantize failed: {run.stderr.strip()[-1500:]}")
    progress(f"peer: llama-bench {gguf.name}")
    run = subprocess.run([str(llama_bench), "-m", str(gguf), "-p", "0", "-n", str(new_tokens), "-r", str(repeats),
                          "-t", str(torch.get_num_threads()), "-o", "json"], capture_output=True, text=True)
    if run.returncode != 0:
        raise ConfigError(f"llama-bench failed: {run.stderr.strip()[-1500:]}")
    return float(json.loads(run.stdout)[0]["avg_ts"])


def quantized_copy(path: Path, root: Path, dt_name: str) -> Path:
    """`path` quantized for a QUANTIZED row, written once under `root`."""
    from coeflow.model.convert import quant_scheme, quantize_checkpoint
    out = root / f"{path.name}-{dt_name}"
    if not (out / "config.json").is_file():
        shutil.rmtree(out, ignore_errors=True)
        quantize_checkpoint(path, out, quant_scheme(QUANTIZED[dt_name], lm_head=True))
    return out


class _Stamps:
    """A `generate` streamer that notes when each new token arrives (the first `put` is the prompt)."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def put(self, value) -> None:
        self.times.append(time.perf_counter())

    def end(self) -> None:
        pass


def _runner(engine: str, path: Path, dtype: torch.dtype, prompts: list[list[int]], device: str = "cpu"
            ) -> tuple[Callable[[int], float], Engine | None]:
    """Returns (gen, coeflow's engine or None): gen(k) -> seconds between the first and the
    k-th generated token (batch, no EOS)."""
    if engine.endswith(WITH_SCHEMA):
        return _schema_runner(engine.removesuffix(WITH_SCHEMA), path, dtype, prompts, device)
    if engine == "hf-transformers":
        model = hf_from_pretrained(path, dtype, device)
        model.generation_config.eos_token_id = None
        model.generation_config.pad_token_id = 0
        ids = torch.tensor(prompts, device=device)
        mask = torch.ones_like(ids)

        def gen(k: int) -> float:
            stamps = _Stamps()
            with torch.inference_mode():
                model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=k, min_new_tokens=k,
                               do_sample=False, streamer=stamps)
            return stamps.times[-1] - stamps.times[1]
        return gen, None
    eng = _coeflow_engine(engine, path, dtype, device)

    def gen(k: int) -> float:
        times = [time.perf_counter() for _ in eng.stream(prompts, SamplingParams(max_tokens=k, ignore_eos=True))]
        return times[-1] - times[0]
    return gen, eng


def _coeflow_engine(engine: str, path: Path, dtype: torch.dtype, device: str) -> Engine:
    """The engine a coeflow row names: eager, fused, or fused without one of coeflow's kernels."""
    return Engine.from_checkpoint(path, dtype=dtype, device=device, fused=engine != "coeflow-eager",
                                  cpu_kernel=engine != "coeflow-fused-inductor",
                                  triton_gemv=engine != "coeflow-fused-cublas")


def _schema_runner(engine: str, path: Path, dtype: torch.dtype, prompts: list[list[int]], device: str
                   ) -> tuple[Callable[[int], float], Engine]:
    """A coeflow engine decoding every row under SCHEMA (the server's GrammarConstraint on the
    checkpoint's own tokenizer)."""
    from coeflow.backend.real import ExpertRuntime
    from coeflow.model import Tokenizer
    from coeflow.server.structured import GrammarConstraint, grammar_for
    eng = _coeflow_engine(engine, path, dtype, device)
    tok = Tokenizer.from_dir(path)
    runtime = ExpertRuntime(tok, frozenset(tok.eos_ids), ModelConfig.from_dir(path))
    grammar = grammar_for({"type": "json_schema", "json_schema": {"name": "bench", "schema": SCHEMA}})

    def gen(k: int) -> float:
        params = SamplingParams(max_tokens=k, ignore_eos=True)
        seqs = [eng.open(p, params, runtime.eos_ids, tok.decode, index=i,
                         constraint=GrammarConstraint(runtime, grammar)) for i, p in enumerate(prompts)]
        for s in seqs:
            eng.prefill(s)  # the first token: the time starts after it, as for the other rows
        t = time.perf_counter()
        for _ in eng.decode(seqs, k - 1):
            pass
        seconds = time.perf_counter() - t
        for s in seqs:
            eng.close(s)
        return seconds
    return gen, eng


def replay_ms(engine: Engine | None, repeats: int = 50) -> float | None:
    """Device time of one replay of the engine's decode-step graph, or None without one."""
    graphs = getattr(engine.runner, "cuda_graphs", []) if engine is not None else []
    if not graphs:
        return None
    g = graphs[0]
    with torch.cuda.device(engine.device):  # events and replays on the engine's device
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        g.replay()
        start.record()
        for _ in range(repeats):
            g.replay()
        end.record()
        end.synchronize()
    return start.elapsed_time(end) / repeats


def run(models: tuple[str, ...] = ("tiny", "medium"), dtypes: tuple[str, ...] = ("fp32", "bf16"),
        batches: tuple[int, ...] = (1, 8), engines: tuple[str, ...] = ENGINES,
        new_tokens: int = 32, prompt_len: int = 16, repeats: int = 5, workdir: Path | None = None,
        device: str = "cpu", progress: Callable[[str], None] = lambda s: None,
        checkpoints: tuple[Path, ...] = (), json_schema: bool = False,
        peer_llama_bench: Path | None = None) -> dict:
    """`models` are CONFIGS' names (random weights, written here); `checkpoints` are
    checkpoint directories benched as they are (named by their directory). `json_schema` adds,
    after each coeflow engine's row, the same engine under SCHEMA (checkpoints with a tokenizer).
    `peer_llama_bench`: a built llama-bench, timed at batch 1 on each checkpoint (with a
    tokenizer) and dtype after coeflow's rows, as engine "llama.cpp"."""
    resolve_device(device)  # a clear error for a device this machine lacks, before any work
    groups = [(e, e + WITH_SCHEMA) if json_schema and e.startswith("coeflow") else (e,) for e in engines]
    if peer_llama_bench is not None and (models or any(
            not (Path(c) / "tokenizer.json").is_file() for c in checkpoints)):
        raise ConfigError("--peer-llama-bench needs checkpoints with a tokenizer (--checkpoint DIR): "
                          "llama.cpp's converter reads it")
    if json_schema:
        if models or any(not (Path(c) / "tokenizer.json").is_file() for c in checkpoints):
            raise ConfigError("--json-schema needs checkpoints with a tokenizer (--checkpoint DIR), "
                              "not the random-weight models")
    tmp = tempfile.TemporaryDirectory() if workdir is None else None
    root = Path(tmp.name) if tmp else Path(workdir)
    rows: list[Row] = []
    try:
        # A shared machine's read rate swings within a second, so each timed run is bracketed
        # by two reads and judged against their mean; a best-of read taken seconds away would
        # bound the run by a moment it did not run in.
        read = read_probe(device=device)
        reads: list[float] = []  # every read of the run
        copy = device_copy_gbps(device) if device != "cpu" else None
        sources = [(name, None) for name in models] + [(Path(c).name, Path(c)) for c in checkpoints]
        for name, given in sources:
            path = given or make_checkpoint(name, root, device)
            cfg = ModelConfig.from_dir(path)
            g = torch.Generator().manual_seed(1)
            for dt_name in dtypes:
                dtype = torch.bfloat16 if dt_name in QUANTIZED else parse_dtype(dt_name)
                run_path = quantized_copy(path, root, dt_name) if dt_name in QUANTIZED else path
                gbytes = streamed_bytes(ModelConfig.from_dir(run_path), dtype) / 1e9
                for batch in batches:
                    prompts = torch.randint(3, cfg.vocab_size, (batch, prompt_len), generator=g).tolist()
                    for group in groups:
                        if dt_name in QUANTIZED and "hf-transformers" in group:
                            continue  # transformers dequantizes such checkpoints into dense weights
                        progress(f"{name} {dt_name} batch {batch}: {' and '.join(group)}")
                        runners = [_runner(engine, run_path, dtype, prompts, device) for engine in group]
                        for gen, _ in runners:
                            gen(1 + new_tokens)  # warm-up (and compilation, for the fused engine)
                        runs: list[list[tuple[float, float, float]]] = [[] for _ in group]  # (s a step, reads)
                        for _ in range(repeats):  # a group's engines alternate, run by run
                            for k, (gen, _) in enumerate(runners):
                                before = read()
                                step = gen(1 + new_tokens) / new_tokens
                                runs[k].append((step, before, read()))
                        for k, engine in enumerate(group):
                            around = [r for _, *pair in runs[k] for r in pair]
                            reads += around
                            step = statistics.median(s for s, _, _ in runs[k])
                            beside = [(a + b) / 2 for _, a, b in runs[k]]
                            rows.append(Row(engine, name, cfg.num_params(), dt_name, batch,
                                            tokens_per_s=batch / step, weight_gbps=gbytes / step,
                                            ms_per_step=step * 1e3, mem_read_gbps=statistics.median(beside),
                                            pct_of_read=100 * statistics.median(
                                                gbytes / s / lim for (s, _, _), lim in zip(runs[k], beside)),
                                            mem_read_gbps_max=max(around),
                                            replay_ms=replay_ms(runners[k][1]),
                                            vs_first=statistics.median(
                                                a / b for (a, _, _), (b, _, _) in zip(runs[0], runs[k]))
                                            if k else None))
                        del runners
                    if peer_llama_bench is not None and batch == 1:
                        tps = peer_tokens_per_s(peer_llama_bench, path, dt_name, root, new_tokens, repeats, progress)
                        rows.append(Row("llama.cpp", name, cfg.num_params(), dt_name, 1, tokens_per_s=tps,
                                        weight_gbps=0.0, ms_per_step=1e3 / tps))
    finally:
        if tmp:
            tmp.cleanup()
    return {"machine": machine_name(), "device": device, "mem_read_gbps": max(reads),
            "mem_read_gbps_range": [min(reads), max(reads)], "device_copy_gbps": copy, "new_tokens": new_tokens,
            "prompt_len": prompt_len, "results": [asdict(r) for r in rows]}


def format_table(report: dict) -> str:
    """Rows judged against the physical limit: the read bandwidth measured beside their
    runs on a CPU (`pct_of_read`: the median of each run's ratio, so with several runs not
    the quotient of the medians printed beside it), the device's copy rate on a GPU."""
    lo, hi = report.get("mem_read_gbps_range", [report["mem_read_gbps"]] * 2)
    copy = report.get("device_copy_gbps")
    lines = [f"machine: {report['machine']}",
             f"memory read bandwidth (measured before and after each run): {lo:.1f}-{hi:.1f} GB/s"
             + (f"; device copy {copy:.0f} GB/s (read + write)" if copy else ""),
             f"{'model':8} {'params':>8} {'dtype':5} {'batch':>5} {'engine':27} {'tok/s':>9} "
             f"{'ms/step':>8} {'weight GB/s':>11} {'read GB/s' if not copy else '':>9} "
             f"{'% of copy' if copy else '% of read bw':>12}"]
    for r in report["results"]:
        read = r.get("mem_read_gbps") or report["mem_read_gbps"]
        vs = f"  ({r['vs_first']:.2f}x the row above, paired runs)" if r.get("vs_first") else ""
        pct = (100 * r["weight_gbps"] / copy if copy
               else r.get("pct_of_read") or 100 * r["weight_gbps"] / read)
        if not r["weight_gbps"]:  # a peer's row: its bytes a step are not known here
            lines.append(f"{r['model']:8} {r['params'] / 1e6:7.1f}M {r['dtype']:5} {r['batch']:5d} "
                         f"{r['engine']:27} {r['tokens_per_s']:9.1f} {r['ms_per_step']:8.2f}")
            continue
        lines.append(f"{r['model']:8} {r['params'] / 1e6:7.1f}M {r['dtype']:5} {r['batch']:5d} "
                     f"{r['engine']:27} {r['tokens_per_s']:9.1f} {r['ms_per_step']:8.2f} "
                     f"{r['weight_gbps']:11.2f} {'' if copy else f'{read:.1f}':>9} {pct:11.1f}%"
                     + (f"  (graph replay alone {r['replay_ms']:.2f} ms)" if r.get("replay_ms") else "") + vs)
    return "\n".join(lines)
