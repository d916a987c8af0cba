"""`coeflow simulate` and `coeflow hw` as a user drives them."""

import json

import pytest

from coeflow.cli import main
from coeflow.sim.calibration import calibrate, shipped


def _run(capsys, *argv):
    rc = main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_simulate_model_json_has_the_latency_fields(capsys):
    rc, out, _ = _run(capsys, "simulate", "model", "--hw", "dgx-h100", "--model", "llama2-7b",
                      "--batch", "2", "--prompt", "256", "--gen", "20", "--tp", "4", "--json")
    d = json.loads(out)
    assert rc == 0 and d["tp"] == 4 and d["batch"] == 2
    assert d["total_s"] == pytest.approx(d["ttft_s"] + 19 * d["tpot_s"])
    assert d["decode_step"]["launches"] > 0 and "hbm" in d["decode_step"]["bytes_by_tier"]


def test_simulate_model_with_quantized_weights_reads_fewer_bytes_a_step(capsys):
    steps = {}
    for weights in ([], ["--weights", "int8"], ["--weights", "int4"]):
        rc, out, _ = _run(capsys, "simulate", "model", "--hw", "h100", "--model", "llama2-7b", "--batch", "1",
                          "--json", *weights)
        assert rc == 0
        steps[tuple(weights)] = json.loads(out)["decode_step"]
    hbm = {k: v["bytes_by_tier"]["hbm"] for k, v in steps.items()}
    assert hbm[()] > 1.9 * hbm[("--weights", "int8")] > 3.5 * hbm[("--weights", "int4")]
    assert steps[()]["time_s"] > steps[("--weights", "int8")]["time_s"] > steps[("--weights", "int4")]["time_s"]
    rc, out, _ = _run(capsys, "simulate", "model", "--hw", "h100", "--model", "llama2-7b", "--batch", "1", "--json",
                      "--weights", "int4", "--group-size", "32")
    g32 = json.loads(out)["decode_step"]["bytes_by_tier"]["hbm"]
    assert rc == 0 and g32 > hbm[("--weights", "int4")]  # four times the scales of groups of 128
    rc, _, err = _run(capsys, "simulate", "model", "--hw", "h100", "--model", "llama2-7b", "--group-size", "32")
    assert rc == 2 and "--group-size applies with --weights" in err


def test_simulate_model_text_shows_the_breakdown(capsys):
    rc, out, _ = _run(capsys, "simulate", "model", "--hw", "sn40l-8", "--model", "mistral-7b")
    assert rc == 0
    for word in ("TTFT", "TPOT", "launches", "fused_layer", "bytes per device", "hbm"):
        assert word in out


def test_unknown_names_are_errors_without_traceback(capsys):
    rc, _, err = _run(capsys, "simulate", "model", "--hw", "tpu", "--model", "llama2-7b")
    assert rc == 2 and "unknown hardware 'tpu'" in err and "Traceback" not in err
    rc, _, err = _run(capsys, "simulate", "model", "--hw", "a100", "--model", "/no/config.json")
    assert rc == 2 and "unknown model" in err


def test_simulate_paper_json_rows_and_plots(capsys, tmp_path):
    rc, out, _ = _run(capsys, "simulate", "paper", "--json", "--plots", str(tmp_path))
    d = json.loads(out)
    assert rc == 0
    for row in d["rows"]:
        assert {"name", "predicted", "reference", "error_pct"} <= set(row)
    table_v = [r for r in d["rows"] if r["group"] == "Table V" and r["tolerance_pct"]]
    assert len(table_v) == 14  # twelve speedups and two switching ratios
    pngs = sorted(tmp_path.glob("*.png"))
    assert len(pngs) == 3 and all(p.read_bytes()[:4] == b"\x89PNG" for p in pngs)


def test_hw_list_and_show(capsys):
    rc, out, _ = _run(capsys, "hw", "list")
    assert rc == 0 and "sn40l-8" in out and "rdu-fused-ho" in out
    rc, out, _ = _run(capsys, "hw", "show", "sn40l-8", "--json")
    assert rc == 0 and json.loads(out)["device"]["peak_flops"] == 638e12


def test_shipped_calibration_reproduces_the_fit():
    """If a spec number changes, the calibrated overheads must be refitted (and documented)."""
    fitted, now = calibrate(), shipped()
    for key, value in fitted.items():
        assert now[key] == pytest.approx(value, rel=0.03), key
