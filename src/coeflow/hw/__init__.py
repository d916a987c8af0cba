"""Hardware model: SN40L and GPU servers as data, decoder operator graphs, GPU (kernel by
kernel) and RDU (streaming dataflow) mappers, memory placement and expert switching.

Public API:
    load_hardware(name_or_path) -> Hardware        systems in specs/*.yaml
    load_shape(name_or_path) -> DecoderShape       HF config.json or a shipped name
    decoder_graph(shape, phase, batch, new_tokens, context, tp) -> Graph
    generation_cost(hw, shape, batch, prompt, gen, tp, stack) -> GenerationCost (cached)
    switch_time_s(hw, nbytes, src, dst="hbm") -> float
"""

from coeflow.hw.generation import GenerationCost, forward_pass, generation_cost
from coeflow.hw.graph import Graph, Op, decoder_graph
from coeflow.hw.shapes import DecoderShape, list_models, load_shape
from coeflow.hw.spec import (Device, Hardware, Stack, Tier, list_hardware, list_stacks,
                             load_hardware, load_stack)
from coeflow.hw.switching import expert_store_tier, switch_time_s

__all__ = [
    "DecoderShape", "Device", "GenerationCost", "Graph", "Hardware", "Op", "Stack", "Tier",
    "decoder_graph", "expert_store_tier", "forward_pass", "generation_cost", "list_hardware",
    "list_models", "list_stacks", "load_hardware", "load_shape", "load_stack", "switch_time_s",
]
