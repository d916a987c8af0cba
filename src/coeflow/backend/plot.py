"""The PNG of `coeflow simulate compare`: one trace, several machines."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


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
