"""Learnable EAM/FS potential (paper 004, Eqs. 1-3) and its LAMMPS eam/fs export."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk
from ase.data import covalent_radii

from ase_mlff.graph import Batch
from ase_mlff.models import compute_properties
from ase_mlff.models.eam import EAM, decomposition_figure
from ase_mlff.models.eam_export import write_eam_fs
from tests.potential_checks import check_potential

SPECIES = [1, 6, 8, 14, 29]


def perturbed_model(species=SPECIES, seed=0, **kw) -> EAM:
    """An EAM with random parameters (with ``densities="ordered"``: ρ_ab ≠ ρ_ba), float64."""
    torch.manual_seed(seed)
    m = EAM(species=species, **kw).double()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return m


def energy_forces(model, atoms_list):
    b = Batch.from_atoms(atoms_list, cutoff=model.cutoff, dtype=torch.float64)
    out = compute_properties(model, b, forces=True, stress=False)
    return out["energy"].numpy(), out["forces"].numpy()


def np_params(model):
    return {k: v.detach().double().numpy() for k, v in model.params().items()}


def np_switch(model, r):
    """The authors' cutoff_function (MatDeepLearn_dev eam_interaction.py, from JuLIP)."""
    rc, ro = model.cutoff, model.cutoff - model.cutoff_width
    s = 1.0 - (r - ro) / (rc - ro)
    return float(s >= 1.0) + float(0.0 < s < 1.0) * (6.0 * s**5 - 15.0 * s**4 + 10.0 * s**3)


def np_morse(p, a, b, r):
    """Binding Morse of the authors' code: D(1 − e^{−α(r − r_m)})² − D."""
    return p["D"][a, b] * (1 - np.exp(-p["a"][a, b] * (r - p["r_e"][a, b]))) ** 2 - p["D"][a, b]


def np_energy(model, atoms) -> float:
    """Eq. 1 by hand, all pairs of a small molecule (no periodicity)."""
    p = np_params(model)
    el = [model.species.index(z) for z in atoms.numbers]
    e = 0.0
    for i, a in enumerate(el):
        rho = 0.0
        for j, b in enumerate(el):
            if i == j:
                continue
            r = atoms.get_distance(i, j)
            fc = np_switch(model, r)
            rho += np.sum(p["A"][a, b] * np.exp(-p["beta"][a, b] * r)) * fc
            e += 0.5 * np_morse(p, a, b, r) * fc
        e += p["B"][a] * (rho - p["rho0"][a]) ** 2 + p["e_atom"][a]
    return e


def test_initialisation_follows_paper():
    m = EAM(species=[8, 14], n_density_terms=3)
    p = np_params(m)
    # r_e = sum of covalent radii (O-O, O-Si, Si-Si), symmetric
    cr = covalent_radii
    np.testing.assert_allclose(p["r_e"][0, 1], cr[8] + cr[14])
    np.testing.assert_allclose(p["r_e"], p["r_e"].T)
    np.testing.assert_allclose(p["r_e"][1, 1], 2 * cr[14])
    for k in ("D", "a", "A", "B", "rho0", "e_atom"):
        np.testing.assert_allclose(p[k], 1.0)
    np.testing.assert_allclose(p["beta"][0, 1], [1.0, 2.0, 3.0])
    np.testing.assert_allclose(p["A"], np.transpose(p["A"], (1, 0, 2)))  # unordered pairs
    assert m.config["name"] == "eam" and m.config["densities"] == "unordered"
    assert EAM(**{k: v for k, v in m.config.items() if k != "name"}).config == m.config
    # the authors' inner cutoff r_o = 0.66 r_c
    assert m.cutoff_width == pytest.approx(0.34 * m.cutoff)
    # n_a = 3 interaction types for two elements, as the paper's A, β ∈ R^{n_a × n_b}
    assert tuple(m.raw_A.shape) == (3, 3)
    assert tuple(EAM(species=[8, 14], n_density_terms=3, densities="ordered").raw_A.shape) == (
        4,
        3,
    )
    with pytest.raises(ValueError, match="densities"):
        EAM(species=[8, 14], densities="both")


