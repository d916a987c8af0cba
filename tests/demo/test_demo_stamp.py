"""The demo build's stamp: editing a data file (or the code that reads it) changes the digest
that decides whether a built demo is stale; the data loaders reject malformed lists."""

from __future__ import annotations

from pathlib import Path

import pytest

from coeflow.demo import datafiles
from coeflow.demo.stamp import EXPERT_INPUTS, PACKAGE_DIR, PIPELINE_INPUTS, input_digest, input_files


@pytest.fixture
def package(package_copy) -> Path:
    return package_copy


def _append(path: Path, line: str) -> None:
    path.write_text(path.read_text(encoding="utf-8") + line + "\n", encoding="utf-8")


def test_the_copy_has_the_same_digests_as_the_package(package):
    assert input_digest(EXPERT_INPUTS, package) == input_digest(EXPERT_INPUTS)
    assert input_digest(PIPELINE_INPUTS, package) == input_digest(PIPELINE_INPUTS)


def test_editing_a_prompt_word_list_makes_the_router_stale_not_the_experts(package):
    experts, pipeline = input_digest(EXPERT_INPUTS, package), input_digest(PIPELINE_INPUTS, package)
    _append(package / "demo" / "data" / "prompts" / "sql" / "keywords.txt", "QUALIFY")
    assert input_digest(PIPELINE_INPUTS, package) != pipeline
    assert input_digest(EXPERT_INPUTS, package) == experts


def test_editing_a_corpus_data_file_makes_the_experts_stale(package):
    experts, pipeline = input_digest(EXPERT_INPUTS, package), input_digest(PIPELINE_INPUTS, package)
    path = package / "demo" / "data" / "corpora" / "shell.json"
    path.write_text(path.read_text(encoding="utf-8").replace('"/tmp"', '"/mnt/data"'), encoding="utf-8")
    assert input_digest(EXPERT_INPUTS, package) != experts
    assert input_digest(PIPELINE_INPUTS, package) != pipeline


def test_editing_pipeline_code_or_adding_a_data_file_makes_the_build_stale(package):
    pipeline = input_digest(PIPELINE_INPUTS, package)
    _append(package / "demo" / "prompts.py", "# an edit")
    edited = input_digest(PIPELINE_INPUTS, package)
    assert edited != pipeline
    (package / "demo" / "data" / "prompts" / "shell" / "more_commands.txt").write_text("fzf\n")
    assert input_digest(PIPELINE_INPUTS, package) != edited


def test_every_data_file_but_the_heldout_prompt_sets_is_in_the_stamp():
    """A data file the stamp missed would be edited without the demo noticing."""
    data = PACKAGE_DIR / "demo" / "data"
    files = {p for p in data.rglob("*") if p.is_file() and not p.name.startswith("heldout_prompts")}
    assert files and files <= set(input_files(PIPELINE_INPUTS))
    assert not {p for p in input_files(PIPELINE_INPUTS) if p.name.startswith("heldout_prompts")}


def test_a_list_item_with_stray_spaces_is_refused_with_its_line(tmp_path, monkeypatch):
    monkeypatch.setattr(datafiles, "DATA_DIR", tmp_path)
    (tmp_path / "words.txt").write_text("# a heading\n\nls\ncd \n")
    with pytest.raises(ValueError, match=r"words.txt:4: item 'cd '"):
        datafiles.read_list("words.txt")
    (tmp_path / "words.txt").write_text("# a heading\nls\n\ncd\n")
    assert datafiles.read_list("words.txt") == ["ls", "cd"]
