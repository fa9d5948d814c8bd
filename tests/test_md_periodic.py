"""Periodic-system observables and detectors: RDF vs ASE, Lindemann and RDF criteria."""

import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.geometry.rdf import get_rdf

from ase_mlff.graph import Batch
from ase_mlff.md.detectors import LindemannIndex, RDFDeviation
from ase_mlff.md.state import MDState
from ase_mlff.metrics.rdf import rdf


def _crystal(seed=0, rattle=0.1):
    a = bulk("NaCl", "rocksalt", 5.64, cubic=True) * (2, 2, 2)  # 64 atoms, 11.3 Å cell
    a.rattle(rattle, seed=seed)
    return a


def _state(images, cutoff=5.0):
    b = Batch.from_atoms(images, cutoff=cutoff, dtype=torch.float64)
    z = torch.zeros_like(b.pos_nc)
    return MDState(
        batch=b,
        vel_nc=z,
        mass_n=torch.ones(len(z), dtype=torch.float64),
        forces_nc=z.clone(),
        energy_s=torch.zeros(b.n_systems, dtype=torch.float64),
    )


@pytest.mark.parametrize("pair", [(11, 17), (11, 11), (17, 17)])
def test_rdf_matches_ase(pair):
    atoms = _crystal()
    r_max, n_bins = 5.0, 50
    centres, g = rdf(
        Batch.from_atoms(atoms, cutoff=r_max, dtype=torch.float64), [pair], r_max, n_bins
    )
    g_ase, r_ase = get_rdf(atoms, r_max, n_bins, elements=pair)
    np.testing.assert_allclose(centres, r_ase, atol=1e-12)
    # ASE normalises by N_a (N_b) per ordered pair the same way; compare where g is non-zero
    np.testing.assert_allclose(g[0], g_ase, rtol=1e-6, atol=1e-8)


def _moved(state, pos):
    state.batch = state.batch.with_positions(pos)
    return state


def test_lindemann_quiet_for_vibrating_crystal_fires_for_melt():
    rng = np.random.default_rng(0)
    solid, melt = _crystal(1), _crystal(2)
    state = _state([solid, melt])
    lin = LindemannIndex(state, window=20)
    base = state.batch.pos_nc.clone()
    cell = torch.as_tensor(solid.cell[:])
    flags = None
    for _ in range(20):
        pos = base + torch.as_tensor(rng.normal(scale=0.05, size=base.shape))
        pos[64:] = torch.as_tensor(rng.random((64, 3))) @ cell  # the second replica "melts"
        flags = lin(_moved(state, pos))
    assert flags.tolist() == [False, True]


def test_lindemann_index_value_for_known_fluctuation():
    """Two atoms whose distance alternates 1 ± a: q = a / 1 for both."""
    from ase import Atoms

    a = Atoms("H2", positions=[[0, 0, 0], [1, 0, 0]])
    state = _state([a])
    lin = LindemannIndex(state, window=1000)
    for k in range(100):
        pos = torch.tensor([[0, 0, 0], [1 + 0.1 * (-1) ** k, 0, 0]], dtype=torch.float64)
        lin(_moved(state, pos))
    q_n, q_s = lin.indices(state)
    np.testing.assert_allclose(q_n.numpy(), [0.1, 0.1], atol=1e-12)
    np.testing.assert_allclose(q_s.numpy(), [0.1], atol=1e-12)


def test_rdf_detector():
    ref_atoms = [_crystal(k, 0.08) for k in range(4)]
    pairs = [(11, 11), (11, 17), (17, 17)]
    _, g_ref = rdf(Batch.from_atoms(ref_atoms, cutoff=5.0, dtype=torch.float64), pairs, 5.0, 50)
    fine, squeezed = _crystal(7, 0.08), _crystal(8, 0.08)
    squeezed.set_cell(squeezed.cell * 0.85, scale_atoms=True)  # a collapsed structure
    state = _state([fine, squeezed])
    det = RDFDeviation(pairs, g_ref, r_max=5.0, window=3, delta=1.0)
    assert det(state).tolist() == [False, False]  # window not full yet
    det(state)
    flags = det(state)
    assert flags.tolist() == [False, True]
    with pytest.raises(ValueError, match="exceeds the graph cutoff"):
        rdf(Batch.from_atoms(fine, cutoff=3.0), pairs, 5.0, 50)


def test_lindemann_keeps_working_after_a_replica_is_dropped():
    from ase_mlff.md.runner import select_replicas

    rng = np.random.default_rng(1)
    state = _state([_crystal(3), _crystal(4)])
    lin = LindemannIndex(state, window=10)
    cell = torch.as_tensor(_crystal(4).cell[:])
    base = state.batch.pos_nc.clone()
    for _ in range(5):
        lin(_moved(state, base + torch.as_tensor(rng.normal(scale=0.05, size=base.shape))))
    keep = torch.tensor([False, True])
    lin.select(keep, state)
    state = select_replicas(state, keep)
    base = state.batch.pos_nc.clone()
    flags = None
    for _ in range(5):  # the kept replica now melts; its accumulated half-window carries over
        flags = lin(_moved(state, torch.as_tensor(rng.random((64, 3))) @ cell))
    assert flags.tolist() == [True]
    assert lin.pairs_2p.max() < 64 and lin.s1.shape[0] == 64 * 63 // 2
