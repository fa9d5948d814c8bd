"""Classical bonded + non-bonded force fields as batched torch potentials.

A :class:`Topology` lists every term of one molecule (or of a fixed set of molecules)
with parameters in Å, eV, rad and elementary charges; :class:`ClassicalPotential`
evaluates it on a batch of S copies of that system at once. The functional forms are
those of OpenMM's standard forces, so a Topology built from an OpenMM ``System``
reproduces OpenMM's energies and forces (see :mod:`ase_mlff.forcefields.openmm`):

* harmonic bonds        E = ½ k (r − r0)²                    (HarmonicBondForce)
* Morse bonds           E = D (1 − exp(−β (r − r0)))² − D,   β = √(k_r / 2D)
  (Q-Force, paper 001 Table 1; the paper prints the exponent as k_r(r − r0)/2D, which
  is not dimensionless: β = √(k_r/2D) is the Morse width whose curvature at r0 is k_r,
  the GROMACS/Q-Force convention, e.g. 1.98 Å⁻¹ for H2)
* harmonic angles       E = ½ k (θ − θ0)²                    (HarmonicAngleForce)
* periodic torsions     E = k (1 + cos(n φ − φ0))            (PeriodicTorsionForce; GAFF
  proper and improper torsions, Q-Force cosine dihedrals)
* non-bonded pairs      E = k_e q_i q_j / r + 4 ε ((σ/r)¹² − (σ/r)⁶)
  (NonbondedForce, NoCutoff: every listed pair, with 1-4 pairs already scaled and
  excluded pairs left out)

Energies are in eV, the Coulomb constant k_e = 14.3996 eV·Å/e² (ASE units, CODATA).

Why hand-written: the potential must run inside this project's batched torch pipeline
(labelling 100,000 frames in one pass, batched MD, autograd forces), which OpenMM's
per-context API cannot; torch-native MM codes (e.g. TorchMD) are not on PyPI here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
import torch
from ase import units
from torch import Tensor

from ase_mlff.graph.batch import Batch
from ase_mlff.models.base import Potential

#: Coulomb constant e²/(4πε0) in eV·Å
COULOMB_EV_A = float(units.Hartree * units.Bohr)

_INT_FIELDS = ("bonds", "morse", "angles", "torsions", "pairs", "torsion_n")


@dataclass
class Topology:
    """Every term of a fixed-topology force field; arrays in Å, eV, rad, e.

    Index arrays refer to atoms 0..N-1 of one system. Empty term lists are allowed.
    """

    numbers: np.ndarray  # (N,) atomic numbers
    bonds: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.int64))
    bond_r0: np.ndarray = field(default_factory=lambda: np.zeros(0))
    bond_k: np.ndarray = field(default_factory=lambda: np.zeros(0))  # eV/Å²
    morse: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.int64))
    morse_r0: np.ndarray = field(default_factory=lambda: np.zeros(0))
    morse_k: np.ndarray = field(default_factory=lambda: np.zeros(0))  # eV/Å² (curvature)
    morse_d: np.ndarray = field(default_factory=lambda: np.zeros(0))  # eV (depth)
    angles: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.int64))
    angle_theta0: np.ndarray = field(default_factory=lambda: np.zeros(0))
    angle_k: np.ndarray = field(default_factory=lambda: np.zeros(0))  # eV/rad²
    torsions: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.int64))
    torsion_n: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    torsion_phase: np.ndarray = field(default_factory=lambda: np.zeros(0))
    torsion_k: np.ndarray = field(default_factory=lambda: np.zeros(0))  # eV
    pairs: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.int64))
    pair_qq: np.ndarray = field(default_factory=lambda: np.zeros(0))  # e², scaled
    pair_sigma: np.ndarray = field(default_factory=lambda: np.zeros(0))  # Å
    pair_epsilon: np.ndarray = field(default_factory=lambda: np.zeros(0))  # eV, scaled
    coulomb: float = COULOMB_EV_A
    name: str = ""

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name in ("coulomb", "name"):
                continue
            dtype = np.int64 if f.name in _INT_FIELDS or f.name == "numbers" else np.float64
            setattr(self, f.name, np.asarray(v, dtype=dtype))
        n = len(self.numbers)
        for key, width, params in [
            ("bonds", 2, ("bond_r0", "bond_k")),
            ("morse", 2, ("morse_r0", "morse_k", "morse_d")),
            ("angles", 3, ("angle_theta0", "angle_k")),
            ("torsions", 4, ("torsion_n", "torsion_phase", "torsion_k")),
            ("pairs", 2, ("pair_qq", "pair_sigma", "pair_epsilon")),
        ]:
            idx = getattr(self, key).reshape(-1, width)
            setattr(self, key, idx)
            if idx.size and (idx.min() < 0 or idx.max() >= n):
                raise ValueError(f"{key} refer to atoms outside 0..{n - 1}")
            for p in params:
                if len(getattr(self, p)) != len(idx):
                    raise ValueError(
                        f"{p} has {len(getattr(self, p))} entries for {len(idx)} {key}"
                    )
        if np.any(self.morse_d <= 0):
            raise ValueError("Morse depths D must be positive")

    @property
    def n_atoms(self) -> int:
        return len(self.numbers)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable (lists), the inverse of ``Topology(**d)``."""
        return {
            k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in asdict(self).items()
        }

    def permuted(self, order: np.ndarray) -> Topology:
        """The same force field for atoms re-ordered so that new atom k is old ``order[k]``."""
        order = np.asarray(order, dtype=np.int64)
        if sorted(order.tolist()) != list(range(self.n_atoms)):
            raise ValueError("order must be a permutation of the atoms")
        new_of_old = np.empty_like(order)
        new_of_old[order] = np.arange(len(order))
        d = asdict(self)
        d["numbers"] = self.numbers[order]
        for key in ("bonds", "morse", "angles", "torsions", "pairs"):
            d[key] = new_of_old[getattr(self, key)]
        return Topology(**d)

    def combined(self, other: Topology) -> Topology:
        """Two non-interacting systems as one (other's atoms appended after self's)."""
        if self.coulomb != other.coulomb:
            raise ValueError("cannot combine topologies with different Coulomb constants")
        d, o = asdict(self), asdict(other)
        out: dict[str, Any] = {"numbers": np.concatenate([self.numbers, other.numbers])}
        for key in ("bonds", "morse", "angles", "torsions", "pairs"):
            out[key] = np.concatenate([d[key], o[key] + self.n_atoms])
        for f in fields(self):
            if f.name not in out and f.name not in ("coulomb", "name"):
                out[f.name] = np.concatenate([d[f.name], o[f.name]])
        out["name"] = "+".join(x for x in (self.name, other.name) if x)
        out["coulomb"] = self.coulomb
        return Topology(**out)


