"""Collective variables (CVs) in torch, evaluated for every replica of a batch at once.

    from ase_mlff.md.colvars import Dihedral, Distance
    phi, psi = Dihedral(4, 6, 8, 14), Dihedral(6, 8, 14, 16)   # alanine dipeptide
    s = phi(batch)            # (S,) radians, one value per replica, differentiable
    (g,) = torch.autograd.grad(s.sum(), batch.pos_nc)           # its gradient on the atoms

A CV is defined on atom indices *within one replica* (every replica of the batch holds the
same molecule in the same atom order) and returns one value per replica, so that a bias
on it acts on all replicas in the same batched step. Differences between atoms use the
exact minimum image in periodic replicas (:func:`ase_mlff.graph.geometry.
minimum_image_torch`), so a molecule that crosses the cell boundary keeps its geometry.
Gradients come by autograd; they are checked against finite differences in the tests.

The definitions follow PLUMED, so that a CV here and its PLUMED namesake agree:

- :class:`Distance` ``|x_j − x_i|`` (Å);
- :class:`Angle` the angle at the middle atom, in [0, π] (radians);
- :class:`Dihedral` the torsion angle in (−π, π] (radians, IUPAC sign: positive for a
  clockwise rotation of the far bond seen along j → k), ``periodic`` with period 2π;
- :class:`Coordination` ``Σ_{i∈A} Σ_{j∈B, j≠i} s(r_ij)`` with PLUMED's rational switching
  function ``s(r) = (1 − x^n) / (1 − x^m)``, ``x = (r − d0)/r0`` (``n = 6, m = 12`` by
  default; ``s = n/m`` at ``x = 1``; 1 below ``d0``);
- :class:`LinearCombination` ``Σ_k c_k s_k`` (also ``2.0 * a + b``).

This is the first part of the batched metadynamics of issue 18; the bias, its hills and
the free-energy estimates build on it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from ase_mlff.graph.batch import Batch, replica_vectors


class CollectiveVariable:
    """A function of a replica's positions; ``cv(batch)`` gives (S,) values, one per
    replica, differentiable in ``batch.pos_nc``. ``periodic`` CVs live on a circle of
    length ``period`` (the dihedral: 2π)."""

    name = "cv"
    periodic = False
    period: float | None = None
    atoms: tuple[int, ...] = ()

    def __call__(self, batch: Batch) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def _check(self, batch: Batch) -> None:
        n_min = int(batch.n_atoms_s.min())
        if self.atoms and max(self.atoms) >= n_min:
            raise ValueError(
                f"{self.name} uses atom {max(self.atoms)} but a replica has only {n_min} atoms"
            )

    def describe(self) -> str:
        """What the CV is, as text: its class and defining parameters (compared when an
        MD run with metadynamics resumes)."""
        params = {
            k: [c.describe() for c in v] if k == "cvs" else v
            for k, v in vars(self).items()
            if not k.startswith("_")
        }
        return f"{type(self).__name__}({', '.join(f'{k}={v}' for k, v in params.items())})"

    def __add__(self, other: CollectiveVariable) -> LinearCombination:
        return LinearCombination([self, other], [1.0, 1.0])

    def __rmul__(self, c: float) -> LinearCombination:
        return LinearCombination([self], [float(c)])


def _atom_indices(atoms: Sequence[int], size: int, name: str) -> tuple[int, ...]:
    idx = tuple(int(a) for a in atoms)
    if len(idx) != size:
        raise ValueError(f"{name} takes {size} atom indices, got {len(idx)}")
    if min(idx) < 0:
        raise ValueError(f"{name}: atom indices must be >= 0, got {idx}")
    if len(set(idx)) != size:
        raise ValueError(f"{name}: the atoms must be different, got {idx}")
    return idx


class Distance(CollectiveVariable):
    """``|x_j − x_i|``, Å."""

    name = "distance"

    def __init__(self, i: int, j: int) -> None:
        self.atoms = _atom_indices((i, j), 2, "Distance")

    def __call__(self, batch: Batch) -> Tensor:
        self._check(batch)
        return torch.linalg.vector_norm(replica_vectors(batch, *self.atoms), dim=1)


class Angle(CollectiveVariable):
    """The angle i–j–k at atom j, radians in [0, π]."""

    name = "angle"

    def __init__(self, i: int, j: int, k: int) -> None:
        self.atoms = _atom_indices((i, j, k), 3, "Angle")

    def __call__(self, batch: Batch) -> Tensor:
        self._check(batch)
        i, j, k = self.atoms
        u, v = replica_vectors(batch, j, i), replica_vectors(batch, j, k)
        # atan2(|u × v|, u · v): accurate near 0 and π, where acos is not
        return torch.atan2(
            torch.linalg.vector_norm(torch.cross(u, v, dim=1), dim=1), (u * v).sum(1)
        )


class Dihedral(CollectiveVariable):
    """The torsion i–j–k–l, radians in (−π, π]; periodic with period 2π."""

    name = "dihedral"
    periodic = True
    period = 2.0 * math.pi

    def __init__(self, i: int, j: int, k: int, l: int) -> None:  # noqa: E741 - PLUMED's names
        self.atoms = _atom_indices((i, j, k, l), 4, "Dihedral")

    def __call__(self, batch: Batch) -> Tensor:
        self._check(batch)
        i, j, k, l = self.atoms  # noqa: E741
        b1, b2, b3 = (
            replica_vectors(batch, i, j),
            replica_vectors(batch, j, k),
            replica_vectors(batch, k, l),
        )
        n1, n2 = torch.cross(b1, b2, dim=1), torch.cross(b2, b3, dim=1)
        y = torch.linalg.vector_norm(b2, dim=1) * (b1 * n2).sum(1)
        return torch.atan2(y, (n1 * n2).sum(1))


class Coordination(CollectiveVariable):
    """``Σ_{i∈A} Σ_{j∈B, j≠i} s(r_ij)``, PLUMED's COORDINATION with the rational switch
    ``s = (1 − x^n)/(1 − x^m)``, ``x = (r − d0)/r0`` (a pair in both groups counts twice,
    as in PLUMED)."""

    name = "coordination"

    def __init__(
        self,
        group_a: Sequence[int],
        group_b: Sequence[int],
        r0: float,
        n: int = 6,
        m: int | None = None,
        d0: float = 0.0,
    ) -> None:
        self.a = tuple(int(x) for x in group_a)
        self.b = tuple(int(x) for x in group_b)
        if not self.a or not self.b or min(self.a + self.b) < 0:
            raise ValueError("Coordination needs two non-empty groups of atom indices >= 0")
        if not r0 > 0:
            raise ValueError(f"Coordination: r0 must be > 0 Å, got {r0}")
        self.r0, self.n, self.m, self.d0 = float(r0), int(n), int(m or 2 * n), float(d0)
        if not 0 < self.n < self.m:
            raise ValueError(f"Coordination needs 0 < n < m, got n={self.n}, m={self.m}")
        self.atoms = tuple(sorted(set(self.a + self.b)))
        self._pairs = [(p, q) for p in self.a for q in self.b if p != q]
        if not self._pairs:
            raise ValueError("Coordination needs at least one pair of different atoms")

    def switch(self, r: Tensor) -> Tensor:
        """s(r), with its limit n/m at x = 1 and 1 below d0."""
        x = ((r - self.d0) / self.r0).clamp_min(0.0)
        near = (x - 1.0).abs() < 1e-6
        xs = torch.where(near, torch.full_like(x, 0.5), x)  # keep the masked branch finite
        s = (1.0 - xs**self.n) / (1.0 - xs**self.m)
        # at x → 1: n/m + (n(n−m)/(2m)) (x − 1) to first order
        taylor = self.n / self.m + self.n * (self.n - self.m) / (2.0 * self.m) * (x - 1.0)
        return torch.where(near, taylor, s)

    def __call__(self, batch: Batch) -> Tensor:
        self._check(batch)
        a, b = zip(*self._pairs)
        r = torch.linalg.vector_norm(replica_vectors(batch, list(a), list(b)), dim=2)
        return self.switch(r).sum(dim=1)


class LinearCombination(CollectiveVariable):
    """``Σ_k c_k s_k`` of other CVs (not periodic, even of periodic ones: combine angles
    only where they do not wrap)."""

    name = "combination"

    def __init__(self, cvs: Sequence[CollectiveVariable], coefficients: Sequence[float]) -> None:
        if len(cvs) != len(coefficients) or not cvs:
            raise ValueError("LinearCombination needs one coefficient per CV, and a CV")
        self.cvs, self.coefficients = list(cvs), [float(c) for c in coefficients]
        self.atoms = tuple(sorted({a for cv in self.cvs for a in cv.atoms}))

    def __call__(self, batch: Batch) -> Tensor:
        return sum(c * cv(batch) for c, cv in zip(self.coefficients, self.cvs))

    def __add__(self, other: CollectiveVariable) -> LinearCombination:
        if isinstance(other, LinearCombination):
            return LinearCombination(self.cvs + other.cvs, self.coefficients + other.coefficients)
        return LinearCombination([*self.cvs, other], [*self.coefficients, 1.0])

    def __rmul__(self, c: float) -> LinearCombination:
        return LinearCombination(self.cvs, [float(c) * x for x in self.coefficients])
