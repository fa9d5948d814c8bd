"""Collective variables against ASE's geometry (minimum image included), their
gradients against finite differences, and PLUMED's switching function written out."""

import ase.io
import numpy as np
import pytest
import torch
from ase.build import molecule

from ase_mlff.data.io import SHIPPED_DIR
from ase_mlff.graph import Batch
from ase_mlff.md.colvars import Angle, Coordination, Dihedral, Distance, LinearCombination

torch.set_num_threads(1)


def _aspirins(n=3, seed=0):
    out = []
    for k in range(n):
        a = ase.io.read(SHIPPED_DIR / "aspirin_md17_order.xyz")
        a.rattle(0.15, seed=seed + k)
        out.append(a)
    return out


def _periodic_copies():
    """Aspirin in a triclinic box, shifted so that it straddles the boundary: the
    minimum image must put it back together."""
    out = []
    for k, shift in enumerate(([4.0, 0.5, 0.2], [-3.0, 2.0, 5.5])):
        a = ase.io.read(SHIPPED_DIR / "aspirin_md17_order.xyz")
        a.rattle(0.1, seed=10 + k)
        a.set_cell([[11.0, 0, 0], [2.0, 10.5, 0], [1.0, -1.5, 12.0]])
        a.pbc = True
        a.positions += shift
        a.wrap()
        out.append(a)
    return out


def _batch(images):
    return Batch.from_atoms(images, cutoff=2.0, dtype=torch.float64)


@pytest.mark.parametrize("images", [_aspirins(), _periodic_copies()], ids=["free", "periodic"])
def test_distance_angle_dihedral_match_ase(images):
    batch = _batch(images)
    quads = [(0, 5, 10, 7), (5, 6, 12, 11), (3, 1, 0, 2)]
    for i, j, k, l in quads:  # noqa: E741
        mic = bool(images[0].pbc.any())
        d = Distance(i, l)(batch).numpy()
        ang = Angle(i, j, k)(batch).numpy()
        phi = Dihedral(i, j, k, l)(batch).numpy()
        for r, a in enumerate(images):
            assert d[r] == pytest.approx(a.get_distance(i, l, mic=mic), abs=1e-10)
            assert np.degrees(ang[r]) == pytest.approx(a.get_angle(i, j, k, mic=mic), abs=1e-8)
            ase_phi = a.get_dihedral(i, j, k, l, mic=mic)  # degrees in [0, 360)
            ours = np.degrees(phi[r]) % 360.0
            assert min(abs(ours - ase_phi), 360 - abs(ours - ase_phi)) < 1e-8
    assert (np.abs(Dihedral(*quads[0])(batch).numpy()) <= np.pi).all()


def test_dihedral_sign_and_range_on_a_constructed_torsion():
    """Four atoms with a known torsion: +60° and −60° (IUPAC sign) and ±180° at the seam."""
    from ase import Atoms

    def torsion(deg):
        t = np.radians(deg)
        pos = [[1, 0, 0], [0, 0, 0], [0, 0, 1.5], [np.cos(t), np.sin(t), 1.5]]
        return Atoms("C4", positions=pos)

    phis = Dihedral(0, 1, 2, 3)(_batch([torsion(60), torsion(-60), torsion(179.9)])).numpy()
    np.testing.assert_allclose(np.degrees(phis), [60.0, -60.0, 179.9], atol=1e-9)
    seam = Dihedral(0, 1, 2, 3)(_batch([torsion(180.0)])).numpy()
    assert abs(abs(np.degrees(seam[0])) - 180.0) < 1e-9 and Dihedral.period == 2 * np.pi


def _coordination_by_hand(pos, a, b, r0, n, m, d0=0.0):
    total = 0.0
    for i in a:
        for j in b:
            if i == j:
                continue
            x = (np.linalg.norm(pos[j] - pos[i]) - d0) / r0
            total += 1.0 if x <= 0 else (n / m if abs(x - 1) < 1e-12 else (1 - x**n) / (1 - x**m))
    return total


