"""GAFF-2.11 aspirin and the OpenMM -> Topology conversion (tests need no AmberTools,
except the one marked slow, which re-parametrises aspirin)."""

from __future__ import annotations

import shutil

import ase.io
import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import molecule

openmm = pytest.importorskip("openmm")
pytest.importorskip("networkx")

from openmm import unit  # noqa: E402

from ase_mlff.calculators import MLFFCalculator  # noqa: E402
from ase_mlff.calculators.openmm import OpenMMCalculator, openmm_energies_forces  # noqa: E402
from ase_mlff.data.io import SHIPPED_DIR as DATA_DIR  # noqa: E402
from ase_mlff.forcefields.gaff import (  # noqa: E402
    GAFFParameters,
    gaff_potential,
    gaff_system,
    load_parameters,
    relaxed_geometry,
)
from ase_mlff.forcefields.openmm import (  # noqa: E402
    OPENMM_COULOMB_EV_A,
    match_atoms,
    perceive_bonds,
    permute_system,
    topology_bonds,
    topology_from_openmm,
)
from ase_mlff.graph import Batch  # noqa: E402
from ase_mlff.models import ClassicalPotential, compute_properties  # noqa: E402
from tests.potential_checks import (  # noqa: E402
    check_batched_equals_single,
    check_calculator_equals_model,
    check_forces_fd,
    check_invariance,
)

MD17_XYZ = DATA_DIR / "aspirin_md17_order.xyz"
#: measured 1e-10 (E) and 2e-11 (F): ASE and OpenMM Coulomb constants differ by 9.1e-10
REL_TOL = 1e-8


