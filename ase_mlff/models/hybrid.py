"""Hybrid potential of paper 004, appendix B: an MLIP on top of an EAM,

    E = E_MLIP + E_EAM,        F = F_MLIP + F_EAM,        σ = σ_MLIP + σ_EAM.

The two parts are the submodules ``mlip`` and ``eam``, so the Trainer's ``freeze``
prefixes select what is trained: ``freeze=("eam",)`` trains the MLIP on the residual of a
fixed (e.g. pre-fitted) EAM, no freeze trains both jointly, ``freeze=("mlip",)`` the EAM.
The cutoff of the hybrid is the larger of the two; each part sees only the edges within
its own cutoff, so every part computes exactly what it computes alone.

The Trainer refits no atomic reference for the hybrid (it has no ``atomref`` of its own;
the MLIP's ``mlip.atomref`` keeps its values and the EAM carries per-element energies).

:func:`part_forces` returns the force of each part (autograd per part) for the
force-direction analysis of appendix B (Fig. B.1) with
:func:`ase_mlff.metrics.bond_forces.force_angles`.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
from torch import Tensor

from ase_mlff.graph.batch import Batch, restrict_graph
from ase_mlff.models.base import Potential

PARTS = ("mlip", "eam")


def _as_potential(part: Potential | dict[str, Any], what: str) -> Potential:
    if isinstance(part, Potential):
        return part
    if isinstance(part, dict):
        from ase_mlff.models import build_model

        return build_model(part)
    raise TypeError(f"HybridPotential: {what} must be a Potential or a model config dict")


class HybridPotential(Potential):
    """E = E_MLIP + E_EAM (paper 004, appendix B).

    Args:
        mlip: the machine-learned potential (a :class:`Potential` or its config dict).
        eam: the physical baseline, usually :class:`~ase_mlff.models.EAM` (any Potential).

    ``build_model({"name": "hybrid", "mlip": {...}, "eam": {...}})`` rebuilds it, so it
    checkpoints with :func:`ase_mlff.models.save_model` / ``load_model``.
    """

    def __init__(self, mlip: Potential | dict[str, Any], eam: Potential | dict[str, Any]) -> None:
        super().__init__()
        self.mlip = _as_potential(mlip, "mlip")
        self.eam = _as_potential(eam, "eam")
        self.cutoff = float(max(self.mlip.cutoff, self.eam.cutoff))
        known = [set(p.species) for p in (self.mlip, self.eam) if p.species is not None]
        self.species = sorted(set.intersection(*known)) if known else None
        self.config = {"name": "hybrid", "mlip": self.mlip.config, "eam": self.eam.config}

    def part(self, name: str) -> Potential:
        if name not in PARTS:
            raise ValueError(f"unknown part {name!r}; parts: {PARTS}")
        return getattr(self, name)

    def parts(self, batch: Batch) -> dict[str, Tensor]:
        """``{"mlip": E_MLIP, "eam": E_EAM}``, each (S,) eV, each part on its own cutoff."""
        return {
            name: self.part(name)(restrict_graph(batch, self.part(name).cutoff)).double()
            for name in PARTS
        }

    def forward(self, batch: Batch) -> Tensor:
        e = self.parts(batch)
        return e["mlip"] + e["eam"]


def part_forces(model: HybridPotential, batch: Batch) -> dict[str, Tensor]:
    """Forces of each part, ``{"mlip": (N, 3), "eam": (N, 3)}`` eV/Å, -∂E_part/∂x by
    autograd (detached); their sum is the hybrid's force. Compare the directions with
    :func:`ase_mlff.metrics.bond_forces.force_angles` (paper 004, Fig. B.1)."""
    pos = batch.pos_nc.detach().requires_grad_(True)
    b = replace(batch, pos_nc=pos)
    out: dict[str, Tensor] = {}
    with torch.enable_grad():
        energies = model.parts(b)
        for k, name in enumerate(PARTS):
            (g,) = torch.autograd.grad(
                energies[name].sum(), pos, retain_graph=k < len(PARTS) - 1, allow_unused=True
            )
            out[name] = torch.zeros_like(pos).detach() if g is None else -g.detach()
    return out


__all__ = ["HybridPotential", "part_forces", "restrict_graph"]
