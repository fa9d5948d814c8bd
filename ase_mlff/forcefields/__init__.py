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

Heavy dependencies (OpenMM, RDKit, AmberTools) are imported inside the functions that
need them.
"""
