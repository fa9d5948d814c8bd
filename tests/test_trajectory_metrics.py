"""Trajectory observables: RMSD/RMSF, contact maps, Lindemann, min distance, RDF, FES, store."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from ase import Atoms, units
from ase.build import bulk, molecule
from scipy.spatial.transform import Rotation

from ase_mlff.metrics.fes import (
    dihedrals,
    distances,
    fes2d_figure,
    fes_figure,
    fes_mae,
    fes_unvisited_fraction,
    free_energy_1d,
    free_energy_2d,
)
from ase_mlff.metrics.rdf import rdf_figure, rdf_mae, rdf_of_frames
from ase_mlff.metrics.trajectory import (
    Trajectory,
    contact_map,
    contact_map_figure,
    contact_map_mae,
    energy_drift,
    lindemann_index,
    load_study,
    max_force_series,
    mean_std_over_replicas,
    min_distance_series,
    minimum_image,
    observables_figure,
    rmsd_series,
    rmsf,
    rmsf_figure,
    series_figure,
)


@pytest.fixture
def rigid():
    """A molecule rotated and translated rigidly over 20 frames."""
    ref = molecule("CH3CH2OH").positions
    rots = Rotation.random(20, random_state=0).as_matrix()
    shift = np.random.default_rng(0).normal(size=(20, 1, 3)) * 3.0
    return ref, np.einsum("nc,tdc->tnd", ref, rots) + shift


def test_rmsd_of_a_rigid_motion_is_zero_only_with_alignment(rigid):
    ref, traj = rigid
    np.testing.assert_allclose(rmsd_series(traj, ref), 0.0, atol=1e-10)
    assert np.all(rmsd_series(traj, ref, align=False)[1:] > 0.5)
    # a known non-rigid change: one atom displaced by 0.9 Å, no alignment -> 0.9/sqrt(N)
    moved = np.repeat(ref[None], 2, axis=0)
    moved[1, 0, 0] += 0.9
    assert rmsd_series(moved, ref, align=False) == pytest.approx([0.0, 0.9 / np.sqrt(len(ref))])
    assert rmsd_series(moved, ref, align=False, atoms=[0]) == pytest.approx([0.0, 0.9])
    with pytest.raises(ValueError, match="reference"):
        rmsd_series(traj, ref[:3])


def test_rmsf_static_rigid_and_one_oscillating_atom(rigid):
    ref, traj = rigid
    np.testing.assert_allclose(rmsf(np.repeat(ref[None], 5, 0)), 0.0, atol=1e-12)
    np.testing.assert_allclose(rmsf(traj), 0.0, atol=1e-9)  # rigid motion removed
    assert rmsf(traj, align=False).min() > 0.5
    a = 0.3
    osc = np.repeat(ref[None], 10, axis=0)
    osc[:, 0, 0] += a * (-1.0) ** np.arange(10)
    expected = np.zeros(len(ref))
    expected[0] = a
    np.testing.assert_allclose(rmsf(osc, align=False), expected, atol=1e-12)
    # an unweighted fit spreads the motion over the other atoms...
    spread = rmsf(osc)
    assert spread[0] < a - 1e-3 and spread[1:].max() > 1e-3
    # ...a fit on the other atoms only gives the hand result, also after a rigid motion
    w = np.ones(len(ref))
    w[0] = 0.0
    moved = np.einsum("tnc,dc->tnd", osc, Rotation.random(random_state=3).as_matrix()) + 2.0
    np.testing.assert_allclose(rmsf(moved, weights=w), expected, atol=1e-9)


def test_contact_map_of_a_dimer_and_mae():
    pos = np.array([[[0, 0, 0], [1.5, 0, 0]], [[0, 0, 0], [0, 2.5, 0]]], float)
    m, freq = contact_map(pos, cutoff=2.0)
    np.testing.assert_allclose(m, [[0, 2.0], [2.0, 0]])
    np.testing.assert_allclose(freq, [[0, 0.5], [0.5, 0]])
    rng = np.random.default_rng(1)
    frames = rng.normal(size=(30, 7, 3))
    cm = contact_map(frames)
    i, j = 2, 5
    assert cm[i, j] == pytest.approx(np.linalg.norm(frames[:, i] - frames[:, j], axis=1).mean())
    assert contact_map_mae(cm, cm) == 0.0
    assert contact_map_mae(cm, cm + 0.1) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="equal"):
        contact_map_mae(cm, cm[:3, :3])


def test_lindemann_static_lattice_two_atoms_and_the_detector():
    lattice = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)
    static = np.repeat(lattice.positions[None], 6, axis=0)
    q, qg = lindemann_index(static, lattice.cell[:])
    assert q.shape == (len(lattice),) and np.all(q == 0.0) and qg == 0.0
    r1, r2 = 1.0, 1.6
    dimer = np.zeros((8, 2, 3))
    dimer[:, 1, 0] = np.where(np.arange(8) % 2 == 0, r1, r2)
    q, qg = lindemann_index(dimer)
    closed = abs(r1 - r2) / (r1 + r2)  # sqrt(<r²> - <r>²) / <r>
    np.testing.assert_allclose(q, [closed, closed])
    assert qg == pytest.approx(closed)
    # the same number as the on-line detector over one window (orthorhombic cell, pbc)
    from ase_mlff.graph.batch import Batch
    from ase_mlff.md.detectors import LindemannIndex

    rng = np.random.default_rng(2)
    box = Atoms("Ar8", positions=rng.uniform(0, 6, (8, 3)), cell=[6.0, 6.5, 7.0], pbc=True)
    frames = box.positions + rng.normal(0, 0.3, size=(12, 8, 3))
    det = None
    for p in frames:
        b = Batch.from_arrays(
            box.numbers, p, [8], box.cell[:], box.pbc, cutoff=0.0, dtype=torch.float64
        )
        state = SimpleNamespace(batch=b)
        det = det or LindemannIndex(state, window=len(frames))
        d = det._distances(state)
        det.s1 += d
        det.s2 += d * d
        det.count += 1
    q_det, qg_det = det.indices(state)
    q, qg = lindemann_index(frames, box.cell[:])
    np.testing.assert_allclose(q, q_det.numpy(), rtol=1e-9)
    assert qg == pytest.approx(float(qg_det[0]), rel=1e-9)


def test_min_distance_through_the_boundary_and_triclinic_minimum_image():
    cell = np.diag([10.0, 10.0, 10.0])
    pos = np.array([[[0.2, 5, 5], [9.7, 5, 5], [5, 5, 5]], [[0.2, 5, 5], [8.0, 5, 5], [5, 5, 5]]])
    np.testing.assert_allclose(min_distance_series(pos, cell), [0.5, 2.2])
    np.testing.assert_allclose(min_distance_series(pos), [4.7, 3.0])  # no wrap
    # triclinic: brute force over images agrees with minimum_image
    tri = np.array([[5.0, 0, 0], [2.2, 4.6, 0], [1.1, 1.3, 4.8]])
    v = np.random.default_rng(3).uniform(-12, 12, size=(200, 3))
    g = np.stack(np.meshgrid(*[np.arange(-4, 5)] * 3, indexing="ij"), -1).reshape(-1, 3)
    brute = np.linalg.norm(v[:, None] + (g @ tri)[None], axis=-1).min(axis=1)
    np.testing.assert_allclose(np.linalg.norm(minimum_image(v, tri), axis=-1), brute, atol=1e-12)
    # one cell per frame: frames (2, 100, 3) in cells tri and 1.3 tri
    per_frame = minimum_image(v.reshape(2, 100, 3), np.stack([tri, 1.3 * tri]))
    np.testing.assert_allclose(per_frame[0], minimum_image(v[:100], tri), atol=1e-12)
    np.testing.assert_allclose(per_frame[1], minimum_image(v[100:], 1.3 * tri), atol=1e-12)
    with pytest.raises(ValueError, match="cell"):
        minimum_image(v, np.eye(2))


def _ase_rdf(images, r_max, n_bins, elements=None):
    from ase.geometry.rdf import get_rdf

    return get_rdf(images, r_max, n_bins, elements=elements)[0]


def test_rdf_of_frames_matches_ase_and_fcc_peaks():
    rng = np.random.default_rng(4)
    cell = np.array([[9.0, 0, 0], [1.5, 9.5, 0], [-1.0, 0.8, 10.0]])  # triclinic
    numbers = np.array([8] * 12 + [1] * 24)
    frames = [  # cells differ between frames (each frame normalised by its own volume)
        Atoms(numbers, scaled_positions=rng.uniform(size=(36, 3)), cell=cell * s, pbc=True)
        for s in (1.0, 1.02, 0.97, 1.05, 1.0)
    ]
    r_max, n_bins = 4.0, 40
    r, g = rdf_of_frames(frames, [(8, 8), ("O", "H"), (1, 1)], r_max, n_bins, batch_size=2)
    assert g.shape == (3, n_bins)
    np.testing.assert_allclose(r, (np.arange(n_bins) + 0.5) * 0.1)
    for p, el in enumerate([(8, 8), (8, 1), (1, 1)]):
        np.testing.assert_allclose(g[p], _ase_rdf(frames, r_max, n_bins, el), atol=1e-9)
    # the neighbour-graph path gives the same counts as the minimum-image one
    _, g_graph = rdf_of_frames(frames, [(8, 8), (8, 1), (1, 1)], r_max, n_bins, method="graph")
    np.testing.assert_allclose(g_graph, g, atol=1e-9)
    # the same from arrays with per-frame cells, and with a (fixed-cell) Trajectory
    pos = np.stack([a.positions for a in frames])
    cells = np.stack([a.cell[:] for a in frames])
    _, g2 = rdf_of_frames(pos, [(8, 1)], r_max, n_bins, numbers=numbers, cell=cells)
    np.testing.assert_allclose(g2[0], g[1], atol=1e-12)
    same_cell = [a for a in frames if np.allclose(a.cell[:], cell)]
    _, g3 = rdf_of_frames(Trajectory.from_atoms(same_cell), [(8, 1)], r_max, n_bins)
    np.testing.assert_allclose(g3[0], _ase_rdf(same_cell, r_max, n_bins, (8, 1)), atol=1e-9)
    assert rdf_mae(g, g, r_max).tolist() == [0.0, 0.0, 0.0]
    assert rdf_mae(g[0], g[0] + 1.0, r_max) == pytest.approx(r_max)

    a = 3.6
    fcc = bulk("Cu", "fcc", a=a)  # primitive (triclinic) cell, r_max beyond half of it
    r, g = rdf_of_frames([fcc], [(29, 29)], 6.3, 900)  # 0.007 Å bins: no shell on an edge
    peaks = r[g[0] > 0]
    shells = a * np.sqrt(np.array([0.5, 1.0, 1.5, 2.0, 2.5, 3.0]))
    assert len(peaks) == len(shells)
    np.testing.assert_allclose(peaks, shells, atol=0.0036)
    cubic = bulk("Cu", "fcc", a=a, cubic=True).repeat(4)
    _, g2 = rdf_of_frames([cubic], [("Cu", "Cu")], 5.6, 800)
    np.testing.assert_allclose(g2[0], _ase_rdf([cubic], 5.6, 800), atol=1e-9)
    np.testing.assert_allclose(g2[0], g[0][:800], rtol=1e-9)  # same crystal, same g
    with pytest.raises(ValueError, match="half"):
        rdf_of_frames([fcc], [(29, 29)], 6.3, 900, method="min_image")
    with pytest.raises(ValueError, match="periodic"):
        rdf_of_frames([molecule("H2O")], [(8, 1)], 2.0)


def test_free_energy_of_known_distributions_and_mae():
    rng = np.random.default_rng(5)
    kT = units.kB * 300.0
    n = 400_000

    def check(f, exact, p_exact, width):
        # per-bin standard error of -kT ln p from counts ~ n p w, 4 sigma, plus the
        # bin-averaging bias; compared up to the additive constant (min-0 gauge)
        err = kT * (4.0 / np.sqrt(n * p_exact * width) + 0.01)
        diff = f - exact
        c = np.average(diff, weights=1.0 / err**2)
        assert np.all(np.abs(diff - c) < err)
        assert np.abs(diff - c).max() > 0.0

    mu, sigma = 2.0, 0.1  # a Gaussian distance: F = kT (r - mu)^2 / (2 sigma^2) + c
    r, f = free_energy_1d(rng.normal(mu, sigma, n), 40, (1.6, 2.4), 300.0)
    assert np.nanmin(f) == 0.0 and np.isfinite(f).all()
    p = np.exp(-((r - mu) ** 2) / (2 * sigma**2)) / np.sqrt(2 * np.pi * sigma**2)
    check(f, kT * (r - mu) ** 2 / (2 * sigma**2), p, 0.02)
    with pytest.raises(AssertionError):  # the check can fail: a wrong temperature
        check(
            free_energy_1d(rng.normal(mu, sigma, n), 40, (1.6, 2.4), 350.0)[1],
            kT * (r - mu) ** 2 / (2 * sigma**2),
            p,
            0.02,
        )
    kappa, mu = 2.0, 0.5  # a von Mises dihedral: F = -kT kappa cos(phi - mu) + c
    phi, fphi = free_energy_1d(rng.vonmises(mu, kappa, n), 36, temperature_K=300.0)
    p = np.exp(kappa * np.cos(phi - mu)) / (2 * np.pi * np.i0(kappa))
    check(fphi, -kT * kappa * np.cos(phi - mu), p, 2 * np.pi / 36)
    # empty bins: NaN, left out of the MAE and counted as unvisited
    _, f_narrow = free_energy_1d(rng.vonmises(mu, 20.0, 20_000), 36, temperature_K=300.0)
    assert np.isnan(f_narrow).any()
    width = 2 * np.pi / 36
    both = np.isfinite(f_narrow)
    assert fes_mae(f_narrow, fphi, width) == pytest.approx(
        np.abs(f_narrow[both] - fphi[both]).sum() * width
    )
    assert fes_mae(fphi, fphi, width) == 0.0
    assert fes_unvisited_fraction(f_narrow, fphi) == pytest.approx(1 - both.mean())
    assert fes_unvisited_fraction(fphi, fphi) == 0.0
    x, y, f2 = free_energy_2d(rng.vonmises(0, 1, 50_000), rng.vonmises(1, 1, 50_000), 24)
    assert f2.shape == (24, 24) and np.nanmin(f2) == 0.0 and len(x) == len(y) == 24
    with pytest.raises(ValueError, match="grid"):
        fes_mae(fphi, f2, width)


def test_dihedrals_and_distances_against_ase(rigid):
    ref, traj = rigid
    rng = np.random.default_rng(6)
    frames = traj + rng.normal(0, 0.3, size=traj.shape)
    quads = np.array([[0, 1, 2, 3], [4, 0, 1, 8], [2, 1, 0, 5]])
    phi = dihedrals(frames, quads)
    assert phi.shape == (20, 3) and phi.min() >= -np.pi and phi.max() < np.pi
    for t in (0, 7, 19):
        a = Atoms("C2OH6", positions=frames[t])
        ase_deg = [a.get_dihedral(*q) for q in quads]
        np.testing.assert_allclose(np.degrees(phi[t]) % 360.0, ase_deg, atol=1e-9)
    d = distances(frames, [[0, 1], [3, 7]])
    np.testing.assert_allclose(d[:, 1], np.linalg.norm(frames[:, 7] - frames[:, 3], axis=1))
    with pytest.raises(ValueError, match="quads"):
        dihedrals(frames, [[0, 1, 2]])


def test_trajectory_from_store_keeps_only_the_stable_frames(tmp_path):
    from ase_mlff.md.storage import TrajectoryStore

    start = molecule("H2O")
    study = tmp_path / "study"
    store = TrajectoryStore(study / "modelA" / "agent_00", [start, start], [0, 1])
    rng = np.random.default_rng(7)
    for r in (0, 1):
        store.append(
            r,
            [
                (
                    10.0 * k,
                    start.positions + 0.01 * rng.normal(size=(3, 3)),
                    -5.0 + 0.01 * k,
                    300.0 + k,
                    1.0 + k,
                )
                for k in range(8)
            ],
        )
    store.mark_stopped(1, 50.0, "bond_length")
    store.close()
    d = study / "modelA" / "agent_00"
    full = Trajectory.from_store(d, 1, stable_only=False)
    tr = Trajectory.from_store(d, 1)
    assert len(full) == 8 and len(tr) == 5
    np.testing.assert_allclose(tr.time_fs_t, [0, 10, 20, 30, 40])
    assert tr.t_inst_fs == 50.0 and tr.reason == "bond_length" and tr.replica_id == 1
    np.testing.assert_allclose(tr.energy_t, -5.0 + 0.01 * np.arange(5))
    np.testing.assert_allclose(tr.temperature_t, 300.0 + np.arange(5))
    np.testing.assert_allclose(max_force_series(tr), 1.0 + np.arange(5))
    np.testing.assert_allclose(tr.positions_tnc, full.positions_tnc[:5])
    assert len(Trajectory.from_store(d, 0)) == 8  # stayed stable: all frames
    # kinetic energy from T with 3N - 3 dof
    np.testing.assert_allclose(tr.kinetic_energy_t, 0.5 * 6 * units.kB * tr.temperature_t)
    study_trajs = load_study(study)
    assert list(study_trajs) == ["modelA"] and [len(t) for t in study_trajs["modelA"]] == [8, 5]
    with pytest.raises(KeyError):
        Trajectory.from_store(d, 5)


def test_energy_drift_and_mean_std_over_replicas():
    t = np.arange(0, 2001, 100.0)  # fs
    e = 3.0 + 0.5 * t / 1000.0  # 0.5 eV/ps
    out = energy_drift(t, e, n_atoms=10)
    assert out["drift_eV_per_ps_per_atom"] == pytest.approx(0.05)
    assert out["max_abs_deviation_eV"] == pytest.approx(1.0)
    times, mean, std, n = mean_std_over_replicas(
        [
            (np.array([0, 10, 20.0]), np.array([1, 2, 3.0])),
            (np.array([0, 10.0]), np.array([3, 4.0])),
        ]
    )
    np.testing.assert_allclose(times, [0, 10, 20])
    np.testing.assert_allclose(mean, [2, 3, 3])
    np.testing.assert_allclose(std, [1, 1, 0])
    np.testing.assert_array_equal(n, [2, 2, 1])


def test_figures_are_written(tmp_path, rigid):
    ref, traj = rigid
    trajs = [
        Trajectory(
            traj + 0.05 * k,
            np.array([6, 6, 8, 1, 1, 1, 1, 1, 1]),
            10.0 * np.arange(20),
            energy_t=np.linspace(0, 1, 20),
            temperature_t=300 + np.arange(20.0),
        )
        for k in range(2)
    ]
    figs = {
        "series": series_figure(
            {"m": [(t.time_fs_t, rmsd_series(t.positions_tnc, ref)) for t in trajs]}, "RMSD (Å)"
        ),
        "obs": observables_figure({"m": trajs, "n": trajs[:1]}, reference_nc=ref),
        "rmsf": rmsf_figure({"m": np.stack([rmsf(t.positions_tnc) for t in trajs])}),
        "cmap": contact_map_figure(contact_map(traj), contact_map(traj + 0.0)),
        "rdf": rdf_figure(np.arange(5.0), {"O-O": {"a": np.ones(5), "b": np.zeros(5)}}),
        "fes": fes_figure(np.arange(5.0), {"a": np.arange(5.0)}),
        "fes2d": fes2d_figure(
            np.arange(4.0), np.arange(3.0), {"a": np.random.default_rng(0).uniform(size=(4, 3))}
        ),
    }
    for name, fig in figs.items():
        path = tmp_path / f"{name}.png"
        fig.savefig(path)
        assert path.stat().st_size > 1000
