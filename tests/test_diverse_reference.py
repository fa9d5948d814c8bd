"""The diverse GFN2-xTB CHNO set and the MD17 eight (issue 16): the shipped SMILES list,
normal-mode sampling against ASE's vibrational analysis, stretched bonds, the labels
against fresh tblite single points, resume, and the MD17 start geometries checked by the
bonds RDKit perceives."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms, units
from ase.build import molecule

from ase_mlff.reference import diverse
from ase_mlff.reference.diverse import (
    DiverseConfig,
    hessian,
    nms_positions,
    normal_modes,
    read_smiles,
    stretched_positions,
    xtb,
)
from ase_mlff.reference.md17 import MD17_MOLECULES, MD17SetConfig, md17_start

MD17_SMILES = {
    "aspirin": "CC(=O)Oc1ccccc1C(=O)O",
    "benzene": "c1ccccc1",
    "ethanol": "CCO",
    "malonaldehyde": "O=CCC=O",
    "naphthalene": "c1ccc2ccccc2c1",
    "salicylic": "O=C(O)c1ccccc1O",
    "toluene": "Cc1ccccc1",
    "uracil": "O=c1cc[nH]c(=O)[nH]1",
}


def _canonical(smiles: str) -> str:
    from rdkit import Chem

    return Chem.MolToSmiles(Chem.MolFromSmiles(smiles))


def test_the_shipped_list_is_chno_unique_and_leaves_out_the_md17_eight():
    mols = read_smiles()
    assert len(mols) >= 300
    canon = [_canonical(s) for s, _, _ in mols]
    assert len(set(canon)) == len(canon)
    assert not set(canon) & {_canonical(s) for s in MD17_SMILES.values()}
    assert {t for _, t, _ in mols} == {"named", "enumerated"}


@pytest.mark.parametrize(
    "line, problem",
    [("CCS\tnamed\tethanethiol", "CHNO only"), ("CC[O-]\tnamed\tethoxide", "net charge"),
     ("C1CC\tnamed\tbroken", "cannot read")],
)
def test_bad_smiles_lists_are_refused_naming_the_line(tmp_path, line, problem):
    path = tmp_path / "list.txt"
    path.write_text("# header\nCCO\tnamed\tethanol\n" + line + "\n")
    with pytest.raises(ValueError, match=problem) as err:
        read_smiles(path)
    assert "list.txt:3" in str(err.value)


@pytest.fixture(scope="module")
def water_modes():
    from ase.optimize import BFGS

    w = molecule("H2O")
    w.calc = xtb()
    BFGS(w, logfile=None).run(fmax=1e-4)
    w.calc = None
    return w, hessian(w, xtb(), step=0.005)


def test_normal_modes_match_ase_vibrations(water_modes, tmp_path):
    """normal_modes' modes and force constants against ASE's own finite-difference
    vibrational analysis (an independent implementation) on GFN2-xTB water: three modes,
    free of translation and rotation, with ASE's wavenumbers (λ_i = K_i / Σ_j m_j q_ij²)."""
    from ase.vibrations import Vibrations

    from ase_mlff.reference.diverse import rigid_body_basis

    w, hess = water_modes
    modes, k = normal_modes(w, hess)
    assert modes.shape == (3, 3, 3)
    q = modes.reshape(3, -1)
    m = np.repeat(w.get_masses(), 3)
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0)
    b = rigid_body_basis(w)
    assert b.shape == (9, 6)
    assert np.abs(b.T @ (q * np.sqrt(m)).T).max() < 1e-10  # no rigid-body part
    lam = k / (q**2 * m).sum(axis=1)
    ours_cm = np.sqrt(lam * units._e / units._amu * 1e20) / (2 * np.pi * units._c * 100)
    a = w.copy()
    a.calc = xtb()
    vib = Vibrations(a, delta=0.005, name=str(tmp_path / "vib"))
    vib.run()
    ase_cm = np.sort(np.real(vib.get_frequencies()))[-3:]
    np.testing.assert_allclose(np.sort(ours_cm), ase_cm, rtol=2e-3)


def test_linear_molecules_keep_3n_minus_5_modes():
    from ase_mlff.reference.diverse import rigid_body_basis

    co2 = Atoms("OCO", positions=[[-1.16, 0, 0], [0, 0, 0], [1.16, 0, 0]])
    assert rigid_body_basis(co2).shape == (9, 5)
    modes, k = normal_modes(co2, np.eye(9))
    assert modes.shape == (4, 3, 3)


def test_normal_mode_samples_keep_the_harmonic_energy_bound(water_modes):
    """ANI-1's recipe: ½ Σ K_i R_i² = (3/2) N k_B T Σ c_i with Σ c_i ~ U(0, 1): never above
    (3/2) N k_B T, on average half of it."""
    w, hess = water_modes
    modes, k = normal_modes(w, hess)
    rng = np.random.default_rng(0)
    t = 1000.0
    pos = nms_positions(w, modes, k, t, 400, rng, min_force_constant=0.0, min_distance_A=0.0)
    dx = (pos - w.positions).reshape(len(pos), -1)
    e_harm = 0.5 * np.einsum("si,ij,sj->s", dx, hess, dx)
    bound = 1.5 * len(w) * units.kB * t
    assert e_harm.max() <= bound * (1 + 1e-6)
    assert abs(e_harm.mean() / bound - 0.5) < 0.05


ETHANOL_BONDS = [(0, 1, False), (0, 6, False), (0, 7, False), (0, 8, False), (1, 2, False),
                 (1, 4, False), (1, 5, False), (2, 3, False)]


