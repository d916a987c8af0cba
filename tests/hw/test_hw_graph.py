"""Operator graphs count what a decoder computes and moves, per device."""

import json

import pytest

from coeflow.errors import ConfigError
from coeflow.hw import decoder_graph, list_models, load_shape
from coeflow.hw.shapes import MODELS_DIR

# published parameter counts (model cards)
PUBLISHED_PARAMS = {"llama2-7b": 6.74e9, "llama2-13b": 13.0e9, "llama2-70b": 69.0e9,
                    "llama3-8b": 8.03e9, "llama3-70b": 70.6e9, "llama3-405b": 405.9e9,
                    "mistral-7b": 7.24e9, "qwen2-7b": 7.62e9, "falcon-40b": 41.8e9,
                    "bloom-176b": 176.2e9}


@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAMS))
def test_shipped_configs_have_their_published_size(name):
    assert load_shape(name).num_params() == pytest.approx(PUBLISHED_PARAMS[name], rel=0.01)


def test_every_shipped_config_builds_graphs():
    for name in list_models():
        shape = load_shape(name)
        assert decoder_graph(shape, "decode", 2, 1, 100, 1).total("flops") > 0


def test_decode_reads_every_weight_once():
    s = load_shape("llama2-7b")
    g = decoder_graph(s, "decode", 1, 1, 127, 1)
    embedding_table = s.vocab * s.hidden * 2  # a decode step gathers one row, not the table
    assert g.total("weight_bytes") == pytest.approx(s.weight_bytes() - embedding_table, rel=0.01)


def test_prefill_flops_are_two_per_parameter_per_token_plus_attention():
    s = load_shape("llama2-7b")
    g = decoder_graph(s, "prefill", 1, 128, 0, 1)
    dense = 2 * (s.num_params() - 2 * s.vocab * s.hidden) * 128
    assert dense < g.total("flops") < 1.05 * dense


def test_tensor_parallelism_shards_weights_and_adds_all_reduces():
    s = load_shape("llama2-70b")
    g1, g8 = (decoder_graph(s, "decode", 1, 1, 100, tp) for tp in (1, 8))
    assert g8.total("weight_bytes") == pytest.approx(g1.total("weight_bytes") / 8, rel=0.01)
    reduces = [op for op in g8.layer_ops if op.kind == "collective"]
    assert len(reduces) == 2 and not [op for op in g1.layer_ops if op.kind == "collective"]


def test_parallel_attention_needs_one_all_reduce_per_layer():
    g = decoder_graph(load_shape("falcon-40b"), "decode", 1, 1, 100, 8)
    assert sum(op.kind == "collective" for op in g.layer_ops) == 1


def test_sliding_window_caps_the_keys_read():
    s = load_shape("mistral-7b")  # window 4096
    near, far = (decoder_graph(s, "decode", 1, 1, ctx, 1) for ctx in (4095, 20000))
    assert far.total("kv_read_bytes") == near.total("kv_read_bytes")


def test_grouped_kv_heads_cost_unfused_attention_extra_copies():
    att = lambda name: next(op for op in decoder_graph(  # noqa: E731
        load_shape(name), "decode", 1, 1, 4000, 1).layer_ops if op.kind == "attention")
    assert att("mistral-7b").eager_bytes > 4 * att("mistral-7b").kv_read_bytes  # repeat_kv
    assert att("llama2-7b").eager_bytes < att("llama2-7b").kv_read_bytes  # no copies for MHA


def test_config_json_by_path_and_refusals(tmp_path):
    raw = json.loads((MODELS_DIR / "llama2-7b.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(raw))
    assert load_shape(str(tmp_path)).num_params() == load_shape("llama2-7b").num_params()
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps({**raw, "model_type": "mamba"}))
    with pytest.raises(ConfigError, match="mamba"):
        load_shape(str(bad))
    with pytest.raises(ConfigError, match="unknown model"):
        load_shape("no-such-model")
    with pytest.raises(ConfigError, match="tensor parallel degree 3"):
        decoder_graph(load_shape("llama2-7b"), "decode", 1, 1, 1, 3)


def test_verification_asks_the_lm_head_for_every_position():
    # speculative verification of k = 4 drafts needs logits at all 5 positions
    s = load_shape("llama3-70b")
    one, five = (decoder_graph(s, "prefill", 1, 5, 1000, 16, logits=n) for n in (1, 5))
    head = lambda g: next(op for op in g.head_ops if op.name == "lm_head")  # noqa: E731
    assert head(five).flops == 5 * head(one).flops
    assert head(five).weight_bytes == head(one).weight_bytes  # the weights stream once
    with pytest.raises(ConfigError):
        decoder_graph(s, "decode", 1, 1, 1000, 16, logits=2)


def test_quantized_products_read_their_packed_bytes_and_nothing_else_changes():
    """int4 in groups of 128: 4 bits a weight plus a bf16 scale a group, in the layers'
    products only; embeddings, norms and the head stay bf16; the FLOPs are the dense ones."""
    s = load_shape("llama2-7b")
    q = s.quantized(4, 128)
    products = s.layers * (4 * 4096 * 4096 + 3 * 4096 * 11008)  # q, k, v, o; gate, up, down
    dense = decoder_graph(s, "decode", 1, 1, 127, 1)
    packed = decoder_graph(q, "decode", 1, 1, 127, 1)
    assert dense.total("weight_bytes") - packed.total("weight_bytes") == pytest.approx(
        products * (2 - (4 + 16 / 128) / 8), rel=1e-6)
    assert packed.total("flops") == dense.total("flops")
    assert s.weight_bytes() - q.weight_bytes() == pytest.approx(products * (2 - 4.125 / 8), rel=1e-6)


def test_a_quantized_config_json_is_counted_as_quantized_and_other_schemes_refused(tmp_path):
    raw = json.loads((MODELS_DIR / "llama2-7b.json").read_text())
    weights = {"num_bits": 8, "type": "int", "symmetric": True, "strategy": "channel"}
    raw["quantization_config"] = {"quant_method": "compressed-tensors", "format": "pack-quantized",
                                  "config_groups": {"g": {"targets": ["Linear"], "weights": weights}}}
    (tmp_path / "config.json").write_text(json.dumps(raw))
    assert load_shape(str(tmp_path)).weight_bits == pytest.approx(8 + 16 / 4096)
    raw["quantization_config"]["quant_method"] = "awq"
    (tmp_path / "q2").mkdir()
    (tmp_path / "q2" / "config.json").write_text(json.dumps(raw))
    with pytest.raises(ConfigError, match="quant_method 'awq'"):
        load_shape(str(tmp_path / "q2"))
