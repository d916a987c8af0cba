"""Weights a CPU decode step streams live in one buffer that Linux backs with huge pages
(where its THP mode allows), and loading into it changes no value."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from coeflow.model import ModelConfig, hostmem, load_weights
from checkpoints import make_checkpoint


def _thp_mode() -> str:
    try:
        text = Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    except OSError:
        return "absent"
    return text[text.index("[") + 1:text.index("]")]


def _huge_kb(addr: int) -> int:
    """AnonHugePages of the mapping that holds `addr` (/proc/self/smaps)."""
    inside = False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()[0]
        if "-" in head and all(c in "0123456789abcdef-" for c in head):
            lo, hi = (int(x, 16) for x in head.split("-"))
            inside = lo <= addr < hi
        elif inside and line.startswith("AnonHugePages:"):
            return int(line.split()[1])
    return 0


@pytest.mark.skipif(_thp_mode() not in ("madvise", "always"), reason="no transparent huge pages here")
def test_buffer_is_backed_by_huge_pages_in_a_process_that_has_freed_big_tensors():
    for _ in range(3):  # as a server does: glibc then keeps such blocks, touched, for reuse
        t = torch.empty(30 << 20, dtype=torch.uint8)
        t.fill_(0)
        del t
    buf = hostmem.empty(16 << 20)
    assert buf.data_ptr() % hostmem.HUGE_PAGE == 0 and buf.numel() == 16 << 20
    buf.fill_(1)  # first touch maps the pages
    got = _huge_kb(buf.data_ptr())
    control = min(_huge_kb_of_a_fresh_mapping(16 << 20), 16 << 10)  # it may hold one more
    if control == 0:
        pytest.skip("the kernel gives no huge page to any mapping now (its memory is fragmented)")
    assert got >= control, f"the buffer got {got} KiB in huge pages, a fresh mapping {control} KiB"


def _huge_kb_of_a_fresh_mapping(nbytes: int) -> int:
    """The control: a fresh anonymous mapping with room for `nbytes` on 2 MiB boundaries,
    madvised for huge pages and touched, the way any program would ask. With memory fragmented
    the kernel falls back to small pages for it too."""
    import ctypes
    import mmap
    size = nbytes + hostmem.HUGE_PAGE
    m = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)  # private: shared is shmem
    try:
        m.madvise(mmap.MADV_HUGEPAGE)
        m.write(b"\1" * size)
        view = ctypes.c_char.from_buffer(m)
        got = _huge_kb(ctypes.addressof(view))
        del view
        return got
    finally:
        m.close()


def test_cpu_weights_share_one_aligned_buffer_with_the_checkpoints_values(tmp_path):
    from safetensors.torch import load_file
    path = make_checkpoint(tmp_path / "m", "llama-gqa", seed=1)
    cfg = ModelConfig.from_dir(path)
    want = load_file(path / "model.safetensors")
    for dtype in (torch.float32, torch.bfloat16):
        got = load_weights(path, cfg, dtype)
        storages = {t.untyped_storage().data_ptr() for t in got.values()}
        assert len(storages) == 1, "weights were allocated one by one"
        for name, t in got.items():
            assert t.dtype == dtype and t.is_contiguous() and t.data_ptr() % 64 == 0
            torch.testing.assert_close(t, want[name].to(dtype), rtol=0, atol=0)