def _dot3(a: tuple[Tensor, ...], b: tuple[Tensor, ...]) -> Tensor:
    """a·b of vectors given as three component arrays."""
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]


def _cross3(a: tuple[Tensor, ...], b: tuple[Tensor, ...]) -> tuple[Tensor, Tensor, Tensor]:
    """a×b of vectors given as three component arrays."""
    return (a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0])


class ClassicalPotential(Potential):
    """A :class:`Topology` as a batched potential: every system of the batch is one copy.

    All systems of a batch must be this topology's atoms in this order (checked); the
    terms are evaluated for all S copies at once on (S, N, 3) positions. No neighbour
    graph is needed (``cutoff = 0``), so batches of millions of atoms stay cheap.
    """

    def __init__(self, topology: Topology | dict[str, Any]) -> None:
        super().__init__()
        top = topology if isinstance(topology, Topology) else Topology(**topology)
        self.topology = top
        self.cutoff = 0.0
        self.species = sorted(set(top.numbers.tolist()))
        self.config = {"name": "classical", "topology": top.to_dict()}
        self.coulomb = top.coulomb
        for f in fields(top):
            if f.name in ("coulomb", "name"):
                continue
            v = getattr(top, f.name)
            dtype = torch.long if v.dtype == np.int64 else torch.float64
            self.register_buffer(f.name, torch.as_tensor(v, dtype=dtype), persistent=False)
        self._prepare_kernels(top)

    def _prepare_kernels(self, top: Topology) -> None:
        """Index lists and per-term constants of :meth:`energy_terms` (derived, not saved).

        Every displacement vector any term needs is x_b − x_a for one (a, b) row of a group:
        pairs, harmonic bonds, Morse bonds, the two arms j→i and j→k of each angle, and
        b1, b2, b3 of each distinct torsion quadruplet (GAFF lists several periodicities on
        the same four atoms; their dihedral is computed once). Constants are (T, 1)
        columns that broadcast over the frames: ½k, 4εσ¹², 4εσ⁶, k_e q_i q_j, Morse β.
        """
        quads, inverse = np.unique(top.torsions, axis=0, return_inverse=True)
        groups = {
            "pair": top.pairs[:, [0, 1]],
            "bond": top.bonds[:, [0, 1]],
            "morse": top.morse[:, [0, 1]],
            "arm_i": top.angles[:, [1, 0]],
            "arm_k": top.angles[:, [1, 2]],
            "b1": quads[:, [0, 1]],
            "b2": quads[:, [1, 2]],
            "b3": quads[:, [2, 3]],
        }
        for key, ab in groups.items():
            idx = torch.as_tensor(np.ascontiguousarray(ab.T), dtype=torch.long)
            self.register_buffer(f"_vec_{key}", idx, persistent=False)
        self.register_buffer(
            "_torsion_quad",
            torch.as_tensor(np.asarray(inverse).reshape(-1), dtype=torch.long),
            persistent=False,
        )

        def col(name: str, v: np.ndarray) -> None:
            t = torch.as_tensor(np.asarray(v, dtype=np.float64).reshape(-1, 1))
            self.register_buffer(name, t, persistent=False)

        s6 = top.pair_sigma**6
        col("_half_bond_k", 0.5 * top.bond_k)
        col("_bond_r0", top.bond_r0)
        col("_morse_r0", top.morse_r0)
        col("_morse_d", top.morse_d)
        col("_morse_beta", np.sqrt(top.morse_k / (2.0 * top.morse_d)))
        col("_half_angle_k", 0.5 * top.angle_k)
        col("_angle_theta0", top.angle_theta0)
        col("_torsion_n", top.torsion_n)
        col("_torsion_phase", top.torsion_phase)
        col("_torsion_k", top.torsion_k)
        col("_pair_c", top.coulomb * top.pair_qq)
        col("_pair_a", 4.0 * top.pair_epsilon * s6 * s6)
        col("_pair_b", 4.0 * top.pair_epsilon * s6)

    def extra_repr(self) -> str:
        t = self.topology
        return (
            f"name={t.name!r}, atoms={t.n_atoms}, bonds={len(t.bonds)}, morse={len(t.morse)}, "
            f"angles={len(t.angles)}, torsions={len(t.torsions)}, pairs={len(t.pairs)}"
        )

    def check_batch(self, batch: Batch) -> None:
        n = self.topology.n_atoms
        if bool((batch.n_atoms_s != n).any()) or bool(
            (batch.numbers_n.view(-1, n) != self.numbers).any()
        ):
            raise ValueError(
                f"this force field ({self.topology.name or 'classical'}) describes one system "
                f"of {n} atoms in a fixed order; every system of the batch must be that system "
                "(map your atom order onto it first, e.g. with ase_mlff.forcefields.match_atoms)"
            )

    def energy_terms(self, pos_snc: Tensor) -> dict[str, Tensor]:
        """Per-system energy (S,) of each term, eV: bond, morse, angle, torsion, coulomb, lj.

        Layout for speed (forces stay autograd of this energy): positions become three
        (N, S) component planes; each term group gathers its rows (``index_select``, whose
        backward is a contiguous ``index_add``) and every array is (terms, frames), so all
        operations are contiguous element-wise passes and reductions over the term axis.
        Same formulas as the module docstring; identities used: LJ = r⁻⁶ (4εσ¹² r⁻⁶ − 4εσ⁶),
        dihedral y = |b2| b1·(b2×b3) = (n1×n2)·b2/|b2| (Blondel & Karplus 1996).
        """
        zero = pos_snc.new_zeros(pos_snc.shape[0])
        out = {k: zero for k in ("bond", "morse", "angle", "torsion", "coulomb", "lj")}
        xyz = pos_snc.permute(2, 1, 0).contiguous().unbind(0)  # 3 × (N, S)

        def vec(key: str) -> tuple[Tensor, Tensor, Tensor]:
            a, b = getattr(self, f"_vec_{key}")
            return tuple(x.index_select(0, b) - x.index_select(0, a) for x in xyz)

        if len(self.bonds):
            v = vec("bond")
            dr = _dot3(v, v).sqrt() - self._bond_r0
            out["bond"] = (self._half_bond_k * dr * dr).sum(0)
        if len(self.morse):
            v = vec("morse")
            x = 1.0 - torch.exp(-self._morse_beta * (_dot3(v, v).sqrt() - self._morse_r0))
            out["morse"] = (self._morse_d * (x * x - 1.0)).sum(0)
        if len(self.angles):
            u, v = vec("arm_i"), vec("arm_k")
            c = _cross3(u, v)
            dt = torch.atan2(_dot3(c, c).sqrt(), _dot3(u, v)) - self._angle_theta0
            out["angle"] = (self._half_angle_k * dt * dt).sum(0)
        if len(self.torsions):
            b1, b2, b3 = vec("b1"), vec("b2"), vec("b3")
            n2 = _cross3(b2, b3)
            x = _dot3(_cross3(b1, b2), n2)
            y = _dot3(b1, n2) * _dot3(b2, b2).sqrt()
            phi = torch.atan2(y, x)
            if phi.shape[0] != len(self.torsions):
                phi = phi.index_select(0, self._torsion_quad)
            arg = self._torsion_n * phi - self._torsion_phase
            out["torsion"] = (self._torsion_k * (1.0 + torch.cos(arg))).sum(0)
        if len(self.pairs):
            v = vec("pair")
            inv2 = 1.0 / _dot3(v, v)
            out["coulomb"] = (self._pair_c * inv2.sqrt()).sum(0)
            inv6 = inv2 * inv2 * inv2
            out["lj"] = ((self._pair_a * inv6 - self._pair_b) * inv6).sum(0)
        return out

    def forward(self, batch: Batch) -> Tensor:
        self.check_batch(batch)
        pos = batch.pos_nc.to(torch.float64).view(batch.n_systems, self.topology.n_atoms, 3)
        terms = self.energy_terms(pos)
        return sum(terms.values())

    def _apply(self, fn, recurse=True):  # type: ignore[override]
        # parameters stay float64 whatever the batch dtype: FF energies span 1e-3..1e3 eV
        super()._apply(fn, recurse)
        for name, buf in self._buffers.items():
            if buf is not None and buf.is_floating_point():
                self._buffers[name] = buf.double()
        return self
