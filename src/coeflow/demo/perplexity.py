"""Perplexity of every expert, and of the routed CoE, on held-out text per domain and on
the mixed set. The CoE's claim in miniature: routing each sample to one expert beats any
single expert, the generalist included.

Samples are {"text", "domain"} lines (the demo writes data/heldout_text.jsonl). Experts
run on coeflow's own model code; perplexity is per token, which compares experts only
because the demo's experts share one tokenizer (checked: otherwise an error)."""

from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path
from typing import Any

import torch

from coeflow.coefile import CoEFile
from coeflow.errors import ConfigError
from coeflow.router import Router


def read_samples(path: str | Path) -> list[dict[str, str]]:
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read held-out text: {e}") from None
    out = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}:{i}: not valid JSON: {e.msg}") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("text"), str) or not isinstance(obj.get("domain"), str):
            raise ConfigError(f'{path}:{i}: each line must be {{"text": "...", "domain": "..."}}')
        if obj["text"].strip():
            out.append({"text": obj["text"], "domain": obj["domain"]})
    if not out:
        raise ConfigError(f"{path}: no samples")
    return out


def _sample_nll(model, ids: list[int]) -> tuple[float, int]:
    """Summed negative log-likelihood of tokens 1..T given their prefixes, and T."""
    x = torch.tensor([ids], dtype=torch.long)
    with torch.inference_mode():
        logits = model(x[:, :-1]).float()
        nll = torch.nn.functional.cross_entropy(logits[0], x[0, 1:], reduction="sum")
    return float(nll), len(ids) - 1


def perplexity_report(coe: CoEFile, samples: list[dict[str, str]], router: Router,
                      max_tokens: int = 512) -> dict[str, Any]:
    from coeflow.model import load_model
    from coeflow.model.tokenizer import Tokenizer

    t0 = time.perf_counter()
    experts = coe.expert_names
    digests = {hashlib.sha256((e.path / "tokenizer.json").read_bytes()).hexdigest() for e in coe.experts
               if (e.path / "tokenizer.json").exists()}
    if len(digests) != 1:
        raise ConfigError(f"{coe.source}: the experts do not share one tokenizer.json; per-token perplexities "
                          "would not be comparable")
    tok = Tokenizer.from_dir(coe.experts[0].path)
    ids = [tok.encode(s["text"])[:max_tokens] for s in samples]
    # nll[e][i]: summed NLL of sample i under expert e.
    nll: dict[str, list[float]] = {}
    counts = [len(x) - 1 for x in ids]
    for spec in coe.experts:
        model = load_model(spec.path, dtype=torch.float32, device="cpu")
        nll[spec.name] = [_sample_nll(model, x)[0] for x in ids]
        del model
    decisions = [router.route(s["text"]) for s in samples]
    routed = [d.expert for d in decisions]

    def ppl(idx: list[int], pick) -> float:
        tot = sum(nll[pick(i)][i] for i in idx)
        n = sum(counts[i] for i in idx)
        return math.exp(tot / max(n, 1))

    domains = sorted({s["domain"] for s in samples}, key=lambda d: (experts.index(d) if d in experts else 99, d))
    rows: dict[str, dict[str, Any]] = {}
    groups = {d: [i for i, s in enumerate(samples) if s["domain"] == d] for d in domains}
    groups["mixed"] = list(range(len(samples)))
    for name, idx in groups.items():
        row: dict[str, Any] = {e: ppl(idx, lambda i, e=e: e) for e in experts}
        row["routed"] = ppl(idx, lambda i: routed[i])
        row["n_samples"] = len(idx)
        row["n_tokens"] = sum(counts[i] for i in idx)
        row["routed_to_own_domain"] = sum(routed[i] == samples[i]["domain"] for i in idx) / max(len(idx), 1)
        rows[name] = row
    specialised = {d: min(experts, key=lambda e: rows[d][e]) == d for d in domains if d in experts}
    mixed = rows["mixed"]
    best_single = min(experts, key=lambda e: mixed[e])
    return {
        "experts": experts,
        "domains": domains,
        "rows": rows,
        "specialised": specialised,
        "all_specialised": all(specialised.values()) if specialised else False,
        "best_single_on_mixed": best_single,
        "coe_beats_every_single_expert": mixed["routed"] < mixed[best_single],
        "max_tokens": max_tokens,
        "seconds": round(time.perf_counter() - t0, 2),
    }


def _num(x: float) -> str:
    return f"{x:.2f}" if x < 1e5 else f"{x:.1e}"


def format_table(rep: dict[str, Any]) -> str:
    experts = rep["experts"]
    cols = experts + ["routed"]
    w = max(9, *(len(c) + 2 for c in cols))
    lines = ["held-out perplexity (lower is better); rows: text domain, columns: expert",
             f"{'':<10}" + "".join(f"{c:>{w}}" for c in cols) + f"{'routed ok':>{w + 1}}"]
    for name, row in rep["rows"].items():
        best = min(experts, key=lambda e: row[e])
        cells = []
        for c in cols:
            mark = "*" if c == best else " "
            cells.append(f"{_num(row[c]):>{w - 1}}{mark}")
        lines.append(f"{name:<10}" + "".join(cells) + f"{row['routed_to_own_domain']:>{w + 1}.0%}"
                     if name != "mixed" else f"{name:<10}" + "".join(cells))
    lines.append("* best single expert on that row; 'routed' sends each sample to the expert the router picks")
    lines.append(f"each expert best on its own domain: {'yes' if rep['all_specialised'] else 'NO'} "
                 f"({', '.join(f'{d}: {ok}' for d, ok in rep['specialised'].items())})")
    lines.append(f"routed CoE beats every single expert on the mixed set: "
                 f"{'yes' if rep['coe_beats_every_single_expert'] else 'NO'} "
                 f"(best single: {rep['best_single_on_mixed']} {rep['rows']['mixed'][rep['best_single_on_mixed']]:.2f}, "
                 f"routed {rep['rows']['mixed']['routed']:.2f})")
    return "\n".join(lines)