def test_a_stretched_bond_moves_the_smaller_fragment_rigidly():
    a = molecule("CH3CH2OH")  # ASE order: C C O H H H H H H; C1-O2, O2-H3
    rng = np.random.default_rng(1)
    pos = stretched_positions(a, ETHANOL_BONDS, 40, rng, (1.5, 1.5), sigma_A=0.0)
    for p in pos:
        moved = np.flatnonzero(np.abs(p - a.positions).max(axis=1) > 1e-12)
        shift = (p - a.positions)[moved]
        np.testing.assert_allclose(shift, shift[:1].repeat(len(moved), 0), atol=1e-12)
        # the moved side is the smaller fragment of one bond, stretched to 1.5 r0
        (i, j), = [(i, j) for i, j, _ in ETHANOL_BONDS if (i in moved) != (j in moved)]
        assert len(moved) <= len(a) - len(moved)
        assert np.linalg.norm(p[i] - p[j]) == pytest.approx(1.5 * a.get_distance(i, j))
    # the C-C bond splits CH3 (4 atoms) from CH2OH (5): the methyl moves, the rest stays
    cc = stretched_positions(a, [ETHANOL_BONDS[0]] + ETHANOL_BONDS[1:], 200, rng, (1.5, 1.5),
                             sigma_A=0.0)
    split = [set(np.flatnonzero(np.abs(p - a.positions).max(axis=1) > 1e-12)) for p in cc]
    assert {0, 6, 7, 8} in split


def test_a_stretched_ring_bond_moves_one_atom():
    ring = molecule("C6H6")
    bonds = [(0, 1, True)]
    pos = stretched_positions(ring, bonds, 3, np.random.default_rng(0), (1.4, 1.4), sigma_A=0.0)
    for p in pos:
        moved = np.flatnonzero(np.abs(p - ring.positions).max(axis=1) > 1e-12)
        assert list(moved) == [1]
        assert np.linalg.norm(p[1] - p[0]) == pytest.approx(1.4 * ring.get_distance(0, 1))


def test_frames_are_labelled_like_fresh_tblite_and_a_rerun_reuses_the_parts(tmp_path):
    from ase_mlff.reference.diverse import make_diverse_reference
    from ase_mlff.reference.runner import parts_dir_of

    listing = tmp_path / "two.txt"
    listing.write_text("C=O\tnamed\tformaldehyde\nCN\tnamed\tmethylamine\n")
    cfg = DiverseConfig(
        smiles_file=str(listing),
        molecules_per_job=1,
        nms_temperatures_K=(500.0,),
        nms_frames=3,
        md_frames=2,
        md_equilibration_steps=4,
        md_stride=2,
        stretch_frames=2,
        workers=1,
    )
    out = tmp_path / "o.npz"
    # an interrupted run: the first molecule's job finished, then the run stopped
    from ase_mlff.reference.runner import run_jobs

    parts = parts_dir_of(out)
    parts.mkdir()
    run_jobs(DiverseConfig.kind, cfg, diverse._jobs(cfg, parts)[:1], parts, 1)
    ds = make_diverse_reference(cfg, out)
    assert ds.provenance["runner"]["reused_parts"] == ["block_000"]
    assert len(ds) == 2 * cfg.frames_per_molecule()
    assert list(np.unique(ds.extra_s["mol_id"])) == [0, 1]
    assert ds.provenance["n_molecules"] == 2 and ds.provenance["scf_failures"] == 0
    for i in (0, 4, 9, 15):
        e, f = diverse.single_point(ds.to_atoms(i, with_labels=False))
        # the MD frames were labelled from the running calculator (the last step's wave
        # function as the guess): they agree within the SCF tolerance, ~1e-4 eV/Å
        assert ds.energy_s[i] == pytest.approx(e, abs=1e-5)
        np.testing.assert_allclose(ds.forces_nc[ds.ptr_s[i] : ds.ptr_s[i + 1]], f, atol=5e-4)
    with np.load(out) as f:  # stored in single precision, energies in double
        assert f["positions_nc"].dtype == np.float32 and f["energy_s"].dtype == np.float64


@pytest.mark.parametrize("name", MD17_MOLECULES)
def test_md17_start_geometries_are_the_right_molecules(name):
    """The bonds RDKit perceives from each shipped start geometry (xyz → bonds, an
    independent reading of the file) give the MD17 molecule's canonical SMILES."""
    import ase.io
    from rdkit import Chem
    from rdkit.Chem import rdDetermineBonds

    a = ase.io.read(md17_start(name))
    block = f"{len(a)}\n\n" + "\n".join(
        f"{s} {x:.6f} {y:.6f} {z:.6f}" for s, (x, y, z) in zip(a.get_chemical_symbols(), a.positions)
    )
    mol = Chem.MolFromXYZBlock(block)
    rdDetermineBonds.DetermineBonds(mol, charge=0)
    found = Chem.MolToSmiles(Chem.RemoveHs(mol))
    assert found == _canonical(MD17_SMILES[name])


def test_md17_set_refuses_an_unknown_molecule():
    with pytest.raises(ValueError, match="unknown MD17 molecule 'azobenzene'"):
        MD17SetConfig(molecules=("benzene", "azobenzene"))


def test_diverse_config_checks_its_settings():
    with pytest.raises(ValueError, match="stretch_range"):
        DiverseConfig(stretch_range=(0.9, 1.5))