def test_coordination_is_plumeds_rational_switch():
    images = _aspirins(2, seed=3)
    batch = _batch(images)
    carbons = [k for k, z in enumerate(images[0].numbers) if z == 6]
    oxygens = [k for k, z in enumerate(images[0].numbers) if z == 8]
    for n, m, d0 in ((6, 12, 0.0), (8, 14, 0.3)):
        cv = Coordination(carbons, oxygens, r0=1.6, n=n, m=m, d0=d0)
        got = cv(batch).numpy()
        for r, a in enumerate(images):
            want = _coordination_by_hand(a.positions, carbons, oxygens, 1.6, n, m, d0)
            assert got[r] == pytest.approx(want, rel=1e-12)
    cv = Coordination([0], [1], r0=2.0)
    r = torch.tensor([2.0, 2.0 + 1e-8, 2.0 - 1e-8, 0.0], dtype=torch.float64)
    s = cv.switch(r).numpy()
    np.testing.assert_allclose(s[:3], 0.5, atol=1e-8)  # n/m = 6/12 at r = r0, continuous
    assert s[3] == pytest.approx(1.0)


@pytest.mark.parametrize(
    "cv",
    [
        Distance(0, 7),
        Angle(0, 5, 10),
        Dihedral(0, 5, 10, 7),
        Coordination([0, 1, 2, 3, 4, 5], [7, 8, 9], r0=1.5),
        LinearCombination([Distance(0, 7), Dihedral(5, 6, 12, 11)], [2.0, -0.5]),
    ],
    ids=["distance", "angle", "dihedral", "coordination", "combination"],
)
@pytest.mark.parametrize("periodic", [False, True])
def test_gradients_are_the_finite_differences(cv, periodic):
    images = _periodic_copies() if periodic else _aspirins(2)
    batch = _batch(images)
    pos = batch.pos_nc.clone().requires_grad_(True)
    b = batch.with_positions(pos)
    (grad,) = torch.autograd.grad(cv(b).sum(), pos)
    h = 1e-6
    rng = np.random.default_rng(0)
    for atom in rng.choice(len(pos), size=6, replace=False).tolist() + list(cv.atoms[:2]):
        for c in range(3):
            plus, minus = batch.pos_nc.clone(), batch.pos_nc.clone()
            plus[atom, c] += h
            minus[atom, c] -= h
            fd = (cv(batch.with_positions(plus)) - cv(batch.with_positions(minus))).sum() / (2 * h)
            assert float(grad[atom, c]) == pytest.approx(float(fd), abs=1e-6)


def test_combinations_and_bad_definitions():
    batch = _batch(_aspirins(2))
    d, phi = Distance(0, 7), Dihedral(0, 5, 10, 7)
    combo = 2.0 * d + phi
    np.testing.assert_allclose(combo(batch).numpy(), (2 * d(batch) + phi(batch)).numpy())
    assert combo.atoms == (0, 5, 7, 10)
    for make, message in (
        (lambda: Distance(0, 0), "the atoms must be different"),
        (lambda: Angle(0, 1, 1), "Angle: the atoms must be different"),
        (lambda: Dihedral(0, 1, 2, -3), "atom indices must be >= 0"),
        (lambda: Coordination([0], [1], r0=0.0), "r0 must be > 0"),
        (lambda: Coordination([3], [3], r0=1.0), "at least one pair of different atoms"),
        (lambda: Coordination([0], [1], r0=1.0, n=12, m=6), "0 < n < m"),
        (lambda: LinearCombination([d], [1.0, 2.0]), "one coefficient per CV"),
    ):
        with pytest.raises(ValueError, match=message):
            make()
    with pytest.raises(ValueError, match="uses atom 30 but a replica has only 21 atoms"):
        Distance(0, 30)(batch)
    water = _batch([molecule("H2O")])
    assert float(Angle(1, 0, 2)(water)) == pytest.approx(np.radians(104.0), abs=0.02)
