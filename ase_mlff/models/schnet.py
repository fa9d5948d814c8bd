"""SchNet (Schütt et al., J. Chem. Phys. 148, 241722 (2018)) on this project's batch graph.

Continuous-filter convolutions:  h_i ← h_i + Dense(ssp(Dense(Σ_j W(r_ij) ⊙ Dense(h_j)))),
with W(r) = Dense(ssp(Dense(g(r)))) · f_cut(r), Gaussian expansion g(r), shifted softplus.

Why not PyG's ``torch_geometric.nn.models.SchNet``: it is the reference we benchmark
against (``benchmarks/training_throughput.py``) and computes the same function, but it
evaluates the distance expansion and the filter network on every directed edge. Here
they are evaluated once per pair (the half edge list of
:func:`ase_mlff.graph.half_edge_mask`: W(r_ij) = W(r_ji)) and each pair sends its message
both ways with two ``index_add_``; that halves the largest tensors of the training step,
forward and in the double backward of the force loss.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ase_mlff.graph.batch import Batch
from ase_mlff.models.base import MAX_Z, CosineCutoff, GNNPotential, scatter_sum


class ShiftedSoftplus(nn.Module):
    """ssp(x) = softplus(x) - ln 2 (SchNet's activation, zero at the origin)."""

    def forward(self, x: Tensor) -> Tensor:
        return F.softplus(x) - math.log(2.0)


class GaussianRBF(nn.Module):
    """g_k(r) = exp(-(r - μ_k)² / (2 δ²)), μ_k evenly spaced on [0, r_c], δ = spacing."""

    def __init__(self, n_rbf: int, cutoff: float) -> None:
        super().__init__()
        self.register_buffer("centers", torch.linspace(0.0, cutoff, n_rbf))
        self.coeff = -0.5 / (cutoff / (n_rbf - 1)) ** 2

    def forward(self, r: Tensor) -> Tensor:
        return torch.exp(self.coeff * (r[:, None] - self.centers.to(r.dtype)) ** 2)


class SchNetInteraction(nn.Module):
    def __init__(self, hidden: int, n_filters: int, n_rbf: int) -> None:
        super().__init__()
        self.filter1 = nn.Linear(n_rbf, n_filters)
        self.filter2 = nn.Linear(n_filters, n_filters)
        self.in2f = nn.Linear(hidden, n_filters, bias=False)
        self.f2out = nn.Linear(n_filters, hidden)
        self.dense = nn.Linear(hidden, hidden)
        self.act = ShiftedSoftplus()

    def forward(
        self, h: Tensor, rbf: Tensor, fcut: Tensor, i: Tensor, j: Tensor, half: bool = True
    ) -> Tensor:
        """Messages j -> i over the edges (i, j). ``half``: the list holds one edge per
        pair, and i -> j is sent too with the same filter W(r_ij)."""
        w = self.filter2(self.act(self.filter1(rbf))) * fcut[:, None]
        x = self.in2f(h)
        agg = scatter_sum(x.index_select(0, j) * w, i, h.shape[0])
        if half:
            agg = agg.index_add(0, j, x.index_select(0, i) * w)
        return self.dense(self.act(self.f2out(agg)))


class SchNet(GNNPotential):
    """SchNet energy model. Defaults are a small model that trains in minutes on 2 cores."""

    def __init__(
        self,
        hidden: int = 64,
        n_filters: int = 64,
        n_interactions: int = 3,
        n_rbf: int = 50,
        cutoff: float = 5.0,
        species: list[int] | None = None,
    ) -> None:
        super().__init__(
            cutoff,
            species,
            hidden=hidden,
            n_filters=n_filters,
            n_interactions=n_interactions,
            n_rbf=n_rbf,
        )
        self.config = {
            "name": "schnet",
            "hidden": hidden,
            "n_filters": n_filters,
            "n_interactions": n_interactions,
            "n_rbf": n_rbf,
            "cutoff": float(cutoff),
            "species": self.species,
        }
        self.embedding = nn.Embedding(MAX_Z + 1, hidden)
        self.rbf = GaussianRBF(n_rbf, cutoff)
        self.fcut = CosineCutoff(cutoff)
        self.interactions = nn.ModuleList(
            SchNetInteraction(hidden, n_filters, n_rbf) for _ in range(n_interactions)
        )
        self.readout = nn.Sequential(
            nn.Linear(hidden, hidden // 2), ShiftedSoftplus(), nn.Linear(hidden // 2, 1)
        )

    def atom_features(self, batch: Batch) -> Tensor:
        """(N, hidden) atom embeddings after the last interaction (input of the readout)."""
        # eagerly, the filters are computed once per pair (half the edges); a compiled
        # model uses the full list, since selecting half is a data-dependent shape that
        # would break its graph (the same function)
        half = not torch.compiler.is_compiling()
        i, j, _, r = self.edges(batch, half=half)
        h = self.embedding(batch.numbers_n).to(batch.dtype)
        rbf, fcut = self.rbf(r), self.fcut(r)
        for block in self.interactions:
            h = h + block(h, rbf, fcut, i, j, half)
        return h

    def forward(self, batch: Batch) -> Tensor:
        return self.energy_from_atoms(self.readout(self.atom_features(batch))[:, 0], batch)
