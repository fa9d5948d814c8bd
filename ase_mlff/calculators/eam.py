"""ASE calculators for the learnable EAM and the hybrid E_MLIP + E_EAM (paper 004).

    from ase_mlff.calculators import EAMCalculator, HybridCalculator
    atoms.calc = EAMCalculator("runs/eam_pretraining/eam/best")       # a fitted EAM
    atoms.calc = HybridCalculator("runs/.../hybrid/best")             # a trained hybrid
    atoms.calc = HybridCalculator(mlip="runs/.../baseline/best", eam="runs/.../eam/best")

Both are :class:`~ase_mlff.calculators.MLFFCalculator` (energy, forces, stress by autograd)
with a check of what they hold; ``HybridCalculator(mlip=..., eam=...)`` adds two separately
trained potentials, each on its own cutoff.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ase_mlff.calculators.mlff import MLFFCalculator, resolve_model_path
from ase_mlff.models.eam import EAM
from ase_mlff.models.hybrid import HybridPotential
from ase_mlff.models.io import load_model


def _module(model: str | Path | torch.nn.Module) -> torch.nn.Module:
    if isinstance(model, torch.nn.Module):
        return model
    m, _ = load_model(resolve_model_path(model), dtype=torch.float64)
    return m


class EAMCalculator(MLFFCalculator):
    """ASE calculator over a learnable :class:`~ase_mlff.models.EAM` (checkpoint or module).

    For a LAMMPS-table copy of a fitted EAM see :func:`ase_mlff.models.eam_export.write_eam_fs`.
    """

    def __init__(self, model: str | Path | EAM, **kwargs: Any) -> None:
        module = _module(model)
        if not isinstance(module, EAM):
            raise TypeError(
                f"EAMCalculator needs an EAM; {model!r} holds a {type(module).__name__} "
                "(use MLFFCalculator for other potentials)"
            )
        super().__init__(module, **kwargs)


class HybridCalculator(MLFFCalculator):
    """E = E_MLIP + E_EAM: a trained :class:`~ase_mlff.models.HybridPotential`
    (``model``), or the sum of an MLIP and an EAM given separately (``mlip=``, ``eam=``)."""

    def __init__(
        self,
        model: str | Path | HybridPotential | None = None,
        *,
        mlip: str | Path | torch.nn.Module | None = None,
        eam: str | Path | EAM | None = None,
        **kwargs: Any,
    ) -> None:
        if (model is None) == (mlip is None and eam is None):
            raise ValueError("give either a hybrid model, or both mlip= and eam=")
        if model is not None:
            module = _module(model)
            if not isinstance(module, HybridPotential):
                raise TypeError(f"{model!r} holds a {type(module).__name__}, not a hybrid")
        else:
            if mlip is None or eam is None:
                raise ValueError("a hybrid needs both mlip= and eam=")
            module = HybridPotential(_module(mlip), _module(eam))
        super().__init__(module, **kwargs)
