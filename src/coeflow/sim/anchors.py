"""Published GPU measurements the model is checked against (shared/anchors.md). Each is a
peer's own benchmark on its own hardware. `calibration=True` marks the subset the GPU
overheads were fitted on (coeflow.sim.calibration); the others are held out."""

from __future__ import annotations

from dataclasses import dataclass

from coeflow.hw.generation import GenerationCost, generation_cost
from coeflow.hw.shapes import load_shape
from coeflow.hw.spec import load_hardware


@dataclass(frozen=True)
class Anchor:
    name: str
    hw: str
    model: str
    stack: str
    tp: int
    prompt: int
    gen: int
    metric: str  # tpot_s | total_s | prefill_s
    reference: float
    source: str
    calibration: bool

    def predict(self, **overrides) -> float:
        hw = overrides.get("hw") or load_hardware(self.hw)
        cost = generation_cost(hw, load_shape(self.model), 1, self.prompt, self.gen, self.tp,
                               overrides.get("stack") or self.stack)
        return metric(cost, self.metric)


def metric(cost: GenerationCost, name: str) -> float:
    if name == "prefill_s":
        return cost.prefill.time_s
    return getattr(cost, name)


GPU_ANCHORS: tuple[Anchor, ...] = (
    Anchor("gpt-fast A100 Llama-2-7B TP1 decode (s/token)", "a100", "llama2-7b", "gpt-fast", 1,
           8, 200, "tpot_s", 1 / 104.9, "gpt-fast README: 104.9 tok/s, A100-80GB, batch 1", True),
    Anchor("gpt-fast A100 Llama-2-70B TP8 decode (s/token)", "dgx-a100", "llama2-70b", "gpt-fast",
           8, 8, 200, "tpot_s", 1 / 62.5, "gpt-fast README: 62.5 tok/s, 8 x A100, batch 1", True),
    Anchor("NeMo A100 Llama-2-7B TP1, 128 in / 20 out (s)", "dgx-a100", "llama2-7b", "nemo", 1,
           128, 20, "total_s", 0.2340, "NVIDIA NeMo inference table, batch 1", True),
    Anchor("NeMo A100 Llama-2-7B TP8, 128 in / 20 out (s)", "dgx-a100", "llama2-7b", "nemo", 8,
           128, 20, "total_s", 0.1365, "NVIDIA NeMo inference table, batch 1", True),
    Anchor("NeMo H100 Llama-2-7B TP1, 128 in / 20 out (s)", "dgx-h100", "llama2-7b", "nemo", 1,
           128, 20, "total_s", 0.1538, "NVIDIA NeMo inference table, batch 1", False),
    Anchor("NeMo H100 Llama-2-7B TP8, 128 in / 20 out (s)", "dgx-h100", "llama2-7b", "nemo", 8,
           128, 20, "total_s", 0.0976, "NVIDIA NeMo inference table, batch 1", False),
    Anchor("TensorRT-LLM A100 LLaMA-7B 128-token prefill (s)", "a100", "llama2-7b", "nemo", 1,
           128, 1, "prefill_s", 0.016, "TensorRT-LLM performance table, FP16, TTFT", False),
    Anchor("TensorRT-LLM A100 LLaMA-7B 2048-token prefill (s)", "a100", "llama2-7b", "nemo", 1,
           2048, 1, "prefill_s", 0.133, "TensorRT-LLM performance table, FP16, TTFT", False),
)
