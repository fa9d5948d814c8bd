"""Analytic potentials whose free energies are known exactly, for validating samplers
(metadynamics, thermostats) against an answer that is not another code's.

:class:`PairDoubleWell`: ``U(r) = A ((r − r1)(r − r2))²`` between atoms 0 and 1 of every
system (two minima at r1 and r2, barrier ``A ((r2 − r1)/2)⁴`` at their midpoint). Along the
distance in 3-D the exact free energy is ``F(r) = U(r) − 2 k_B T ln r`` (+ const.): the
Jacobian r² of the sphere of directions.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ase_mlff.graph.batch import Batch, replica_vectors
from ase_mlff.models.base import Potential


class PairDoubleWell(Potential):
    """``U(r) = A ((r − r1)(r − r2))²`` (eV, Å) between the first two atoms of each system
    (their minimum-image distance in a periodic cell); other atoms feel nothing."""

    def __init__(self, a: float = 25.0, r1: float = 1.2, r2: float = 1.8, cutoff: float = 4.0):
        super().__init__()
        if not (a > 0 and 0 < r1 < r2):
            raise ValueError(f"PairDoubleWell needs a > 0 and 0 < r1 < r2, got {a}, {r1}, {r2}")
        self.a, self.r1, self.r2, self.cutoff = float(a), float(r1), float(r2), float(cutoff)
        self.config = {"name": "pair_double_well", "a": a, "r1": r1, "r2": r2, "cutoff": cutoff}

    def forward(self, batch: Batch) -> Tensor:
        r = torch.linalg.vector_norm(replica_vectors(batch, 0, 1), dim=1)  # minimum image
        return (self.a * ((r - self.r1) * (r - self.r2)) ** 2).double()

    def free_energy(self, r, temperature_K: float):
        """The exact F(r), eV, minimum 0 over ``r`` (a numpy array, Å)."""
        import numpy as np
        from ase import units

        r = np.asarray(r, dtype=np.float64)
        f = self.a * ((r - self.r1) * (r - self.r2)) ** 2 - 2 * units.kB * temperature_K * np.log(r)
        return f - f.min()
