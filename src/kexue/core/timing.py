r"""One timing and peak-memory helper for every benchmark and experiment.

* :func:`time_calls` / :func:`best_time`: wall clock (``time.perf_counter``) of ``fn()`` after
  warm-up calls, with an optional untimed ``before(i)`` hook; CPU time alongside, since on a
  busy machine with one thread it is the fairer comparison.
* :func:`peak_extra_mib`: the increase of the process's resident set during one call —
  ``VmHWM`` after resetting it through ``/proc/self/clear_refs``, minus ``VmRSS`` before — with
  glibc's mmap threshold lowered to 64 KiB (and ``malloc_trim``) so freed tensors go back to the
  OS instead of hiding in the heap. ``None`` where ``/proc`` or glibc is unavailable. On CUDA
  tensors use :func:`cuda_peak_extra_mib` (``torch.cuda.max_memory_allocated``).
* :func:`heap_reuse`: glibc serves every allocation from its heap (no ``mmap``), so tensors of
  32 MiB and more are reused instead of page-faulted afresh on every call (what the environment
  variable ``MALLOC_MMAP_MAX_=0`` does for a whole process). Buffers from
  :func:`kexue.core.buffers.fresh_empty` are mapped directly and do not take part.
* :func:`ratio_text`: speed-ups in honest words ("3.6x slower", never "0.3x faster").
"""

from __future__ import annotations

import ctypes
import gc
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from kexue.core.checks import check_positive_int


@dataclass(frozen=True)
class Timing:
    """Durations of repeated calls, in seconds (wall clock and process CPU)."""

    wall: tuple[float, ...]
    cpu: tuple[float, ...]

    @property
    def best(self) -> float:
        """Fastest wall-clock call (s): the least disturbed by other processes."""
        return min(self.wall)

    @property
    def median(self) -> float:
        """Median wall-clock call (s)."""
        return statistics.median(self.wall)

    @property
    def best_cpu(self) -> float:
        """Fastest call in process CPU seconds."""
        return min(self.cpu)

    @property
    def best_ms(self) -> float:
        """Fastest wall-clock call in milliseconds."""
        return self.best * 1e3


def _sync() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def time_calls(
    fn: Callable[[], Any],
    *,
    warmup: int = 1,
    repeats: int = 5,
    before: Callable[[int], Any] | None = None,
) -> Timing:
    """Time ``fn()`` ``repeats`` times after ``warmup`` untimed calls.

    Args:
        fn: the call to time (CUDA work is synchronised before the clock stops).
        warmup: untimed calls first (compilation, allocator warm-up).
        repeats: timed calls (>= 1).
        before: called with the call number before each call, outside the timed region.

    Returns:
        A :class:`Timing` with one wall and one CPU duration per timed call.
    """
    check_positive_int(repeats, "repeats")
    check_positive_int(warmup, "warmup", 0)
    wall: list[float] = []
    cpu: list[float] = []
    for i in range(warmup + repeats):
        if before is not None:
            before(i)
        _sync()
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        _sync()
        if i >= warmup:
            wall.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
    return Timing(tuple(wall), tuple(cpu))


def best_time(fn: Callable[[], Any], *, warmup: int = 1, repeats: int = 5) -> float:
    """Fastest wall-clock seconds of ``fn()`` over ``repeats`` calls (see :func:`time_calls`)."""
    return time_calls(fn, warmup=warmup, repeats=repeats).best


def _libc() -> Any:
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def heap_reuse(on: bool) -> bool:
    """``on``: glibc never ``mmap``s (``mallopt(M_MMAP_MAX, 0)``, no heap trimming), so freed
    large blocks are reused; off: glibc's defaults. glibc's largest mmap threshold is 32 MiB, so
    by default every tensor of 32 MiB or more is fresh memory, page-faulted on first touch (about
    1 us per 4 KiB page: ~7 ms per 32 MiB). Off restores glibc's default limits; what the heap
    grew to meanwhile stays and keeps serving. Returns False where glibc is unavailable.
    """
    libc = _libc()
    if libc is None:
        return False
    ok = libc.mallopt(-4, 0 if on else 65536)  # M_MMAP_MAX (glibc's default: 65536)
    ok &= libc.mallopt(-1, 2**31 - 1 if on else 128 * 1024)  # M_TRIM_THRESHOLD
    return bool(ok)


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


def peak_extra_mib(fn: Callable[[], Any]) -> float | None:
    """Peak resident-memory increase (MiB) while ``fn()`` runs (CPU); see the module doc.

    Allocate the inputs before calling this: what exists before the call is the baseline. Lowers
    glibc's mmap threshold for the rest of the process, so take timings first.
    """
    libc = _libc()
    if libc is None:
        return None
    try:
        _status("VmHWM:")
    except (OSError, KeyError):
        return None
    libc.mallopt(-3, 64 * 1024)  # M_MMAP_THRESHOLD: large blocks are mmapped, freed to the OS
    gc.collect()
    libc.malloc_trim(0)
    base = _status("VmRSS:")
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS
    except OSError:
        return None
    fn()
    return (_status("VmHWM:") - base) / 2**20


def cuda_peak_extra_mib(fn: Callable[[], Any], device: torch.device | str = "cuda") -> float:
    """Peak CUDA memory allocated beyond what was allocated before ``fn()`` (MiB)."""
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    fn()
    torch.cuda.synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - base) / 2**20


def ratio_text(ours_s: float, theirs_s: float) -> str:
    """``theirs / ours`` as words: ``"3.6x faster"`` or ``"3.6x slower"`` (NaN -> ``"n/a"``)."""
    if not (math.isfinite(ours_s) and math.isfinite(theirs_s)) or ours_s <= 0 or theirs_s <= 0:
        return "n/a"
    r = theirs_s / ours_s
    return f"{r:.2f}x faster" if r >= 1 else f"{1 / r:.2f}x slower"
