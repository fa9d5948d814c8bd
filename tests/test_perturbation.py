"""Tests of the two-step perturbation (paper 004, Algorithm 1 and Table A.1)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk

from ase_mlff.data.perturbation import (
    PAPER_SETTINGS,
    closest_disjoint_pairs,
    perturbed_structures,
    strength_schedule,
    two_step_perturbation,
)


def _cluster(n=12, seed=3):
    rng = np.random.default_rng(seed)
    pos = rng.uniform(0, 6.0, (n, 3))
    return Atoms("Si" * n, positions=pos)


def _crystal():
    a = bulk("Si", "diamond", a=5.43, cubic=True).repeat(2)
    a.rattle(0.1, seed=1)
    return a


def _brute_force_pairs(atoms, n_pairs):
    """Reference: greedy on all pairs via atoms.get_distance (mic)."""
    cand = sorted(
        (atoms.get_distance(i, j, mic=True), i, j)
        for i, j in itertools.combinations(range(len(atoms)), 2)
    )
    used, out = set(), []
    for _, i, j in cand:
        if len(out) == n_pairs:
            break
        if i not in used and j not in used:
            used |= {i, j}
            out.append((i, j))
    return out


@pytest.mark.parametrize("atoms", [_cluster(), _crystal()], ids=["cluster", "periodic"])
def test_pairs_are_closest_non_overlapping(atoms):
    pairs, _ = closest_disjoint_pairs(atoms, 4)
    assert [tuple(p) for p in pairs] == _brute_force_pairs(atoms, 4)
    assert len(np.unique(pairs)) == 8  # no atom shared


@pytest.mark.parametrize("atoms", [_cluster(), _crystal()], ids=["cluster", "periodic"])
def test_pull_closer_by_2s_along_same_direction(atoms):
    d_pull = 0.3  # 2 s < every pair distance: no crossing
    out = two_step_perturbation(
        atoms, n_pairs=3, d_pull=d_pull, n_sites=0, d_pert=0.5, rng=np.random.default_rng(0)
    )
    pairs, s = out.info["perturb_pairs"], out.info["perturb_pull"]
    assert pairs.shape == (3, 2) and s.shape == (3,)
    assert np.all((s >= 0) & (s < d_pull)) and np.all(s > 0)
    for (i, j), sk in zip(pairs, s):
        before = atoms.get_distance(i, j, mic=True, vector=True)
        after = out.get_distance(i, j, mic=True, vector=True)
        # paper's split: each atom moves by s, so the pair closes by 2 s
        assert np.linalg.norm(after) == pytest.approx(np.linalg.norm(before) - 2 * sk, abs=1e-10)
        u0, u1 = before / np.linalg.norm(before), after / np.linalg.norm(after)
        np.testing.assert_allclose(u1, u0, atol=1e-10)
        for k in (i, j):
            assert np.linalg.norm(out.positions[k] - atoms.positions[k]) == pytest.approx(sk)
    moved = np.flatnonzero(np.any(out.positions != atoms.positions, axis=1))
    assert set(moved) == set(pairs.ravel())  # every other atom stays put


def test_sites_move_by_drawn_r_and_others_stay():
    atoms = _cluster(20)
    d_pert = 0.7
    out = two_step_perturbation(
        atoms, n_pairs=0, d_pull=1.0, n_sites=6, d_pert=d_pert, rng=np.random.default_rng(5)
    )
    sites, r = out.info["perturb_sites"], out.info["perturb_r"]
    assert len(set(sites)) == 6 and r.shape == (6,)
    disp = np.linalg.norm(out.positions - atoms.positions, axis=1)
    np.testing.assert_allclose(disp[sites], r, atol=1e-12)
    assert np.all(disp[sites] <= d_pert)
    others = np.setdiff1d(np.arange(len(atoms)), sites)
    np.testing.assert_array_equal(out.positions[others], atoms.positions[others])
    assert out.info["perturb_pairs"].shape == (0, 2)


def test_both_steps_compose():
    atoms = _cluster(16)
    rng = np.random.default_rng(11)
    out = two_step_perturbation(atoms, n_pairs=2, d_pull=0.2, n_sites=3, d_pert=0.4, rng=rng)
    touched = set(out.info["perturb_pairs"].ravel()) | set(out.info["perturb_sites"])
    untouched = [k for k in range(len(atoms)) if k not in touched]
    np.testing.assert_array_equal(out.positions[untouched], atoms.positions[untouched])
    # sites that are not in a pair moved by exactly r
    pulled = set(out.info["perturb_pairs"].ravel())
    for k, r in zip(out.info["perturb_sites"], out.info["perturb_r"]):
        if k not in pulled:
            assert np.linalg.norm(out.positions[k] - atoms.positions[k]) == pytest.approx(r)
    assert np.array_equal(atoms.positions, _cluster(16).positions)  # input untouched


def test_periodic_pair_across_boundary():
    cell = np.diag([10.0, 10.0, 10.0])
    pos = [[0.4, 5, 5], [9.4, 5, 5], [5, 1, 5], [5, 8.0, 5]]  # 0-1: 1.0 Å via the x boundary
    atoms = Atoms("Si4", positions=pos, cell=cell, pbc=True)
    assert atoms.get_distance(0, 1, mic=True) == pytest.approx(1.0)
    out = two_step_perturbation(
        atoms, n_pairs=1, d_pull=0.4, n_sites=0, d_pert=0.0, rng=np.random.default_rng(2)
    )
    assert out.info["perturb_pairs"].tolist() == [[0, 1]]
    s = out.info["perturb_pull"][0]
    assert out.get_distance(0, 1, mic=True) == pytest.approx(1.0 - 2 * s)
    # atom 0 moves towards -x (towards its partner's image), atom 1 towards +x
    np.testing.assert_allclose(out.positions[0], [0.4 - s, 5, 5])
    np.testing.assert_allclose(out.positions[1], [9.4 + s, 5, 5])
    # without pbc, 0-1 are 9 Å apart and the closest pair is 1-3 (5.3 Å)
    free = atoms.copy()
    free.pbc = False
    assert closest_disjoint_pairs(free, 1)[0].tolist() == [[1, 3]]


def test_schedule_and_rounds_linearly_spaced():
    np.testing.assert_allclose(strength_schedule(1.0, 5), [1.0, 0.8, 0.6, 0.4, 0.2])
    frames = perturbed_structures(
        [_cluster(), _crystal()], n_aug=4, n_pairs=2, d_pull_max=0.8, n_sites=3,
        d_pert_max=0.4, seed=0,
    )  # fmt: skip
    assert len(frames) == 8
    pulls = [f.info["perturb_d_pull"] for f in frames]
    perts = [f.info["perturb_d_pert"] for f in frames]
    np.testing.assert_allclose(pulls, [0.8, 0.6, 0.4, 0.2] * 2)
    np.testing.assert_allclose(perts, [0.4, 0.3, 0.2, 0.1] * 2)
    assert [f.info["perturb_round"] for f in frames] == [0, 1, 2, 3] * 2
    assert [f.info["perturb_source"] for f in frames] == [0] * 4 + [1] * 4
    for f in frames:
        assert np.all(f.info["perturb_pull"] < f.info["perturb_d_pull"])
        assert np.all(f.info["perturb_r"] < f.info["perturb_d_pert"])


def test_seeding():
    images = [_crystal()]
    kw = PAPER_SETTINGS["silica"]["cgcnn"]
    a = perturbed_structures(images, **kw, seed=7)
    b = perturbed_structures(images, **kw, seed=7)
    c = perturbed_structures(images, **kw, seed=8)
    assert len(a) == kw["n_aug"]
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.positions, y.positions)
    assert any(not np.array_equal(x.positions, z.positions) for x, z in zip(a, c))


def test_paper_settings_and_caps():
    assert PAPER_SETTINGS["silica"]["cgcnn"] == dict(
        n_aug=5, n_pairs=4, d_pull_max=1.0, n_sites=5, d_pert_max=1.0
    )
    assert PAPER_SETTINGS["silica"]["m3gnet"]["n_pairs"] == 2
    tiny = Atoms("Si3", positions=[[0, 0, 0], [2, 0, 0], [0, 3, 0]])
    out = two_step_perturbation(
        tiny, n_pairs=4, d_pull=0.5, n_sites=5, d_pert=0.5, rng=np.random.default_rng(0)
    )
    assert out.info["perturb_pairs"].tolist() == [[0, 1]]
    assert sorted(out.info["perturb_sites"]) == [0, 1, 2]
