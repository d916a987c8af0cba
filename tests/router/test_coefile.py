"""The CoE file: what loads, and that every malformed entry is refused with a message that
names the file, the entry and the field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from coeflow.coefile import load_coe
from coeflow.errors import ConfigError


def _write(tmp_path: Path, doc) -> Path:
    p = tmp_path / "coe.yaml"
    p.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc), encoding="utf-8")
    return p


def _valid() -> dict:
    return {
        "name": "demo",
        "fallback": "general",
        "router": "router/",
        "experts": [
            {"name": "python", "path": "experts/python", "description": "code", "examples": ["sort a list"],
             "pin": True, "priority": 3, "ttl_s": 60},
            {"name": "general", "path": "experts/general"},
        ],
    }


def test_valid_file_loads_with_paths_resolved_next_to_it(tmp_path):
    coe = load_coe(_write(tmp_path, _valid()))
    assert coe.name == "demo" and coe.fallback == "general"
    assert coe.expert_names == ["python", "general"]
    py = coe.expert("python")
    assert py.path == (tmp_path / "experts" / "python").resolve()
    assert (py.pin, py.priority, py.ttl_s, py.examples) == (True, 3, 60.0, ("sort a list",))
    gen = coe.expert("general")
    assert (gen.pin, gen.priority, gen.ttl_s, gen.examples) == (False, 0, None, ())
    assert coe.router_dir == (tmp_path / "router").resolve()


def test_sha256_is_optional_and_read_in_lower_case(tmp_path):
    doc = _valid()
    doc["experts"][0]["sha256"] = "AB" * 32
    coe = load_coe(_write(tmp_path, doc))
    assert coe.expert("python").sha256 == "ab" * 32 and coe.expert("general").sha256 is None


def test_a_directory_means_its_coe_yaml(tmp_path):
    _write(tmp_path, _valid())
    assert load_coe(tmp_path).name == "demo"


@pytest.mark.parametrize(
    "mutate, words",
    [
        (lambda d: d["experts"][0].pop("path"), ["experts[0] (python)", "'path'"]),
        (lambda d: d["experts"][1].pop("name"), ["experts[1]", "'name'"]),
        (lambda d: d.pop("fallback"), ["'fallback'"]),
        (lambda d: d.update(fallback="nobody"), ["'fallback'", "nobody"]),
        (lambda d: d["experts"][1].update(name="python"), ["experts[1] (python)", "earlier"]),
        (lambda d: d["experts"][0].update(name="../evil"), ["experts[0]", "'name'"]),
        (lambda d: d["experts"][0].update(name="a..b"), ["experts[0]", "'name'"]),
        (lambda d: d["experts"][0].update(path="../outside"), ["experts[0] (python)", "'path'", "outside"]),
        (lambda d: d["experts"][0].update(path="/etc"), ["experts[0] (python)", "'path'", "relative"]),
        (lambda d: d.update(router="../../r"), ["'router'", "outside"]),
        (lambda d: d.update(experts=[]), ["'experts'"]),
        (lambda d: d.update(colour="blue"), ["unknown field", "'colour'", "allowed: experts, fallback"]),
        (lambda d: d["experts"][0].update(size=3), ["experts[0] (python)", "unknown field", "'size'", "ttl_s"]),
        (lambda d: d["experts"][0].update(pin="yes"), ["experts[0] (python)", "'pin'"]),
        (lambda d: d["experts"][0].update(priority=1.5), ["experts[0] (python)", "'priority'"]),
        (lambda d: d["experts"][0].update(ttl_s=-1), ["experts[0] (python)", "'ttl_s'"]),
        (lambda d: d["experts"][0].update(examples="one string"), ["experts[0] (python)", "'examples'"]),
        (lambda d: d["experts"].append("python"), ["experts[2]"]),
        (lambda d: d["experts"][0].update(sha256="abc123"), ["experts[0] (python)", "'sha256'", "64 hexadecimal"]),
        (lambda d: d["experts"][0].update(sha256="g" * 64), ["experts[0] (python)", "'sha256'", "64 hexadecimal"]),
        (lambda d: d["experts"][0].update(sha256=12), ["experts[0] (python)", "'sha256'", "a string"]),
        (lambda d: d["experts"][0].update(dtype="int4"), ["experts[0] (python)", "'dtype'", "'auto'", "'bf16'"]),
        (lambda d: d["experts"][0].update(quantize="int2"), ["experts[0] (python)", "'quantize'", "'int4'", "'none'"]),
        (lambda d: d["experts"][0].update(tool_call_format="json"), ["experts[0] (python)", "'tool_call_format'",
                                                                     "'hermes'"]),
    ],
)
def test_malformed_entries_are_refused_with_file_entry_and_field(tmp_path, mutate, words):
    doc = _valid()
    mutate(doc)
    path = _write(tmp_path, doc)
    with pytest.raises(ConfigError) as e:
        load_coe(path)
    msg = str(e.value)
    assert str(path) in msg
    for w in words:
        assert w in msg


def test_every_problem_of_a_file_is_reported_at_once(tmp_path):
    doc = _valid()
    doc["experts"][0].update(colour="red", pin="yes")
    doc["experts"][1].pop("path")
    path = _write(tmp_path, doc)
    with pytest.raises(ConfigError) as e:
        load_coe(path)
    lines = str(e.value).splitlines()
    assert len(lines) == 3 and all(line.startswith(f"{path}: ") for line in lines)
    assert any("experts[0] (python): unknown field 'colour'" in line for line in lines)
    assert any("experts[0] (python): 'pin'" in line for line in lines)
    assert any("experts[1] (general): 'path' is required" in line for line in lines)


def test_invalid_yaml_missing_file_and_non_mapping_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_coe(_write(tmp_path, "name: [unclosed"))
    with pytest.raises(ConfigError, match="mapping"):
        load_coe(_write(tmp_path, "- just\n- a list\n"))
    with pytest.raises(ConfigError, match="not found"):
        load_coe(tmp_path / "nope.yaml")
