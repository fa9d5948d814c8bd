"""Flexible TIP3P water: monomer potential vs OpenMM, bulk PME forces, MD and shipped data."""

import json

import numpy as np
import pytest
from ase import Atoms

from ase_mlff.calculators import MLFFCalculator
from ase_mlff.data.io import SHIPPED_DIR, load_dataset, provenance_path
from ase_mlff.forcefields import water
from ase_mlff.reference.water import water_reference_md
from tests.potential_checks import (
    FD_FORCE_ATOL,
    FD_STEP,
    check_batched_equals_single,
    check_calculator_equals_model,
    check_forces_fd,
    check_invariance,
)

openmm = pytest.importorskip("openmm")
app = pytest.importorskip("openmm.app")

SHIPPED = SHIPPED_DIR / "water_tip3p_flex_300K.npz"


def rattled_monomers(n: int = 4, scale: float = 0.08) -> list[Atoms]:
    out = []
    for k in range(n):
        a = water.tip3p_monomer_atoms()
        a.rattle(scale, seed=k)
        out.append(a)
    return out


def test_parameters_are_openmm_tip3p_xml():
    p = water.tip3p_parameters()
    assert p.source.endswith("openmm/app/data/tip3p.xml")
    assert (p.bond_r0_nm, p.bond_k_kj_nm2) == (0.09572, 462750.4)
    assert (p.angle_theta0_rad, p.angle_k_kj_rad2) == (1.82421813418, 836.8)
    assert (p.charge_o, p.charge_h, p.epsilon_h_kj) == (-0.834, 0.417, 0.0)
    # kJ/mol/nm² -> eV/Å²; kJ/mol/rad² -> eV/rad²
    assert p.bond_r0 == pytest.approx(0.9572)
    assert p.bond_k == pytest.approx(462750.4 / 96.485332 / 100, rel=1e-6)
    assert p.angle_k == pytest.approx(836.8 / 96.485332, rel=1e-6)
    assert np.degrees(p.angle_theta0) == pytest.approx(104.52, abs=1e-8)
    assert water.water_box_length(64) == pytest.approx(12.43, abs=0.01)
    assert water.default_cutoff_nm(water.water_box_length(64)) == 0.6


def test_monomer_matches_openmm():
    top = water.water_openmm_topology(1)
    system = app.ForceField("tip3p.xml").createSystem(
        top, nonbondedMethod=app.NoCutoff, constraints=None, rigidWater=False
    )
    ref = water.OpenMMEvaluator(system, platform="Reference")
    calc = MLFFCalculator(water.tip3p_monomer_potential(), dtype="float64")
    relaxed = water.tip3p_monomer_atoms()
    e0, f0 = ref(relaxed.positions)
    assert abs(e0) < 1e-10 and np.abs(f0).max() < 1e-8  # the relaxed geometry is the minimum
    for a in rattled_monomers(5, 0.1):
        e_ref, f_ref = ref(a.positions)
        a.calc = calc
        assert e_ref > 1e-3
        assert a.get_potential_energy() == pytest.approx(e_ref, rel=1e-6)
        np.testing.assert_allclose(
            a.get_forces(), f_ref, rtol=1e-6, atol=1e-6 * np.abs(f_ref).max()
        )


def test_monomer_potential_checks():
    model = water.tip3p_monomer_potential().double().eval()
    calc = MLFFCalculator(model, dtype="float64")
    images = rattled_monomers(3)
    for a in images:
        check_forces_fd(calc, a, n_atoms=3)
        check_invariance(model, a, permutation=False)
        check_calculator_equals_model(model, calc, a)
    check_batched_equals_single(model, images)
    with pytest.raises(ValueError, match="fixed order"):
        bad = images[0].copy()
        bad.numbers = [1, 8, 1]
        bad.calc = calc
        bad.get_potential_energy()


