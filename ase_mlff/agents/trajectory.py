"""Ray actor that owns a batch of MD trajectories.

The actor receives a small picklable :class:`TrajectorySpec` (a model name or checkpoint
path, start structures, MD settings, where to write) and builds its model itself on its
own resources; no live model or calculator crosses the wire. It runs
:func:`ase_mlff.md.run_md` with trajectories and MD-state checkpoints in its ``traj_dir``,
so when Ray restarts a killed actor and retries the call, the run resumes from the last
checkpoint and loses no frame written before it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from ase import Atoms

# imported here, not inside the methods: run() and progress() may execute in two threads
# of the actor at once, and concurrent first imports of one package can see it half-made
from ase_mlff.agents.specs import make_calculator
from ase_mlff.graph.geometry import BondGraph
from ase_mlff.md.ase_driver import run_ase_md
from ase_mlff.md.detectors import default_detectors
from ase_mlff.md.runner import run_md
from ase_mlff.md.storage import read_summary
from ase_mlff.utils import DTYPES


@dataclass(frozen=True)
class TrajectorySpec:
    """What an agent runs. Give ``model`` (a torch potential: batched engine, checkpoints)
    or ``calculator`` (a spec for :func:`ase_mlff.agents.specs.make_calculator`,
    e.g. ``{"name": "tblite", "method": "GFN2-xTB"}``: the ASE-driven path, one replica
    after another, no MD-state checkpoints)."""

    model: str | None  # shipped model name or checkpoint directory
    images: tuple[Atoms, ...]  # start structures, one per replica
    replica_ids: tuple[int, ...]
    traj_dir: str
    md: dict[str, Any] = field(default_factory=dict)  # run_md keyword arguments
    checkpoint_every: int | None = 200
    detectors: bool = True
    bond_delta: float = 0.5  # Å, the bond-length deviation that ends a trajectory
    #: bond graphs and reference lengths for the bond detector (e.g. from all the study's
    #: starts, so that how replicas are spread over agents changes nothing); None: from
    #: this agent's own starts
    bond_reference: tuple[BondGraph, ...] | None = None
    dtype: str = "float64"
    device: str = "cpu"
    threads: int = 1
    calculator: dict[str, Any] | None = None
    #: detectors(start images, state) -> list; None: the molecular default (bond length
    #: deviation ``bond_delta``, overlap, ...); must pickle (a module-level function or
    #: a functools.partial of one, e.g. ``partial(materials_detectors, window=500)``)
    detector_factory: Callable[..., list] | None = None

    def detectors_for_run(self) -> Callable[..., list]:
        if not self.detectors:
            return _no_detectors
        if self.detector_factory is not None:
            return self.detector_factory
        return partial(default_detectors, delta=self.bond_delta, bond_reference=self.bond_reference)


def _no_detectors(references, state) -> list:
    return []


class TrajectoryAgent:
    """Wrap with ``ray.remote(...)``; see :func:`ase_mlff.agents.run_stability_study`."""

    def __init__(self, spec: TrajectorySpec) -> None:
        import torch

        from ase_mlff._malloc import keep_freed_memory
        from ase_mlff.calculators.mlff import resolve_model_path

        keep_freed_memory()  # this actor's process runs MD steps: reuse freed blocks
        from ase_mlff.models.io import load_model

        torch.set_num_threads(spec.threads)
        if (spec.model is None) == (spec.calculator is None):
            raise ValueError("a TrajectorySpec needs exactly one of model and calculator")
        self.spec = spec
        self.dtype = DTYPES[spec.dtype]
        self.model = None
        if spec.model is not None:
            self.model, _ = load_model(
                resolve_model_path(spec.model), device=spec.device, dtype=self.dtype
            )

    def pid(self) -> int:
        return os.getpid()

    def progress(self) -> dict[str, Any]:
        """Per-replica results so far (frames stored, t_inst and reason of those that
        stopped), read from the run's on-disk summary; callable while :meth:`run` runs
        when the actor allows two concurrent calls (``max_concurrency=2``)."""
        try:
            return read_summary(self.spec.traj_dir)
        except (FileNotFoundError, ValueError):  # not started, or being rewritten
            return {"replicas": {}}

    def run(self) -> dict[str, Any]:
        s = self.spec
        if s.calculator is not None:
            run = run_ase_md(
                list(s.images),
                partial(make_calculator, s.calculator),
                replica_ids=list(s.replica_ids),
                traj_dir=s.traj_dir,
                detector_factory=s.detectors_for_run(),
                **s.md,
            )
            return self._report(run)
        run = run_md(
            self.model,
            list(s.images),
            replica_ids=list(s.replica_ids),
            traj_dir=s.traj_dir,
            checkpoint_every=s.checkpoint_every,
            detectors=None,
            detector_factory=s.detectors_for_run(),
            dtype=self.dtype,
            device=s.device,
            **s.md,
        )
        return self._report(run)

    def _report(self, run) -> dict[str, Any]:
        s = self.spec
        return {
            "replicas": [
                {
                    "replica_id": r.replica_id,
                    "t_inst_fs": r.t_inst_fs,
                    "reason": r.reason,
                    "stable": r.stable,
                    "frames": len(r.times_fs),
                    "fired_fs": dict(getattr(r, "fired_fs", {})),  # criterion: onset fs
                }
                for r in run.replicas
            ],
            "total_fs": run.steps * run.dt_fs,
            "settings": run.settings,
            "traj_dir": s.traj_dir,
        }
