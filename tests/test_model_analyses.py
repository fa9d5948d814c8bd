"""Latent-space, bond-force, ΔF MAE and force-angle analyses (ase_mlff.metrics.latent,
ase_mlff.metrics.bond_forces; papers 000 and 004)."""

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import molecule
from ase.calculators.morse import MorsePotential

from ase_mlff.calculators import MLFFCalculator
from ase_mlff.data import load_dataset
from ase_mlff.metrics import bond_forces as bf
from ase_mlff.metrics import latent
from ase_mlff.models import build_model
from ase_mlff.models.base import Potential


class HarmonicDimer(Potential):
    """E = ½ k (r − r0)² for systems of two atoms (no neighbour graph needed)."""

    cutoff = 0.0

    def __init__(self, k: float = 30.0, r0: float = 1.1) -> None:
        super().__init__()
        self.k, self.r0 = k, r0
        self.config = {"name": "harmonic"}
        self.dummy = torch.nn.Parameter(torch.zeros((), dtype=torch.float64))

    def forward(self, batch):
        pos = batch.pos_nc.reshape(-1, 2, 3)
        r = torch.linalg.norm(pos[:, 1] - pos[:, 0], dim=1)
        return 0.5 * self.k * (r - self.r0) ** 2 + 0.0 * self.dummy


def tiny(name: str, **kw):
    torch.manual_seed(0)
    return build_model({"name": name, "hidden": 8, "n_interactions": 1, "species": [1, 6, 8], **kw})


@pytest.fixture(scope="module")
def aspirin_ds():
    return load_dataset("aspirin")


@pytest.fixture(scope="module")
def aspirin0(aspirin_ds):
    return aspirin_ds.to_atoms(0, with_labels=False)


# ------------------------------------------------------------------ latent space


@pytest.mark.parametrize("name", ["schnet", "painn"])
def test_atom_embeddings_shape_and_labels(name, aspirin_ds):
    model = tiny(name)
    mols = [molecule("CH3CH2OH"), molecule("H2O")]
    feats, labels, numbers = latent.atom_embeddings(
        model, {"aspirin": aspirin_ds[:5], "small": mols}, batch_size=2
    )
    m = 5 * 21 + 9 + 3
    assert feats.shape == (m, 8)
    assert np.all(np.isfinite(feats))
    assert list(np.unique(labels)) == ["aspirin", "small"]
    assert (labels == "aspirin").sum() == 105
    np.testing.assert_array_equal(numbers[:21], aspirin_ds.numbers_n[:21])
    np.testing.assert_array_equal(numbers[105:114], mols[0].numbers)
    # batching does not change the embeddings
    one, _, _ = latent.atom_embeddings(model, aspirin_ds[:5], batch_size=5)
    np.testing.assert_allclose(one, feats[:105], atol=1e-5)
    # max_frames: evenly spread frames, first and last included
    sub, _, _ = latent.atom_embeddings(model, aspirin_ds[:5], max_frames=2)
    np.testing.assert_allclose(sub[:21], feats[:21], atol=1e-5)
    np.testing.assert_allclose(sub[21:], feats[84:105], atol=1e-5)


def test_frame_pooled_embeddings_are_each_frames_mean(aspirin_ds):
    """pool="frame": one sample per frame, the mean of that frame's atom embeddings, for
    frames of different sizes (21-atom aspirin, 9-atom ethanol, 3-atom water)."""
    model = tiny("painn")
    mols = [molecule("CH3CH2OH"), molecule("H2O")]
    data = {"aspirin": aspirin_ds[:3], "small": mols}
    atoms_f, _, _ = latent.atom_embeddings(model, data, batch_size=2)
    feats, labels, sizes = latent.atom_embeddings(model, data, batch_size=2, pool="frame")
    assert feats.shape == (5, 8)
    assert list(labels) == ["aspirin"] * 3 + ["small"] * 2
    np.testing.assert_array_equal(sizes, [21, 21, 21, 9, 3])
    bounds = np.cumsum([0, 21, 21, 21, 9, 3])
    for k in range(5):
        np.testing.assert_allclose(feats[k], atoms_f[bounds[k] : bounds[k + 1]].mean(0), atol=1e-6)
    with pytest.raises(ValueError, match="pool"):
        latent.atom_embeddings(model, data, pool="molecule")


def test_atom_embeddings_needs_atom_features():
    with pytest.raises(TypeError, match="HarmonicDimer"):
        latent.atom_embeddings(HarmonicDimer(), [Atoms("H2", positions=[[0, 0, 0], [0, 0, 1]])])


