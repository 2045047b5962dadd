"""Torch CPU thread counts: set for a block and restored, or set for the process (``--threads``)."""

from __future__ import annotations

import contextlib
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
