"""Well-tempered metadynamics of alanine dipeptide on φ and ψ: ours against OpenMM's own
``app.Metadynamics`` on the same classical force field (issue 18's peer check).

    python benchmarks/metadynamics_alanine_dipeptide.py [--walkers 32] [--ns 0.5] [--solvent gbn2]

The molecule: ACE-ALA-NME embedded by RDKit (ETKDG, seed 7, MMFF), AMBER ff14SB
(``amber14-all.xml``), in vacuum (default) or with ``implicit/gbn2.xml`` as the shipped
``alanine`` reference (``--solvent gbn2``), no cutoff, no constraints, so both engines
integrate the same System: OpenMM directly (CPU platform, one walker), ours with
``walkers`` walkers sharing their hills, the same total simulated time. Ours evaluates the
vacuum System with :class:`~ase_mlff.models.classical.ClassicalPotential` (equal to
OpenMM's energy to 1e-8 eV) and the GBn2 one, whose GB term it has no torch form of, with
OpenMM itself per walker (:class:`~ase_mlff.calculators.openmm.OpenMMCalculator` through
:class:`~ase_mlff.models.external.CalculatorPotential`, CPU platform as OpenMM's own run). Both:
Langevin 300 K, 1 fs, friction 1 ps⁻¹; hills of 1.2 kJ/mol, σ = 0.35 rad, every 500 steps,
bias factor 6. Prints the MAE between the two F(φ) and the two F(ψ) (marginals of the 2-D
free energies, kJ/mol, over the bins below 25 kJ/mol) and the wall times. (OpenMM's
``app.Metadynamics`` updates its tabulated bias in the Context at every hill, about
0.25 s each here, so its run takes minutes.)
"""

from __future__ import annotations

import argparse
import time

import numpy as np

KJ_PER_EV = 96.48533212331
SIGMA, HEIGHT_KJ, PACE, GAMMA, T = 0.35, 1.2, 500, 6.0, 300.0
GRID = 64


def alanine_dipeptide(solvent: str = "vacuum"):
    """(OpenMM System, Topology, positions in nm, φ atoms, ψ atoms) of ACE-ALA-NME in
    ``solvent`` (:func:`ase_mlff.reference.alanine.alanine_dipeptide`)."""
    from ase_mlff.reference.alanine import alanine_dipeptide as build

    system, top, pos, phi, psi = build(solvent)
    return system, top, pos / 10.0, phi, psi


def openmm_fes(system, top, pos_nm, phi, psi, steps: int, seed: int):
    """OpenMM's well-tempered metadynamics: F on its grid, indexed [ψ, φ], kJ/mol."""
    import openmm
    from openmm import app, unit

    cvs = []
    for quad in (phi, psi):
        f = openmm.CustomTorsionForce("theta")
        f.addTorsion(*quad, [])
        cvs.append(app.BiasVariable(f, -np.pi, np.pi, SIGMA, True, gridWidth=GRID))
    meta = app.Metadynamics(
        system, cvs, T * unit.kelvin, GAMMA, HEIGHT_KJ * unit.kilojoule_per_mole, PACE
    )
    integ = openmm.LangevinMiddleIntegrator(T * unit.kelvin, 1 / unit.picosecond, 0.001)
    integ.setRandomNumberSeed(seed)
    sim = app.Simulation(top, system, integ, openmm.Platform.getPlatformByName("CPU"))
    sim.context.setPositions(pos_nm * unit.nanometer)
    sim.context.setVelocitiesToTemperature(T * unit.kelvin, seed)
    meta.step(sim, steps)
    return meta.getFreeEnergy().value_in_unit(unit.kilojoule_per_mole)


def our_fes(system, top, pos_nm, phi, psi, walkers: int, steps: int, seed: int):
    """Ours on the same System: F on OpenMM's grid, indexed [ψ, φ], kJ/mol."""
    import openmm
    from ase import Atoms

    from ase_mlff.forcefields.openmm import OPENMM_COULOMB_EV_A, topology_from_openmm
    from ase_mlff.md.colvars import Dihedral
    from ase_mlff.md.metadynamics import Metadynamics
    from ase_mlff.md.runner import run_md
    from ase_mlff.models.classical import ClassicalPotential

    numbers = np.array([a.element.atomic_number for a in top.atoms()])
    if any(isinstance(f, openmm.CustomGBForce) for f in system.getForces()):  # GBn2
        from ase_mlff.calculators.openmm import OpenMMCalculator
        from ase_mlff.models.external import CalculatorPotential

        xml = openmm.XmlSerializer.serialize(system)
        model = CalculatorPotential(
            lambda: OpenMMCalculator(xml, numbers, "CPU", {"Threads": "1"}), "OpenMM GBn2"
        )
    else:
        model = ClassicalPotential(
            topology_from_openmm(system, numbers, name="ala2", coulomb=OPENMM_COULOMB_EV_A)
        ).double()
    atoms = Atoms(numbers=numbers, positions=pos_nm * 10.0)
    metad = Metadynamics(
        [Dihedral(*phi), Dihedral(*psi)],
        sigma=[SIGMA, SIGMA],
        height=HEIGHT_KJ / KJ_PER_EV,
        pace=PACE,
        temperature_K=T,
        bias_factor=GAMMA,
        shared=True,
    )
    run_md(
        model,
        [atoms.copy() for _ in range(walkers)],
        steps=steps,
        dt=1.0,
        integrator="langevin",
        temperature_K=T,
        friction=0.001,
        detectors=[],
        metadynamics=metad,
        seed=seed,
        check_every=PACE,
        record_every=PACE,
    )
    g = np.linspace(-np.pi, np.pi, GRID)
    psi_g, phi_g = np.meshgrid(g, g, indexing="ij")
    f = metad.free_energy(np.stack([phi_g.ravel(), psi_g.ravel()], axis=1))
    return f.reshape(GRID, GRID) * KJ_PER_EV


def marginal(f_ij: np.ndarray, axis: int) -> np.ndarray:
    """F of one CV: −kT ln Σ exp(−F/kT) over the other, kJ/mol, minimum 0."""
    from ase_mlff.reference.alanine import marginal as marginal_of

    return marginal_of(f_ij, axis, T)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--walkers", type=int, default=32)
    p.add_argument("--ns", type=float, default=0.5, help="total simulated time of each engine")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--solvent", choices=["vacuum", "gbn2"], default="vacuum")
    a = p.parse_args()
    import torch

    torch.set_num_threads(1)
    total = int(a.ns * 1e6)
    t0 = time.perf_counter()
    f_ours = our_fes(*alanine_dipeptide(a.solvent), a.walkers, total // a.walkers, a.seed)
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()  # OpenMM adds its bias force to the System: a fresh one
    f_omm = openmm_fes(*alanine_dipeptide(a.solvent), total, a.seed)
    t_omm = time.perf_counter() - t0
    kt = 8.314462618e-3 * T
    print(
        f"{a.solvent}, {a.ns} ns each; OpenMM 1 walker {t_omm:.0f} s, "
        f"ours {a.walkers} walkers {t_ours:.0f} s"
    )
    for name, axis in (("phi", 0), ("psi", 1)):
        m_omm, m_ours = marginal(f_omm, axis), marginal(f_ours, axis)
        sel = m_omm < 25.0
        mae = np.mean(np.abs(m_ours[sel] - m_omm[sel]))
        print(
            f"F({name}) MAE ours vs OpenMM: {mae:.2f} kJ/mol = {mae / kt:.2f} kT "
            f"over {sel.sum()} of {GRID} bins"
        )


if __name__ == "__main__":
    main()
