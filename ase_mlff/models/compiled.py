"""A compiled potential: ``torch.compile`` of a model's forward, with an eager fallback.

    from ase_mlff.models.compiled import CompiledPotential
    fast = CompiledPotential(model)                        # or mode="auto"
    out = compute_properties(fast, batch, forces=True)      # forces by compiled autograd

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

log = logging.getLogger(__name__)


def compile_cache_dir() -> Path:
    """Where Inductor caches compiled kernels across processes: ``TORCHINDUCTOR_CACHE_DIR``
    when set, else ``~/.cache/ase_mlff/inductor`` (set for this process on first use)."""
    if "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
        base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(base / "ase_mlff" / "inductor")
    return Path(os.environ["TORCHINDUCTOR_CACHE_DIR"])


#: seconds of eager forward passes after which ``compile="auto"`` compiles. With the
#: backward that gives the forces (about twice the forward) that is about 12 s of calls,
#: twice what compiling the shipped aspirin PaiNN costs from the cache on this machine's
#: CPU (6 s; 30 s cold): a short job never pays for a compile, and a long one pays at
#: most a few times what the best choice in hindsight would have (the ski-rental rule)
AUTO_COMPILE_AFTER = 4.0
COMPILE_MODES = (True, False, "auto")


class CompiledPotential(nn.Module):
    """``model`` with a compiled forward; every other attribute is the model's.

    Args:
        model: a potential (``forward(batch) -> (S,) energies``); not copied.
        mode: ``True`` compiles at the first call; ``"auto"`` runs eagerly until its
            forward passes have taken ``after`` seconds (MD-length use), then compiles;
            ``False`` never compiles (the eager model, unchanged).
        after: seconds of eager forward passes, for ``mode="auto"``.
        dynamic: compile for symbolic sizes (atoms, edges, systems), so that a rebuilt
            neighbour graph reuses the compiled code.

    Any failure of compilation (of the forward or, compiled with it, the backward that
    gives forces and stress) is caught in the call that compiles: that call and every
    later one run the eager model, and the reason is logged once.

    Attributes:
        fallback_reason: ``None`` unless compilation failed; then the reason (one line).
        compile_seconds: wall time of the first compiled call (tracing + compiling).
    """

    def __init__(
        self,
        model: nn.Module,
        mode: bool | str = True,
        *,
        after: float = AUTO_COMPILE_AFTER,
        dynamic: bool = True,
    ) -> None:
        super().__init__()
        if mode not in COMPILE_MODES:
            raise ValueError(f"compile must be True, False or 'auto', got {mode!r}")
        if not after >= 0:
            raise ValueError(f"the compile delay must be ≥ 0 s, got {after}")
        self.model = model
        self.mode, self.after, self.dynamic = mode, float(after), dynamic
        self.fallback_reason: str | None = None
        self.compile_seconds: float | None = None
        self._compiled: Any = None
        self.eager_seconds = 0.0  # spent in eager forward passes

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
        """Whether calls run compiled code (False before an ``"auto"`` compile, after a
        fallback, and with ``mode=False``)."""
        return self._compiled is not None and self.fallback_reason is None

    def _fall_back(self, exc: BaseException) -> None:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        self.fallback_reason = f"{type(exc).__name__}: {first}"[:300]
        log.warning(
            "torch.compile of %s failed (%s); running the model eagerly",
            type(self.model).__name__,
            self.fallback_reason,
        )

    def _due(self) -> bool:
        """Whether to compile now (once, unless it failed)."""
        if self._compiled is not None or self.fallback_reason is not None or not self.mode:
            return False
        if self.mode == "auto":
            if self.eager_seconds < self.after:
                return False
            log.info(
                "compiling %s after %.1f s of eager forward passes (compile='auto')",
                type(self.model).__name__,
                self.eager_seconds,
            )
        return True

    def forward(self, batch: Batch) -> Tensor:
        if self._due():
            compile_cache_dir()
            try:
                self._compiled = torch.compile(self.model, dynamic=self.dynamic, fullgraph=True)
            except Exception as exc:  # e.g. a platform torch.compile does not support
                self._fall_back(exc)
        if not self.compiled:
            t0 = time.perf_counter()
            energy = self.model(batch)
            self.eager_seconds += time.perf_counter() - t0
            return energy
        t0 = time.perf_counter() if self.compile_seconds is None else None
        try:
            # the backward (forces, stress) is compiled now too, so that its failure is
            # caught here rather than raised by the caller's autograd call
            with torch._functorch.config.patch(force_non_lazy_backward_lowering=True):
                energy = self._compiled(batch)
        except Exception as exc:
            self._fall_back(exc)
            return self.model(batch)
        if t0 is not None:
            self.compile_seconds = time.perf_counter() - t0
            log.info("compiled %s in %.1f s", type(self.model).__name__, self.compile_seconds)
        return energy
