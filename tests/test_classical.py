"""The batched classical force field (models.classical) and the Q-Force table (paper 001)."""

import numpy as np
import pytest
import torch
from ase import Atoms, units

from ase_mlff.calculators import MLFFCalculator
from ase_mlff.forcefields.qforce import (
    QFORCE_TABLE,
    qforce_potential,
    qforce_topology,
    relaxed_species,
)
from ase_mlff.graph import Batch
from ase_mlff.models import build_model, compute_properties, load_model, save_model
from ase_mlff.models.classical import COULOMB_EV_A, ClassicalPotential, Topology
from tests.potential_checks import check_potential

KJ_MOL = units.kJ / units.mol


def toy_topology() -> Topology:
    """Five atoms with one term of every kind and non-trivial parameters."""
    return Topology(
        numbers=[6, 6, 8, 1, 1],
        bonds=[[0, 1], [1, 2]],
        bond_r0=[1.5, 1.3],
        bond_k=[20.0, 30.0],
        morse=[[0, 3]],
        morse_r0=[1.1],
        morse_k=[25.0],
        morse_d=[4.0],
        angles=[[3, 0, 1], [0, 1, 2]],
        angle_theta0=[1.9, 2.0],
        angle_k=[3.0, 4.0],
        torsions=[[3, 0, 1, 2], [3, 0, 1, 2]],
        torsion_n=[1, 3],
        torsion_phase=[0.3, np.pi],
        torsion_k=[0.2, -0.1],
        pairs=[[3, 2], [4, 0], [4, 3]],
        pair_qq=[-0.2, 0.1, 0.05],
        pair_sigma=[2.5, 2.8, 2.0],
        pair_epsilon=[0.004, 0.01, 0.002],
        name="toy",
    )


def toy_atoms(seed: int = 0) -> Atoms:
    pos = np.array([[0, 0, 0], [1.5, 0, 0], [2.2, 1.1, 0], [-0.6, 0.9, 0.1], [3.0, -1.5, 1.2]])
    a = Atoms("CCOHH", positions=pos)
    a.rattle(0.05, seed=seed)
    return a


def energy(model, atoms_list) -> np.ndarray:
    b = Batch.from_atoms(atoms_list, cutoff=0.0, dtype=torch.float64)
    return compute_properties(model, b)["energy"].numpy()


def test_terms_against_formulas():
    t = toy_topology()
    a = toy_atoms()
    d = a.get_all_distances()
    e_bond = sum(
        0.5 * k * (d[i, j] - r0) ** 2 for (i, j), r0, k in zip(t.bonds, t.bond_r0, t.bond_k)
    )
    beta = np.sqrt(25.0 / 8.0)
    e_morse = 4.0 * (1 - np.exp(-beta * (d[0, 3] - 1.1))) ** 2 - 4.0
    e_angle = sum(
        0.5 * k * (np.radians(a.get_angle(*ijk)) - t0) ** 2
        for ijk, t0, k in zip(t.angles, t.angle_theta0, t.angle_k)
    )
    phi = np.radians(a.get_dihedral(3, 0, 1, 2))  # ASE: [0, 360), same sign convention
    e_tors = 0.2 * (1 + np.cos(phi - 0.3)) - 0.1 * (1 + np.cos(3 * phi - np.pi))
    e_pair = sum(
        COULOMB_EV_A * qq / d[i, j] + 4 * eps * ((s / d[i, j]) ** 12 - (s / d[i, j]) ** 6)
        for (i, j), qq, s, eps in zip(t.pairs, t.pair_qq, t.pair_sigma, t.pair_epsilon)
    )
    terms = ClassicalPotential(t).energy_terms(torch.as_tensor(a.positions)[None])
    assert float(terms["bond"][0]) == pytest.approx(e_bond, rel=1e-12)
    assert float(terms["morse"][0]) == pytest.approx(e_morse, rel=1e-12)
    assert float(terms["angle"][0]) == pytest.approx(e_angle, rel=1e-10)
    assert float(terms["torsion"][0]) == pytest.approx(e_tors, rel=1e-10)
    assert float(terms["coulomb"][0] + terms["lj"][0]) == pytest.approx(e_pair, rel=1e-12)


def test_shared_potential_checks():
    # no permutation check: a fixed-topology force field names its atoms by index
    check_potential(
        ClassicalPotential(toy_topology()), [toy_atoms(0), toy_atoms(1)], permutation=False
    )
    h2o2 = relaxed_species("H2O2")
    h2o2.rattle(0.1, seed=2)
    other = h2o2.copy()
    other.rattle(0.1, seed=3)
    check_potential(qforce_potential(h2o2), [h2o2, other], permutation=False)


def test_permuted_topology_is_the_same_force_field():
    t, a = toy_topology(), toy_atoms()
    order = np.array([4, 2, 0, 3, 1])
    e = energy(ClassicalPotential(t), [a])
    e_perm = energy(ClassicalPotential(t.permuted(order)), [a[order]])
    np.testing.assert_allclose(e_perm, e, rtol=1e-13)
    both = t.combined(t.permuted(order))
    moved = a[order]
    moved.positions += 10.0
    e_both = energy(ClassicalPotential(both), [a + moved])
    np.testing.assert_allclose(e_both, 2 * e, rtol=1e-12)


