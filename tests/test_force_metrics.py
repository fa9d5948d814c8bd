"""Paper 002's force metrics: global (Eqs. 1-4), element (Eqs. 10-13), conformation clusters
(Eqs. 5-9), explored/unexplored frames, Kabsch alignment and the figures."""

import numpy as np
import pytest
from ase import Atoms
from ase.build import minimize_rotation_and_translation
from scipy.spatial.transform import Rotation
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.metrics import adjusted_rand_score

from ase_mlff.data.dataset import Dataset
from ase_mlff.metrics.clusters import (
    ConformationClusters,
    cluster_bars_figure,
    cluster_metrics,
    clusters_figure,
    exploration,
    flatten_cluster_metrics,
    kabsch_align,
    radar_figure,
)
from ase_mlff.metrics.errors import error_metrics
from ase_mlff.metrics.forces import (
    element_figure,
    element_metrics,
    force_metrics,
    per_frame_force_errors,
)

U_H, U_C, U_O = 1.008, 12.011, 15.999


# ------------------------------------------------------------------ hand case
@pytest.fixture
def hand_case():
    """Frame 0: H, C; frame 1: C, H, H; errors chosen by hand."""
    numbers = np.array([1, 6, 6, 1, 1])
    n_atoms = np.array([2, 3])
    delta = np.array(
        [
            [0.1, -0.2, 0.0],  # H   frame 0
            [0.0, 0.3, -0.4],  # C   frame 0 (norm 0.5, largest component 0.4)
            [0.6, 0.0, 0.0],  # C   frame 1
            [0.0, 0.0, 0.05],  # H   frame 1
            [-0.1, 0.1, 0.0],  # H   frame 1
        ]
    )
    ref = np.random.default_rng(0).normal(size=(5, 3))
    return ref + delta, ref, numbers, n_atoms


def test_global_metrics_by_hand(hand_case):
    pred, ref, z, n = hand_case
    per = per_frame_force_errors(pred, ref, z, n)
    np.testing.assert_allclose(per["mae_s"], [1.0 / 6, 0.85 / 9])
    np.testing.assert_allclose(per["max_err_s"], [0.4, 0.6])  # components, not norms
    np.testing.assert_allclose(
        per["fnm_mae_s"], [(0.3 / U_H + 0.7 / U_C) / 6, (0.6 / U_C + 0.25 / U_H) / 9]
    )
    np.testing.assert_allclose(per["fnm_max_err_s"], [0.2 / U_H, 0.1 / U_H])
    m = force_metrics(pred, ref, z, n)
    assert m["forces_mae"] == pytest.approx((1.0 / 6 + 0.85 / 9) / 2)
    assert m["forces_max_err"] == pytest.approx(0.5)
    assert m["forces_rmse"] == pytest.approx(np.sqrt((0.3 / 6 + 0.3825 / 9) / 2))
    assert m["fnm_mae"] == pytest.approx(
        ((0.3 / U_H + 0.7 / U_C) / 6 + (0.6 / U_C + 0.25 / U_H) / 9) / 2
    )
    assert m["fnm_max_err"] == pytest.approx((0.2 / U_H + 0.1 / U_H) / 2)


def test_identical_forces_give_zeros(hand_case):
    _, ref, z, n = hand_case
    assert all(v == 0.0 for v in force_metrics(ref, ref.copy(), z, n).values())
    for res in element_metrics(ref, ref, z, n).values():
        assert res["forces_mae"] == res["forces_max_err"] == res["fnm_max_err"] == 0.0


def test_frames_of_equal_size_match_plain_component_mean():
    rng = np.random.default_rng(1)
    pred, ref = rng.normal(size=(2, 40, 3))
    z = rng.choice([1, 6, 8], size=40)
    m = force_metrics(pred, ref, z, np.full(4, 10))
    assert m["forces_mae"] == pytest.approx(np.mean(np.abs(pred - ref)))
    assert m["forces_rmse"] == pytest.approx(np.sqrt(np.mean((pred - ref) ** 2)))
    # (S, N, 3) input is accepted too
    assert force_metrics(pred.reshape(4, 10, 3), ref.reshape(4, 10, 3), z, [10] * 4) == m


def test_bad_inputs_raise(hand_case):
    pred, ref, z, n = hand_case
    with pytest.raises(ValueError, match="differ in shape"):
        force_metrics(pred[:4], ref, z, n)
    with pytest.raises(ValueError, match="sums to"):
        force_metrics(pred, ref, z, [2, 2])
    with pytest.raises(ValueError, match="atomic numbers"):
        force_metrics(pred, ref, z[:4], n)
    with pytest.raises(ValueError, match="at least one atom"):
        force_metrics(pred, ref, z, [0, 2, 3])
    with pytest.raises(ValueError, match=r"\(atoms, 3\)"):
        force_metrics(pred[:, :2], ref[:, :2], z, n)


