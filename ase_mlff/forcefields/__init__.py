"""Where classical force-field parameters come from.

Each module turns a parameter source into a :class:`ase_mlff.models.classical.Topology`
(Å, eV, rad), evaluated by the batched :class:`~ase_mlff.models.classical.ClassicalPotential`:

* :mod:`~ase_mlff.forcefields.openmm` — any OpenMM ``System`` (harmonic bonds/angles,
  periodic torsions, NoCutoff non-bonded) -> Topology, plus atom-order matching.
* :mod:`~ase_mlff.forcefields.gaff` — GAFF-2.11 / AM1-BCC via AmberTools
  (antechamber, parmchk2, tleap); shipped aspirin parameters.
* :mod:`~ase_mlff.forcefields.water` — flexible TIP3P (monomer in torch, bulk via OpenMM PME).
* :mod:`~ase_mlff.forcefields.qforce` — the Q-Force Morse/harmonic/cosine force field of
  the hydrogen-combustion species (paper 001 Table 1).

OpenMM is needed to build Systems; RDKit and AmberTools only to parametrize new molecules
(imported inside the functions that need them).
"""

from ase_mlff.forcefields.gaff import (
    GAFFParameters,
    gaff_potential,
    gaff_system,
    parametrize_gaff,
    relaxed_geometry,
)
from ase_mlff.forcefields.openmm import match_atoms, topology_from_openmm
from ase_mlff.forcefields.qforce import qforce_potential, qforce_topology, relaxed_species
from ase_mlff.forcefields.water import (
    bulk_water_system,
    tip3p_monomer_atoms,
    tip3p_monomer_potential,
)

__all__ = [
    "GAFFParameters",
    "bulk_water_system",
    "gaff_potential",
    "gaff_system",
    "match_atoms",
    "parametrize_gaff",
    "qforce_potential",
    "qforce_topology",
    "relaxed_geometry",
    "relaxed_species",
    "tip3p_monomer_atoms",
    "tip3p_monomer_potential",
    "topology_from_openmm",
]
