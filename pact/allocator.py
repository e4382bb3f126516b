"""Keep freed memory in the process, so that XLA's per-step buffers do not page-fault on CPUs.

XLA's CPU runtime allocates each step's temporary buffer (hundreds of MB for a training step)
with malloc and frees it at the end of the step. glibc serves large allocations (above a
threshold of at most 32 MiB) with mmap and returns them to the kernel on free, so every step
touches fresh pages. For maestro-small at batch 8 that is about 120,000 page faults per step,
and avoiding them cuts the step's CPU time by about 28% on a 2-core machine (jaxlib 0.10.2,
glibc 2.36). Serving every allocation from the heap and never trimming it lets each step
reuse the pages of the last one.

The price is that the process keeps its peak heap size until it exits.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

# mallopt parameters from glibc's malloc.h.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
_MAX_INT = 2**31 - 1


def retain_freed_memory() -> bool:
    """Set glibc's malloc to serve large blocks from one heap and never return them.

    Call it before the first JAX computation: the threads that XLA starts then keep the malloc
    arenas they already have, and the page faults with them. Returns False, changing nothing,
    where the C library is not glibc.
    """
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        log.info("C library %s has no mallopt; keeping the default allocator settings", name)
        return False
    # Use one arena, because glibc shrinks the arenas of XLA's worker threads with madvise.
    # Never use mmap for large blocks, and trim the heap only above 2 GiB of free space.
    results = [mallopt(_M_ARENA_MAX, 1), mallopt(_M_MMAP_MAX, 0), mallopt(_M_TRIM_THRESHOLD, _MAX_INT)]
    return all(result == 1 for result in results)
