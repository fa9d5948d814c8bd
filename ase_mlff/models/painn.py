"""PaiNN (Schütt, Unke, Gastegger, ICML 2021): equivariant message passing.

Scalar features s_i ∈ R^F and vector features v_i ∈ R^{3×F}. Per layer (paper Eqs. 7-9):

    message:  (Δs, Δv_v, Δv_s) = φ(s_j) ⊙ W(r_ij),  W = Linear(sin(nπr/r_c)/r · f_cut(r))
              s_i += Σ_j Δs,   v_i += Σ_j (Δv_v ⊙ v_j + Δv_s ⊙ r̂_ij)
    update:   (a_vv, a_sv, a_ss) = MLP([s_i, ‖V v_i‖])
              v_i += a_vv ⊙ U v_i,   s_i += a_ss + a_sv ⊙ <U v_i, V v_i>

The filters of all layers come from one fused Dense (as SchNetPack does). The benchmark
paper (003) finds equivariant models such as this far more stable in MD than invariant ones.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ase_mlff.graph.batch import Batch
from ase_mlff.models.base import MAX_Z, CosineCutoff, GNNPotential, scatter_sum


class SineRBF(nn.Module):
    """PaiNN's radial basis sin(nπ r / r_c) / r, n = 1..n_rbf."""

    def __init__(self, n_rbf: int, cutoff: float) -> None:
        super().__init__()
        self.register_buffer("freq", torch.arange(1, n_rbf + 1) * torch.pi / cutoff)

    def forward(self, r: Tensor) -> Tensor:
        return torch.sin(r[:, None] * self.freq.to(r.dtype)) / r[:, None]


class PaiNNMessage(nn.Module):
    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.phi = nn.Sequential(
            nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, 3 * hidden)
        )
        self.hidden = hidden

    def forward(
        self, s: Tensor, v: Tensor | None, w: Tensor, dir_e3: Tensor, i: Tensor, j: Tensor
    ) -> tuple[Tensor, Tensor]:
        x = self.phi(s).index_select(0, j) * w
        ds, dvv, dvs = x.split(self.hidden, dim=1)
        dv = dvs[:, None, :] * dir_e3[:, :, None]
        if v is not None:  # v is None in the first layer, where all vectors are still zero
            dv = dv + dvv[:, None, :] * v.index_select(0, j)
        n = s.shape[0]
        dv_sum = scatter_sum(dv, i, n)
        return s + scatter_sum(ds, i, n), dv_sum if v is None else v + dv_sum


class PaiNNUpdate(nn.Module):
    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.uv = nn.Linear(hidden, 2 * hidden, bias=False)  # U and V fused
        self.mlp = nn.Sequential(
            nn.Linear(2 * hidden, hidden), nn.SiLU(), nn.Linear(hidden, 3 * hidden)
        )
        self.hidden = hidden

    def forward(self, s: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        u_v, v_v = self.uv(v).split(self.hidden, dim=2)
        # ε inside the root keeps the gradient finite when v = 0 (first layer)
        norm = torch.sqrt((v_v * v_v).sum(dim=1) + 1e-8)
        a = self.mlp(torch.cat([s, norm], dim=1))
        a_vv, a_sv, a_ss = a.split(self.hidden, dim=1)
        s = s + a_ss + a_sv * (u_v * v_v).sum(dim=1)
        v = v + a_vv[:, None, :] * u_v
        return s, v


class PaiNN(GNNPotential):
    """PaiNN energy model. Defaults are a small model that trains in minutes on 2 cores."""

    def __init__(
        self,
        hidden: int = 64,
        n_interactions: int = 3,
        n_rbf: int = 20,
        cutoff: float = 5.0,
        species: list[int] | None = None,
    ) -> None:
        super().__init__(cutoff, species, hidden=hidden, n_interactions=n_interactions, n_rbf=n_rbf)
        self.config = {
            "name": "painn",
            "hidden": hidden,
            "n_interactions": n_interactions,
            "n_rbf": n_rbf,
            "cutoff": float(cutoff),
            "species": self.species,
        }
        self.hidden = hidden
        self.embedding = nn.Embedding(MAX_Z + 1, hidden)
        self.rbf = SineRBF(n_rbf, cutoff)
        self.fcut = CosineCutoff(cutoff)
        # bias-free, so W(rbf)·f_cut = W(rbf·f_cut): the cutoff scales the n_rbf-wide basis
        # instead of the (n_interactions·3·hidden)-wide filters, a large saving in backward
        self.filters = nn.Linear(n_rbf, n_interactions * 3 * hidden, bias=False)
        self.messages = nn.ModuleList(PaiNNMessage(hidden) for _ in range(n_interactions))
        self.updates = nn.ModuleList(PaiNNUpdate(hidden) for _ in range(n_interactions))
        self.readout = nn.Sequential(
            nn.Linear(hidden, hidden // 2), nn.SiLU(), nn.Linear(hidden // 2, 1)
        )

    def atom_features(self, batch: Batch) -> Tensor:
        """(N, hidden) scalar atom embeddings after the last block (input of the readout)."""
        i, j, vec, r = self.edges(batch)
        dir_e3 = vec / r[:, None]
        w_all = self.filters(self.rbf(r) * self.fcut(r)[:, None]).split(3 * self.hidden, dim=1)
        s = self.embedding(batch.numbers_n).to(batch.dtype)
        v = None  # vector features start at zero; the first message skips them
        for msg, upd, w in zip(self.messages, self.updates, w_all):
            s, v = msg(s, v, w, dir_e3, i, j)
            s, v = upd(s, v)
        return s

    def forward(self, batch: Batch) -> Tensor:
        return self.energy_from_atoms(self.readout(self.atom_features(batch))[:, 0], batch)


__all__ = ["PaiNN"]
