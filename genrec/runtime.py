"""Process-level compute settings: torch CPU threads (for a block, or for the process with
``--threads``) and glibc heap reuse for allocation-heavy CPU training."""

from __future__ import annotations

import contextlib
import ctypes
import os
from collections.abc import Iterator

import torch


def resolve_threads(num_threads: int) -> int:
    """``0`` → every core this process may run on; any other count as given."""
    if num_threads:
        return num_threads
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


@contextlib.contextmanager
def torch_threads(num_threads: int | None) -> Iterator[None]:
    """Run the block with ``num_threads`` torch CPU threads, then restore the previous count.

    ``None`` or ``0`` leaves the count as it is (pass :func:`resolve_threads` ``(0)`` for "all cores").
    """
    before = torch.get_num_threads()
    if num_threads:
        torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def set_threads(n: int) -> None:
    """``torch.set_num_threads(n)`` when ``n > 0`` (CLI ``--threads``)."""
    if n and n > 0:
        torch.set_num_threads(n)


_HEAP_DEPTH = 0


@contextlib.contextmanager
def reuse_freed_memory() -> Iterator[None]:
    """Keep freed tensor memory in the process heap for the duration (glibc; a no-op elsewhere).

    glibc hands every large tensor fresh ``mmap`` pages and unmaps them on free; DIN allocates
    many ``[rows, hidden]`` temporaries per step, and re-faulting their pages cost more than the
    arithmetic itself (one training step on Scientific: 4.3-5.7 s → 1.4-1.9 s, one thread).
    Afterwards mmap use is restored with glibc's largest static threshold and the heap trimmed.
    """
    global _HEAP_DEPTH
    try:
        libc = ctypes.CDLL(None)
        mallopt, malloc_trim = libc.mallopt, libc.malloc_trim
    except (OSError, AttributeError):
        yield
        return
    m_trim_threshold, m_mmap_threshold, m_mmap_max = -1, -3, -4  # glibc's mallopt parameter ids
    if _HEAP_DEPTH == 0:
        mallopt(m_mmap_max, 0)
        mallopt(m_trim_threshold, 2**31 - 1)
    _HEAP_DEPTH += 1
    try:
        yield
    finally:
        _HEAP_DEPTH -= 1
        if _HEAP_DEPTH == 0:
            mallopt(m_mmap_max, 65536)
            mallopt(m_mmap_threshold, 32 << 20)
            mallopt(m_trim_threshold, 64 << 20)
            malloc_trim(0)
