"""Keep large CPU tensors in the malloc heap instead of fresh ``mmap`` pages.

glibc serves allocations above its mmap threshold (at most 32 MiB by default)
with a new ``mmap`` and returns them with ``munmap`` on free, so every such
tensor pays first-touch page faults on every forward pass. VITS decoder
activations of a padded batch (32 channels x 256 samples per frame, x batch)
cross that size quickly; measured here, a batch of 4 x 310 frames took ~1.8x
the CPU time with the default settings. Raising the mmap and trim thresholds
lets freed blocks be reused (memory stays with the process, as a server wants).
The engine runs in a worker thread, whose own arena could not hold them at all
(see ``keep_large_allocations_in_heap``): with one arena, batched passes in the
service went from 0.74x to 1.14-1.25x of unbatched throughput at 16 callers
(bench/vits_cpu.py, this 2-core VM) and system time fell from 72 s to 9 s.
Process-wide and glibc-only; elsewhere it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1  # from <malloc.h>
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
LARGE_ALLOCATION_THRESHOLD_BYTES = 1 << 30


def keep_large_allocations_in_heap(threshold: int = LARGE_ALLOCATION_THRESHOLD_BYTES) -> bool:
    """True when glibc accepted both thresholds."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    accepted = mallopt(_M_MMAP_THRESHOLD, threshold) == 1
    accepted = mallopt(_M_TRIM_THRESHOLD, threshold) == 1 and accepted
    # Worker threads get their own arenas, whose heaps are capped at 64 MiB:
    # larger tensors there are mmap-ed whatever the threshold. One arena for
    # every thread lets the engine's worker reuse the main heap too.
    accepted = mallopt(_M_ARENA_MAX, 1) == 1 and accepted
    if not accepted:
        log.info("glibc refused the malloc thresholds; large tensors stay mmap-backed")
    return accepted