def test_bulk_forces_are_minus_energy_gradient():
    atoms, bulk = water.water_box_atoms(8, seed=3)
    assert len(atoms) == 24 and bulk.box[0] == pytest.approx(6.21, abs=0.01)
    assert list(atoms.numbers[:6]) == [8, 1, 1, 8, 1, 1]
    rng = np.random.default_rng(0)
    pos = atoms.positions + rng.normal(scale=0.03, size=atoms.positions.shape)
    ev = water.OpenMMEvaluator(bulk.system, platform="Reference")
    e, f = ev(pos, bulk.box)
    assert np.abs(f.sum(0)).max() < 1e-3  # PME conserves momentum up to its mesh error
    for i in rng.choice(len(pos), 4, replace=False):
        for c in range(3):
            d = np.zeros_like(pos)
            d[i, c] = FD_STEP
            fd = -(ev(pos + d, bulk.box)[0] - ev(pos - d, bulk.box)[0]) / (2 * FD_STEP)
            assert abs(fd - f[i, c]) < FD_FORCE_ATOL, (i, c, fd, f[i, c])
    # translating the whole periodic box changes nothing, up to the PME mesh error
    # (~ewaldErrorTolerance relative: the mesh is fixed in space)
    e2, f2 = ev(pos + np.array([1.3, -0.4, 2.2]), bulk.box)
    assert e2 == pytest.approx(e, abs=1e-5)
    np.testing.assert_allclose(f2, f, atol=1e-4)


def test_bulk_system_settings_and_errors():
    bulk = water.bulk_water_system(16, seed=1)
    nb = water.nonbonded_settings(bulk.system)
    assert nb["method"] == "PME" and nb["cutoff_nm"] == 0.37
    assert nb["switching_distance_nm"] == pytest.approx(0.296)
    assert nb["dispersion_correction"] and nb["ewald_error_tolerance"] == 1e-5
    forces = {type(f).__name__: f for f in bulk.system.getForces()}
    assert forces["HarmonicBondForce"].getNumBonds() == 32
    assert forces["HarmonicAngleForce"].getNumAngles() == 16
    assert bulk.system.getNumConstraints() == 0
    assert bulk.positions.shape == (48, 3)
    with pytest.raises(ValueError, match="positive"):
        water.bulk_water_system(0)
    with pytest.raises(ValueError, match="density"):
        water.bulk_water_system(64, density_g_cm3=3.0)
    with pytest.raises(ValueError, match="at least 8 molecules"):
        water.bulk_water_system(2)
    with pytest.raises(ValueError, match="half the box"):
        water.bulk_water_system(64, cutoff_nm=0.7)
    with pytest.raises(ValueError, match="time step"):
        water_reference_md(timestep_fs=2.0)
    with pytest.raises(ValueError, match="multiple"):
        water_reference_md(interval_fs=0.7)


def test_short_md_keeps_temperature_and_labels():
    ds = water_reference_md(
        n_molecules=8,
        equilibration_fs=250,
        interval_fs=5,
        n_frames=100,
        friction_per_ps=50.0,  # strong coupling: many independent kinetic-energy samples
        ewald_error_tolerance=1e-4,
        seed=5,
    )
    # 24 atoms: σ_T = 300 K·√(2/69) ≈ 51 K per frame, ≈ 7 K for the mean of ~50 samples
    t = ds.provenance["trajectories"]["0"]["mean_temperature_K"]
    assert 265 < t < 335, t
    assert len(ds) == 100 and ds.same_molecule() and ds.pbc_s3.all()
    assert set(ds.config_type_s) == {"tip3p_flex_bulk"}
    np.testing.assert_allclose(ds.extra_s["time_fs"], 250 + 5 * np.arange(1, 101))
    assert ds.positions_nc.dtype == np.float64 and ds.forces_nc.dtype == np.float64
    # labels are the double-precision model at the stored positions
    bulk = water.bulk_water_system(8, ewald_error_tolerance=1e-4)
    ev = water.OpenMMEvaluator(bulk.system, platform="Reference")
    a = ds.to_atoms(99)
    e, f = ev(a.positions, a.cell.lengths())
    assert e == pytest.approx(ds.energy_s[99], abs=1e-9)
    np.testing.assert_allclose(f, a.get_forces(), atol=1e-9)


def test_recipe_small(tmp_path):
    from ase_mlff.recipes import make_water_reference

    out = tmp_path / "w.npz"
    make_water_reference.main(
        ["--out", str(out), "--frames", "3", "--trajectories", "2", "--molecules", "8"]
        + ["--equilibration", "5", "--interval", "2.5", "--ewald-tolerance", "1e-4", "--seed", "3"]
    )
    ds = load_dataset(out)
    np.testing.assert_array_equal(ds.extra_s["traj_id"], [0, 0, 1])
    np.testing.assert_allclose(ds.extra_s["time_fs"], [7.5, 10.0, 7.5])
    assert not np.allclose(ds.positions_nc[:24], ds.positions_nc[48:72])
    prov = json.loads(provenance_path(out).read_text())
    assert prov["config"]["seed"] == 3 and prov["frames_per_trajectory"] == [2, 1]
    assert set(prov["trajectories"]) == {"0", "1"}


