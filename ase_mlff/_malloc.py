"""Keep freed memory in the process instead of returning it to the OS (glibc only).

Every MD and training step allocates and frees the same large tensors (edge features of
a batch are tens of MB). glibc serves blocks above its mmap threshold with fresh ``mmap``
calls and gives them back on ``free``, so each step page-faults its memory back in: on
the 2-core CPU machines here that was most of the step for large batches (system time 5x
user time). Raising the mmap and trim thresholds keeps the blocks for reuse. Measured
(benchmarks/md_throughput.py, shipped PaiNN, aspirin): batched force evaluation of 64
replicas 201 -> 335 steps/s, of 256 replicas 136 -> 349 steps/s. The cost: resident
memory stays at its peak instead of shrinking after a large step.

Applied by the entry points, not by ``import ase_mlff``: the recipes (``ase_mlff.recipes``),
the benchmarks, the Ray trajectory agents and Ray Train workers; a library user opts in
with ``ase_mlff.keep_freed_memory()``. ``ASE_MLFF_MALLOC_TUNING=0`` turns it off everywhere.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
_applied = False


def keep_freed_memory() -> bool:
    """Raise glibc's mmap/trim thresholds; True when applied (Linux with glibc)."""
    global _applied
    if _applied:
        return True
    if os.environ.get("ASE_MLFF_MALLOC_TUNING", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = (
            libc.mallopt(M_MMAP_THRESHOLD, ctypes.c_int(2**31 - 1)) == 1
            and libc.mallopt(M_TRIM_THRESHOLD, ctypes.c_int(2**31 - 1)) == 1
            and libc.mallopt(M_TOP_PAD, ctypes.c_int(256 * 2**20)) == 1
        )
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
        return False
    _applied = ok
    log.debug("glibc malloc thresholds raised: %s", ok)
    return ok