@pytest.mark.parametrize("width", [None, 1.0, 6.0])
def test_pair_term_binds_with_its_well_at_r_e(width):
    """V f_c has its minimum −D at r_e and vanishes at r_c; the switch leaves it untouched
    below r_c − width (paper 004 Fig. 2; the authors' D(1 − e^{−α(r − r_m)})² − D)."""
    m = perturbed_model(species=[8, 14], cutoff_width=width)
    p = np_params(m)
    si, o = m.species.index(14), m.species.index(8)
    r_e, depth = p["r_e"][si, o], p["D"][si, o]
    r = torch.linspace(0.5, m.cutoff + 0.5, 20001, dtype=torch.float64)
    full = torch.full_like(r, si, dtype=torch.long), torch.full_like(r, o, dtype=torch.long)
    with torch.no_grad():
        v = m.pair(r, *full).numpy()
    rr = r.numpy()
    morse = np.array([np_morse(p, si, o, x) for x in rr])
    fc = np.array([np_switch(m, x) for x in rr])
    np.testing.assert_allclose(v, morse * fc, atol=1e-12)
    inner = rr <= m.cutoff - m.cutoff_width
    np.testing.assert_allclose(v[inner], morse[inner], atol=1e-12)  # no switch inside r_o
    assert np.all(v[rr >= m.cutoff] == 0.0)
    if r_e < m.cutoff - m.cutoff_width:
        k = int(np.argmin(v))
        assert abs(rr[k] - r_e) < 2 * (rr[1] - rr[0])
        assert v[k] == pytest.approx(-depth, rel=1e-6)
        assert v[k] < 0


@pytest.mark.parametrize("densities", ["unordered", "ordered"])
def test_dimer_matches_hand_formula(densities):
    m = perturbed_model(densities=densities)
    p = np_params(m)
    r = 1.7
    atoms = Atoms("SiO", positions=[[0, 0, 0], [r, 0.3, -0.2]])
    r = atoms.get_distance(0, 1)
    si, o = m.species.index(14), m.species.index(8)
    fc = np_switch(m, r)
    v = np_morse(p, si, o, r) * fc
    rho_si = np.sum(p["A"][si, o] * np.exp(-p["beta"][si, o] * r)) * fc
    rho_o = np.sum(p["A"][o, si] * np.exp(-p["beta"][o, si] * r)) * fc
    if densities == "ordered":
        assert abs(rho_si - rho_o) > 1e-3  # the ordered-pair densities really differ
    else:
        assert rho_si == rho_o
    expected = (
        v
        + p["B"][si] * (rho_si - p["rho0"][si]) ** 2
        + p["B"][o] * (rho_o - p["rho0"][o]) ** 2
        + p["e_atom"][si]
        + p["e_atom"][o]
    )
    e, _ = energy_forces(m, [atoms])
    np.testing.assert_allclose(e[0], expected, rtol=1e-12)


@pytest.mark.parametrize(("width", "densities"), [(None, "unordered"), (1.5, "ordered")])
def test_trimer_matches_hand_formula(width, densities):
    m = perturbed_model(cutoff_width=width, densities=densities)
    atoms = Atoms("SiOCu", positions=[[0, 0, 0], [1.6, 0.1, 0], [0.4, 2.2, 0.3]])
    e, _ = energy_forces(m, [atoms])
    np.testing.assert_allclose(e[0], np_energy(m, atoms), rtol=1e-12)
    # beyond the cutoff the atoms no longer interact: E = Σ F(0) + E_atom
    far = Atoms("SiO", positions=[[0, 0, 0], [m.cutoff + 0.01, 0, 0]])
    p = np_params(m)
    el = [m.species.index(z) for z in far.numbers]
    iso = sum(p["B"][a] * p["rho0"][a] ** 2 + p["e_atom"][a] for a in el)
    np.testing.assert_allclose(energy_forces(m, [far])[0][0], iso, rtol=1e-12)


def test_smooth_at_cutoff():
    """Value, slope and curvature of V f_c and ρ f_c vanish at r_c (C² quintic switch)."""
    m = perturbed_model()
    r = torch.tensor([m.cutoff - 1e-3, m.cutoff], dtype=torch.float64, requires_grad=True)
    a, b = torch.tensor([3, 3]), torch.tensor([2, 2])
    for fn in (m.pair, m.density):
        y = fn(r, a, b)
        (g,) = torch.autograd.grad(y.sum(), r, create_graph=True)
        (c,) = torch.autograd.grad(g.sum(), r)
        y, g = y.detach(), g.detach()
        assert float(y[1]) == 0.0 and float(g[1]) == 0.0 and float(c[1]) == 0.0
        assert abs(float(y[0])) < 1e-7 and abs(float(g[0])) < 1e-4 and abs(float(c[0])) < 0.1