def test_silhouette_separated_and_mixed_blobs():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(100, 2)) * 0.1
    b = rng.normal(size=(100, 2)) * 0.1 + [10.0, 0.0]
    labels = np.repeat(["a", "b"], 100)
    per, mean = latent.silhouette(np.concatenate([a, b]), labels)
    assert per.shape == (200,) and mean > 0.95
    from sklearn.metrics import silhouette_score

    mixed = rng.normal(size=(200, 2))
    per, mean = latent.silhouette(mixed, rng.permutation(labels))
    assert abs(mean) < 0.05
    assert mean == pytest.approx(silhouette_score(mixed, rng.permutation(labels)), abs=0.05)
    lab = rng.permutation(labels)
    assert latent.silhouette(mixed, lab)[1] == pytest.approx(silhouette_score(mixed, lab))
    with pytest.raises(ValueError, match="classes"):
        latent.silhouette(mixed, np.zeros(200))


@pytest.mark.parametrize("method", ["tsne", "umap", "pca"])
def test_projections_are_finite_and_seeded(method):
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(size=(100, 6)), rng.normal(size=(100, 6)) + 4.0])
    p = latent.project(x, method, seed=0)
    assert p.shape == (200, 2) and np.all(np.isfinite(p))
    if method != "umap":  # umap is seeded too, but a second fit costs seconds
        np.testing.assert_allclose(latent.project(x, method, seed=0), p)
    # two blobs stay apart in the projection
    assert latent.silhouette(p, np.repeat([0, 1], 100))[1] > 0.5
    with pytest.raises(ValueError, match="unknown projection"):
        latent.project(x, "mds")


def test_subsample_and_latent_figures(tmp_path):
    keep = latent.subsample(10_000, max_points=500, seed=3)
    assert len(keep) == 500 and np.all(np.diff(keep) > 0)
    np.testing.assert_array_equal(keep, latent.subsample(10_000, max_points=500, seed=3))
    np.testing.assert_array_equal(latent.subsample(40, max_points=500), np.arange(40))

    rng = np.random.default_rng(2)
    feats = np.concatenate([rng.normal(size=(60, 4)), rng.normal(size=(60, 4)) + 5])
    labels = np.repeat(["x", "y"], 60)
    res = latent.latent_analysis(feats, labels, methods=("pca",), max_points=100)
    assert len(res["index"]) == 100 and res["silhouette_mean"]["pca"] > 0.5
    projections = {"A": res["projection"], "B": {"pca": res["projection"]["pca"] * 2}}
    fig = latent.latent_figure(
        projections, res["labels"], silhouettes={"A": {"pca": 0.5}, "B": {"pca": 0.4}}
    )
    fig.savefig(tmp_path / "latent.png")
    fig = latent.silhouette_figure({"A": res["silhouette"], "B": res["silhouette"]})
    fig.savefig(tmp_path / "silhouette.png")
    fig = latent.latent_figure({"pca": res["projection"]["pca"]}, res["labels"])
    fig.savefig(tmp_path / "latent_flat.png")
    for name in ("latent.png", "silhouette.png", "latent_flat.png"):
        assert (tmp_path / name).stat().st_size > 1000


# ------------------------------------------------------------------ bond scans


def test_default_aspirin_bonds_are_the_papers_bonds(aspirin0):
    adj = bf.molecular_graph(aspirin0)
    sym = aspirin0.get_chemical_symbols()
    for label, (i, j) in bf.default_aspirin_bonds().items():
        assert adj[i, j] and adj[j, i]
        assert label.startswith(f"C{i}") and label.endswith(f"O{j}")
        assert (sym[i], sym[j]) == ("C", "O")
        bf.fragment_bond_scan(aspirin0, i, j, n_points=3)  # none is a ring bond
    bonds = bf.covalent_bonds(aspirin0)
    assert len(bonds) == 21 and np.all(bonds[:, 0] < bonds[:, 1])  # a tree: 21 atoms, 1 ring


def test_fragment_scan_is_rigid(aspirin0):
    i, j = 6, 12  # C6–O12: the acetyl group moves
    frag = bf.bond_fragment(aspirin0, i, j)
    assert sorted(frag.tolist()) == [4, 8, 11, 12, 18, 19, 20]
    r, images = bf.fragment_bond_scan(aspirin0, i, j, n_points=21)
    r0 = aspirin0.get_distance(i, j)
    np.testing.assert_allclose(r, r0 * np.linspace(0.95, 1.05, 21))
    rest = np.setdiff1d(np.arange(len(aspirin0)), frag)
    d0 = aspirin0.get_all_distances()
    for rk, a in zip(r, images):
        assert a.get_distance(i, j) == pytest.approx(rk, abs=1e-12)
        np.testing.assert_array_equal(a.positions[rest], aspirin0.positions[rest])
        d = a.get_all_distances()
        np.testing.assert_allclose(d[np.ix_(frag, frag)], d0[np.ix_(frag, frag)], atol=1e-12)
        np.testing.assert_allclose(d[np.ix_(rest, rest)], d0[np.ix_(rest, rest)], atol=1e-12)
    with pytest.raises(ValueError, match="ring bond"):
        bf.fragment_bond_scan(aspirin0, 0, 2)
    with pytest.raises(ValueError, match="not a covalent bond"):
        bf.fragment_bond_scan(aspirin0, 0, 12)