def test_error_metrics_uses_component_max(hand_case):
    pred, ref, z, n = hand_case
    ds = Dataset(
        numbers_n=z,
        positions_nc=np.random.default_rng(2).normal(size=(5, 3)),
        n_atoms_s=n,
        cell_s33=np.zeros((2, 3, 3)),
        pbc_s3=np.zeros((2, 3), bool),
        energy_s=[1.0, 2.0],
        forces_nc=ref,
    )
    m = error_metrics(np.array([1.5, 1.0]), pred, ds)
    # Eq. 2: max over atoms and components (0.4, 0.6); the per-atom norm would give 0.55
    assert m["forces_max_err"] == pytest.approx(0.5)
    for key, val in force_metrics(pred, ref, z, n).items():
        assert m[key] == val
    assert m["energy_mae"] == pytest.approx(0.75)


# ----------------------------------------------------------------- elements
def test_element_metrics_by_hand(hand_case):
    pred, ref, z, n = hand_case
    el = element_metrics(pred, ref, z, n)
    assert list(el) == ["H", "C"]
    h, c = el["H"], el["C"]
    assert h["forces_mae"] == pytest.approx((0.3 / 3 + 0.25 / 6) / 2)  # Eq. 10
    assert h["forces_max_err"] == pytest.approx((0.2 + 0.1) / 2)  # Eq. 11
    assert h["fnm_mae"] == pytest.approx((0.3 / 3 + 0.25 / 6) / 2 / U_H)  # Eq. 12
    assert h["fnm_max_err"] == pytest.approx(0.15 / U_H)  # Eq. 13
    assert c["forces_mae"] == pytest.approx((0.7 / 3 + 0.6 / 3) / 2)
    assert c["forces_max_err"] == pytest.approx(0.5)
    assert c["fnm_max_err"] == pytest.approx(0.5 / U_C)
    assert (h["n_atoms"], c["n_atoms"], h["n_frames"], c["n_frames"]) == (3, 2, 2, 2)


def test_element_present_in_some_frames_only(hand_case):
    pred, ref, z, n = hand_case
    z_o = z.copy()
    z_o[4] = 8  # the last H of frame 1 becomes O: only frame 1 has oxygen
    el = element_metrics(pred, ref, z_o, n)
    assert el["O"]["n_frames"] == 1 and el["O"]["n_atoms"] == 1
    assert el["O"]["forces_mae"] == pytest.approx(0.2 / 3)
    assert el["O"]["fnm_max_err"] == pytest.approx(0.1 / U_O)
    assert el["H"]["forces_max_err"] == pytest.approx((0.2 + 0.05) / 2)


def test_single_element_equals_global():
    rng = np.random.default_rng(3)
    n = np.array([4, 7, 5])
    pred, ref = rng.normal(size=(2, n.sum(), 3))
    z = np.full(n.sum(), 18)
    g = force_metrics(pred, ref, z, n)
    el = element_metrics(pred, ref, z, n)["Ar"]
    for key in ("forces_mae", "forces_max_err", "fnm_mae", "fnm_max_err"):
        assert el[key] == pytest.approx(g[key], rel=1e-12)


# ------------------------------------------------------------------- Kabsch
def _structure(rng, n=12):
    return rng.normal(scale=1.5, size=(n, 3))


def test_kabsch_recovers_rotated_copies():
    rng = np.random.default_rng(4)
    ref = _structure(rng)
    rot = Rotation.random(25, random_state=5)
    frames = np.einsum("fij,nj->fni", rot.as_matrix(), ref) + rng.normal(size=(25, 1, 3)) * 5
    aligned, rmsd = kabsch_align(frames, ref)
    np.testing.assert_allclose(aligned, np.broadcast_to(ref, aligned.shape), atol=1e-10)
    np.testing.assert_allclose(rmsd, 0.0, atol=1e-10)


