"""Metrics: force/energy errors now; trajectory observables and model analyses build here."""

from ase_mlff.metrics.errors import error_metrics, evaluate, predict

__all__ = ["error_metrics", "evaluate", "predict"]
