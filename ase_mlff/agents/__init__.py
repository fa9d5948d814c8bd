"""Ray agents: trajectory agents and stability studies over a Ray cluster."""

from ase_mlff.agents.study import StudyResult, ensure_ray, run_stability_study
from ase_mlff.agents.trajectory import TrajectoryAgent, TrajectorySpec

__all__ = ["StudyResult", "TrajectoryAgent", "TrajectorySpec", "ensure_ray", "run_stability_study"]