def test_kabsch_matches_ase_on_noisy_copies():
    rng = np.random.default_rng(6)
    ref = _structure(rng)
    rot = Rotation.random(15, random_state=7)
    frames = np.einsum(
        "fij,fnj->fni", rot.as_matrix(), ref + rng.normal(scale=0.3, size=(15,) + ref.shape)
    )
    frames += rng.normal(size=(15, 1, 3)) * 3
    aligned, rmsd = kabsch_align(frames, ref)
    target = Atoms("H12", positions=ref)
    for f in range(len(frames)):
        atoms = Atoms("H12", positions=frames[f])
        minimize_rotation_and_translation(target, atoms)
        np.testing.assert_allclose(aligned[f], atoms.positions, atol=1e-8)
        assert rmsd[f] == pytest.approx(np.sqrt(np.mean(np.sum((atoms.positions - ref) ** 2, 1))))
    assert np.all(rmsd > 0.1)


def test_kabsch_weighted_matches_scipy():
    rng = np.random.default_rng(8)
    ref = _structure(rng, 9)
    w = rng.uniform(0.5, 16, size=9)
    frames = np.einsum(
        "fij,fnj->fni",
        Rotation.random(6, random_state=9).as_matrix(),
        ref + rng.normal(scale=0.4, size=(6, 9, 3)),
    )
    aligned, rmsd = kabsch_align(frames, ref, weights=w)
    wn = w / w.sum()
    q = ref - wn @ ref
    for f in range(6):
        p = frames[f] - wn @ frames[f]
        r, _ = Rotation.align_vectors(q, p, weights=w)
        expected = r.apply(p) + wn @ ref
        np.testing.assert_allclose(aligned[f], expected, atol=1e-8)
        assert rmsd[f] == pytest.approx(np.sqrt(wn @ np.sum((expected - ref) ** 2, 1)))


def test_kabsch_never_reflects():
    rng = np.random.default_rng(10)
    ref = _structure(rng)
    mirror = ref * np.array([-1.0, 1.0, 1.0])  # a mirror image: no rotation maps it onto ref
    frames = np.einsum("fij,nj->fni", Rotation.random(5, random_state=11).as_matrix(), mirror)
    aligned, rmsd = kabsch_align(frames, ref)
    assert np.all(rmsd > 0.3)  # a reflection would reach 0

    def handedness(x):
        return np.linalg.det(
            np.stack(
                [
                    x[..., 1, :] - x[..., 0, :],
                    x[..., 2, :] - x[..., 0, :],
                    x[..., 3, :] - x[..., 0, :],
                ],
                axis=-2,
            )
        )

    np.testing.assert_allclose(handedness(aligned), handedness(mirror))
    target = Atoms("H12", positions=ref)
    atoms = Atoms("H12", positions=frames[0])
    minimize_rotation_and_translation(target, atoms)
    np.testing.assert_allclose(aligned[0], atoms.positions, atol=1e-8)


def test_kabsch_bad_shapes():
    with pytest.raises(ValueError, match="frames, atoms, 3"):
        kabsch_align(np.zeros((4, 3)), np.zeros((4, 3)))
    with pytest.raises(ValueError, match="does not match"):
        kabsch_align(np.zeros((2, 4, 3)), np.zeros((5, 3)))
    with pytest.raises(ValueError, match="weights"):
        kabsch_align(np.zeros((2, 4, 3)), np.zeros((4, 3)), weights=np.ones(3))


# ----------------------------------------------------------------- clusters
_BASE = np.array([[0.0, 0.0, 0.0], [1.5, 0.0, 0.0], [0.0, 1.5, 0.0], [0.0, 0.0, 1.5]])
_SITES = np.array([[2.5, 2.5, 0.0], [-2.0, 0.5, 1.0], [0.5, -2.0, -2.0]])
_Z = np.array([6, 6, 8, 1, 1])


def _conformations(rng, n_per=40, noise=0.03, sites=_SITES, rotate=True):
    """(3·n_per, 5, 3) frames: 4 fixed atoms + atom 4 at one of three sites; random rigid
    motions; true labels."""
    labels = np.repeat(np.arange(len(sites)), n_per)
    pos = np.concatenate([np.broadcast_to(_BASE, (len(labels), 4, 3)), sites[labels][:, None]], 1)
    pos = pos + rng.normal(scale=noise, size=pos.shape)
    if rotate:
        rot = Rotation.random(len(pos), random_state=int(rng.integers(1 << 30))).as_matrix()
        pos = np.einsum("fij,fnj->fni", rot, pos) + rng.normal(scale=4.0, size=(len(pos), 1, 3))
    return pos, labels


@pytest.fixture(params=["aligned", "distances"])
def fitted(request):
    rng = np.random.default_rng(12)
    pos, labels = _conformations(rng)
    cc = ConformationClusters(n_clusters=3, features=request.param, seed=0).fit(pos, _Z)
    return cc, pos, labels


