"""Process-level compute settings: the torch device (``auto`` / ``cpu`` / ``cuda[:N]``), torch CPU
threads (for a block, or for the process with ``--threads``) and glibc heap reuse for
allocation-heavy CPU training."""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
from collections.abc import Iterator
from typing import Any

import torch

from genrec.errors import ConfigError

DEVICE_CHOICES = "auto, cpu, cuda, cuda:N or mps"


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """The torch device a ``device:`` setting names, checked to exist on this machine.

    ``auto`` (or ``None``) is CUDA when a GPU is visible (this process's GPU, ``LOCAL_RANK``, under
    ``accelerate launch`` / ``torchrun``), else the CPU. ``cpu``, ``cuda``, ``cuda:N`` and ``mps``
    are taken as given; one this machine lacks raises :class:`~genrec.errors.ConfigError`.
    """
    if isinstance(device, torch.device):
        device = str(device)
    name = (device or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"device {device!r} is not a device name; use {DEVICE_CHOICES}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {device!r} asked for CUDA, but this torch sees no CUDA GPU "
                              f"(torch {torch.__version__}, built with CUDA {torch.version.cuda}); "
                              "use device=cpu or device=auto, or install a CUDA build of torch")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise ConfigError(f"device {device!r}: this machine has {count} CUDA GPU(s) "
                              f"(cuda:0 .. cuda:{count - 1})")
    elif dev.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ConfigError(f"device {device!r}: MPS is not available here; use device=cpu or device=auto")
    elif dev.type != "cpu":
        raise ConfigError(f"device {device!r} is not supported; use {DEVICE_CHOICES}")
    return dev


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


# --------------------------------------------------------------------------- data-parallel ranks
def _leave_process_group() -> None:
    """Leave the process group at interpreter exit, while its communication threads can still be
    joined: a rank that exits with the group alive (e.g. a helper rank whose share of the work is
    done) can otherwise abort with "terminate called without an active exception". The ranks meet
    at a barrier first, so none tears its connections down while a peer is still using them."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        try:
            dist.barrier()
        except RuntimeError:  # a peer is already gone: nothing left to wait for
            pass
        dist.destroy_process_group()


class Ranks:
    """This process's place among the processes of an ``accelerate launch`` / ``torchrun`` job.

    A plain ``python`` / ``genrec`` process is rank 0 of 1 and never touches ``torch.distributed``;
    under a launcher (``WORLD_SIZE > 1``) accelerate's ``PartialState`` joins the process group
    (NCCL on GPUs, gloo on CPUs). Work is split by :meth:`mine`, results come back with
    :meth:`gather` (every rank receives all of them) and only :attr:`is_main` writes files.
    """

    def __init__(self) -> None:
        self.rank, self.world = 0, 1
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            from accelerate import PartialState

            # accelerate's multi-GPU launch on a machine without GPUs: say so, or PartialState
            # would treat each process as alone; cpu=True joins them over gloo instead.
            state = PartialState(cpu=not torch.cuda.is_available())
            self.rank, self.world = state.process_index, state.num_processes
            atexit.unregister(_leave_process_group)  # one entry however many Ranks() are made
            atexit.register(_leave_process_group)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def mine(self, n: int) -> list[int]:
        """The chunk numbers ``0 .. n-1`` this rank works on: round robin, so every chunk (a batch
        of the single-process run) is computed exactly as it is by one process."""
        return list(range(self.rank, n, self.world))

    def gather(self, obj: Any) -> list[Any]:
        """``[obj of rank 0, obj of rank 1, ...]`` on every rank (pickled; ``[obj]`` alone)."""
        if self.world == 1:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        """Wait until every rank gets here (a no-op alone)."""
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()
