"""The model's hyper-parameters, read from a Hugging Face config.json.

One dataclass covers the Llama decoder family (Llama, Mistral, Qwen2): they differ only in
biases, sliding windows and RoPE scaling. Anything we do not implement is refused by name,
so a checkpoint never loads into a model that computes something else."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coeflow.errors import CheckpointError, UnsupportedModelError
from coeflow.quantization import QuantScheme

SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2")
SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3")


@dataclass(frozen=True)
class RopeConfig:
    theta: float = 10000.0
    type: str = "default"
    factor: float = 1.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192


@dataclass(frozen=True)
class ModelConfig:
    model_type: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    max_position_embeddings: int
    rms_norm_eps: float = 1e-6
    rope: RopeConfig = field(default_factory=RopeConfig)
    tie_word_embeddings: bool = False
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    # per layer: None for full attention, else the window in tokens
    sliding_windows: tuple[int | None, ...] = ()
    quant: QuantScheme | None = None  # weight-only quantized linear layers (model/quant.py)

    @property
    def shape_key(self) -> tuple:
        """Experts with equal keys share one skeleton and one compiled decode step."""
        return (self.vocab_size, self.hidden_size, self.intermediate_size, self.num_layers,
                self.num_heads, self.num_kv_heads, self.head_dim, self.qkv_bias, self.o_bias,
                self.mlp_bias, self.tie_word_embeddings, self.sliding_windows, self.rope,
                self.rms_norm_eps, self.quant)

    def quantized(self, module: str) -> bool:
        """Whether the linear layer `module` (Hugging Face name) holds quantized weights."""
        if self.quant is None or (module == "lm_head" and self.tie_word_embeddings):
            return False
        return self.quant.quantizes(module)

    def num_params(self) -> int:
        return sum(_numel(s) for s in expected_shapes(self).values())

    @classmethod
    def from_dir(cls, path: str | Path) -> "ModelConfig":
        file = Path(path) / "config.json"
        if not file.is_file():
            raise CheckpointError(f"{file}: missing; a checkpoint directory needs config.json")
        try:
            raw = json.loads(file.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CheckpointError(f"{file}: not valid JSON ({e})") from None
        return cls.from_dict(raw, source=str(file))

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "config.json") -> "ModelConfig":
        model_type = raw.get("model_type")
        if model_type not in SUPPORTED_MODEL_TYPES:
            archs = raw.get("architectures")
            raise UnsupportedModelError(
                f"{source}: model_type {model_type!r} (architectures {archs}) is not supported; "
                f"coeflow runs {', '.join(SUPPORTED_MODEL_TYPES)}")
        act = raw.get("hidden_act", "silu")
        if act != "silu":
            raise UnsupportedModelError(f"{source}: hidden_act {act!r} is not supported (only 'silu')")
        if raw.get("pretraining_tp", 1) not in (1, None):
            raise UnsupportedModelError(f"{source}: pretraining_tp={raw['pretraining_tp']} is not supported")

        def need(key: str) -> Any:
            if key not in raw:
                raise CheckpointError(f"{source}: required field {key!r} is missing")
            return raw[key]

        hidden = int(need("hidden_size"))
        heads = int(need("num_attention_heads"))
        kv_heads = int(raw.get("num_key_value_heads") or heads)
        if heads % kv_heads:
            raise CheckpointError(f"{source}: num_attention_heads={heads} is not a multiple of "
                                  f"num_key_value_heads={kv_heads}")
        head_dim = int(raw.get("head_dim") or hidden // heads)
        layers = int(need("num_hidden_layers"))
        return cls(
            model_type=model_type,
            vocab_size=int(need("vocab_size")),
            hidden_size=hidden,
            intermediate_size=int(need("intermediate_size")),
            num_layers=layers,
            num_heads=heads,
            num_kv_heads=kv_heads,
            head_dim=head_dim,
            max_position_embeddings=int(raw.get("max_position_embeddings", 2048)),
            rms_norm_eps=float(raw.get("rms_norm_eps", 1e-6)),
            rope=_rope(raw, source),
            tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
            qkv_bias=model_type == "qwen2" or bool(raw.get("attention_bias", False)),
            o_bias=model_type != "qwen2" and bool(raw.get("attention_bias", False)),
            mlp_bias=bool(raw.get("mlp_bias", False)),
            sliding_windows=_sliding_windows(raw, model_type, layers, source),
            quant=QuantScheme.from_config(raw.get("quantization_config"), source),
        )


def _rope(raw: dict[str, Any], source: str) -> RopeConfig:
    # transformers 5 writes `rope_parameters` (theta inside); older files write rope_theta + rope_scaling.
    params = dict(raw.get("rope_parameters") or raw.get("rope_scaling") or {})
    theta = float(params.get("rope_theta", raw.get("rope_theta", 10000.0)))
    kind = params.get("rope_type", params.get("type", "default"))
    if kind not in SUPPORTED_ROPE_TYPES:
        raise UnsupportedModelError(f"{source}: rope scaling type {kind!r} is not supported "
                                    f"(supported: {', '.join(SUPPORTED_ROPE_TYPES)})")
    return RopeConfig(
        theta=theta, type=kind,
        factor=float(params.get("factor", 1.0)),
        low_freq_factor=float(params.get("low_freq_factor", 1.0)),
        high_freq_factor=float(params.get("high_freq_factor", 4.0)),
        original_max_position_embeddings=int(params.get("original_max_position_embeddings", 8192)),
    )


def _sliding_windows(raw: dict[str, Any], model_type: str, layers: int,
                     source: str) -> tuple[int | None, ...]:
    window = raw.get("sliding_window")
    types = raw.get("layer_types")
    if types is not None:
        if len(types) != layers:
            raise CheckpointError(f"{source}: layer_types has {len(types)} entries for {layers} layers")
        unknown = set(types) - {"full_attention", "sliding_attention"}
        if unknown:
            raise UnsupportedModelError(f"{source}: layer_types {sorted(unknown)} not supported")
        return tuple(int(window) if t == "sliding_attention" and window else None for t in types)
    if model_type == "mistral" and window:
        return (int(window),) * layers
    if model_type == "qwen2" and raw.get("use_sliding_window") and window:
        first = int(raw.get("max_window_layers", layers))
        return tuple(int(window) if i >= first else None for i in range(layers))
    return (None,) * layers


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


# Where the weight pools (checkpoint.pooled_views, the store's blocks) start each tensor, so
# that its views are aligned for any dtype; a weight group's later members (weight_groups) lie
# right after the one before instead.
CACHE_LINE = 64


def expected_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor a checkpoint must hold, by its Hugging Face name. Our modules use the same
    names, so a checkpoint loads with no renaming and the store can hand tensors over as-is."""
    d, hd = cfg.hidden_size, cfg.head_dim
    q, kv, ff = cfg.num_heads * hd, cfg.num_kv_heads * hd, cfg.intermediate_size
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (cfg.vocab_size, d)}
    for i in range(cfg.num_layers):
        p = f"model.layers.{i}."
        shapes[p + "input_layernorm.weight"] = (d,)
        shapes[p + "post_attention_layernorm.weight"] = (d,)
        # weights of a group (q, k, v; gate, up) next to each other, then their biases: in
        # this order a pool lays them out as one matrix (coeflow.engine.layers.cuda.adjacent_view)
        for name, out in (("q_proj", q), ("k_proj", kv), ("v_proj", kv)):
            shapes[p + f"self_attn.{name}.weight"] = (out, d)
        if cfg.qkv_bias:
            for name, out in (("q_proj", q), ("k_proj", kv), ("v_proj", kv)):
                shapes[p + f"self_attn.{name}.bias"] = (out,)
        shapes[p + "self_attn.o_proj.weight"] = (d, q)
        if cfg.o_bias:
            shapes[p + "self_attn.o_proj.bias"] = (d,)
        for name, (o, i_) in (("gate_proj", (ff, d)), ("up_proj", (ff, d)), ("down_proj", (d, ff))):
            shapes[p + f"mlp.{name}.weight"] = (o, i_)
        if cfg.mlp_bias:
            for name, o in (("gate_proj", ff), ("up_proj", ff), ("down_proj", d)):
                shapes[p + f"mlp.{name}.bias"] = (o,)
    shapes["model.norm.weight"] = (d,)
    if not cfg.tie_word_embeddings:
        shapes["lm_head.weight"] = (cfg.vocab_size, d)
    if cfg.quant is None:
        return shapes
    out: dict[str, tuple[int, ...]] = {}
    for name, shape in shapes.items():  # a quantized layer's weight becomes its packed tensors
        module = name.removesuffix(".weight")
        if len(shape) == 2 and name != "model.embed_tokens.weight" and cfg.quantized(module):
            why = cfg.quant.check_layer(module, *shape)
            if why:
                raise UnsupportedModelError(f"quantized layer {why}")
            out.update({f"{module}.{k}": v for k, v in cfg.quant.shapes(*shape).items()})
        else:
            out[name] = shape
    return out


def dense_dtype(name: str) -> bool:
    """Whether a checkpoint tensor holds floating-point values (a quantized layer's packed
    weights and a delta's packed values are int32)."""
    return not name.endswith((".weight_packed", ".delta_packed"))


def weight_groups(cfg: ModelConfig) -> list[list[str]]:
    """Tensors that products read as one matrix when they lie back to back (q/k/v and gate/up
    weights, and their biases; coeflow.engine.layers.cuda.join_groups), in the order they are
    joined."""
    groups = []
    for i in range(cfg.num_layers):
        p = f"model.layers.{i}."
        for block, names, bias in (("self_attn", ("q_proj", "k_proj", "v_proj"), cfg.qkv_bias),
                                   ("mlp", ("gate_proj", "up_proj"), cfg.mlp_bias)):
            if any(cfg.quantized(f"{p}{block}.{n}") for n in names):
                continue  # read one layer at a time (engine.layers)
            for kind in ("weight", "bias") if bias else ("weight",):
                groups.append([f"{p}{block}.{n}.{kind}" for n in names])
    return groups
