"""Alanine dipeptide (paper 003): the OpenMM reference set, its dihedrals and free energy,
and the pieces of the alanine_fes study."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms

from ase_mlff.reference.alanine import (
    R_KJ,
    AlanineConfig,
    alanine_dipeptide,
    dihedrals,
    load_reference_fes,
    make_alanine_reference,
    marginal,
)

openmm = pytest.importorskip("openmm")


@pytest.fixture(scope="module")
def molecule():
    system, top, pos, phi, psi = alanine_dipeptide("gbn2")
    numbers = np.array([a.element.atomic_number for a in top.atoms()])
    return system, numbers, pos, phi, psi


def test_dihedrals_agree_with_openmm_ase_and_the_md_cv(molecule):
    """φ and ψ as the reference set stores them, as OpenMM's metadynamics biases them
    (CustomTorsionForce theta) and as our CV computes them are one angle."""
    from ase_mlff.graph import Batch
    from ase_mlff.md.colvars import Dihedral

    _, numbers, pos, phi, psi = molecule
    frames = pos[None] + np.random.default_rng(0).normal(scale=0.4, size=(6, *pos.shape))
    for quad in (phi, psi):
        ours = dihedrals(frames, quad)
        s = openmm.System()
        for _ in numbers:
            s.addParticle(1.0)
        f = openmm.CustomTorsionForce("theta")
        f.addTorsion(*quad, [])
        s.addForce(f)
        ctx = openmm.Context(
            s, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference")
        )
        theta = []
        for fr in frames:
            ctx.setPositions(fr * 0.1)
            theta.append(ctx.getState(getEnergy=True).getPotentialEnergy()._value)
        np.testing.assert_allclose(ours, theta, atol=1e-9)
        ase = [
            np.angle(
                np.exp(1j * np.radians(Atoms(numbers=numbers, positions=fr).get_dihedral(*quad)))
            )
            for fr in frames
        ]
        np.testing.assert_allclose(ours, ase, atol=1e-9)
        b = Batch.from_atoms(
            [Atoms(numbers=numbers, positions=fr) for fr in frames], cutoff=3.0, dtype=torch.float64
        )
        np.testing.assert_allclose(Dihedral(*quad)(b).numpy(), ours, atol=1e-9)


def test_marginal_is_minus_kt_log_of_the_summed_boltzmann_factor():
    rng = np.random.default_rng(1)
    f2d = rng.uniform(0, 20, size=(8, 10))  # [ψ, φ], kJ/mol
    kt = R_KJ * 300.0
    expected = -kt * np.log(np.exp(-f2d / kt).sum(axis=0))
    got = marginal(f2d, 0, 300.0)
    np.testing.assert_allclose(got, expected - expected.min(), atol=1e-10)
    assert marginal(f2d + 7.0, 0, 300.0) == pytest.approx(got)  # a constant drops out


def test_fes_minima_finds_periodic_minima_lowest_first():
    from ase_mlff.agents.alanine_fes import fes_minima

    g = np.linspace(-np.pi, np.pi, 64)
    psi, phi = np.meshgrid(g, g, indexing="ij")
    wells = [(-1.4, 1.2, 0.0), (np.pi - 0.05, 0.5, 2.0), (1.0, -0.8, 5.0)]  # 2nd one wraps

    def d2(a, b):
        return np.angle(np.exp(1j * (a - b))) ** 2

    f = 40.0 - sum(
        (40.0 - depth) * np.exp(-(d2(phi, p0) + d2(psi, s0)) / 0.3) for p0, s0, depth in wells
    )
    found = fes_minima(f, g, n=3)
    assert len(found) == 3
    for (p, s), (p0, s0, _) in zip(found, wells):
        assert np.hypot(np.angle(np.exp(1j * (p - p0))), s - s0) < 2 * (g[1] - g[0])


def testfes_errors_follow_paper_003_eqs_6_7():
    """MAE_F = ∫_{−π}^{π} |F − F̂| dφ on the grid (MDsim: mean × 2π), 0 for a shifted copy."""
    from ase_mlff.agents.alanine_fes import fes_errors

    g = np.linspace(-np.pi, np.pi, 33)
    psi, phi = np.meshgrid(g, g, indexing="ij")
    f2d = 10 * (1 - np.cos(phi)) + 5 * (1 - np.cos(2 * psi))
    ref = {"phi": marginal(f2d, 0, 300.0), "psi": marginal(f2d, 1, 300.0)}
    same = fes_errors(f2d + 3.0, ref, g)
    assert all(abs(v) < 1e-9 for v in same.values())
    other = fes_errors(1.5 * f2d, ref, g)
    err = np.abs(marginal(1.5 * f2d, 0, 300.0) - ref["phi"])[:-1]
    assert other["mae_F_phi_kj_rad"] == pytest.approx(err.mean() * 2 * np.pi)
    assert other["mean_abs_dF_phi_kj"] == pytest.approx(err.mean())


def test_reference_set_frames_labels_and_free_energy(tmp_path, molecule):
    """A short run of the recipe's jobs: frames re-labelled without the bias equal a fresh
    OpenMM evaluation, φ/ψ match the positions, the FES file holds F and its marginals."""
    from ase_mlff.calculators.openmm import openmm_energies_forces
    from ase_mlff.data.dataset import Dataset

    cfg = AlanineConfig(
        metad_walkers=1, metad_ps=1.0, md_ps=0.4, interval_fs=100.0, pace_fs=50.0, grid=32
    )
    out = tmp_path / "ala.npz"
    make_alanine_reference(cfg, out, workers=1, command=["test"])
    ds = Dataset.load_npz(out)
    assert len(ds) == 14 and set(ds.config_type_s) == {"metad", "md"}
    system, numbers, _, phi, psi = molecule
    n = len(numbers)
    pos = ds.positions_nc.reshape(len(ds), n, 3)
    e, f = openmm_energies_forces(system, pos[:3], platform="Reference")
    np.testing.assert_allclose(ds.energy_s[:3], e, rtol=1e-10)
    np.testing.assert_allclose(ds.forces_nc[: 3 * n].reshape(3, n, 3), f, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(ds.extra_s["phi"], dihedrals(pos, phi), atol=1e-12)
    np.testing.assert_allclose(ds.extra_s["psi"], dihedrals(pos, psi), atol=1e-12)
    assert ds.provenance["config"]["solvent"] == "gbn2"
    fes = load_reference_fes(out)
    assert fes["fes_kj_psi_phi"].shape == (32, 32) and fes["fes_phi_kj"].min() == 0.0
    np.testing.assert_allclose(fes["fes_phi_kj"], marginal(fes["fes_kj_psi_phi"], 0, 300.0))
    with pytest.raises(ValueError, match="bias_factor"):
        AlanineConfig(bias_factor=1.0).validate()
    with pytest.raises(FileNotFoundError, match="make_alanine_reference"):
        load_reference_fes(tmp_path / "none.npz")


def test_the_molecule_is_l_alanine_and_its_free_energy_says_so(molecule):
    """Cα is S (L-alanine), read back from the 3-D positions by RDKit; and the shipped
    reference F(φ) has its global minimum at negative φ (β/C7eq/αR), not at the mirror
    image a D-alanine would give."""
    from rdkit import Chem
    from rdkit.Chem import rdDetermineBonds

    from ase_mlff.data.io import SHIPPED_DATASETS, SHIPPED_DIR

    _, numbers, pos, phi, _ = molecule
    xyz = f"{len(numbers)}\n\n" + "\n".join(
        f"{Chem.GetPeriodicTable().GetElementSymbol(int(z))} {x} {y} {w}"
        for z, (x, y, w) in zip(numbers, pos)
    )
    mol = Chem.MolFromXYZBlock(xyz)
    rdDetermineBonds.DetermineConnectivity(mol)
    Chem.AssignStereochemistryFrom3D(mol)
    centres = dict(Chem.FindMolChiralCenters(mol, useLegacyImplementation=False))
    assert centres.get(phi[2]) == "S"
    fes = load_reference_fes(SHIPPED_DIR / SHIPPED_DATASETS["alanine"])
    assert fes["grid_rad"][np.argmin(fes["fes_phi_kj"])] < 0


def test_alanine_fes_recipe_end_to_end(tmp_path):
    """Tiny settings: both variants trained, six walkers from six distinct minima run
    metadynamics, each stable walker has a HILLS file and finite MAE_F, the parent run has
    both children, and a rerun trains nothing and runs no MD step again."""
    import mlflow

    from ase_mlff.recipes import alanine_fes

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    argv = ["--n-pretrain", "60", "--n-train", "40", "--n-val", "8", "--md-steps", "100"]
    argv += ["--pretrain-minutes", "0.02", "--finetune-minutes", "0.02", "--threads", "1"]
    argv += ["--out", str(tmp_path / "a"), "--tracking-uri", uri]
    res = alanine_fes.main(argv)
    assert len(res["minima_deg"]) == 6 and len(set(res["minima_deg"])) == 6
    for name in ("scratch", "ffpt"):
        v = res["variants"][name]
        assert v["stability"]["n_replicas"] == 6
        stable = [k for k, r in enumerate(v["stability"]["reasons"]) if r is None]
        assert sorted(v["fes"]["walkers"]) == stable
        for k in stable:
            assert (tmp_path / "a" / f"md_{name}" / f"HILLS.{k}").read_text().count("\n") > 3
        if stable:
            assert np.isfinite(v["fes"]["mean"]["mae_F_phi_kj_rad"])
    for fig in ("fes.png", "ramachandran.png"):
        assert (tmp_path / "a" / "figures" / fig).stat().st_size > 1000
    client = mlflow.tracking.MlflowClient(uri)
    exp = client.get_experiment_by_name("alanine_fes")
    runs = client.search_runs([exp.experiment_id])
    assert {r.data.tags.get("mlflow.runName") for r in runs} >= {"scratch", "ffpt"}
    again = alanine_fes.main(argv)  # finished stages and MD are read back, not redone
    for name in ("scratch", "ffpt"):
        assert again["variants"][name]["fes"] == res["variants"][name]["fes"]
