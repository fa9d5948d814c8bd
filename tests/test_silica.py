"""Silica structures and reference set, batched relabelling, the EAM pre-training set and
the pieces of the ``eam_pretraining`` recipe (paper 004)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.geometry import get_distances
from ase.neighborlist import neighbor_list

from ase_mlff.data import Dataset
from ase_mlff.data.silica import POLYMORPHS, silica_polymorph, strained_rattled
from ase_mlff.graph import Batch
from ase_mlff.metrics.distance_distribution import min_distance_figure, min_pair_distances
from ase_mlff.models import compute_properties
from ase_mlff.models.eam import EAM
from ase_mlff.models.prediction import label_dataset
from ase_mlff.reference.sampling import perturbed_dataset
from ase_mlff.reference.silica import assign_blocks


def eam_model(seed=0) -> EAM:
    torch.manual_seed(seed)
    m = EAM(species=[8, 14], cutoff=5.0).double()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return m


def small_set(n=6, seed=0) -> Dataset:
    """Strained, rattled cells of two polymorphs of different sizes (24 and 36 atoms)."""
    rng = np.random.default_rng(seed)
    images = strained_rattled(silica_polymorph("beta_cristobalite"), n // 2, rng)
    images += strained_rattled(silica_polymorph("alpha_quartz"), n - n // 2, rng)
    ds = Dataset.from_atoms(images)
    return ds


@pytest.mark.parametrize("name", sorted(POLYMORPHS))
def test_polymorph_coordination(name):
    atoms = silica_polymorph(name)
    assert 24 <= len(atoms) <= 48
    assert np.sum(atoms.numbers == 8) == 2 * np.sum(atoms.numbers == 14)
    i, j, d = neighbor_list("ijd", atoms, 2.0)
    cn = np.bincount(i, minlength=len(atoms))
    si = atoms.numbers == 14
    cn_si, cn_o = (6, 3) if name == "stishovite" else (4, 2)
    assert set(cn[si]) == {cn_si} and set(cn[~si]) == {cn_o}
    sio = d[(atoms.numbers[i] == 14) & (atoms.numbers[j] == 8)]
    assert 1.5 < sio.min() and sio.max() < 1.85


def test_unknown_polymorph():
    with pytest.raises(KeyError, match="unknown silica polymorph"):
        silica_polymorph("coesite-x")


def test_strained_rattled_strain_and_rattle():
    atoms = silica_polymorph("beta_cristobalite")
    rng = np.random.default_rng(1)
    out = strained_rattled(atoms, 20, rng, sigma_range=(0.0, 1e-12))
    for a in out:
        eps = np.linalg.solve(atoms.cell[:], a.cell[:]) - np.eye(3)
        assert np.allclose(eps, eps.T, atol=1e-12)  # symmetric strain
        assert np.abs(np.diag(eps)).max() <= 0.05 and np.abs(eps[0, 1]) <= 0.03
        # no rattle: fractional coordinates are kept exactly
        assert np.allclose(
            a.get_scaled_positions(wrap=False), atoms.get_scaled_positions(wrap=False), atol=1e-9
        )
    rattled = strained_rattled(atoms, 50, np.random.default_rng(2), 0.0, 0.0, (0.05, 0.05))
    dx = np.concatenate([a.positions - atoms.positions for a in rattled])
    assert abs(dx.std() - 0.05) < 0.005


def test_assign_blocks():
    source = np.repeat([0, 1, 2], [10, 5, 17])
    block, n_blocks = assign_blocks(source, block=4, test_blocks=3, seed=0)
    assert n_blocks == 3 + 2 + 5
    assert sorted(np.unique(block)) == list(range(n_blocks))
    for b in range(n_blocks):  # a block is consecutive frames of one source
        idx = np.flatnonzero(block == b)
        assert len(set(source[idx])) == 1 and np.all(np.diff(idx) == 1) and len(idx) <= 4
    with pytest.raises(ValueError, match="test blocks"):
        assign_blocks(source, 4, 10, 0)


def test_label_dataset_matches_per_frame_and_keeps_metadata():
    ds = small_set()
    ds.extra_s["tag"] = np.arange(len(ds))
    model = eam_model()
    # a chunk smaller than one frame still labels whole frames, one per call
    for chunk in (10, 60, 10_000):
        lab = label_dataset(model, ds, chunk_atoms=chunk)
        assert lab.has_stress and np.all(lab.extra_s["tag"] == np.arange(len(ds)))
        for s in range(len(ds)):
            b = Batch.from_dataset(ds, [s], cutoff=model.cutoff, dtype=torch.float64)
            out = compute_properties(model, b, forces=True, stress=True)
            assert lab.energy_s[s] == pytest.approx(float(out["energy"][0]), abs=1e-9)
            sl = slice(ds.ptr_s[s], ds.ptr_s[s + 1])
            assert np.allclose(lab.forces_nc[sl], out["forces"].numpy(), atol=1e-9)
            assert np.allclose(lab.stress_s33[s], out["stress"][0].numpy(), atol=1e-10)
    assert lab.provenance["labels"]["potential"] == "eam"
    assert np.all(np.isnan(ds.energy_s))  # the input is not modified


def test_perturbed_dataset_paper_settings():
    ds = small_set(4)
    model = eam_model()
    pre = perturbed_dataset(
        ds, model, n_aug=5, n_pairs=4, d_pull_max=1.0, n_sites=5, d_pert_max=1.0, seed=3
    )
    assert len(pre) == 5 * len(ds)
    assert np.all(pre.extra_s["perturb_source"] == np.repeat(np.arange(len(ds)), 5))
    assert np.all(pre.extra_s["perturb_round"] == np.tile(np.arange(5), len(ds)))
    assert np.all(np.isfinite(pre.energy_s)) and pre.has_stress
    assert np.all(pre.cell_s33[::5] == ds.cell_s33)
    # the pre-training set reaches shorter contacts than the data it came from (Fig. 6b)
    d_qm, d_pre = min_pair_distances(ds, [("Si", "O")]), min_pair_distances(pre, [("Si", "O")])
    assert np.nanmin(d_pre["Si–O"]) < np.nanmin(d_qm["Si–O"])


def test_min_pair_distances_against_ase():
    ds = small_set(4, seed=5)
    got = min_pair_distances(ds, [("Si", "O"), (8, 8), ("Si", "Si")])
    assert list(got) == ["Si–O", "O–O", "Si–Si"]
    for s in range(len(ds)):
        a = ds.to_atoms(s, with_labels=False)
        _, d = get_distances(a.positions, cell=a.cell, pbc=True)
        np.fill_diagonal(d, np.inf)
        si, o = a.numbers == 14, a.numbers == 8
        assert got["Si–O"][s] == pytest.approx(d[np.ix_(si, o)].min())
        assert got["O–O"][s] == pytest.approx(d[np.ix_(o, o)].min())
        assert got["Si–Si"][s] == pytest.approx(d[np.ix_(si, si)].min())
    none = min_pair_distances(ds, [("Si", "H")])
    assert np.all(np.isnan(none["Si–H"]))
    fig = min_distance_figure({"a": got, "b": got})
    assert len(fig.axes) == 3


def test_count_unphysical():
    from ase_mlff.metrics.silica import count_unphysical, tables

    c = count_unphysical([None, "atom_overlap", "lindemann", "non_finite", None, "atom_overlap"])
    assert c == {"atom_overlap": 2, "lindemann": 1, "other": 1, "unphysical": 4, "n": 6}
    # per criterion (paper 004 Table 1): a replica counts in every column that fired
    per = count_unphysical(
        [
            {},
            {"atom_overlap": 10.0, "lindemann": 2000.0},
            {"lindemann": 2000.0},
            {"temperature": 4.0},
        ]
    )
    assert per == {"atom_overlap": 1, "lindemann": 2, "other": 1, "unphysical": 3, "n": 4}
    results = {
        "variants": {
            "baseline": {
                "test": {
                    "energy_mae_meV_atom": 1.0,
                    "forces_mae_meV_A": 2.0,
                    "stress_mae_GPa": 0.3,
                },
                "md": {"NVT": c},
            }
        }
    }
    text = tables(results)
    assert "| baseline | NVT | 2 | 1 | 1 | 4 | 2/6 |" in text
    assert "| baseline | 1.00 | 2.0 | 0.300 |" in text


def test_perturbed_dataset_drops_extreme_labels():
    ds = small_set(4)
    model = eam_model()
    kw = dict(n_aug=5, n_pairs=4, d_pull_max=1.0, n_sites=5, d_pert_max=1.0, seed=3)
    full = perturbed_dataset(ds, model, **kw)
    f_s = np.maximum.reduceat(np.linalg.norm(full.forces_nc, axis=1), full.ptr_s[:-1])
    limit = float(np.median(f_s))
    kept = perturbed_dataset(ds, model, **kw, max_label_force=limit)
    assert len(kept) == int((f_s <= limit).sum()) and 0 < len(kept) < len(full)
    assert kept.provenance["dropped_frames"] == len(full) - len(kept)
    assert np.all(np.isin(kept.energy_s, full.energy_s[f_s <= limit]))
