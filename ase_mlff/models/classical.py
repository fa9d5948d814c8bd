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


def _norm(v: Tensor) -> Tensor:
    return torch.sqrt((v * v).sum(-1).clamp_min(1e-30))


def bond_lengths(pos: Tensor, idx: Tensor) -> Tensor:
    """(S, B) distances |x_j − x_i| of atom pairs ``idx`` (B, 2) in positions (S, N, 3)."""
    return _norm(pos[:, idx[:, 1]] - pos[:, idx[:, 0]])


def bond_angles(pos: Tensor, idx: Tensor) -> Tensor:
    """(S, A) angles i–j–k in rad, by atan2(|u×v|, u·v) (finite gradient at 0 and π)."""
    u = pos[:, idx[:, 0]] - pos[:, idx[:, 1]]
    v = pos[:, idx[:, 2]] - pos[:, idx[:, 1]]
    return torch.atan2(_norm(torch.cross(u, v, dim=-1)), (u * v).sum(-1))


def dihedral_angles(pos: Tensor, idx: Tensor) -> Tensor:
    """(S, T) dihedrals i–j–k–l in rad, (−π, π], IUPAC sign (as OpenMM)."""
    b1 = pos[:, idx[:, 1]] - pos[:, idx[:, 0]]
    b2 = pos[:, idx[:, 2]] - pos[:, idx[:, 1]]
    b3 = pos[:, idx[:, 3]] - pos[:, idx[:, 2]]
    n1 = torch.cross(b1, b2, dim=-1)
    n2 = torch.cross(b2, b3, dim=-1)
    x = (n1 * n2).sum(-1)
    y = (torch.cross(n1, n2, dim=-1) * b2).sum(-1) / _norm(b2)
    return torch.atan2(y, x)


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
        """Per-system energy (S,) of each term, eV: bond, morse, angle, torsion, coulomb, lj."""
        zero = pos_snc.new_zeros(pos_snc.shape[0])
        out = {k: zero for k in ("bond", "morse", "angle", "torsion", "coulomb", "lj")}
        if len(self.bonds):
            dr = bond_lengths(pos_snc, self.bonds) - self.bond_r0
            out["bond"] = (0.5 * self.bond_k * dr * dr).sum(-1)
        if len(self.morse):
            dr = bond_lengths(pos_snc, self.morse) - self.morse_r0
            beta = torch.sqrt(self.morse_k / (2.0 * self.morse_d))
            x = 1.0 - torch.exp(-beta * dr)
            out["morse"] = (self.morse_d * (x * x - 1.0)).sum(-1)
        if len(self.angles):
            dt = bond_angles(pos_snc, self.angles) - self.angle_theta0
            out["angle"] = (0.5 * self.angle_k * dt * dt).sum(-1)
        if len(self.torsions):
            phi = dihedral_angles(pos_snc, self.torsions)
            arg = self.torsion_n.to(phi.dtype) * phi - self.torsion_phase
            out["torsion"] = (self.torsion_k * (1.0 + torch.cos(arg))).sum(-1)
        if len(self.pairs):
            r = bond_lengths(pos_snc, self.pairs)
            inv = 1.0 / r
            out["coulomb"] = (self.coulomb * self.pair_qq * inv).sum(-1)
            s6 = (self.pair_sigma * inv) ** 6
            out["lj"] = (4.0 * self.pair_epsilon * (s6 * s6 - s6)).sum(-1)
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