def test_clusters_recover_conformations(fitted):
    cc, pos, true = fitted
    assert adjusted_rand_score(true, cc.labels_) == 1.0
    x = cc._features(pos)
    sk = KMeans(n_clusters=3, n_init=10, random_state=0).fit_predict(x)
    assert adjusted_rand_score(sk, cc.labels_) == 1.0
    assert np.array_equal(np.sort(np.bincount(cc.labels_)), [40, 40, 40])
    labels, dist, explored = cc.assign(pos)
    assert explored.all()  # every training frame lies within its cluster's radius
    assert np.array_equal(labels, cc.labels_)
    np.testing.assert_allclose(cc.radii_, [dist[labels == k].max() for k in range(3)])
    # the projection is sklearn's PCA, up to the sign of each component
    ref_xy = PCA(n_components=2).fit_transform(x)
    xy = cc.project(pos)
    assert xy.shape == (120, 2)
    np.testing.assert_allclose(np.abs(xy), np.abs(ref_xy), atol=1e-8)


def test_far_frames_are_unexplored(fitted):
    cc, pos, _ = fitted
    rng = np.random.default_rng(13)
    far, _ = _conformations(rng, n_per=2, sites=np.array([[5.0, -5.0, 5.0]]))
    noisy, _ = _conformations(rng, n_per=3, noise=0.6)
    new, _ = _conformations(rng, n_per=4)  # fresh draws of the trained conformations
    _, _, explored = cc.assign(np.concatenate([far, noisy]))
    assert not explored.any()
    assert cc.assign(new)[2].mean() > 0.8


