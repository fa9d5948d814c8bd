"""Torch potentials: one interface, batch -> per-system energy; forces/stress by autograd."""

from __future__ import annotations

from typing import Any

from ase_mlff.models.base import AtomicReference, Potential, compute_properties
from ase_mlff.models.classical import ClassicalPotential, Topology
from ase_mlff.models.eam import EAM
from ase_mlff.models.hybrid import HybridPotential
from ase_mlff.models.io import CheckpointError, load_model, save_model
from ase_mlff.models.painn import PaiNN
from ase_mlff.models.schnet import SchNet

#: the trainable message-passing networks (what recipes accept as ``--model``)
GNN_MODELS: dict[str, type[Potential]] = {"schnet": SchNet, "painn": PaiNN}
#: name -> class of every potential; each rebuilds itself from its ``config`` dict
MODELS: dict[str, type[Potential]] = {**GNN_MODELS, "classical": ClassicalPotential, "eam": EAM}
MODELS["hybrid"] = HybridPotential  # E = E_MLIP + E_EAM (paper 004, appendix B)


def build_model(config: dict[str, Any]) -> Potential:
    """Build a potential from a config dict such as ``{"name": "painn", "hidden": 64}``."""
    config = dict(config)
    name = config.pop("name", None)
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; available: {sorted(MODELS)}")
    try:
        return MODELS[name](**config)
    except TypeError as err:
        raise ValueError(f"bad configuration for model {name!r}: {err}") from err


__all__ = [
    "GNN_MODELS",
    "MODELS",
    "AtomicReference",
    "CheckpointError",
    "ClassicalPotential",
    "EAM",
    "HybridPotential",
    "PaiNN",
    "Potential",
    "SchNet",
    "Topology",
    "build_model",
    "compute_properties",
    "load_model",
    "save_model",
]
