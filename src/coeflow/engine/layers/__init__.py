"""Per-device implementations of the model's products and layers.

The model (coeflow.model.llama) is maths only. A step runner that compiles decode steps for a
device gives its own copy of the skeleton that device's layers once, when it is built, and the
engine gives its own skeleton (prefill) the device's prefill layers (`DeviceLayers.swap`):
subclasses of the model's modules, swapped in by class, that override `forward`,
`Attention.project`, `Attention.attend` or `MLP.gate_up`. The CPU's are in `layers.cpu`, the
GPU's in `layers.cuda`, side by side."""

from __future__ import annotations

from typing import Protocol

from torch import nn

from coeflow.model.llama import Transformer


class DeviceLayers(Protocol):
    """One device's layers, for decode steps or for prefill."""

    def swap(self, model: Transformer) -> None:
        """Give a skeleton (no weights attached yet) this device's modules."""

    def after_attach(self, model: Transformer) -> tuple:
        """Work to redo when new weights are attached (e.g. joining products whose weights lie
        back to back). Returns what a compiled step depends on besides the weights' shapes,
        strides and dtypes: steps compiled for other values cannot be reused."""


class NoLayers:
    """The model's own modules, unchanged."""

    def swap(self, model: Transformer) -> None:
        pass

    def after_attach(self, model: Transformer) -> tuple:
        return ()


def swap_classes(model: nn.Module, classes: dict[type, type]) -> None:
    """Turn every module whose type is a key of `classes` into an instance of its value (a
    subclass that adds no state of its own), keeping its parameters."""
    for m in model.modules():
        new = classes.get(type(m))
        if new is not None:
            m.__class__ = new
