"""`coeflow coe hash`: each expert's checksum is the sha256 of its safetensors files' bytes,
and --write records them in the CoE file without touching anything else in it, so the store
then verifies every load against them."""

from __future__ import annotations

import hashlib
import shutil

from coeflow.backend.real import RealBackend
from coeflow.cli import main
from coeflow.coefile import load_coe
from coeflow.store import ExpertStore

COE = """\
# a CoE written by hand
name: demo
fallback: a          # when the router is unsure
experts:
  - name: a          # the first
    path: experts/a
    examples:
      - write a poem
  - {name: b, path: "experts/b", priority: 2}
"""


def _coe(tmp_path, checkpoints):
    for name, family in (("a", "llama"), ("b", "qwen2")):
        shutil.copytree(checkpoints[family], tmp_path / "experts" / name)
    (tmp_path / "coe.yaml").write_text(COE)
    return tmp_path / "coe.yaml"


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_hash_prints_the_sha256_of_each_experts_files(tmp_path, checkpoints, capsys):
    coe = _coe(tmp_path, checkpoints)
    want = {n: _sha256(tmp_path / "experts" / n / "model.safetensors") for n in "ab"}
    assert main(["coe", "hash", str(coe)]) == 0
    assert capsys.readouterr().out.splitlines() == [f"{want['a']}  a", f"{want['b']}  b"]
    assert coe.read_text() == COE  # printed only


def test_write_records_them_and_changes_nothing_else(tmp_path, checkpoints, capsys):
    coe = _coe(tmp_path, checkpoints)
    a, b = (_sha256(tmp_path / "experts" / n / "model.safetensors") for n in "ab")
    assert main(["coe", "hash", str(tmp_path), "--write"]) == 0
    assert f"wrote 2 checksums to {coe}" in capsys.readouterr().out
    assert coe.read_text() == COE.replace("    path: experts/a\n", f"    path: experts/a\n    sha256: {a}\n").replace(
        'path: "experts/b", ', f'path: "experts/b", sha256: {b}, ')
    loaded = load_coe(coe)
    assert [(e.name, e.sha256, e.priority) for e in loaded.experts] == [("a", a, 0), ("b", b, 2)]
    with ExpertStore(loaded, RealBackend(), device_mem=None, host_mem=None) as store:
        for name in "ab":  # each load hashes what it reads and finds the recorded sha256
            with store.acquire(name) as lease:
                assert lease.weights
    assert main(["coe", "hash", str(coe)]) == 0
    assert capsys.readouterr().out.splitlines() == [f"{a}  a  (as in the CoE file)", f"{b}  b  (as in the CoE file)"]


def test_a_checksum_that_differs_is_shown_and_fails_and_write_replaces_it(tmp_path, checkpoints, capsys):
    coe = _coe(tmp_path, checkpoints)
    stale = "ab" * 32
    coe.write_text(COE.replace("    path: experts/a\n", f"    path: experts/a\n    sha256: {stale}  # old\n"))
    a = _sha256(tmp_path / "experts" / "a" / "model.safetensors")
    assert main(["coe", "hash", str(coe)]) == 1
    assert f"{a}  a  (the CoE file gives {stale})" in capsys.readouterr().out.splitlines()
    assert main(["coe", "hash", str(coe), "--write"]) == 0
    assert f"    sha256: {a}  # old\n" in coe.read_text()
    assert load_coe(coe).expert("a").sha256 == a
