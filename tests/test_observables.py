"""h(r), diffusion from the MSD, and 1-D energy scans."""

import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule

from ase_mlff.forcefields.qforce import qforce_potential, relaxed_species
from ase_mlff.metrics.diffusion import diffusion_coefficient, msd_windows, unwrap
from ase_mlff.metrics.distance_distribution import h_of_r, h_of_r_figure, h_of_r_mae
from ase_mlff.metrics.scans import angle_scan, bond_scan, methyl_atoms, scan_energies


def test_h_of_r_of_a_dimer_and_identical_ensembles():
    pos = np.array([[[0, 0, 0], [1.234, 0, 0]]] * 3, float)
    r, h = h_of_r(pos, r_max=5.0, bins=500)
    assert r[np.argmax(h)] == pytest.approx(1.235, abs=0.006)
    assert h.sum() * 0.01 == pytest.approx(1.0)  # all distances inside the grid
    rng = np.random.default_rng(0)
    frames = rng.normal(size=(50, 6, 3))
    _, h1 = h_of_r(frames)
    assert h_of_r_mae(h1, h1) == 0.0
    _, h2 = h_of_r(2.0 * frames)
    assert 0.5 < h_of_r_mae(h1, h2) <= 2.0 + 1e-12
    with pytest.raises(ValueError, match="frames"):
        h_of_r(np.zeros((3, 1, 3)))
    h_of_r_figure(r, {"a": h}).savefig("/tmp/_h.png")


def test_diffusion_of_a_random_walk_with_known_d_through_the_periodic_boundary():
    rng = np.random.default_rng(1)
    s, dt = 0.1, 2.0  # Å per step per component, fs
    x = np.cumsum(rng.normal(0.0, s, size=(3000, 100, 3)), axis=0)
    cell = np.diag([6.0, 7.0, 8.0])
    wrapped = x - np.floor(x / np.diag(cell)) * np.diag(cell)
    np.testing.assert_allclose(
        unwrap(wrapped, cell) - unwrap(wrapped, cell)[0], x - x[0], atol=1e-9
    )
    d = diffusion_coefficient(wrapped, dt, window_fs=100 * dt, cell_33=cell)
    assert d == pytest.approx(s * s / (2 * dt), rel=0.03)  # D = σ²/(2Δt) per component
    # ballistic motion: MSD grows as lag²
    v = np.ones((10, 1, 3))
    traj = np.cumsum(v, axis=0)
    assert msd_windows(traj, 2) == pytest.approx(12.0)
    with pytest.raises(ValueError, match="lag"):
        msd_windows(traj, 10)


def test_scans_build_the_geometries_they_claim():
    a = molecule("CH3CH2OH")
    c, hs = methyl_atoms(a)
    assert a.numbers[c] == 6 and len(hs) == 3 and all(a.numbers[h] == 1 for h in hs)
    stretched = bond_scan(a, c, hs[0], [0.8, 2.0, 4.0])
    assert [s.get_distance(c, hs[0]) for s in stretched] == pytest.approx([0.8, 2.0, 4.0])
    np.testing.assert_array_equal(stretched[1].positions[hs[1]], a.positions[hs[1]])
    bent = angle_scan(a, hs[1], c, hs[0], [100.0, 40.0])
    assert [s.get_angle(hs[1], c, hs[0]) for s in bent] == pytest.approx([100.0, 40.0])
    assert bent[1].get_distance(c, hs[0]) == pytest.approx(a.get_distance(c, hs[0]))
    with pytest.raises(ValueError, match="CH3"):
        methyl_atoms(molecule("H2O"))


def test_scan_energies_batched_equal_calculator():
    from ase_mlff.calculators import MLFFCalculator

    h2o = relaxed_species("H2O")
    images = bond_scan(h2o, 0, 1, np.linspace(0.7, 3.0, 8))
    pot = qforce_potential(h2o)
    e_batch = scan_energies(pot, images)
    e_calc = scan_energies(MLFFCalculator(pot), images)
    np.testing.assert_allclose(e_batch, e_calc, rtol=1e-12)
    # only the stretched Morse O-H bond changes (the H-O-H angle is kept by the scan)
    r0, k, d = (
        float(x[0]) for x in (pot.topology.morse_r0, pot.topology.morse_k, pot.topology.morse_d)
    )
    beta = np.sqrt(k / (2 * d))
    morse = d * (1 - np.exp(-beta * (np.linspace(0.7, 3.0, 8) - r0))) ** 2
    np.testing.assert_allclose(e_batch - e_batch[0], morse - morse[0], rtol=1e-9)
    assert isinstance(images[0], Atoms)


def test_h_of_r_mae_equals_mdsims_on_its_grid():
    """MAE_h on the default grid is the number MDsim's code behind paper 003 gives
    (observable.ipynb: ``get_hr`` = torch.cdist over all ordered pairs, np.histogram with
    density=True on linspace(1e-6, 10, 501); ``mae`` = mean |Δh| × xlim), and the label
    of every table names that grid."""
    import torch

    from ase_mlff.data import load_dataset
    from ase_mlff.metrics.distance_distribution import H_R_MAE_LABEL

    ds = load_dataset("aspirin")
    n = int(ds.n_atoms_s[0])
    pos = ds.positions_nc[: 120 * n].reshape(120, n, 3)
    a, b = pos[:60], pos[60:]

    def mdsim_hr(traj):
        bins = np.linspace(1e-6, 10, 500 + 1)
        pdist = torch.cdist(torch.as_tensor(traj), torch.as_tensor(traj)).flatten()
        return np.histogram(pdist.numpy(), bins, density=True)[0]

    theirs = np.abs(mdsim_hr(a) - mdsim_hr(b)).mean() * 10
    ours = h_of_r_mae(h_of_r(a)[1], h_of_r(b)[1])
    assert theirs > 0.01
    assert ours == pytest.approx(theirs, rel=1e-3)
    # a coarser grid gives another number: the grid is part of the result
    coarse = h_of_r_mae(h_of_r(a, bins=100)[1], h_of_r(b, bins=100)[1])
    assert coarse < 0.8 * ours
    assert H_R_MAE_LABEL == "h(r) MAE (0–10 Å, 0.02 Å bins)"
