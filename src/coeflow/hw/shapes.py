"""The shape of a decoder-only LLM, read from a Hugging Face config.json.

Only what costs time or bytes is kept: widths, depths, head counts, MLP form, biases, norms.
Covers Llama, Mistral, Qwen2 (gated SiLU MLP, RMSNorm, RoPE, grouped KV heads), Falcon
(parallel attention + MLP, GELU MLP, grouped KV) and Bloom (LayerNorm, biases, ALiBi).
The engine's `coeflow.model.config` is stricter because it must compute the exact model;
this one only has to count."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

from coeflow.errors import CoeflowError, ConfigError
from coeflow.quantization import QuantScheme

MODELS_DIR = Path(__file__).with_name("models")
BYTES_BF16 = 2


@dataclass(frozen=True)
class DecoderShape:
    name: str
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    gated_mlp: bool  # SwiGLU (gate and up) vs plain up/act/down
    parallel_attn: bool  # attention and MLP read the same input (Falcon): one all-reduce
    linear_bias: bool  # every projection has a bias (Bloom)
    qkv_bias: bool  # only q/k/v have a bias (Qwen2)
    layer_norm: bool  # LayerNorm (mean and variance) instead of RMSNorm
    rotary: bool  # RoPE on q and k (Bloom uses ALiBi: a bias, no extra pass)
    tied_embeddings: bool
    sliding_window: int | None  # Mistral: attention looks back at most this many tokens
    max_positions: int
    # bits a weight of the layers' products as stored, scales included (None: the dtype's own);
    # embeddings, norms and the output head stay in the dtype (`quantized`)
    weight_bits: float | None = None
    # a delta expert (coeflow.model.delta): bits a weight of every matrix as the tiers below the
    # device store it, scales included, and its base (shapes with the same one share it); the
    # device holds it rebuilt, as dense as its base
    stored_bits: float | None = None
    delta_base: str | None = None

    def layer_params(self) -> int:
        h, d = self.hidden, self.head_dim
        qkv = h * (self.heads + 2 * self.kv_heads) * d
        o = self.heads * d * h
        mlp = (3 if self.gated_mlp else 2) * h * self.intermediate
        bias = 0
        if self.linear_bias:
            bias = (self.heads + 2 * self.kv_heads) * d + h + (2 if self.gated_mlp else 1) * \
                self.intermediate + h
        elif self.qkv_bias:
            bias = (self.heads + 2 * self.kv_heads) * d
        norms = (2 if self.layer_norm else 1) * 2 * h
        return qkv + o + mlp + bias + norms

    def num_params(self) -> int:
        embed = self.vocab * self.hidden
        head = 0 if self.tied_embeddings else self.vocab * self.hidden
        return self.layers * self.layer_params() + embed + head + 2 * self.hidden

    def product_params(self) -> int:
        """The layers' projection weights (no biases): what quantization packs."""
        h, d = self.hidden, self.head_dim
        return self.layers * (h * (self.heads + 2 * self.kv_heads) * d + self.heads * d * h
                              + (3 if self.gated_mlp else 2) * h * self.intermediate)

    def product_bytes_per_param(self, bytes_per_param: float = BYTES_BF16) -> float:
        return self.weight_bits / 8 if self.weight_bits is not None else bytes_per_param

    def weight_bytes(self, bytes_per_param: int = BYTES_BF16) -> int:
        products = self.product_params()
        return round((self.num_params() - products) * bytes_per_param
                     + products * self.product_bytes_per_param(bytes_per_param))

    def matrix_params(self) -> int:
        """Weights of every matrix (products, embeddings, head): what a delta compresses."""
        return self.product_params() + self.vocab * self.hidden * (1 if self.tied_embeddings else 2)

    def stored_bytes(self, bytes_per_param: int = BYTES_BF16) -> int:
        """Bytes in the host tier and on disk, and moved by a switch: a delta's packed matrices
        and whole vectors; any other expert's weight bytes."""
        if self.stored_bits is None:
            return self.weight_bytes(bytes_per_param)
        matrices = self.matrix_params()
        return round((self.num_params() - matrices) * bytes_per_param + matrices * self.stored_bits / 8)

    def delta(self, bits: int, group: int | None, base: str) -> "DecoderShape":
        """This shape as a delta from `base` that `coeflow delta --bits` writes: `bits` a
        weight plus a bf16 scale a group of `group` inputs (None: one a row)."""
        return replace(self, name=f"{self.name}-delta{bits}", stored_bits=bits + 16 / (group or self.hidden),
                       delta_base=base)

    def quantized(self, bits: int, group: int | None) -> "DecoderShape":
        """This shape with its products stored as coeflow quantize writes them: `bits` a weight
        plus a bf16 scale a group of `group` inputs (None: one a row of the hidden width)."""
        return replace(self, name=f"{self.name}-int{bits}",
                       weight_bits=QuantScheme(bits, group).bits_per_weight(self.hidden))

    def kv_bytes_per_token(self, bytes_per_value: int = BYTES_BF16) -> int:
        """K and V of one token across all layers."""
        return 2 * self.layers * self.kv_heads * self.head_dim * bytes_per_value