def test_unknown_element_raises():
    m = EAM(species=[8, 14])
    with pytest.raises(ValueError, match="no parameters"):
        energy_forces(m.double(), [Atoms("SiC", positions=[[0, 0, 0], [1.5, 0, 0]])])


def test_check_potential(molecules, periodic_cells):
    check_potential(perturbed_model(), molecules, periodic_cells)


def test_float32_and_gradients_reach_all_parameters(periodic_cells):
    m = perturbed_model()
    b = Batch.from_atoms(periodic_cells, cutoff=m.cutoff, dtype=torch.float64)
    out = compute_properties(m, b, forces=True, stress=True, training=True)
    loss = out["energy"].sum() + (out["forces"] ** 2).sum() + out["stress"].pow(2).sum()
    loss.backward()
    used = {8, 14, 29}
    for name, prm in m.named_parameters():
        assert prm.grad is not None and torch.isfinite(prm.grad).all(), name
    assert float(m.e_atom.grad.abs().sum()) > 0
    assert {m.species[k] for k in torch.nonzero(m.e_atom.grad).ravel().tolist()} == used
    e32 = m.float()(Batch.from_atoms(periodic_cells, cutoff=m.cutoff))
    np.testing.assert_allclose(e32.detach().numpy(), out["energy"].detach().numpy(), rtol=1e-5)


def _export_structures():
    dimer = Atoms("SiO", positions=[[0, 0, 0], [1.7, 0.2, 0.1]])
    trimer = Atoms("SiOO", positions=[[0, 0, 0], [1.6, 0.1, 0], [-0.4, 1.5, 0.3]])
    cell = bulk("Si", "diamond", 5.43, cubic=True)
    cell.numbers[::2] = 8
    cell.rattle(0.05, seed=3)
    return [dimer, trimer, cell]


def _peer_calculators(path):
    """matscipy's and ASE's EAM calculators reading the same eam/fs file."""
    from ase.calculators.eam import EAM as AseEAM

    eam_mod = pytest.importorskip("matscipy.calculators.eam")
    ase_path = path.with_suffix(".fs")  # ASE tells the format by the suffix
    ase_path.write_text(path.read_text())
    return {
        "matscipy": eam_mod.EAM(str(path), kind="eam/fs"),
        "ase": AseEAM(potential=str(ase_path)),
    }


@pytest.mark.parametrize(
    ("fold", "width", "densities"),
    [(True, None, "ordered"), (False, 1.5, "ordered"), (True, None, "unordered")],
)
def test_export_eam_fs_matches_matscipy_and_ase(tmp_path, fold, width, densities):
    """matscipy and ASE reading the eam/fs file reproduce the model (E_atom folded into F
    or not), per atom, on a dimer, a trimer and a rattled periodic cell."""
    m = perturbed_model(species=[8, 14], seed=1, cutoff_width=width, densities=densities)
    path = write_eam_fs(
        m, tmp_path / "m.eam.fs", nrho=20000, nr=20000, atomic_energy_in_embedding=fold
    )
    p = np_params(m)
    if densities == "ordered":  # a file with the density tables of the wrong element fails
        assert np.abs(p["A"][0, 1] - p["A"][1, 0]).max() > 0.05
    for name, calc in _peer_calculators(path).items():
        de, df = [], []
        for atoms in _export_structures():
            e_ref, f_ref = energy_forces(m, [atoms])
            if not fold:
                e_ref = e_ref - sum(p["e_atom"][m.species.index(z)] for z in atoms.numbers)
            a = atoms.copy()
            if not a.pbc.any():  # matscipy's neighbour list needs a cell, even without pbc
                a.cell = [30.0, 30.0, 30.0]
                a.center()
            a.calc = calc
            de.append(abs(a.get_potential_energy() - e_ref[0]) / len(a))
            df.append(np.abs(a.get_forces() - f_ref).max())
        print(
            f"eam/fs export vs {name} (fold E_atom={fold}, width={width}, {densities}): "
            f"max|dE|/atom={max(de):.2e} eV max|dF|={max(df):.2e} eV/A"
        )
        assert max(de) < 1e-12, name  # measured 4e-15 eV/atom
        assert max(df) < 1e-8, name  # measured 1.4e-10 eV/Å


