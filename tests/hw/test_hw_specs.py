"""Hardware specs are data a user can read, trust and extend."""

import re
import shutil

import pytest

from coeflow.errors import ConfigError
from coeflow.hw import list_hardware, load_hardware, load_stack
from coeflow.hw import spec as spec_module
from coeflow.hw.spec import SPEC_DIR
from coeflow.hw.units import parse_quantity

SPEC_FILES = sorted(SPEC_DIR.rglob("*.yaml"))


def test_the_paper_systems_and_gpus_ship():
    for name in ("sn40l", "sn40l-8", "sn40l-16", "dgx-a100", "dgx-h100", "a100", "h100", "h200"):
        assert name in list_hardware()
        assert load_hardware(name).count >= 1


def test_sn40l_socket_matches_table_ii():
    d = load_hardware("sn40l-8").device
    assert d.peak_flops == 638e12
    assert d.onchip_bytes == 520 * 2**20
    assert d.hbm.capacity == 64 * 2**30 and d.hbm.bandwidth == 1.8e12
    assert d.ddr.capacity == 1.5 * 2**40 and d.ddr.bandwidth == 200e9
    assert d.units == 1040 and d.onchip_units == 1040
    assert 0 < d.pcu_clock_hz < 2e9  # paper: "under 2 GHz"


@pytest.mark.parametrize("path", SPEC_FILES, ids=lambda p: p.name)
def test_every_number_in_a_spec_file_has_a_source_comment(path):
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if line.lstrip().startswith("#"):
            continue
        value = line.split("#", 1)[0]
        if re.search(r":\s*[-+]?\d", value):
            assert "#" in line, f"{path.name}:{lineno} has a number without a source: {line!r}"


def test_units_parse_as_on_datasheets():
    assert parse_quantity("1.8 TB/s", "B/s") == 1.8e12
    assert parse_quantity("64 GiB", "B") == 64 * 2**30
    assert parse_quantity("5 us", "s") == pytest.approx(5e-6)
    assert parse_quantity("638 TFLOP/s", "FLOP/s") == 638e12
    with pytest.raises(ConfigError):
        parse_quantity("64 GiB/s", "B")


def test_unknown_hardware_is_a_clear_error():
    with pytest.raises(ConfigError, match="unknown hardware 'tpu-v9'.*dgx-h100"):
        load_hardware("tpu-v9")


def test_hardware_loads_from_a_user_file(tmp_path):
    spec = tmp_path / "my-dgx.yaml"
    text = (SPEC_DIR / "dgx-h100.yaml").read_text().replace("name: dgx-h100", "name: my-dgx")
    spec.write_text(text.replace("devices: 8 ", "devices: 4 "))
    hw = load_hardware(str(spec))
    assert hw.name == "my-dgx" and hw.count == 4


def test_a_malformed_spec_names_the_file_and_field(tmp_path):
    spec = tmp_path / "bad.yaml"
    shutil.copy(SPEC_DIR / "dgx-a100.yaml", spec)
    spec.write_text(spec.read_text().replace("memory: 2 TiB", "memory: two terabytes"))
    with pytest.raises(ConfigError, match="bad.yaml.*host.memory"):
        load_hardware(str(spec))


def test_an_unknown_key_in_a_system_file_is_refused_naming_it(tmp_path):
    spec = tmp_path / "typo.yaml"
    spec.write_text((SPEC_DIR / "dgx-h100.yaml").read_text().replace("  latency:", "  latncy:"))
    with pytest.raises(ConfigError) as e:
        load_hardware(str(spec))
    assert f"{spec}: unknown field 'interconnect.latncy' (allowed: bandwidth, latency)" in str(e.value)


def test_an_unknown_key_in_a_device_file_is_refused_naming_it(tmp_path, monkeypatch):
    specs = tmp_path / "specs"
    shutil.copytree(SPEC_DIR, specs)
    device = specs / "devices" / "h100-sxm5-80gb.yaml"
    device.write_text(device.read_text().replace("  hbm:\n", "  hbm:\n    speed: 3 TB/s  # misspelt bandwidth\n"))
    monkeypatch.setattr(spec_module, "SPEC_DIR", specs)
    with pytest.raises(ConfigError) as e:
        load_hardware(str(specs / "h100.yaml"))
    assert f"{device}: unknown field 'memory.hbm.speed'" in str(e.value)


@pytest.mark.parametrize("count", ["8.5", "'2.9'", "true"])
def test_a_count_must_be_a_whole_number(tmp_path, count):
    spec = tmp_path / "counts.yaml"
    spec.write_text((SPEC_DIR / "dgx-h100.yaml").read_text().replace("devices: 8", f"devices: {count}"))
    with pytest.raises(ConfigError, match=r"devices"):
        load_hardware(str(spec))


def test_a_probed_spec_with_an_unknown_or_mistyped_key_is_refused_naming_it(tmp_path):
    """A spec `coeflow hw probe` wrote is read with the same checks as the shipped ones."""
    import yaml

    from coeflow.hw.probed import load_probed
    spec = {"name": "local-cpu", "description": "x", "devices": 1,
            "host": {"memory": "16 GiB", "reserve": "2 GiB"}, "default_stack": "local-eager",
            "device": {"name": "local-cpu", "kind": "gpu",
                       "compute": {"peak_bf16": "100 GFLOP/s", "units": 2, "gemm_efficiency": 1.0},
                       "onchip": {"capacity": "32 MiB"},
                       "memory": {"hbm": {"capacity": "16 GiB", "bandwidth": "20 GB/s", "efficiency": 1.0}}},
            "stacks": {"local-eager": {"kind": "gpu", "description": "eager", "kernel_overhead": "10 us",
                                       "invocation_overhead": "1 ms", "step_overhead": "50 us"}},
            "probe": {"date": "2026-12-07", "machine": "m", "torch_threads": 2, "disk_read_bandwidth": "2 GB/s",
                      "disk_read_latency": "100 us", "device_is_host": True, "bytes_per_param": 4,
                      "engine_fits": {}}}
    path = tmp_path / "local-cpu.yaml"
    path.write_text(yaml.safe_dump(spec))
    m = load_probed(str(path))
    assert m.hw.device.hbm.bandwidth == 20e9 * 2 / 4 and m.stack.kernel_overhead_s == pytest.approx(10e-6)
    assert m.device_is_host and m.bytes_per_param == 4
    spec["stacks"]["local-eager"]["fuse_attention"] = "no"
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(ConfigError, match=r"stacks\.local-eager\.fuse_attention"):
        load_probed(str(path))
    del spec["stacks"]["local-eager"]["fuse_attention"]
    spec["probe"]["disk_speed"] = "3 GB/s"
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(ConfigError, match=r"unknown field 'probe\.disk_speed'"):
        load_probed(str(path))


def test_a_stack_for_the_wrong_kind_of_hardware_is_refused():
    with pytest.raises(ConfigError, match="for rdu hardware"):
        load_stack("rdu-fused-ho", "gpu")
