"""How much the results move when an open parameter moves (docs/hardware-model.md).

Each sweep changes one parameter the paper leaves open (or one we assumed), keeps everything
else as shipped, and reports the largest |error| over the affected rows. No refit: the
calibrated overheads stay as they are, so this shows the raw dependence.
Run: python -m coeflow.sim.sensitivity"""

from __future__ import annotations

from dataclasses import replace

from coeflow.hw.spec import load_hardware
from coeflow.sim.coe import Deployment
from coeflow.sim.paper import DGX, SN40L_16, SN40L_NODE, fusion_ratios, table_iv_rows, table_v_rows
from coeflow.sim.speculative import Speculation


def _sn(**hw_changes) -> Deployment:
    d = Deployment.of(SN40L_NODE)
    return replace(d, hw=replace(d.hw, **hw_changes))


def _dev(hw, **device_changes):
    return replace(hw, device=replace(hw.device, **device_changes))


def _max_err(rows) -> tuple[float, float]:
    sp = [abs(r.error_pct) for r in rows if r.tolerance_pct == 20.0]
    sw = [abs(r.error_pct) for r in rows if r.tolerance_pct == 15.0]
    return max(sp), max(sw)


def sweeps() -> list[tuple[str, str, str]]:
    """(parameter, value, effect) lines."""
    out = []
    for prompt in (32, 128, 512, 2048):
        sp, sw = _max_err(table_v_rows(workload_prompt=prompt))
        out.append(("CoE prompt tokens", str(prompt), f"Table V max |err| speedups {sp:.1f}%, switching {sw:.1f}%"))
    base = load_hardware(SN40L_NODE)
    for bw in (25e9, 50e9, 100e9, 400e9):
        sp, _ = _max_err(table_v_rows(sn=_sn(interconnect_bandwidth=bw)))
        fr = fusion_ratios(hw=replace(base, interconnect_bandwidth=bw))
        pf = max(x["prefill_fused_speedup"] for x in fr)
        out.append(("SN40L P2P bandwidth", f"{bw / 1e9:.0f} GB/s",
                    f"Table V max |err| {sp:.1f}%; prefill fused/unfused max {pf:.2f}x"))
    for lat in (1e-6, 5e-6, 10e-6, 20e-6):
        sp, _ = _max_err(table_v_rows(sn=_sn(interconnect_latency_s=lat)))
        t4 = table_iv_rows(hw=replace(load_hardware(SN40L_16), interconnect_latency_s=lat))
        out.append(("SN40L P2P latency per collective", f"{lat * 1e6:.0f} us",
                    f"Table V max |err| {sp:.1f}%; Table IV 8B {t4[0].predicted:.0f} tok/s "
                    f"({t4[0].error_pct:+.0f}%)"))
    for eff in (0.5, 0.625, 0.8, 1.0):
        sn = _sn(device=replace(base.device, copy_efficiency=eff))
        rows = table_v_rows(sn=sn)
        sp, sw = _max_err(rows)
        out.append(("SN40L DDR->HBM copy efficiency", f"{eff:g}",
                    f"switching vs A100 {rows[12].predicted:.1f}x (paper 31); Table V speedups max |err| {sp:.1f}%"))
    for bw, eff, why in ((32e9, 1.0, "paper's estimate (shipped)"), (32e9, 0.8, "measured PCIe efficiency"),
                         (128e9, 0.8, "4 PCIe switch uplinks in parallel")):
        dgx = {}
        for label, name in DGX.items():
            d = Deployment.of(name)
            scale = 1 if "A100" in label else 2  # Gen5 doubles Gen4
            dgx[label] = replace(d, hw=replace(d.hw, host_link_bandwidth=bw * scale,
                                               host_link_efficiency=eff))
        rows = table_v_rows(dgx=dgx)
        out.append(("DGX host->GPU copy", f"{bw / 1e9:.0f} GB/s x {eff:g} ({why})",
                    f"switching vs A100 {rows[12].predicted:.1f}x, overall b8/20 vs A100 "
                    f"{rows[0].predicted:.1f}x (paper 31, 6.6)"))
    for so in (20e-6, 100e-6, 300e-6):
        fr = fusion_ratios(hw=_dev(base, so_launch_s=so))
        ho = [x["decode_ho_speedup"] for x in fr]
        fu = [x["decode_fused_speedup"] for x in fr]
        out.append(("SN40L software-orchestrated launch", f"{so * 1e6:.0f} us",
                    f"decode HO/SO {min(ho):.2f}-{max(ho):.2f}x (paper 1.4-8), "
                    f"fused/unfused {min(fu):.1f}-{max(fu):.1f}x (paper 1-13)"))
    for k, a in ((None, 0.7), (None, 0.8), (None, 0.9), (4, 0.8), (4, 0.9)):
        t4 = table_iv_rows(spec_override=Speculation(k=k, acceptance=a))
        ks = "/".join(r.note.split("k=")[1].split(" ")[0] for r in t4[1:])
        out.append(("speculative decoding (draft llama3-8b)",
                    f"acceptance {a}, k {'fastest' if k is None else k}",
                    f"70B {t4[1].predicted:.0f} tok/s ({t4[1].error_pct:+.0f}%), "
                    f"405B {t4[2].predicted:.0f} ({t4[2].error_pct:+.0f}%), k={ks}"))
    for ctx, why in ((250, "AA 100-token workload"), (1500, "AA 1k workload (shipped)"),
                     (8192, "full 8K cache every step")):
        t4 = table_iv_rows(context=ctx)
        out.append(("Table IV mean KV length", f"{ctx} ({why})",
                    ", ".join(f"{r.name.split(' ')[0].removeprefix('llama3-')} "
                              f"{r.predicted:.0f} ({r.error_pct:+.0f}%)" for r in t4)))
    return out


if __name__ == "__main__":
    for p, v, e in sweeps():
        print(f"| {p} | {v} | {e} |")