def test_old_eam_checkpoint_refused(tmp_path):
    """A checkpoint of the old, non-binding EAM form is refused, not loaded as the new one."""
    from ase_mlff.models import save_model
    from ase_mlff.models.hybrid import HybridPotential
    from ase_mlff.models.io import CheckpointError, load_model

    old = EAM(species=[8, 14])
    old.config = {k: v for k, v in old.config.items() if k not in ("pair_term", "densities")}
    with pytest.raises(CheckpointError, match="old form"):
        load_model(save_model(old, tmp_path / "old"))
    hybrid = HybridPotential(
        {"name": "schnet", "cutoff": 4.0, "hidden": 8, "n_interactions": 1}, old
    )
    with pytest.raises(CheckpointError, match="old form"):
        load_model(save_model(hybrid, tmp_path / "old_hybrid"))
    load_model(save_model(EAM(species=[8, 14]), tmp_path / "new"))  # the new form loads


def test_export_file_layout(tmp_path):
    m = perturbed_model(species=[8, 14], seed=2, n_density_terms=1)
    path = write_eam_fs(m, tmp_path / "x.eam.fs", nrho=7, drho=0.5, nr=11)
    lines = path.read_text().splitlines()
    assert lines[0].startswith("#") and lines[3].split() == ["2", "O", "Si"]
    nrho, drho, nr, dr, rc = lines[4].split()
    assert (int(nrho), float(drho), int(nr)) == (7, 0.5, 11)
    np.testing.assert_allclose([float(dr) * 10, float(rc)], [m.cutoff, m.cutoff])
    words = " ".join(lines[5:]).split()
    # per element: 4 header words + Nrho + 2 * Nr; then 3 pair tables
    assert len(words) == 2 * (4 + 7 + 2 * 11) + 3 * 11
    assert words[0] == "8" and words[4 + 7 + 22] == "14"


def test_decomposition_figure(tmp_path):
    m = perturbed_model(species=[8, 14])
    fig = decomposition_figure(m, pair=("Si", "O"))
    out = tmp_path / "decomp.png"
    fig.savefig(out)
    assert out.stat().st_size > 1000
    assert len(fig.axes[0].lines) >= 3
    with pytest.raises(ValueError):
        decomposition_figure(m, pair=("Si", "Cu"))


def test_eam_checkpoint_round_trip(tmp_path):
    """An EAM saves and loads like every potential (registered in build_model)."""
    import torch

    from ase_mlff.models import build_model, load_model, save_model

    m = build_model({"name": "eam", "species": [8, 14], "cutoff": 5.0})
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.1 * torch.randn_like(p))
    back, _ = load_model(save_model(m, tmp_path / "eam"), dtype=torch.float64)
    for (k, a), (_, b) in zip(m.state_dict().items(), back.state_dict().items()):
        assert torch.allclose(a.double(), b.double()), k


def test_fit_atomic_energies_recovers_e_atom(periodic_cells):
    from ase_mlff.data import Dataset
    from ase_mlff.models.prediction import label_dataset

    model = perturbed_model(species=[8, 14], cutoff=4.0)
    with torch.no_grad():
        model.e_atom.copy_(torch.tensor([-430.0, -95.0], dtype=torch.float64))
    rng = np.random.default_rng(0)
    images = []
    for n_si, n_o in [(2, 4), (3, 4), (4, 9), (1, 3)]:
        a = Atoms(
            [14] * n_si + [8] * n_o,
            positions=rng.uniform(0, 6, (n_si + n_o, 3)),
            cell=np.eye(3) * 6.0,
            pbc=True,
        )
        images.append(a)
    ds = label_dataset(model, Dataset.from_atoms(images))
    with torch.no_grad():
        model.e_atom.fill_(1.0)
    fitted = model.fit_atomic_energies(ds)
    assert fitted == pytest.approx({"O": -430.0, "Si": -95.0}, abs=1e-8)
    assert model.e_atom.detach().numpy() == pytest.approx([-430.0, -95.0], abs=1e-8)
    with pytest.raises(ValueError, match=r"no parameters for atomic numbers \[1\]"):
        model.fit_atomic_energies(
            Dataset.from_atoms([Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.7]])])
        )
    assert model.e_atom.detach().numpy() == pytest.approx([-430.0, -95.0], abs=1e-8)  # kept