def _pick(raw: dict[str, Any], *keys: str, default: Any = None) -> Any:
    for k in keys:
        if raw.get(k) is not None:
            return raw[k]
    return default


def shape_from_dict(raw: dict[str, Any], name: str = "model") -> DecoderShape:
    """Build a shape from a parsed config.json (HF field names, old and new spellings)."""
    mt = raw.get("model_type", "")
    if mt not in ("llama", "mistral", "qwen2", "falcon", "RefinedWeb", "RefinedWebModel", "bloom"):
        raise ConfigError(f"{name}: model_type {mt!r} is not a supported decoder shape "
                          "(llama, mistral, qwen2, falcon, bloom)")
    try:
        hidden = int(_pick(raw, "hidden_size", "n_embed", "d_model"))
        heads = int(_pick(raw, "num_attention_heads", "n_head"))
        layers = int(_pick(raw, "num_hidden_layers", "n_layer"))
        vocab = int(raw["vocab_size"])
    except (TypeError, KeyError, ValueError) as e:
        raise ConfigError(f"{name}: config.json lacks a size field ({e})") from None
    falcon, bloom = mt in ("falcon", "RefinedWeb", "RefinedWebModel"), mt == "bloom"
    if bloom:
        kv_heads = heads
    elif falcon:
        if raw.get("new_decoder_architecture"):
            kv_heads = int(_pick(raw, "num_kv_heads", "n_head_kv", default=heads))
        else:
            kv_heads = 1 if raw.get("multi_query", True) else heads
    else:
        kv_heads = int(_pick(raw, "num_key_value_heads", default=heads))
    gated = not (falcon or bloom)
    intermediate = int(_pick(raw, "intermediate_size", "ffn_hidden_size", default=4 * hidden))
    window = raw.get("sliding_window") if raw.get("use_sliding_window", True) else None
    return DecoderShape(
        name=name, hidden=hidden, intermediate=intermediate, layers=layers, heads=heads,
        kv_heads=kv_heads, head_dim=int(_pick(raw, "head_dim", default=hidden // heads)),
        vocab=vocab, gated_mlp=gated, parallel_attn=bool(falcon and raw.get("parallel_attn", True)),
        linear_bias=bloom or (falcon and bool(raw.get("bias", False))),
        qkv_bias=mt == "qwen2", layer_norm=falcon or bloom, rotary=not bloom,
        tied_embeddings=bool(raw.get("tie_word_embeddings", bloom)),
        sliding_window=int(window) if window else None,
        max_positions=int(_pick(raw, "max_position_embeddings", "seq_length", default=2048)),
        weight_bits=_weight_bits(raw, name, hidden),
        **_delta(raw, name, hidden),
    )


def _delta(raw: dict[str, Any], name: str, hidden: int) -> dict[str, Any]:
    """A delta checkpoint's stored bits and base (coeflow.model.delta), or nothing."""
    spec = raw.get("coeflow_delta")
    if not spec:
        return {}
    try:
        bits, group, base = int(spec["bits"]), spec.get("group"), str(spec["base"])
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(f"{name}: malformed coeflow_delta ({e!r})") from None
    if not Path(base).is_absolute() and Path(name).is_file():
        base = str((Path(name).parent / base).resolve())
    return {"stored_bits": bits + 16 / (group or hidden), "delta_base": base}


def _weight_bits(raw: dict[str, Any], name: str, hidden: int) -> float | None:
    """Bits a product weight of a quantized checkpoint (compressed-tensors pack-quantized, as
    coeflow serves them), or None for a dense one."""
    if not raw.get("quantization_config"):
        return None
    try:
        scheme = QuantScheme.from_config(raw["quantization_config"], name)
    except CoeflowError as e:
        raise ConfigError(str(e)) from None
    assert scheme is not None
    return scheme.bits_per_weight(hidden)


def list_models() -> list[str]:
    return sorted(p.stem for p in MODELS_DIR.glob("*.json"))


@lru_cache(maxsize=64)
def load_shape(name_or_path: str) -> DecoderShape:
    """A shipped config by name (`llama2-7b`) or a config.json path (file or its directory)."""
    path = Path(name_or_path)
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        path = MODELS_DIR / f"{name_or_path}.json"
        if not path.is_file():
            raise ConfigError(f"unknown model {name_or_path!r}: not a config.json path nor a "
                              f"shipped config ({', '.join(list_models())})")
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid JSON ({e})") from None
    name = path.stem if path.parent == MODELS_DIR else str(path)
    return shape_from_dict(raw, name=name)