def test_batch_of_other_molecules_is_refused():
    model = ClassicalPotential(toy_topology())
    with pytest.raises(ValueError, match="fixed order"):
        energy(model, [Atoms("CCOHH"[::-1], positions=toy_atoms().positions)])
    with pytest.raises(ValueError, match="fixed order"):
        energy(model, [Atoms("H2O", positions=np.eye(3))])
    with pytest.raises(ValueError, match="outside"):
        Topology(numbers=[1, 1], bonds=[[0, 2]], bond_r0=[1.0], bond_k=[1.0])
    with pytest.raises(ValueError, match="entries"):
        Topology(numbers=[1, 1], bonds=[[0, 1]], bond_r0=[1.0], bond_k=[1.0, 2.0])


def test_checkpoint_round_trip(tmp_path):
    model = ClassicalPotential(toy_topology())
    save_model(model, tmp_path / "ff", {"source": "test"})
    loaded, meta = load_model(tmp_path / "ff", dtype=torch.float64)
    a = toy_atoms()
    np.testing.assert_allclose(energy(loaded, [a]), energy(model, [a]), rtol=1e-14)
    assert isinstance(build_model(model.config), ClassicalPotential)


def test_float32_batches_are_evaluated_in_float64():
    model = ClassicalPotential(toy_topology()).float()
    a = toy_atoms()
    b = Batch.from_atoms([a], cutoff=0.0, dtype=torch.float32)
    assert compute_properties(model, b)["energy"].dtype == torch.float64
    assert model.bond_k.dtype == torch.float64


# ------------------------------------------------------------------ Q-Force, paper 001


def test_qforce_units_and_morse_shape():
    """H2: β = √(k_r/2D) ≈ 1.98 Å⁻¹, curvature at r0 = k_r, dissociation limit 0 from −D."""
    h2 = relaxed_species("H2")
    r0, k_r, d = QFORCE_TABLE["H2"]["bonds"][("H", "H")]
    assert h2.get_distance(0, 1) == pytest.approx(r0 * 10, abs=1e-5)
    model = qforce_potential(h2)
    r = np.array([r0 * 10 - 1e-3, r0 * 10, r0 * 10 + 1e-3, 30.0])
    images = [Atoms("H2", positions=[[0, 0, 0], [x, 0, 0]]) for x in r]
    e = energy(model, images)
    curvature = (e[0] - 2 * e[1] + e[2]) / 1e-6  # eV/Å²
    assert curvature == pytest.approx(k_r * KJ_MOL / 100, rel=1e-5)
    assert e[1] == pytest.approx(-d * KJ_MOL, rel=1e-10)
    assert e[3] == pytest.approx(0.0, abs=1e-12)
    beta = float(torch.sqrt(model.morse_k / (2 * model.morse_d))[0])
    assert beta == pytest.approx(1.978, abs=0.01)


@pytest.mark.parametrize("species", ["OH", "O2", "H2O", "HO2", "H2O2"])
def test_qforce_relaxed_geometries_match_table(species):
    a = relaxed_species(species)
    top = qforce_topology(a)
    assert top.name == f"qforce:{species}"
    d = a.get_all_distances()
    model = ClassicalPotential(top)
    for (i, j), r0 in zip(top.morse, top.morse_r0):
        # at the minimum of bonds + angles (+ torsions) every bond is near its r0
        assert abs(d[i, j] - r0) < 0.01
    f = compute_properties(model, Batch.from_atoms([a], cutoff=0.0, dtype=torch.float64))["forces"]
    assert float(f.abs().max()) < 1e-3


def test_qforce_fragments_and_errors():
    # H + O2 far apart: two fragments, O2's bond only
    a = relaxed_species("O2")
    a += Atoms("H", positions=[[0.0, 5.0, 0.0]])
    top = qforce_topology(a)
    assert sorted(top.name.split(":")[1].split("+")) == ["H", "O2"]
    assert len(top.morse) == 1
    with pytest.raises(ValueError, match="not a species"):
        qforce_topology(Atoms("O3", positions=[[0, 0, 0], [1.2, 0, 0], [2.4, 0, 0]]))
    with pytest.raises(ValueError, match="H and O only"):
        qforce_topology(Atoms("CO", positions=[[0, 0, 0], [1.1, 0, 0]]))
    with pytest.raises(ValueError, match="bonds, expected"):
        qforce_topology(relaxed_species("H2O2"), bonds=[[0, 1], [0, 2], [1, 3], [2, 3]])
    with pytest.raises(ValueError, match="no H-H bond"):  # H-O...O-H drawn as O-H-H-O
        qforce_topology(relaxed_species("H2O2"), bonds=[[0, 2], [1, 3], [2, 3]])


def test_calculator_on_a_rattled_species():
    a = relaxed_species("HO2")
    calc = MLFFCalculator(qforce_potential(a))
    b = a.copy()
    b.rattle(0.2, seed=0)
    b.calc = calc
    assert np.isfinite(b.get_potential_energy())
    assert np.abs(b.get_forces().sum(0)).max() < 1e-10  # no net force