def test_save_load_round_trip(fitted, tmp_path):
    cc, pos, _ = fitted
    path = cc.save(tmp_path / "clusters")
    assert path.suffix == ".npz"
    back = ConformationClusters.load(path)
    assert (back.n_clusters, back.features, back.seed) == (3, cc.features, 0)
    probe, _ = _conformations(np.random.default_rng(14), n_per=5, noise=0.3)
    for a, b in zip(cc.assign(probe), back.assign(probe)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(cc.project(probe), back.project(probe))
    np.testing.assert_array_equal(back.numbers_, _Z)


def test_cluster_input_errors():
    rng = np.random.default_rng(15)
    pos, _ = _conformations(rng, n_per=2)
    cc = ConformationClusters(3)
    with pytest.raises(ValueError, match="not fitted"):
        cc.assign(pos)
    with pytest.raises(ValueError, match="frames, atoms, 3"):
        cc.fit(pos[0])
    with pytest.raises(ValueError, match="same number of atoms"):
        cc.fit([pos[0], pos[1, :4]])
    with pytest.raises(ValueError, match="cannot make"):
        ConformationClusters(10).fit(pos)
    with pytest.raises(ValueError, match="features"):
        ConformationClusters(3, features="dihedrals")
    cc.fit(pos)
    with pytest.raises(ValueError, match="fitted on 5"):
        cc.assign(pos[:, :4])


def _dataset(pos, z, forces=None):
    f, n = pos.shape[:2]
    return Dataset(
        numbers_n=np.tile(z, f) if len(z) == n else z,
        positions_nc=pos.reshape(-1, 3),
        n_atoms_s=np.full(f, n),
        cell_s33=np.zeros((f, 3, 3)),
        pbc_s3=np.zeros((f, 3), bool),
        energy_s=np.zeros(f),
        forces_nc=np.zeros((f * n, 3)) if forces is None else forces,
    )


def test_fit_dataset_requires_one_molecule():
    rng = np.random.default_rng(16)
    pos, _ = _conformations(rng, n_per=5)
    cc = ConformationClusters(3, features="distances").fit_dataset(_dataset(pos, _Z))
    np.testing.assert_array_equal(cc.numbers_, _Z)
    z_bad = np.tile(_Z, len(pos))
    z_bad[5:10] = [6, 6, 1, 8, 1]  # frame 1 with another atom order
    with pytest.raises(ValueError, match="same_molecule"):
        ConformationClusters(3).fit_dataset(_dataset(pos, z_bad))
    with pytest.raises(ValueError, match="differ from those"):
        cluster_metrics(cc, pos, np.zeros((len(pos) * 5, 3)), np.zeros((len(pos) * 5, 3)), z_bad)


def test_cluster_metrics_and_rbp(fitted):
    cc, pos, _ = fitted
    f, n = pos.shape[:2]
    labels = cc.labels_
    bad = 1  # one cluster gets all the large errors
    rng = np.random.default_rng(17)
    ref = rng.normal(size=(f, n, 3))
    size = np.where(labels == bad, 0.3, 0.01)
    delta = size[:, None, None] * rng.choice([-1.0, 1.0], size=(f, n, 3))
    res = cluster_metrics(cc, pos, (ref + delta).reshape(-1, 3), ref.reshape(-1, 3), _Z)
    rows = res["clusters"]
    assert [r["rbp"] for r in rows] == [1.0 if k == bad else 0.0 for k in range(3)]  # Eq. 9
    assert sum(r["n_frames"] for r in rows) == f
    mean_inv_u = np.mean(1.0 / np.array([12.011, 12.011, 15.999, 1.008, 1.008]))
    for k, r in enumerate(rows):
        e = 0.3 if k == bad else 0.01
        assert r["forces_mae"] == pytest.approx(e)  # Eq. 5
        assert r["forces_max_err"] == pytest.approx(e)  # Eq. 6
        assert r["fnm_mae"] == pytest.approx(e * mean_inv_u)  # Eq. 7
        assert r["fnm_max_err"] == pytest.approx(e / 1.008)  # Eq. 8
        assert r["n_unexplored"] == 0
    g = res["global"]
    assert g["forces_mae"] == pytest.approx((0.3 + 2 * 0.01) / 3)
    assert g["n_frames"] == f and g["explored_fraction"] == 1.0
    assert g["rbp"] == pytest.approx(1 / 3)
    flat = flatten_cluster_metrics(res, prefix="test_")
    assert flat[f"test_cluster{bad}_rbp"] == 1.0
    assert flat["test_cluster0_forces_mae"] == rows[0]["forces_mae"]
    assert flat["test_global_forces_mae"] == g["forces_mae"]
    assert all(isinstance(v, float) for v in flat.values())


def test_exploration_force_norms(fitted):
    cc, pos, _ = fitted
    rng = np.random.default_rng(18)
    far, _ = _conformations(rng, n_per=10, sites=np.array([[5.0, -5.0, 5.0]]))
    traj = np.concatenate([pos[:30], far])
    direction = rng.normal(size=(len(traj), 5, 3))
    direction /= np.linalg.norm(direction, axis=-1, keepdims=True)
    forces = direction * np.where(np.arange(len(traj)) < 30, 1.0, 3.0)[:, None, None]
    res = exploration(cc, traj, forces.reshape(-1, 3))
    assert (res["n_frames"], res["n_explored"], res["n_unexplored"]) == (40, 30, 10)
    assert res["unexplored_fraction"] == pytest.approx(0.25)
    np.testing.assert_array_equal(res["explored_f"], np.arange(40) < 30)
    assert res["mean_force_norm_explored"] == pytest.approx(1.0)
    assert res["mean_force_norm_unexplored"] == pytest.approx(3.0)
    assert res["unexplored_by_cluster"].sum() == 10
    only = exploration(cc, pos[:5], forces[:5])
    assert np.isnan(only["mean_force_norm_unexplored"])


# ------------------------------------------------------------------ figures
def _png(fig, path):
    fig.savefig(path)
    import matplotlib.pyplot as plt

    plt.close(fig)
    assert path.stat().st_size > 1000


def test_figures(tmp_path, hand_case):
    pred, ref, z, n = hand_case
    el = element_metrics(pred, ref, z, n)
    _png(element_figure(el, title="one model"), tmp_path / "el1.png")
    _png(
        element_figure({"A": el, "B": element_metrics(ref, ref + 0.01, z, n)}), tmp_path / "el2.png"
    )

    rng = np.random.default_rng(19)
    pos, _ = _conformations(rng, n_per=15)
    cc = ConformationClusters(3, seed=1).fit(pos)
    far, _ = _conformations(rng, n_per=3, sites=np.array([[5.0, -5.0, 5.0]]))
    _png(clusters_figure(cc, pos), tmp_path / "pca.png")
    _png(
        clusters_figure(cc, pos, other={"md": np.concatenate([pos[:10], far])}), tmp_path / "md.png"
    )
    f = len(pos)
    ref_f = rng.normal(size=(f * 5, 3))
    results = {
        name: cluster_metrics(cc, pos, ref_f + rng.normal(scale=s, size=ref_f.shape), ref_f, _Z)
        for name, s in [("model A", 0.05), ("model B", 0.02)]
    }
    _png(cluster_bars_figure(results), tmp_path / "bars.png")
    _png(cluster_bars_figure(results["model A"], keys=("fnm_mae",)), tmp_path / "bars1.png")
    _png(radar_figure(results, key=("forces_mae", "forces_max_err")), tmp_path / "radar.png")
    _png(radar_figure(results["model B"]), tmp_path / "radar1.png")
