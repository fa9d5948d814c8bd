"""How many replicas fit in memory: the replica queue's batch size when the user gives none.

    from ase_mlff.md.batching import auto_batch_size
    b = auto_batch_size(model, images, dtype=torch.float32, device="cuda")
    run = run_md(model, images, batch_size="auto")          # the same, inside run_md

A probe evaluates energy and forces of a few replicas (``probe`` of them, the largest
start structures) and measures the memory it needed: on CUDA the peak allocated device
memory (exact), on the CPU the peak resident set of the process (sampled every 1 ms, so
an estimate: the allocator may reuse memory it already holds, which makes the probe look
cheaper, never dearer). The batch holds as many replicas as fit in ``fraction`` of the
free memory (CUDA: ``torch.cuda.mem_get_info``; CPU: ``MemAvailable`` of
``/proc/meminfo``) at that cost per replica, plus the MD state itself, and never fewer
than one or more than there are replicas.

torch-sim's ``InFlightAutoBatcher`` finds its batch size by running ever larger batches
until one runs out of memory; one probe and a ratio is cheaper and cannot crash a job
that shares its device, at the price of an estimate.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence

import torch
from ase import Atoms

from ase_mlff.graph.batch import Batch
from ase_mlff.models.base import compute_properties

#: fraction of the free memory the batch may use (the rest: the detectors, the recorded
#: frames, the allocator's slack, other processes)
MEMORY_FRACTION = 0.5
#: bytes per atom of the MD state besides the model's evaluation (positions, velocities,
#: forces, masses, neighbour graph of ~50 edges per atom)
STATE_BYTES_PER_ATOM = 2048


def _rss_bytes() -> int:
    """The process's resident set (Linux ``/proc``); 0 where it cannot be read, which
    makes a probe look free (the batch then holds every replica, as without a queue)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 0


def free_memory_bytes(device: torch.device | str) -> int:
    """Free memory of ``device``: CUDA's free device memory, or the CPU's
    ``MemAvailable`` (Linux), else the free physical pages."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):  # no way to tell: no limit
        return 2**62


class PeakMemory:
    """Peak memory above the level at entry (``.bytes`` after the block): allocated device
    memory on CUDA, the process's resident set on the CPU (sampled every ``interval``
    seconds by a thread)."""

    def __init__(self, device: torch.device | str = "cpu", interval: float = 0.001) -> None:
        self.cuda = torch.device(device).type == "cuda"
        self.device, self.interval = torch.device(device), interval
        self.bytes = 0

    def __enter__(self) -> PeakMemory:
        if self.cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
            return self
        self.base = self.peak = _rss_bytes()
        self._stop = threading.Event()

        def sample() -> None:
            while not self._stop.wait(self.interval):
                self.peak = max(self.peak, _rss_bytes())

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, _rss_bytes())
        self.bytes = max(0, self.peak - self.base)


def auto_batch_size(
    model: torch.nn.Module,
    images: Sequence[Atoms],
    *,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
    skin: float = 0.0,
    probe: int = 4,
    fraction: float = MEMORY_FRACTION,
    free_bytes: int | None = None,
) -> int:
    """The number of replicas of ``images`` whose MD fits in ``fraction`` of the free
    memory (``free_bytes`` overrides the measurement), from a probe evaluation of the
    ``probe`` largest start structures (see the module docstring)."""
    if not images:
        raise ValueError("auto_batch_size needs at least one start structure")
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    largest = sorted(images, key=len, reverse=True)[: max(1, min(probe, len(images)))]
    batch = Batch.from_atoms(
        list(largest), cutoff=model.cutoff, dtype=dtype, device=device, skin=skin
    )
    compute_properties(model, batch, forces=True)  # first call: lazy buffers, kernels
    with PeakMemory(device) as peak:
        compute_properties(model, batch, forces=True)
    atoms = max(len(a) for a in largest)
    per_replica = peak.bytes / len(largest) + STATE_BYTES_PER_ATOM * atoms
    free = free_memory_bytes(device) if free_bytes is None else free_bytes
    return int(max(1, min(len(images), fraction * free // per_replica)))
