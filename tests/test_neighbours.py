import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk
from matscipy.neighbours import neighbour_list as matscipy_nl

from ase_mlff.graph import Batch, edge_vectors


def _edge_set(i, j, s):
    return set(zip(i.tolist(), j.tolist(), map(tuple, np.asarray(s).tolist())))


def _random_cell(rng, n_atoms, scale):
    cell = np.eye(3) * scale + rng.normal(scale=0.3 * scale, size=(3, 3))
    if np.linalg.det(cell) < 0:
        cell[0] *= -1
    frac = rng.random((n_atoms, 3)) + rng.integers(-2, 3, size=(n_atoms, 3))  # unwrapped
    return Atoms("H" * n_atoms, scaled_positions=frac, cell=cell, pbc=True)


def _reference(atoms, cutoff):
    if atoms.pbc.any():
        return matscipy_nl("ijS", atoms, cutoff)
    a = atoms.copy()
    a.cell = np.eye(3) * (np.ptp(a.positions, axis=0).max() + 3 * cutoff)
    a.pbc = False
    return matscipy_nl("ijS", a, cutoff)


@pytest.fixture(params=["vesin", "torch"])
def method(request, monkeypatch):
    """Both neighbour-list methods for periodic systems: vesin (the default, on every
    device) and the torch search (``USE_VESIN = False``)."""
    import ase_mlff.graph.neighbours as nb

    monkeypatch.setattr(nb, "USE_VESIN", request.param == "vesin")
    return request.param


@pytest.mark.parametrize("seed", range(4))
def test_matches_matscipy_mixed_batch(seed, method):
    rng = np.random.default_rng(seed)
    cutoff = 3.0 + rng.random() * 2
    images = [
        Atoms("CHO" * 5, positions=rng.normal(scale=2.0, size=(15, 3))),
        _random_cell(rng, 12, 4.0),  # triclinic, smaller than 2x cutoff
        _random_cell(rng, 30, 9.0),
        bulk("Si", "diamond", 5.43) * (1, 2, 1),
        Atoms("H", positions=[[0, 0, 0]], cell=np.eye(3) * 2.5, pbc=True),  # self-images
    ]
    batch = Batch.from_atoms(images, cutoff=cutoff, dtype=torch.float64)
    ei, sh = batch.edge_index_2e.numpy(), batch.shift_e3.numpy()
    sys_e = batch.system_n.numpy()[ei[0]]
    ptr = np.concatenate([[0], np.cumsum([len(a) for a in images])])
    for s, atoms in enumerate(images):
        m = sys_e == s
        got = _edge_set(ei[0][m] - ptr[s], ei[1][m] - ptr[s], sh[m])
        assert got == _edge_set(*_reference(atoms, cutoff)), f"system {s}"
    d = edge_vectors(batch).norm(dim=1)
    assert float(d.max()) < cutoff


def test_mixed_pbc_slab(method):
    rng = np.random.default_rng(7)
    a = _random_cell(rng, 10, 5.0)
    a.pbc = [True, True, False]
    a.positions[:, 2] = rng.random(10) * 6
    batch = Batch.from_atoms(a, cutoff=3.5, dtype=torch.float64)
    got = _edge_set(*batch.edge_index_2e.numpy(), batch.shift_e3.numpy())
    assert got == _edge_set(*matscipy_nl("ijS", a, 3.5))


def test_bad_inputs():
    with pytest.raises(ValueError, match="NaN"):
        Batch.from_atoms(Atoms("H2", positions=[[0, 0, 0], [np.nan, 0, 0]]), cutoff=3.0)
    with pytest.raises(ValueError, match="empty"):
        Batch.from_atoms(Atoms(), cutoff=3.0)
    with pytest.raises(ValueError, match="cutoff"):
        Batch.from_atoms(Atoms("H2", positions=[[0, 0, 0], [1, 0, 0]]), cutoff=-1)
    with pytest.raises(ValueError, match="singular"):
        Batch.from_atoms(Atoms("H2", positions=[[0, 0, 0], [1, 0, 0]], pbc=True), cutoff=3.0)


def test_half_edge_mask_keeps_each_pair_once():
    from ase_mlff.graph import half_edge_mask

    rng = np.random.default_rng(3)
    images = [_random_cell(rng, 6, 3.0), Atoms("CH4", positions=rng.normal(size=(5, 3)))]
    batch = Batch.from_atoms(images, cutoff=4.0, dtype=torch.float64)
    ei, sh = batch.edge_index_2e, batch.shift_e3
    mask = half_edge_mask(ei, sh)
    assert int(mask.sum()) * 2 == ei.shape[1]
    kept = _edge_set(ei[0][mask].numpy(), ei[1][mask].numpy(), sh[mask].numpy())
    reversed_kept = {(j, i, tuple(-np.array(s))) for i, j, s in kept}
    dropped = _edge_set(ei[0][~mask].numpy(), ei[1][~mask].numpy(), sh[~mask].numpy())
    assert reversed_kept == dropped