def test_recipe_resumes_from_finished_parts(tmp_path):
    """A finished trajectory's part is reused, not recomputed; the others are run; the set
    is assembled in trajectory order; parts made with other settings are refused."""
    from ase_mlff.recipes import make_water_reference
    from ase_mlff.reference.runner import parts_dir_of

    args = ["--frames", "3", "--trajectories", "2", "--molecules", "8", "--seed", "3"]
    args += ["--equilibration", "5", "--interval", "2.5", "--ewald-tolerance", "1e-4"]
    make_water_reference.main(args + ["--out", str(tmp_path / "full.npz")])
    full = load_dataset(tmp_path / "full.npz")
    # an interrupted run: trajectory 1 had finished (its part is there), trajectory 0 not
    out = tmp_path / "resumed.npz"
    parts = parts_dir_of(out)
    parts.mkdir()
    finished = full.subset(np.flatnonzero(full.extra_s["traj_id"] == 1))
    finished.energy_s = finished.energy_s + 1.0  # marks the frames of the finished part
    trajectory = {"1": full.provenance["trajectories"]["1"]}
    finished.provenance = {**full.provenance, "trajectories": trajectory}
    finished.save_npz(parts / "traj_001.npz")
    make_water_reference.main(args + ["--out", str(out)])
    ds = load_dataset(out)
    np.testing.assert_array_equal(ds.extra_s["traj_id"], [0, 0, 1])
    np.testing.assert_array_equal(ds.positions_nc, full.positions_nc)
    np.testing.assert_array_equal(ds.energy_s, full.energy_s + [0.0, 0.0, 1.0])
    prov = json.loads(provenance_path(out).read_text())
    assert prov["runner"]["reused_parts"] == ["traj_001"] and not parts.exists()
    for t in ("0", "1"):  # the statistics and seeds of both runs (not their timings)
        for key in ("seeds", "mean_temperature_K", "mean_energy_eV"):
            assert prov["trajectories"][t][key] == full.provenance["trajectories"][t][key]

    parts.mkdir()
    (parts / "jobs.json").write_text(json.dumps({"config": {"seed": 4}, "jobs": []}))
    with pytest.raises(ValueError, match="other settings"):
        make_water_reference.main(args + ["--out", str(out)])


@pytest.mark.skipif(not SHIPPED.exists(), reason="shipped water data not generated")
def test_shipped_water_dataset():
    ds = load_dataset(SHIPPED)
    prov = json.loads(provenance_path(SHIPPED).read_text())
    cfg = prov["config"]
    assert ds.same_molecule() and ds.n_atoms_s[0] == 192
    np.testing.assert_array_equal(ds.numbers_n[:192], np.tile([8, 1, 1], 64))
    np.testing.assert_allclose(ds.cell_s33[0], np.diag([12.4296] * 3), atol=1e-3)
    assert ds.pbc_s3.all() and set(ds.config_type_s) == {"tip3p_flex_bulk"}
    assert sorted(set(ds.extra_s["traj_id"])) == list(range(prov["n_trajectories"]))
    f = ds.forces_nc.reshape(len(ds), 192, 3)
    assert np.isfinite(f).all() and np.isfinite(ds.energy_s).all()
    assert np.abs(f.sum(axis=1)).max() < 1e-3
    for t in prov["trajectories"].values():
        assert abs(t["mean_temperature_K"] - 300) < 10
    bulk = water.bulk_water_system(
        cfg["n_molecules"],
        cfg["density_g_cm3"],
        cutoff_nm=cfg["cutoff_nm"],
        switch_width_nm=cfg["switch_width_nm"],
        dispersion_correction=cfg["dispersion_correction"],
        ewald_error_tolerance=cfg["ewald_error_tolerance"],
    )
    assert water.nonbonded_settings(bulk.system)["cutoff_nm"] == prov["nonbonded"]["cutoff_nm"]
    ev = water.OpenMMEvaluator(bulk.system, platform="Reference")
    for i in (0, len(ds) - 1):
        a = ds.to_atoms(i)
        e, fi = ev(a.positions, a.cell.lengths())
        assert e == pytest.approx(ds.energy_s[i], abs=1e-8)
        np.testing.assert_allclose(fi, a.get_forces(), atol=1e-8)
