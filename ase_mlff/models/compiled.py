"""A compiled potential: energy, forces and stress in one ``torch.compile``d function, with
an eager fallback.

    from ase_mlff.models.compiled import CompiledPotential
    fast = CompiledPotential(model)                        # or mode="auto"
    out = compute_properties(fast, batch, forces=True)      # runs the compiled function

What is compiled is the whole evaluation: the energy
(:func:`~ase_mlff.models.base.strained_energy`) and its derivatives by ``torch.func.grad``
(forces, and the strain derivative that gives the stress), one graph with its backward
inside, with dynamic shapes (any number of atoms, edges and systems: a new neighbour graph
does not recompile) and ``fullgraph=True`` (no graph breaks: PaiNN, SchNet, EAM and the
hybrid trace as one graph, tested). Compared with compiling only the forward and taking
the forces with the autograd engine, this removes the engine's per-call overhead: for the
shipped ``aspirin-painn-fast`` one energy + forces evaluation on the CPU took 0.30 ms
against 0.47 ms (1 thread). Through the ASE calculator (float32, 1 Å skin, 1 thread) one
aspirin call of ``aspirin-painn`` went from 2.56 to 1.04 ms, and of
``aspirin-painn-fast`` from 1.50 to 0.52 ms (docs/benchmarks.md).
:func:`~ase_mlff.models.base.compute_properties` hands a ``CompiledPotential`` the
evaluation (except in training, whose force loss needs the autograd graph of the
forces).

``torch.export`` + AOTInductor was the other candidate (issue 19); it has no place for the
derivative that gives the forces unless it is traced in, as here, and it fixes more of the
shapes; ``torch.compile`` keeps one code path for every model, so it is the one used.

Compilation costs seconds (aspirin PaiNN on this machine's CPU: about 30 s cold, 6 s from
the cache), so it pays over MD-length use; see ``mode="auto"`` and
:class:`~ase_mlff.calculators.MLFFCalculator`'s ``compile``. Compiled code is cached across
processes by Inductor's FX-graph and AOTAutograd caches, kept under
:func:`compile_cache_dir` (``~/.cache/ase_mlff/inductor`` unless
``TORCHINDUCTOR_CACHE_DIR`` is set).

Where compilation fails (no C++ compiler for Inductor's CPU kernels, an operator it cannot
trace, a model with a data-dependent branch), the call that compiles logs the reason as a
warning and it and every later call run the eager model: the results are the same
function's.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ase_mlff.graph.batch import Batch, restrict_graph
from ase_mlff.models.base import compute_properties, strained_energy

log = logging.getLogger(__name__)


def compile_cache_dir() -> Path:
    """Where Inductor caches compiled kernels across processes: ``TORCHINDUCTOR_CACHE_DIR``
    when set, else ``~/.cache/ase_mlff/inductor`` (set for this process on first use)."""
    if "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
        base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(base / "ase_mlff" / "inductor")
    return Path(os.environ["TORCHINDUCTOR_CACHE_DIR"])


#: eager evaluations after which ``compile="auto"`` compiles. A count, not a time, so that
#: two identical runs switch at the same step (compiled and eager results differ in the
#: last bits, and MD amplifies that). For the shipped aspirin PaiNN (2.6 ms per eager
#: call) it is about 10 s of calls, about what a compile from the cache costs on this
#: machine's CPU (6 s; 30 s cold): a short job never pays for a compile, and a long one
#: pays at most a few times what the best choice in hindsight would have (ski rental)
AUTO_COMPILE_AFTER = 4000
COMPILE_MODES = (True, False, "auto")


def _properties(model: nn.Module, batch: Batch, forces: bool, stress: bool) -> dict[str, Tensor]:
    """Energy, forces and stress of ``batch`` by ``torch.func.grad`` of
    :func:`~ase_mlff.models.base.strained_energy`: the function that is compiled."""
    cell = batch.cell_s33.detach()
    pos = batch.pos_nc.detach()
    if not (forces or stress):
        return {"energy": strained_energy(model, batch, pos, None).detach()}

    def energy(pos: Tensor, strain: Tensor) -> tuple[Tensor, Tensor]:
        e = strained_energy(model, batch, pos, strain if stress else None)
        return e.sum(), e

    strain = torch.zeros_like(cell)
    (g_pos, g_strain), e = torch.func.grad(energy, argnums=(0, 1), has_aux=True)(pos, strain)
    out = {"energy": e.detach()}
    if forces:
        out["forces"] = -g_pos
    if stress:
        out["stress"] = g_strain / torch.linalg.det(cell).abs()[:, None, None]
    return out


class CompiledPotential(nn.Module):
    """``model`` whose energy, forces and stress are computed by one compiled function;
    every attribute is the model's, and calling it runs the model's own forward.

    Args:
        model: a potential (``forward(batch) -> (S,) energies``); not copied.
        mode: ``True`` compiles at the first evaluation; ``"auto"`` evaluates eagerly
            ``after`` times (MD-length use), then compiles; ``False`` never compiles (the
            eager model's evaluation, unchanged).
        after: eager evaluations before compiling, for ``mode="auto"``.
        dynamic: compile for symbolic sizes (atoms, edges, systems), so that a rebuilt
            neighbour graph reuses the compiled code.

    Attributes:
        fallback_reason: ``None`` unless compilation failed; then the reason (one line).
        compile_seconds: wall time of the first compiled evaluation (tracing + compiling).
        eager_calls, eager_seconds: eager evaluations so far, and their time.
    """

    def __init__(
        self,
        model: nn.Module,
        mode: bool | str = True,
        *,
        after: int = AUTO_COMPILE_AFTER,
        dynamic: bool = True,
    ) -> None:
        super().__init__()
        if mode not in COMPILE_MODES:
            raise ValueError(f"compile must be True, False or 'auto', got {mode!r}")
        if isinstance(after, bool) or not isinstance(after, int) or after < 0:
            raise ValueError(f"the compile delay must be a number of evaluations ≥ 0: {after!r}")
        self.model = model
        self.mode, self.after, self.dynamic = mode, after, dynamic
        self.fallback_reason: str | None = None
        self.compile_seconds: float | None = None
        self.eager_calls, self.eager_seconds = 0, 0.0
        self._compiled: Any = None

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
        """Whether evaluations run compiled code (False before an ``"auto"`` compile,
        after a fallback, and with ``mode=False``)."""
        return self._compiled is not None and self.fallback_reason is None

    def forward(self, batch: Batch) -> Tensor:
        return self.model(batch)

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
            if self.eager_calls < self.after:
                return False
            log.info(
                "compiling %s after %d eager evaluations (%.1f s; compile='auto')",
                type(self.model).__name__,
                self.eager_calls,
                self.eager_seconds,
            )
        return True

    def evaluate_properties(
        self, batch: Batch, *, forces: bool = True, stress: bool = False
    ) -> dict[str, Tensor]:
        """Energy (S,), forces (N, 3), stress (S, 3, 3) as
        :func:`~ase_mlff.models.base.compute_properties` gives them (detached)."""
        if self._due():
            compile_cache_dir()
            model = self.model

            def properties(batch: Batch, forces: bool, stress: bool) -> dict[str, Tensor]:
                return _properties(model, batch, forces, stress)

            try:
                self._compiled = torch.compile(properties, dynamic=self.dynamic, fullgraph=True)
            except Exception as exc:  # e.g. a platform torch.compile does not support
                self._fall_back(exc)
        if self.compiled:
            # the skin shell is dropped eagerly: inside, it would be evaluated (as zeros)
            restricted = restrict_graph(batch, batch.cutoff)
            t0 = time.perf_counter() if self.compile_seconds is None else None
            try:
                # no_grad: torch.func.grad still differentiates inside, but nothing links
                # the results to parameters that require grad (an MD loop would otherwise
                # chain every step's graph) and no double backward is compiled
                with torch.no_grad():
                    out = self._compiled(restricted, forces, stress)
            except (torch.OutOfMemoryError, MemoryError, KeyboardInterrupt):
                raise  # not a compilation problem: the eager model would not fit either
            except Exception as exc:
                self._fall_back(exc)
            else:
                out = {k: v.detach() for k, v in out.items()}
                if t0 is not None:
                    self.compile_seconds = time.perf_counter() - t0
                    log.info(
                        "compiled %s in %.1f s", type(self.model).__name__, self.compile_seconds
                    )
                return out
        t0 = time.perf_counter()
        out = compute_properties(self.model, batch, forces=forces, stress=stress)
        self.eager_seconds += time.perf_counter() - t0
        self.eager_calls += 1
        return out