def test_fragment_scan_ethanol_cc_bond():
    a = molecule("CH3CH2OH")
    c, c2 = [k for k, z in enumerate(a.numbers) if z == 6]
    frag = bf.bond_fragment(a, c, c2)
    assert c2 in frag and c not in frag and len(frag) in (4, 5)  # CH3 or CH2OH side
    r, images = bf.fragment_bond_scan(a, c, c2, scale=(0.9, 1.1), n_points=5)
    assert [x.get_distance(c, c2) for x in images] == pytest.approx(r.tolist(), abs=1e-12)


def test_bond_force_profile_torch_equals_calculator(aspirin0):
    model = tiny("schnet", cutoff=4.0)
    i, j = bf.default_aspirin_bonds()["C6–O12"]
    r, images = bf.fragment_bond_scan(aspirin0, i, j, n_points=5)
    batched = bf.bond_force_profile(model, images, i, j)
    per_image = bf.bond_force_profile(MLFFCalculator(model), images, i, j)
    for key in ("r", "f_par", "df_dr", "energy"):
        np.testing.assert_allclose(batched[key], per_image[key], rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(batched["r"], r)
    assert next(model.parameters()).dtype == torch.float32  # the caller's model untouched


def test_f_par_of_a_harmonic_and_a_morse_dimer():
    k, r0 = 30.0, 1.1
    r = np.linspace(0.95, 1.25, 13)
    images = []
    for x in r:  # a tilted bond, atom 0 off the origin
        u = np.array([1.0, 2.0, -2.0]) / 3.0
        images.append(Atoms("H2", positions=[[0.1, -0.2, 0.3], np.array([0.1, -0.2, 0.3]) + x * u]))
    p = bf.bond_force_profile(HarmonicDimer(k, r0), images, 0, 1)
    np.testing.assert_allclose(p["r"], r)
    # F_j = −k(r−r0)û, F_i = +k(r−r0)û: F∥ = −2k(r−r0), negative when stretched
    np.testing.assert_allclose(p["f_par"], -2 * k * (r - r0), atol=1e-10)
    np.testing.assert_allclose(p["df_dr"], -2 * k, rtol=1e-8)
    assert p["f_par"][-1] < 0 < p["f_par"][0]
    # swapping i and j gives the same F∥ (û flips with the force difference)
    q = bf.bond_force_profile(HarmonicDimer(k, r0), images, 1, 0)
    np.testing.assert_allclose(q["f_par"], p["f_par"], atol=1e-10)

    # ASE's Morse calculator, image by image: F∥ = −2 dE/dr
    eps, rho0, rm = 2.0, 6.0, 1.1
    p = bf.bond_force_profile(
        MorsePotential(epsilon=eps, rho0=rho0, r0=rm, rcut1=5, rcut2=6), images, 0, 1
    )
    x = np.exp(-rho0 * (r / rm - 1))
    de_dr = eps * (-2 * rho0 / rm * x**2 + 2 * rho0 / rm * x)
    np.testing.assert_allclose(p["f_par"], -2 * de_dr, rtol=1e-8, atol=1e-10)


def test_roughness_smooth_vs_wiggly():
    d, a, re = 4.5, 2.0, 1.2
    r = re * np.linspace(0.95, 1.05, 21)

    def morse_f(x):  # F∥ = −2 E'(r) of a Morse bond
        e = np.exp(-a * (x - re))
        return -2 * 2 * d * a * (e - e**2)

    def rough(f, **kw):
        return bf.roughness(r, np.gradient(f, r, edge_order=2), **kw)

    smooth = rough(morse_f(r))
    wiggly = rough(morse_f(r) + 0.02 * np.sin(40 * r))
    assert smooth < 0.005 and wiggly > 20 * smooth
    assert rough(morse_f(r) + 0.02 * np.sin(100 * r)) > 0.5
    assert rough(morse_f(r), degree=2) > smooth  # a quadratic fit leaves more behind
    quartic = 3 - 2 * r + 0.5 * r**2 - 4 * r**3 + 0.7 * r**4
    assert rough(quartic) < 1e-8 and rough(quartic - 0.7 * r**4, degree=2) < 1e-8
    with pytest.raises(ValueError):
        bf.roughness(r[:5], r[:5])


def test_bond_scan_figure(tmp_path):
    r = np.linspace(1.0, 1.2, 21)
    f = -60 * (r - 1.1)
    prof = {"r": r, "f_par": f, "df_dr": np.gradient(f, r)}
    wig = {**prof, "df_dr": prof["df_dr"] + np.sin(60 * r)}
    fig = bf.bond_scan_figure({"smooth": prof, "wiggly": wig}, title="C11–O8")
    fig.savefig(tmp_path / "scan.png")
    assert (tmp_path / "scan.png").stat().st_size > 1000


# ------------------------------------------------------------------ ΔF MAE


def test_bond_projected_forces_matches_loop(rng):
    pos = rng.normal(size=(4, 5, 3))
    frc = rng.normal(size=(4, 5, 3))
    bonds = np.array([[0, 1], [1, 3], [2, 4]])
    out = bf.bond_projected_forces(pos, frc, bonds)
    assert out.shape == (4, 3)
    for f in range(4):
        for b, (p, q) in enumerate(bonds):
            u = (pos[f, q] - pos[f, p]) / np.linalg.norm(pos[f, q] - pos[f, p])
            assert out[f, b] == pytest.approx((frc[f, q] - frc[f, p]) @ u)


def test_delta_force_mae_cancels_common_errors(rng, tmp_path):
    pos = rng.normal(size=(6, 5, 3))
    ref = rng.normal(size=(6, 5, 3))
    bonds = np.array([[0, 1], [1, 2], [3, 4]])
    ref_b = bf.bond_projected_forces(pos, ref, bonds)
    mat, mean = bf.delta_force_mae(ref_b, ref_b)
    assert mat.shape == (6, 6) and np.all(mat == 0) and mean == 0
    # the same bond-force error in every frame: plain error > 0, ΔF MAE = 0
    pred_b = ref_b + rng.normal(size=3)
    assert np.mean(np.abs(pred_b - ref_b)) > 0.1
    mat, mean = bf.delta_force_mae(pred_b, ref_b)
    assert np.allclose(mat, 0, atol=1e-12) and mean == pytest.approx(0, abs=1e-12)
    # the same Cartesian force error in every frame of one geometry (frames differing in
    # their forces only): the plain force MAE is non-zero, the ΔF MAE is zero
    same = np.repeat(pos[:1], 6, axis=0)
    pred = ref + rng.normal(size=(5, 3))
    assert np.mean(np.abs(pred - ref)) > 0.1
    mat, mean = bf.delta_force_mae(
        bf.bond_projected_forces(same, pred, bonds), bf.bond_projected_forces(same, ref, bonds)
    )
    assert np.allclose(mat, 0, atol=1e-12) and mean == pytest.approx(0, abs=1e-12)
    # frame-dependent errors: Eq. 8 by a loop
    noisy = ref_b + rng.normal(size=ref_b.shape)
    mat, mean = bf.delta_force_mae(noisy, ref_b)
    i, j = 1, 4
    want = np.mean(np.abs((noisy[j] - noisy[i]) - (ref_b[j] - ref_b[i])))
    assert mat[i, j] == pytest.approx(want) and mat[j, i] == pytest.approx(want)
    assert mean == pytest.approx(mat[np.triu_indices(6, 1)].mean()) and mean > 0
    fig = bf.delta_force_figure({"pre-trained": mat, "scratch": 2 * mat})
    fig.savefig(tmp_path / "df.png")
    assert (tmp_path / "df.png").stat().st_size > 1000


def test_nearest_frames_puts_reference_first(aspirin_ds, rng):
    pos = aspirin_ds.positions_nc[: 30 * 21].reshape(30, 21, 3)
    idx = bf.nearest_frames(pos, 7, n=10)
    assert idx[0] == 7 and len(idx) == 10 and len(set(idx.tolist())) == 10
    # a rotated, translated copy of the reference is the nearest other frame
    rot = np.linalg.qr(rng.normal(size=(3, 3)))[0]
    copy_ = pos[7] @ rot.T + [1.0, -2.0, 0.5]
    idx = bf.nearest_frames(np.concatenate([pos, copy_[None]]), 7, n=3)
    assert idx[0] == 7 and idx[1] == 30


# ------------------------------------------------------------------ force angles


def test_force_angles(tmp_path):
    a = np.array([[1.0, 0, 0], [0, 2, 0], [0, 0, 3], [1e-12, 0, 0], [1, 1, 0]])
    b = np.array([[2.0, 0, 0], [0, -1, 0], [1, 0, 0], [1.0, 0, 0], [1, 0, 0]])
    theta = bf.force_angles(a, b)
    np.testing.assert_allclose(theta, [0, 180, 90, 45], atol=1e-6)  # zero force dropped
    assert np.all(np.isfinite(bf.force_angles(a, a * 1.0000001)))  # clipped, no NaN
    with pytest.raises(ValueError):
        bf.force_angles(a, b[:3])
    fig = bf.force_angle_figure({"combined": theta, "pre-trained": theta / 2})
    fig.savefig(tmp_path / "angles.png")
    assert (tmp_path / "angles.png").stat().st_size > 1000
