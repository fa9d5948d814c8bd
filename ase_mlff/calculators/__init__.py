"""ASE calculators: MLFFCalculator over any torch potential of this project (GNNs and the
classical force fields alike), OpenMMCalculator over any OpenMM System."""

from ase_mlff.calculators.mlff import MLFFCalculator, shipped_models
from ase_mlff.calculators.openmm import OpenMMCalculator

__all__ = ["MLFFCalculator", "OpenMMCalculator", "shipped_models"]
