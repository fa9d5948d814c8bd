"""MD of any ASE calculator (GFN2-xTB, OpenMM, a user's own) through the same detectors and
the same results as the batched engine, one replica after another.

ASE's own integrators step the atoms: ``Langevin`` (with ``FixCom``, as ASE recommends),
``VelocityVerlet``, or ``NoseHooverChainNVT``. Every ``check_every`` steps the replica is
viewed as a one-replica :class:`~ase_mlff.md.MDState` and judged by the detectors.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ase import Atoms, units
from ase.calculators.calculator import Calculator
from ase.constraints import FixCom
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary

from ase_mlff.graph.batch import Batch
from ase_mlff.md.detectors import default_detectors
from ase_mlff.md.protocol import MDProtocol, make_protocol
from ase_mlff.md.runner import MDRun, ReplicaResult
from ase_mlff.md.state import MDState
from ase_mlff.md.storage import Frame, TrajectoryStore
from ase_mlff.md.validation import MDParameterError, validate_images

ASE_INTEGRATORS = ("nve", "langevin", "nose_hoover")


def _view(atoms: Atoms, cutoff: float) -> MDState:
    """A one-replica MDState of the ASE atoms (for the detectors)."""
    batch = Batch.from_atoms(atoms, cutoff=cutoff, dtype=torch.float64)
    return MDState(
        batch=batch,
        vel_nc=torch.as_tensor(atoms.get_velocities()),
        mass_n=torch.as_tensor(atoms.get_masses()),
        forces_nc=torch.as_tensor(atoms.get_forces(apply_constraint=False)),
        energy_s=torch.tensor([atoms.get_potential_energy()], dtype=torch.float64),
    )


def _snapshot(atoms: Atoms, step: int, dt: float, dof: int) -> Frame:
    """The current frame, the temperature over ``dof`` degrees of freedom."""
    temperature = 2 * atoms.get_kinetic_energy() / (dof * units.kB)
    fmax = float(np.linalg.norm(atoms.get_forces(apply_constraint=False), axis=1).max())
    return Frame(step * dt, atoms.positions.copy(), atoms.get_potential_energy(), temperature, fmax)


def _dynamics(
    atoms: Atoms,
    integrator: str,
    dt: float,
    temperature_K: float,
    friction: float,
    tdamp: float,
    rng: np.random.Generator,
):
    if integrator == "langevin":
        from ase.md.langevin import Langevin

        return Langevin(
            atoms,
            dt * units.fs,
            temperature_K=temperature_K,
            friction=friction / units.fs,
            rng=rng,
            fixcm=False,
        )
    if integrator == "nve":
        from ase.md.verlet import VelocityVerlet

        return VelocityVerlet(atoms, dt * units.fs)
    if integrator == "nose_hoover":
        from ase.md.nose_hoover_chain import NoseHooverChainNVT

        return NoseHooverChainNVT(
            atoms, dt * units.fs, temperature_K=temperature_K, tdamp=tdamp * units.fs
        )
    raise ValueError(f"unknown integrator {integrator!r}; choose nve, langevin or nose_hoover")


def run_ase_md(
    images: Sequence[Atoms],
    calculator_factory: Callable[[], Calculator],
    protocol: MDProtocol | str | Mapping[str, Any] | None = None,
    *,
    seed: int = 0,
    replica_ids: Sequence[int] | None = None,
    detector_factory: Callable = default_detectors,
    detector_cutoff: float = 5.0,
    traj_dir: str | Path | None = None,
    **protocol_fields: Any,
) -> MDRun:
    """Each image a replica, integrated by ASE with a fresh calculator from the factory.

    The protocol is the same :class:`~ase_mlff.md.protocol.MDProtocol` as
    :func:`~ase_mlff.md.runner.run_md`'s (``protocol`` with ``protocol_fields`` applied);
    ASE integrates ``nve``, ``langevin`` and ``nose_hoover``. ``detector_cutoff`` is the
    radius of the graph the overlap detector looks at. With ``traj_dir`` the stable frames
    are stored as they pass their checks, as in run_md (no MD-state checkpoints on this
    path). Bad parameters raise ``ValueError`` before any calculator is made.
    """
    p = make_protocol(protocol, **protocol_fields)
    if p.integrator not in ASE_INTEGRATORS:
        raise MDParameterError(
            "integrator",
            f"unknown integrator {p.integrator!r} for the ASE path; choose from "
            f"{sorted(ASE_INTEGRATORS)}",
        )
    validate_images(images)
    steps, dt, integrator, temperature_K = p.steps, p.dt, p.integrator, p.temperature_K
    check_every, record_every, friction, tdamp = p.check_every, p.record_every, p.friction, p.tdamp
    ids = list(range(len(images))) if replica_ids is None else list(replica_ids)
    settings = {
        "engine": "ase",
        "integrator": integrator,
        "temperature_K": temperature_K,
        "seed": seed,
        "check_every": check_every,
        "record_every": record_every,
    }
    store = TrajectoryStore(traj_dir, images, ids, settings) if traj_dir else None
    results = []
    for r, start in zip(ids, images):
        atoms = start.copy()
        atoms.calc = calculator_factory()
        rng = np.random.default_rng([seed, r])
        MaxwellBoltzmannDistribution(atoms, temperature_K=temperature_K, rng=rng, force_temp=True)
        Stationary(atoms)
        if integrator == "langevin":
            atoms.set_constraint(FixCom())
        dets = detector_factory([start], _view(atoms, detector_cutoff))
        dyn = _dynamics(atoms, integrator, dt, temperature_K, friction, tdamp, rng)
        frames, pending = [], []
        t_inst, reason = float("nan"), None
        dof = max(3 * len(atoms) - 3, 1)

        pending.append(_snapshot(atoms, 0, dt, dof))
        for step in range(1, steps + 1):
            dyn.run(1)
            if step % record_every == 0:
                pending.append(_snapshot(atoms, step, dt, dof))
            if step % check_every == 0 or step == steps:
                view = _view(atoms, detector_cutoff)
                failed = [d for d in dets if bool(d(view)[0])]
                if failed:  # the earliest onset (a window dates its failure back)
                    onsets = [
                        (step - getattr(d, "onset_lag_checks", 0) * check_every) * dt
                        for d in failed
                    ]
                    k = int(np.argmin(onsets))
                    t_inst, reason = onsets[k], failed[k].name
                    frames = [f for f in frames if f.time_fs < t_inst]
                    if store:
                        store.mark_stopped(r, t_inst, reason)
                    break
                frames.extend(pending)
                if store:
                    store.append(r, pending)
                    store.flush()
                pending = []
        results.append(ReplicaResult.from_frames(r, t_inst, reason, frames))
    if store:
        store.close()
    return MDRun(replicas=results, dt_fs=dt, steps=steps, settings=settings)
