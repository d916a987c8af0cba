"""PNG plots: the paper reproduction (`coeflow simulate paper --plots DIR`) and one trace on
several machines (`coeflow simulate compare --plot FILE`)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from coeflow.sim.coe import CoEWorkload, Deployment  # noqa: E402
from coeflow.sim.paper import fusion_ratios, table_v_rows  # noqa: E402

SYSTEMS = (("SN40L node (8 sockets)", "sn40l-8", "tab:red"),
           ("DGX A100", "dgx-a100", "tab:blue"), ("DGX H100", "dgx-h100", "tab:green"))


def latency_vs_experts(path: Path, w: CoEWorkload = CoEWorkload()) -> None:
    """Mean CoE request latency against the number of experts (the paper's Figure 12 shape):
    flat while every expert fits in HBM, then switches over PCIe (DGX) or DDR (SN40L), and
    an end where the expert store is out of memory."""
    fig, ax = plt.subplots(figsize=(8, 5))
    ns = sorted({*range(1, 60), *range(60, 1001, 5)})
    knees: dict[int, list[str]] = {}
    for label, hw, color in SYSTEMS:
        d = Deployment.of(hw)
        pts = [(n, lat.total_s) for n in ns if (lat := d.expected_latency(n, w)) is not None]
        xs, ys = zip(*pts)
        ax.plot(xs, ys, color=color, label=label, lw=2)
        cap = d.store_capacity()
        if cap < ns[-1]:
            ax.plot([xs[-1]], [ys[-1]], "x", color=color, ms=12, mew=3)
            ax.annotate(f"out of memory\nabove {cap} experts", (xs[-1], ys[-1]),
                        textcoords="offset points", xytext=(8, -4), color=color, fontsize=9)
        knees.setdefault(d.hbm_expert_slots(), []).append(label.split(" (")[0])
    xaxis = ax.get_xaxis_transform()  # x in data, y in axes fraction
    for i, (slots, labels) in enumerate(sorted(knees.items())):
        ax.axvline(slots, color="black", ls=":", lw=1)
        ax.text(slots * 0.93, 0.03 + 0.35 * i, f"{' & '.join(labels)}: {slots} experts fit in HBM",
                rotation=90, fontsize=8, transform=xaxis, ha="right", va="bottom")
    ax.axvline(150, color="grey", ls="--", lw=1)
    ax.text(150 * 0.93, 0.03, "Samba-CoE: 150 experts", rotation=90, fontsize=8, color="grey",
            transform=xaxis, ha="right", va="bottom")
    ax.set_xscale("log")
    ax.set_ylim(bottom=0)
    ax.set_xlabel("number of experts (Llama-2-7B each, uniform routing, HBM as LRU cache)")
    ax.set_ylabel("mean latency per request (s)")
    ax.set_title(f"CoE request latency: router + switch + expert "
                 f"(batch {w.batch}, {w.prompt} in / {w.gen} out, TP8)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def table_v_bars(path: Path) -> None:
    rows = table_v_rows()
    rows = [r for r in rows if "out of memory" not in r.name]
    fig, ax = plt.subplots(figsize=(10, 6))
    ys = range(len(rows))
    ax.barh([y + 0.2 for y in ys], [r.reference for r in rows], 0.4, label="paper", color="grey")
    ax.barh([y - 0.2 for y in ys], [r.predicted for r in rows], 0.4, label="coeflow model",
            color="tab:red")
    for y, r in zip(ys, rows):
        ax.annotate(f"{r.error_pct:+.0f}%" + (" (cal)" if r.calibration else ""),
                    (max(r.predicted, r.reference), y), textcoords="offset points",
                    xytext=(4, -4), fontsize=8)
    ax.set_yticks(list(ys), [r.name.replace(": SN40L vs", "\nvs") for r in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("SN40L node speedup over DGX (log scale)")
    ax.set_title("Table V: SN40L node vs DGX, paper vs model")
    ax.legend(loc="lower right")
    ax.grid(True, axis="x", which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def fusion_bars(path: Path) -> None:
    r = fusion_ratios()
    names = [x["benchmark"] for x in r]
    panels = (("prefill_fused_speedup", "prefill: fused / unfused", (1.5, 3.0)),
              ("decode_fused_speedup", "decode: fused / unfused", (1.0, 13.0)),
              ("decode_ho_speedup", "decode: HO / SO, on top of fusion", (1.4, 8.0)))
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.2))
    for ax, (key, title, (lo, hi)) in zip(axes, panels):
        ax.axhspan(lo, hi, color="grey", alpha=0.2, label=f"paper's range {lo:g}-{hi:g}x")
        ax.bar(range(len(r)), [x[key] for x in r], color="tab:red", label="coeflow model")
        ax.set_xticks(range(len(r)), names, rotation=40, ha="right", fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.set_ylim(0, max(hi, max(x[key] for x in r)) * 1.1)
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize=7, loc="upper right")
    axes[0].set_ylabel("speedup")
    fig.suptitle("SN40L node (8 sockets, TP8): fusion and hardware orchestration, decode at batch 1")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_plots(directory: str) -> list[str]:
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "coe_latency_vs_experts.png", out / "table_v.png", out / "fusion.png"]
    latency_vs_experts(paths[0])
    table_v_bars(paths[1])
    fusion_bars(paths[2])
    return [str(p) for p in paths]


def compare_plot(summaries: dict[str, dict], path: str | Path, title: str = "") -> Path:
    """Three panels: TTFT and latency percentiles (log scale, they span orders of magnitude
    between machines), throughput, and where the time went (utilisation)."""
    names = list(summaries)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.8))
    ax = axes[0]
    keys = [("ttft_p50_s", "TTFT p50"), ("ttft_p99_s", "TTFT p99"),
            ("latency_p50_s", "latency p50"), ("latency_p99_s", "latency p99")]
    width = 0.8 / len(names)
    for i, n in enumerate(names):
        vals = [summaries[n][k] * 1e3 for k, _ in keys]
        bars = ax.bar([j + i * width for j in range(len(keys))], vals, width, label=n)
        ax.bar_label(bars, fmt="%.3g", fontsize=7)
    ax.set_xticks([j + width * (len(names) - 1) / 2 for j in range(len(keys))], [label for _, label in keys])
    ax.set_yscale("log")
    lo, hi = ax.get_ylim()
    ax.set_ylim(lo, hi * 10)  # headroom for the legend above the tallest bar
    ax.set_ylabel("milliseconds (log)")
    ax.set_title("per-request times")
    ax.legend(fontsize=8, loc="upper left", ncol=len(names))
    ax = axes[1]
    bars = ax.bar(names, [summaries[n]["throughput_rps"] for n in names], color=[f"C{i}" for i in range(len(names))])
    ax.bar_label(bars, fmt="%.3g", fontsize=8)
    ax.set_ylabel("requests / s")
    ax.set_title("throughput over the trace")
    ax = axes[2]
    ukeys = ["compute", "link host->device", "device memory bandwidth", "device tier occupancy"]
    for i, n in enumerate(names):
        vals = [100 * summaries[n]["utilisation"].get(k, 0.0) for k in ukeys]
        ax.bar([j + i * width for j in range(len(ukeys))], vals, width, label=n)
    ax.set_xticks([j + width * (len(names) - 1) / 2 for j in range(len(ukeys))],
                  ["compute busy", "copy link busy", "memory bandwidth", "device tier full"], fontsize=8)
    ax.set_ylabel("% of the trace's span")
    ax.set_ylim(0, 105)
    ax.set_title("utilisation")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
