"""Torch potentials: one interface, batch -> per-system energy; forces/stress by autograd."""

from __future__ import annotations

import numbers
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
    if config.get("species") is not None:  # None: a model not tied to elements yet
        config["species"] = species_numbers(config["species"])
    try:
        return MODELS[name](**config)
    except TypeError as err:
        raise ValueError(f"bad configuration for model {name!r}: {err}") from err


def species_numbers(species: Any) -> list[int]:
    """A model's ``species`` as atomic numbers: a list of numbers or element symbols
    (``[1, 6, 8]`` or ``["H", "C", "O"]``); anything else is a ``ValueError`` naming it."""
    from collections.abc import Sequence

    import numpy as np
    from ase.data import atomic_numbers, chemical_symbols

    hint = "a list of atomic numbers or element symbols, e.g. [1, 6, 8] or ['H', 'C', 'O']"
    listlike = isinstance(species, (Sequence, np.ndarray)) and not isinstance(species, str)
    if not listlike or not len(species):
        raise ValueError(f"species must be {hint}; got {species!r}")
    out = []
    for s in species:
        if isinstance(s, str) and s in atomic_numbers:
            out.append(atomic_numbers[s])
        elif isinstance(s, numbers.Integral) and 0 < int(s) < len(chemical_symbols):
            out.append(int(s))
        else:
            raise ValueError(f"species must be {hint}; {s!r} in {species!r} is not an element")
    return out


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
    "species_numbers",
]
