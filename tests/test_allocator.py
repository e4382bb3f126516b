"""retain_freed_memory: a freed large block is reused without page faults."""

import ctypes
import ctypes.util
import os
import resource
import sys

import pytest

from pact.allocator import retain_freed_memory

BLOCK = 64 * 2**20  # above glibc's largest mmap threshold (32 MiB)


def _faults_of_fresh_block(libc) -> int:
    """Minor page faults taken while writing a block of BLOCK bytes from malloc, then freed."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    pointer = libc.malloc(BLOCK)
    assert pointer
    ctypes.memset(pointer, 1, BLOCK)
    libc.free(pointer)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt is Linux-only")
def test_freed_block_reused_without_faults():
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]

    # By default glibc maps the block afresh each time: one fault per 4 KiB page. Environment
    # settings of malloc change that default, so the check only runs without them.
    if not any(name in os.environ for name in ("MALLOC_MMAP_MAX_", "GLIBC_TUNABLES")):
        assert _faults_of_fresh_block(libc) > BLOCK // 4096 // 2

    assert retain_freed_memory()
    _faults_of_fresh_block(libc)  # grows the heap once
    assert _faults_of_fresh_block(libc) < 100
