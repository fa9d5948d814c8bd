"""Batched molecular dynamics: many replicas, one potential call per step."""

from ase_mlff.md.conservation import energy_drift_report, nve_energy_drift
from ase_mlff.md.detectors import (
    AtomOverlap,
    BondLengthDeviation,
    Detector,
    ExplodingForces,
    LindemannIndex,
    NonFinite,
    RDFDeviation,
    TemperatureBounds,
    default_detectors,
)
from ase_mlff.md.integrators import (
    init_nose_hoover_chain,
    langevin_baoab_step,
    nose_hoover_chain_step,
    nose_hoover_conserved,
    velocity_verlet_step,
)
from ase_mlff.md.runner import INTEGRATORS, MDRun, ReplicaResult, run_md
from ase_mlff.md.state import MDState, draw_normals, init_state, remove_com_velocity
from ase_mlff.md.validation import MDParameterError, validate_md_parameters

__all__ = [
    "INTEGRATORS",
    "AtomOverlap",
    "BondLengthDeviation",
    "Detector",
    "ExplodingForces",
    "LindemannIndex",
    "MDParameterError",
    "MDRun",
    "MDState",
    "NonFinite",
    "RDFDeviation",
    "ReplicaResult",
    "TemperatureBounds",
    "default_detectors",
    "energy_drift_report",
    "nve_energy_drift",
    "run_md",
    "init_nose_hoover_chain",
    "init_state",
    "draw_normals",
    "langevin_baoab_step",
    "nose_hoover_chain_step",
    "nose_hoover_conserved",
    "remove_com_velocity",
    "validate_md_parameters",
    "velocity_verlet_step",
]
