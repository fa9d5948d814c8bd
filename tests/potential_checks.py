"""Shared checks that every potential of the project must pass (named tolerances).

Use through :func:`check_potential`, or call the single checks. They take a
``torch.nn.Module`` potential (float64 recommended) and ASE structures.
"""

from __future__ import annotations

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator
from ase.calculators.fd import calculate_numerical_stress
from scipy.spatial.transform import Rotation

from ase_mlff.calculators import MLFFCalculator
from ase_mlff.graph import Batch
from ase_mlff.models import compute_properties

FD_STEP = 1e-4  # Å (positions) and strain
FD_FORCE_ATOL = 1e-5  # eV/Å, float64 central differences
FD_STRESS_ATOL = 1e-6  # eV/Å³
INVARIANCE_ATOL_E = 1e-8  # eV
INVARIANCE_ATOL_F = 1e-7  # eV/Å
BATCH_ATOL_E = 1e-8
BATCH_ATOL_F = 1e-8


def _props(model, atoms_list, stress=False) -> dict[str, np.ndarray]:
    b = Batch.from_atoms(atoms_list, cutoff=model.cutoff, dtype=torch.float64)
    out = compute_properties(model, b, forces=True, stress=stress)
    return {k: v.numpy() for k, v in out.items()}


def check_forces_fd(calc: Calculator, atoms: Atoms, n_atoms: int = 4, seed: int = 0) -> None:
    """Forces equal the central difference of the energy, -dE/dx."""
    a = atoms.copy()
    a.calc = calc
    forces = a.get_forces()
    rng = np.random.default_rng(seed)
    for i in rng.choice(len(a), size=min(n_atoms, len(a)), replace=False):
        for c in range(3):
            pos = a.positions.copy()
            pos[i, c] += FD_STEP
            a.positions = pos
            ep = a.get_potential_energy()
            pos[i, c] -= 2 * FD_STEP
            a.positions = pos
            em = a.get_potential_energy()
            pos[i, c] += FD_STEP
            a.positions = pos
            fd = -(ep - em) / (2 * FD_STEP)
            assert abs(fd - forces[i, c]) < FD_FORCE_ATOL, (i, c, fd, forces[i, c])


def check_stress_fd(calc: Calculator, atoms: Atoms) -> None:
    """Stress equals ASE's central-difference strain derivative of the energy."""
    a = atoms.copy()
    a.calc = calc
    stress = a.get_stress(voigt=False)
    numerical = calculate_numerical_stress(a, eps=FD_STEP, voigt=False)
    np.testing.assert_allclose(stress, numerical, atol=FD_STRESS_ATOL)


def check_invariance(model, atoms: Atoms, seed: int = 0, permutation: bool = True) -> None:
    """Energy invariant and forces covariant under rotation, translation, permutation.

    ``permutation=False`` for fixed-topology potentials (classical force fields), whose
    atoms are identified by their index.
    """
    rng = np.random.default_rng(seed)
    ref = _props(model, [atoms])
    rot = Rotation.random(random_state=seed).as_matrix()
    moved = atoms.copy()
    moved.positions = atoms.positions @ rot.T + rng.normal(size=3)
    if atoms.pbc.any():
        moved.cell = atoms.cell[:] @ rot.T
    out = _props(model, [moved])
    np.testing.assert_allclose(out["energy"], ref["energy"], atol=INVARIANCE_ATOL_E)
    np.testing.assert_allclose(out["forces"], ref["forces"] @ rot.T, atol=INVARIANCE_ATOL_F)
    if not permutation:
        return
    perm = rng.permutation(len(atoms))
    permuted = atoms[perm]
    out = _props(model, [permuted])
    np.testing.assert_allclose(out["energy"], ref["energy"], atol=INVARIANCE_ATOL_E)
    np.testing.assert_allclose(out["forces"], ref["forces"][perm], atol=INVARIANCE_ATOL_F)


def check_batched_equals_single(model, images: list[Atoms], stress: bool = False) -> None:
    """One batch of several systems gives each system's single-system result."""
    batched = _props(model, images, stress=stress)
    start = 0
    for k, a in enumerate(images):
        single = _props(model, [a], stress=stress)
        np.testing.assert_allclose(batched["energy"][k], single["energy"][0], atol=BATCH_ATOL_E)
        np.testing.assert_allclose(
            batched["forces"][start : start + len(a)], single["forces"], atol=BATCH_ATOL_F
        )
        if stress:
            np.testing.assert_allclose(batched["stress"][k], single["stress"][0], atol=BATCH_ATOL_F)
        start += len(a)


def check_calculator_equals_model(model, calc: Calculator, atoms: Atoms) -> None:
    """The ASE calculator returns exactly what the model computes."""
    periodic = bool(atoms.pbc.all())
    ref = _props(model, [atoms], stress=periodic)
    a = atoms.copy()
    a.calc = calc
    np.testing.assert_allclose(a.get_potential_energy(), ref["energy"][0], rtol=1e-12)
    np.testing.assert_allclose(a.get_forces(), ref["forces"], atol=1e-10)
    if periodic:
        np.testing.assert_allclose(a.get_stress(voigt=False), ref["stress"][0], atol=1e-10)


def check_potential(
    model, molecules: list[Atoms], periodic: list[Atoms] = (), permutation: bool = True
) -> None:
    """Every check above on every structure given (model in float64)."""
    model = model.double().eval()
    calc = MLFFCalculator(model, dtype="float64")
    for atoms in [*molecules, *periodic]:
        check_forces_fd(calc, atoms)
        check_invariance(model, atoms, permutation=permutation)
        check_calculator_equals_model(model, calc, atoms)
    for atoms in periodic:
        check_stress_fd(calc, atoms)
    check_batched_equals_single(model, list(molecules))
    if periodic:
        check_batched_equals_single(model, list(periodic), stress=True)
