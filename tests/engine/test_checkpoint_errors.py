"""A bad checkpoint fails at load with an error that names the file or tensor at fault."""

from __future__ import annotations

import json
import shutil

import pytest

from coeflow.errors import CheckpointError, UnsupportedModelError
from coeflow.engine import Engine
from coeflow.model import load_model
from checkpoints import make_checkpoint


@pytest.fixture
def ckpt(tmp_path):
    return make_checkpoint(tmp_path / "m", "llama-gqa")


def test_missing_directory(tmp_path):
    with pytest.raises(CheckpointError, match="config.json"):
        load_model(tmp_path / "nowhere")


def test_missing_weights_file(ckpt):
    (ckpt / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        load_model(ckpt)


def test_truncated_safetensors_names_file_and_tensor(ckpt):
    f = ckpt / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) - 1000])
    with pytest.raises(CheckpointError, match=r"model\.safetensors.*truncated.*tensor '"):
        load_model(ckpt)


def test_garbage_header(ckpt):
    (ckpt / "model.safetensors").write_bytes(b"\xff" * 64)
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_model(ckpt)


def test_config_contradicting_weight_shapes_names_tensor(ckpt):
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["intermediate_size"] = 96
    (ckpt / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"model\.layers\.0\.mlp\.\w+_proj\.weight.*has shape.*config.json implies.*96"):
        load_model(ckpt)


def test_fewer_layers_in_weights_than_config(ckpt):
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["num_hidden_layers"] = 3
    (ckpt / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"model\.layers\.2\..* missing"):
        load_model(ckpt)


@pytest.mark.parametrize("field,value,needle", [
    ("model_type", "gpt2", "gpt2"),
    ("hidden_act", "gelu", "hidden_act"),
    ("rope_parameters", {"rope_type": "yarn", "rope_theta": 1e4, "factor": 2.0}, "yarn"),
])
def test_unsupported_fields_are_named(ckpt, field, value, needle):
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg[field] = value
    (ckpt / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UnsupportedModelError, match=needle):
        load_model(ckpt)


def test_sharded_checkpoint_loads_and_missing_shard_is_named(tmp_path):
    from transformers import AutoModelForCausalLM
    src = make_checkpoint(tmp_path / "one", "llama-gqa")
    sharded = tmp_path / "sharded"
    AutoModelForCausalLM.from_pretrained(src).save_pretrained(sharded, max_shard_size="100KB")
    shards = sorted(sharded.glob("model-*-of-*.safetensors"))
    assert len(shards) > 1 and (sharded / "model.safetensors.index.json").exists()
    shutil.copy(src / "tokenizer.json", sharded)
    prompt = [[1, 2, 3, 4]]
    from coeflow.engine import SamplingParams
    params = SamplingParams(max_tokens=8, ignore_eos=True)
    assert (Engine.from_checkpoint(sharded, fused=False).generate(prompt, params)[0].token_ids
            == Engine.from_checkpoint(src, fused=False).generate(prompt, params)[0].token_ids)
    shards[-1].unlink()
    with pytest.raises(CheckpointError, match=shards[-1].name):
        load_model(sharded)
