"""A compiled potential: ``torch.compile`` of a model's forward, with an eager fallback.

    from ase_mlff.models.compiled import CompiledPotential
    fast = CompiledPotential(model)
    out = fast.compute(batch, forces=True)       # compute_properties, compiled model

What is compiled is the model's forward ``E(batch)`` with dynamic shapes (any number of
atoms, edges and systems: a new neighbour graph does not recompile) and ``fullgraph=True``
(no graph breaks: the shipped PaiNN and SchNet trace as one graph, tested); AOTAutograd
compiles its backward, so forces and stress by autograd run compiled too. On CPU this
takes the shipped aspirin PaiNN from 2.9 to 1.8 ms per energy + forces call (1 thread;
docs/benchmarks.md).

``torch.export`` + AOTInductor was the other candidate (issue 19): it cannot hold the
autograd call that gives forces in the exported program without double-exporting forward
and backward, and it does not take dynamic edge counts as readily; ``torch.compile``
measured well enough and keeps one code path for every model, so it is the one used.

Compilation costs seconds (aspirin PaiNN on this machine's CPU: about 30 s cold, 6 s
from the cache), so it pays over MD-length use; see
:class:`~ase_mlff.calculators.MLFFCalculator`'s ``compile``. Compiled code is cached
across processes by Inductor's FX-graph and AOTAutograd caches, kept under
:func:`compile_cache_dir` (``~/.cache/ase_mlff/inductor`` unless
``TORCHINDUCTOR_CACHE_DIR`` is set).

Where compilation fails (no C++ compiler for Inductor's CPU kernels, an operator it
cannot trace, a model with a data-dependent branch), the first call logs the reason as a
warning and every call runs the eager model: the results are the same function's.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ase_mlff.graph.batch import Batch
from ase_mlff.models.base import compute_properties

log = logging.getLogger(__name__)


def compile_cache_dir() -> Path:
    """Where Inductor caches compiled kernels across processes: ``TORCHINDUCTOR_CACHE_DIR``
    when set, else ``~/.cache/ase_mlff/inductor`` (set for this process on first use)."""
    if "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
        base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(base / "ase_mlff" / "inductor")
    return Path(os.environ["TORCHINDUCTOR_CACHE_DIR"])


class CompiledPotential(nn.Module):
    """``model`` with a compiled forward; every other attribute is the model's.

    Args:
        model: a potential (``forward(batch) -> (S,) energies``); not copied.
        dynamic: compile for symbolic sizes (atoms, edges, systems), so that a rebuilt
            neighbour graph reuses the compiled code.

    Attributes:
        fallback_reason: ``None`` while the compiled path runs; the reason (one line)
            once compilation failed and the eager model is used instead.
        compile_seconds: wall time of the first compiled call (tracing + compiling).
    """

    def __init__(self, model: nn.Module, *, dynamic: bool = True) -> None:
        super().__init__()
        compile_cache_dir()
        self.model = model
        self.fallback_reason: str | None = None
        self.compile_seconds: float | None = None
        try:
            self._compiled = torch.compile(model, dynamic=dynamic, fullgraph=True)
        except Exception as exc:  # e.g. a platform torch.compile does not support
            self._fall_back(exc)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            model = self.__dict__.get("_modules", {}).get("model")
            if model is None:
                raise
            return getattr(model, name)

    @property
    def compiled(self) -> bool:
        """Whether calls run the compiled model (False after a fallback)."""
        return self.fallback_reason is None

    def _fall_back(self, exc: BaseException) -> None:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        self.fallback_reason = f"{type(exc).__name__}: {first}"[:300]
        log.warning(
            "torch.compile of %s failed (%s); running the model eagerly",
            type(self.model).__name__,
            self.fallback_reason,
        )

    def forward(self, batch: Batch) -> Tensor:
        if self.compiled:
            return self._compiled(batch)
        return self.model(batch)

    def compute(
        self, batch: Batch, *, forces: bool = True, stress: bool = False
    ) -> dict[str, Tensor]:
        """:func:`~ase_mlff.models.base.compute_properties` through the compiled model. A
        failure of the compiled path (in its forward or its backward) switches to the
        eager model for this and every later call; an error of the eager model is
        raised as it is."""
        if self.compiled:
            t0 = time.perf_counter() if self.compile_seconds is None else None
            try:
                out = compute_properties(self, batch, forces=forces, stress=stress)
            except Exception as exc:
                self._fall_back(exc)
            else:
                if t0 is not None:
                    self.compile_seconds = time.perf_counter() - t0
                    log.info(
                        "compiled %s in %.1f s", type(self.model).__name__, self.compile_seconds
                    )
                return out
        return compute_properties(self.model, batch, forces=forces, stress=stress)
