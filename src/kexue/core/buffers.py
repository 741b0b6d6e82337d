r"""Large fresh output buffers without 8,192 page faults and a memset per 32 MiB.

glibc ``mmap``\ s every block of 32 MiB or more (its largest mmap threshold) and unmaps it on
free, so a kernel that returns such a tensor gets fresh memory on every call, which the OS maps
in 4 KiB pages on first touch: about 1 us a page, ~7 ms per 32 MiB, and ``torch.zeros`` then
writes zeros over pages the OS has just zeroed. At n = 16384 a local-attention fwd+bwd returns
four such tensors (output, dq, dk, dv): a fifth of its time went there.

:func:`fresh_empty` takes such a buffer straight from the OS instead: a private anonymous
mapping (zero-filled by the OS, so ``zero=True`` costs nothing), advised ``MADV_HUGEPAGE`` and
2 MiB aligned, so it is faulted in 16 huge pages per 32 MiB. The mapping is released when the
tensor's storage is (``torch.frombuffer`` keeps it alive). This is what glibc would do for the
block anyway (a private mapping, unmapped on free) plus the huge-page hint that PyTorch's
``THP_MEM_ALLOC_ENABLE`` gives every allocation. Smaller buffers, CUDA tensors and systems
without ``MADV_HUGEPAGE`` get ``torch.empty`` / ``torch.zeros``: the heap serves them again.

The mapping is populated at once, in one thread (``MADV_POPULATE_WRITE``, Linux 5.14+; else one
write per huge page): a multi-threaded kernel that first-touches it otherwise takes the faults
from every thread at once, and on a virtual machine whose host backs guest memory lazily that
was measured 10-20x slower (a 32 MiB copy on 2 threads into the fresh mapping: 50-60 ms, against
3 ms to populate plus 3 ms to copy).

The tensor is ordinary except that its storage cannot be resized (``resize_`` to a larger size
raises, and so does ``out=`` into it with a larger shape), like every ``torch.frombuffer``
tensor, and that its memory is not counted by torch's allocator statistics or the profiler's
memory view. Set ``KEXUE_HUGE_PAGES=0`` in the environment (read at every call) or call
:func:`set_huge_pages` ``(False)`` to get plain ``torch.empty`` tensors everywhere instead.
"""

from __future__ import annotations

import mmap
import sys
from collections.abc import Sequence

import torch

HUGE_MIN_BYTES = 32 << 20  # glibc mmaps from here; below, freed blocks are reused from the heap
_HUGE_PAGE = 2 << 20
# Python's mmap module does not name it (3.11); the value is Linux's, refused (EINVAL) before 5.14.
_MADV_POPULATE_WRITE = getattr(mmap, "MADV_POPULATE_WRITE", 23)
_CAN_MAP = sys.platform.startswith("linux") and hasattr(mmap, "MADV_HUGEPAGE")


def _mapped(nbytes: int, dtype: torch.dtype, item: int) -> torch.Tensor | None:
    """A 1-D ``dtype`` tensor (``item`` bytes an element) over ``nbytes`` of a fresh 2 MiB-aligned
    private mapping, or None if the OS refuses."""
    try:
        # 2 MiB more than asked: the aligned start can lie up to 2 MiB in; the untouched rest
        # never becomes resident.
        mm = mmap.mmap(-1, nbytes + _HUGE_PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        mm.madvise(mmap.MADV_HUGEPAGE)
    except (OSError, ValueError):
        return None
    start = torch.frombuffer(mm, dtype=torch.uint8, count=1).data_ptr()
    offset = -start % _HUGE_PAGE
    flat = torch.frombuffer(mm, dtype=dtype, count=nbytes // item, offset=offset)
    _populate(mm, flat, offset, nbytes, item)
    return flat


def _populate(mm: mmap.mmap, flat: torch.Tensor, offset: int, nbytes: int, item: int) -> None:
    """Fault the mapping in now, from this thread alone (module doc): the kernel's populate
    call, else one write per huge page (a strided fill of a few elements, far below torch's
    parallel grain size, so one thread)."""
    try:
        mm.madvise(_MADV_POPULATE_WRITE, offset, nbytes)
    except (OSError, ValueError):  # older kernel: the first write of each huge page faults it in
        flat[:: _HUGE_PAGE // item].zero_()


_ENABLED: bool | None = None  # None: follow the KEXUE_HUGE_PAGES environment variable


def set_huge_pages(enabled: bool | None) -> None:
    """Turn the huge-page buffers of :func:`fresh_empty` on or off for this process (``None``:
    follow ``KEXUE_HUGE_PAGES``, default on). Off, every buffer is a plain ``torch.empty``
    tensor: resizable, and counted by torch's allocator statistics and profiler."""
    global _ENABLED
    if enabled is not None and not isinstance(enabled, bool):
        raise TypeError(f"enabled must be a bool or None, got {enabled!r}")
    _ENABLED = enabled


def huge_pages_enabled() -> bool:
    """Whether :func:`fresh_empty` may hand out huge-page mappings now."""
    if _ENABLED is not None:
        return _ENABLED
    import os

    return os.environ.get("KEXUE_HUGE_PAGES", "1").strip().lower() not in (
        "0",
        "false",
        "no",
        "off",
    )


def fresh_empty(
    like: torch.Tensor, shape: Sequence[int] | None = None, *, zero: bool = False
) -> torch.Tensor:
    """A new tensor of ``like``'s dtype and device: ``empty_like(like)`` (the same strides when
    ``like`` is dense) when ``shape`` is None, else ``like.new_empty(shape)`` (contiguous);
    zero-filled when ``zero``. CPU buffers of :data:`HUGE_MIN_BYTES` or more on Linux come from
    a huge-page-advised private mapping (module doc), which the OS hands over zeroed.
    """
    if not isinstance(like, torch.Tensor):
        raise TypeError(f"like must be a torch.Tensor, got {type(like).__name__}")
    meta = (
        torch.empty_like(like, device="meta")
        if shape is None
        else torch.empty(tuple(shape), dtype=like.dtype, device="meta")
    )
    nbytes = meta.numel() * meta.element_size()
    if _CAN_MAP and like.device.type == "cpu" and nbytes >= HUGE_MIN_BYTES and huge_pages_enabled():
        flat = _mapped(nbytes, like.dtype, meta.element_size())
        if flat is not None:
            return flat.as_strided(meta.shape, meta.stride())
    t = torch.empty_like(like) if shape is None else like.new_empty(tuple(shape))
    return t.zero_() if zero else t
