"""ASE calculators: MLFFCalculator over any torch potential of this project."""

from ase_mlff.calculators.mlff import MLFFCalculator, shipped_models

__all__ = ["MLFFCalculator", "shipped_models"]
