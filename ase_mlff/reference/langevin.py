"""The reference sets' Langevin MD with an ASE calculator (tblite), written once.

    for step in langevin_frames(atoms, rng, np.full(n, 500.0), dt_fs=0.5,
                                friction_per_fs=0.01, first=2000, stride=10, molecule=True):
        store(atoms, step)

Used by the GFN2-xTB molecule MD (:mod:`~ase_mlff.reference.molecule`) and by silica's
NVT and melt-quench runs (:mod:`~ase_mlff.reference.silica`).

Why not :func:`ase_mlff.md.ase_driver.run_ase_md`: it drives the same integrator (ASE
``Langevin``, ``fixcm=False``, FixCom for a molecule, the same ``(seed, id)`` stream), but
it cannot make the shipped frames again, nor what a reference set needs:

* its start velocities are Maxwell–Boltzmann *rescaled to exactly T*
  (``force_temp=True``) and keep their rotation; the shipped aspirin and silica sets start
  from unscaled Maxwell–Boltzmann velocities (plus ``ZeroRotation`` for a molecule), so
  the same seed gives other trajectories (checked: the first stored aspirin frame already
  differs);
* it holds one temperature; silica's melt-quench changes the target every step;
* it records positions, energy, temperature and max |F| and stops a replica at a
  detector's verdict; a reference set stores the labels (raw forces, stress) of every
  frame and, for silica, keeps the frames made before an SCC failure.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np
from ase import Atoms

log = logging.getLogger(__name__)


def langevin_frames(
    atoms: Atoms,
    rng: np.random.Generator,
    temperature_K: np.ndarray,
    *,
    dt_fs: float,
    friction_per_fs: float,
    first: int,
    stride: int,
    molecule: bool,
    stop_on_error: bool = False,
    name: str = "",
) -> Iterator[int]:
    """Langevin MD of ``atoms`` (calculator attached), one step per entry of
    ``temperature_K`` (the target of each step, K); yields each step ``s > first`` with
    ``(s − first) % stride == 0``, after which the caller stores a frame.

    Start: Maxwell–Boltzmann velocities at ``temperature_K[0]`` from ``rng``, no net
    momentum (``Stationary``); a ``molecule`` also loses its rotation (``ZeroRotation``)
    and keeps its centre of mass fixed (``FixCom``, as ASE recommends; the integrator's
    own ``fixcm`` is off). The same ``rng`` then draws the Langevin noise. With
    ``stop_on_error`` a calculator error (an SCC that does not converge) ends the run
    with the frames made so far; otherwise it is raised.
    """
    from ase import units
    from ase.constraints import FixCom
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary, ZeroRotation

    target = float(temperature_K[0])
    MaxwellBoltzmannDistribution(atoms, temperature_K=target, rng=rng)
    Stationary(atoms)
    if molecule:
        ZeroRotation(atoms)
        atoms.set_constraint(FixCom())
    dyn = Langevin(
        atoms,
        timestep=dt_fs * units.fs,
        temperature_K=target,
        friction=friction_per_fs / units.fs,
        rng=rng,
        fixcm=False,
    )
    for step in range(1, len(temperature_K) + 1):
        t = float(temperature_K[step - 1])
        if t != target:  # the same target recomputes the same coefficients: skip it
            dyn.set_temperature(temperature_K=t)
            target = t
        try:
            dyn.run(1)
        except Exception as exc:  # tblite raises when the SCC fails
            if not stop_on_error:
                raise
            log.warning("%s: MD stopped at step %d (%s)", name, step, exc)
            return
        if step > first and (step - first) % stride == 0:
            yield step
