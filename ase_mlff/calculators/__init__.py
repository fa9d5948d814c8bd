"""ASE calculators: MLFFCalculator over any torch potential of this project (GNNs and the
classical force fields alike), EAMCalculator and HybridCalculator (paper 004) on top of it,
OpenMMCalculator over any OpenMM System."""

from ase_mlff.calculators.eam import EAMCalculator, HybridCalculator
from ase_mlff.calculators.mlff import MLFFCalculator, shipped_models
from ase_mlff.calculators.openmm import OpenMMCalculator

__all__ = [
    "EAMCalculator",
    "HybridCalculator",
    "MLFFCalculator",
    "OpenMMCalculator",
    "shipped_models",
]