def _torch_ef(model: ClassicalPotential, pos_snc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s, n, _ = pos_snc.shape
    b = Batch.from_arrays(
        np.tile(model.topology.numbers, s),
        pos_snc.reshape(-1, 3),
        np.full(s, n),
        cutoff=0.0,
        dtype=torch.float64,
    )
    out = compute_properties(model, b)
    return out["energy"].numpy(), out["forces"].numpy().reshape(s, n, 3)


@pytest.fixture(scope="module")
def params() -> GAFFParameters:
    return load_parameters("aspirin")


@pytest.fixture(scope="module")
def model() -> ClassicalPotential:
    return gaff_potential("aspirin")


@pytest.fixture(scope="module")
def relaxed() -> Atoms:
    return relaxed_geometry("aspirin")


@pytest.fixture(scope="module")
def frames(relaxed) -> np.ndarray:
    rng = np.random.default_rng(0)
    sigma = np.linspace(0.1, 0.2, 20)[:, None, None]
    return relaxed.positions[None] + sigma * rng.normal(size=(20, len(relaxed), 3))


# --------------------------------------------------------------------------- shipped aspirin


def test_shipped_order_is_md17(params, model):
    xyz = ase.io.read(MD17_XYZ)
    np.testing.assert_array_equal(params.numbers, xyz.numbers)
    np.testing.assert_array_equal(model.topology.numbers, xyz.numbers)
    np.testing.assert_array_equal(topology_bonds(model.topology), perceive_bonds(xyz))
    assert params.provenance["gaff_header"].startswith(
        "AMBER General Force Field for organic molecules (Version 2.11"
    )
    assert abs(params.charges.sum()) < 1e-4
    assert params.atom_types.count("ca") == 6 and params.atom_types.count("hc") == 3


def test_torch_equals_openmm_on_rattled_aspirin(model, frames):
    e_mm, f_mm = openmm_energies_forces(gaff_system("aspirin"), frames, platform="Reference")
    e_t, f_t = _torch_ef(model, frames)
    rel_e = np.abs(e_t - e_mm).max() / np.abs(e_mm).max()
    rel_f = np.abs(f_t - f_mm).max() / np.abs(f_mm).max()
    assert rel_e < REL_TOL, rel_e
    assert rel_f < REL_TOL, rel_f
    # with OpenMM's own Coulomb constant the two agree to rounding (measured ~1e-15)
    top = topology_from_openmm(
        gaff_system("aspirin"), model.topology.numbers, coulomb=OPENMM_COULOMB_EV_A
    )
    e_t, f_t = _torch_ef(ClassicalPotential(top), frames)
    assert np.abs(e_t - e_mm).max() / np.abs(e_mm).max() < 1e-13
    assert np.abs(f_t - f_mm).max() / np.abs(f_mm).max() < 1e-13


def test_openmm_calculator_equals_potential(model, frames):
    atoms = Atoms(numbers=model.topology.numbers, positions=frames[3])
    calc = OpenMMCalculator(gaff_system("aspirin"), atoms)
    atoms.calc = calc
    e_t, f_t = _torch_ef(model, frames[3:4])
    np.testing.assert_allclose(atoms.get_potential_energy(), e_t[0], rtol=REL_TOL)
    np.testing.assert_allclose(atoms.get_forces(), f_t[0], atol=REL_TOL * np.abs(f_t).max())
    context = calc.context
    atoms.positions = frames[4]
    atoms.get_forces()
    assert calc.context is context  # one Context, reused
    with pytest.raises(ValueError, match="elements"):
        calc.calculate(atoms[::-1])


def test_shared_potential_checks(model, relaxed):
    images = []
    for seed in range(3):
        a = relaxed.copy()
        a.rattle(0.05, seed=seed)
        images.append(a)
    calc = MLFFCalculator(model, dtype="float64")
    check_forces_fd(calc, images[0])
    check_invariance(model, images[1], permutation=False)
    check_calculator_equals_model(model, calc, images[2])
    check_batched_equals_single(model, images)


def test_relaxed_geometry(model, params, relaxed):
    assert relaxed.info["fmax"] < 1e-5
    e_start, _ = _torch_ef(model, params.reference_positions[None])
    assert relaxed.info["energy"] < e_start[0]
    # an OpenMM evaluation agrees that it is a stationary point
    _, f = openmm_energies_forces(gaff_system("aspirin"), relaxed.positions[None])
    assert np.abs(f).max() < 1e-5


def test_match_atoms_recovers_permutation(model):
    xyz = ase.io.read(MD17_XYZ)
    rng = np.random.default_rng(3)
    perm = rng.permutation(len(xyz))
    target = xyz[perm]
    target.positions = target.positions @ np.linalg.qr(rng.normal(size=(3, 3)))[0].T
    top = model.topology
    order = match_atoms(top.numbers, topology_bonds(top), target)
    np.testing.assert_array_equal(top.numbers[order], target.numbers)
    moved = top.permuted(order)
    np.testing.assert_array_equal(topology_bonds(moved), perceive_bonds(target))
    # symmetric atoms (methyl H) may be swapped; the energy function is the same
    e_ref, _ = _torch_ef(model, xyz.positions[None])
    e_new, _ = _torch_ef(ClassicalPotential(moved), target.positions[None])
    np.testing.assert_allclose(e_new, e_ref, rtol=1e-10)
    # and from positions instead of bonds
    order2 = match_atoms(xyz.numbers, xyz.positions, target)
    np.testing.assert_array_equal(xyz.numbers[order2], target.numbers)


def test_match_atoms_errors(params):
    xyz = ase.io.read(MD17_XYZ)
    with pytest.raises(ValueError, match="elements differ"):
        match_atoms(xyz.numbers, xyz.positions, molecule("CH3CH2OH"))
    # same formula, other graph: the acid H moved onto the ester's carbonyl O
    types = params.atom_types
    h = types.index("ho")
    bonds = perceive_bonds(xyz).tolist()
    nbrs = {k: {j for b in bonds if k in b for j in b if j != k} for k in range(len(xyz))}
    ester_c = next(
        k for k, t in enumerate(types) if t == "c" and "c3" in {types[j] for j in nbrs[k]}
    )
    o = next(j for j in nbrs[ester_c] if types[j] == "o")
    other = xyz.copy()
    d = xyz.positions[o] - xyz.positions[ester_c]
    other.positions[h] = xyz.positions[o] + 0.97 * d / np.linalg.norm(d)
    with pytest.raises(ValueError, match=r"not the same bond graph.*degree"):
        match_atoms(xyz.numbers, xyz.positions, other)


def test_wrong_molecule_for_potential(model, relaxed):
    calc = MLFFCalculator(model, dtype="float64")
    ethanol = molecule("CH3CH2OH")
    ethanol.calc = calc
    with pytest.raises(ValueError, match="fixed order"):
        ethanol.get_potential_energy()
    shuffled = relaxed[np.random.default_rng(0).permutation(len(relaxed))]
    shuffled.calc = calc
    with pytest.raises(ValueError, match="match_atoms"):
        shuffled.get_potential_energy()


def test_save_load_roundtrip(params, tmp_path):
    params.save(tmp_path / "p")
    back = GAFFParameters.load(tmp_path / "p")
    assert back.atom_types == params.atom_types
    np.testing.assert_array_equal(back.charges, params.charges)
    np.testing.assert_array_equal(back.reference_positions, params.reference_positions)
    assert back.system_xml == params.system_xml
    assert gaff_potential(tmp_path / "p").topology.n_atoms == 21
    with pytest.raises(FileNotFoundError, match="shipped"):
        gaff_potential("no-such-molecule")


def test_permute_system(params):
    rng = np.random.default_rng(1)
    order = rng.permutation(params.n_atoms)
    pos = params.reference_positions
    e0, f0 = openmm_energies_forces(params.system(), pos[None])
    e1, f1 = openmm_energies_forces(permute_system(params.system(), order), pos[order][None])
    np.testing.assert_allclose(e1, e0, rtol=1e-12)
    np.testing.assert_allclose(f1[0], f0[0][order], atol=1e-10)
    moved = params.permuted(order)
    assert moved.atom_types == [params.atom_types[k] for k in order]


# --------------------------------------------------------------------------- tiny systems


def _tiny_system(kinds: tuple[str, ...]) -> openmm.System:
    """4 atoms, every force kind of topology_from_openmm with non-trivial parameters."""
    s = openmm.System()
    for m in (12.0, 12.0, 16.0, 1.0):
        s.addParticle(m)
    if "bond" in kinds:
        f = openmm.HarmonicBondForce()
        f.addBond(0, 1, 0.15, 2.5e5)
        f.addBond(2, 1, 0.14, 3.0e5)
        f.addBond(2, 3, 0.10, 3.5e5)
        s.addForce(f)
    if "angle" in kinds:
        f = openmm.HarmonicAngleForce()
        f.addAngle(0, 1, 2, 1.9, 400.0)
        f.addAngle(3, 2, 1, 1.8, 300.0)
        s.addForce(f)
    if "torsion" in kinds:
        f = openmm.PeriodicTorsionForce()
        f.addTorsion(0, 1, 2, 3, 3, 0.0, 1.5)
        f.addTorsion(0, 1, 2, 3, 1, np.pi, 2.0)
        f.addTorsion(3, 2, 1, 0, 2, 0.3, 0.7)
        f.addTorsion(3, 2, 1, 0, 4, 0.0, 0.0)  # zero barrier: dropped
        s.addForce(f)
    if "nonbonded" in kinds:
        f = openmm.NonbondedForce()
        f.setNonbondedMethod(openmm.NonbondedForce.NoCutoff)
        for q, sig, eps in [
            (-0.3, 0.34, 0.45),
            (0.2, 0.33, 0.36),
            (-0.5, 0.30, 0.88),
            (0.6, 0.1, 0.0),
        ]:
            f.addParticle(q, sig, eps)
        f.addException(1, 0, 0.0, 0.1, 0.0)  # excluded (reversed order on purpose)
        f.addException(0, 3, -0.18 / 1.2, 0.22, 0.05)  # scaled 1-4
        f.addException(1, 3, 0.0, 0.3, 0.2)  # LJ only
        s.addForce(f)
    s.addForce(openmm.CMMotionRemover())
    return s


_TINY_POS = np.array([[0.0, 0.0, 0.0], [1.5, 0.1, 0.0], [2.1, 1.3, 0.2], [3.0, 1.5, 0.9]])


@pytest.mark.parametrize(
    "kinds",
    [
        ("bond",),
        ("angle",),
        ("torsion",),
        ("nonbonded",),
        ("bond", "angle", "torsion", "nonbonded"),
    ],
)
def test_topology_from_openmm_tiny(kinds):
    system = _tiny_system(kinds)
    top = topology_from_openmm(system, [6, 6, 8, 1], name="tiny")
    if "nonbonded" in kinds:
        # 6 pairs - 1 excluded
        assert len(top.pairs) == 5
    if "torsion" in kinds:
        assert len(top.torsions) == 3
    rng = np.random.default_rng(2)
    pos = _TINY_POS[None] + 0.1 * rng.normal(size=(8, 4, 3))
    e_mm, f_mm = openmm_energies_forces(system, pos)
    e_t, f_t = _torch_ef(ClassicalPotential(top), pos)
    np.testing.assert_allclose(e_t, e_mm, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(f_t, f_mm, atol=1e-9 * np.abs(f_mm).max())


def test_topology_from_openmm_errors():
    s = _tiny_system(("nonbonded",))
    nb = next(f for f in s.getForces() if isinstance(f, openmm.NonbondedForce))
    nb.setNonbondedMethod(openmm.NonbondedForce.PME)
    s.setDefaultPeriodicBoxVectors(*(np.eye(3) * 2.0))
    with pytest.raises(ValueError, match="nonbondedMethod=PME"):
        topology_from_openmm(s, [6, 6, 8, 1])
    s = _tiny_system(("bond",))
    s.addForce(openmm.CustomBondForce("r"))
    with pytest.raises(ValueError, match="CustomBondForce"):
        topology_from_openmm(s, [6, 6, 8, 1])
    with pytest.raises(ValueError, match="3 atomic numbers"):
        topology_from_openmm(_tiny_system(("bond",)), [6, 6, 8])


def test_openmm_calculator_periodic_rotation():
    """A periodic System gets its box from atoms.cell; a rotated cell gives rotated forces."""
    s = openmm.System()
    nb = openmm.NonbondedForce()
    nb.setNonbondedMethod(openmm.NonbondedForce.CutoffPeriodic)
    nb.setCutoffDistance(0.4 * unit.nanometer)
    rng = np.random.default_rng(0)
    n = 8
    for _ in range(n):
        s.addParticle(40.0)
        nb.addParticle(0.0, 0.3, 1.0)
    s.addForce(nb)
    s.setDefaultPeriodicBoxVectors(*(np.eye(3) * 1.0))
    cell = np.array([[9.0, 0.0, 0.0], [1.5, 9.5, 0.0], [-1.0, 2.0, 10.0]])
    atoms = Atoms("Ar8", scaled_positions=rng.random((n, 3)), cell=cell, pbc=True)
    calc = OpenMMCalculator(s, atoms)
    atoms.calc = calc
    e0, f0 = atoms.get_potential_energy(), atoms.get_forces()
    rot = np.linalg.qr(rng.normal(size=(3, 3)))[0]
    rot *= np.sign(np.linalg.det(rot))
    moved = Atoms("Ar8", positions=atoms.positions @ rot.T, cell=cell @ rot.T, pbc=True)
    moved.calc = calc
    np.testing.assert_allclose(moved.get_potential_energy(), e0, rtol=1e-10)
    np.testing.assert_allclose(moved.get_forces(), f0 @ rot.T, atol=1e-9)
    with pytest.raises(ValueError, match="pbc=True"):
        calc.calculate(Atoms("Ar8", positions=atoms.positions))


# --------------------------------------------------------------------------- AmberTools


@pytest.mark.slow
def test_reparametrize_aspirin_matches_shipped(params, tmp_path):
    from ase_mlff.forcefields.gaff import match_to, parametrize_gaff

    if shutil.which("antechamber") is None:
        pytest.skip("AmberTools not on PATH")
    fresh = parametrize_gaff("CC(=O)Oc1ccccc1C(=O)O", tmp_path, name="aspirin")
    fresh = match_to(fresh, ase.io.read(MD17_XYZ))
    assert fresh.atom_types == params.atom_types
    np.testing.assert_allclose(fresh.charges, params.charges, atol=1e-6)
    pos = params.reference_positions[None]
    e_new, f_new = _torch_ef(fresh.potential(), pos)
    e_old, f_old = _torch_ef(params.potential(), pos)
    np.testing.assert_allclose(e_new, e_old, rtol=1e-8)
    np.testing.assert_allclose(f_new, f_old, atol=1e-8)
