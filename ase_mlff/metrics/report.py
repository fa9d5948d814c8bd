"""The force-metric block of a report, shared by ``recipes.evaluate`` and the comparison
agent: one model on one test set -> errors, per element and per conformation cluster."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ase_mlff.utils import numeric_metrics


def force_report(
    model: torch.nn.Module,
    test,
    clusters=None,
    *,
    batch_size: int = 64,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device = "cpu",
) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, Any]]:
    """``(metrics, predictions, figures)`` of ``model`` on ``test``.

    ``metrics["global"]``: energy and force errors with paper 002's Eqs. 1-4;
    ``metrics["elements"]``: Eqs. 10-13; ``metrics["clusters"]`` (with ``clusters``, a
    fitted :class:`~ase_mlff.metrics.clusters.ConformationClusters` of the same molecule):
    Eqs. 5-9. ``figures["parity.png"]``: the parity plot.
    """
    from ase_mlff.metrics.clusters import cluster_metrics
    from ase_mlff.metrics.errors import error_metrics
    from ase_mlff.metrics.forces import element_metrics, force_metrics
    from ase_mlff.metrics.plots import parity_figure
    from ase_mlff.models.prediction import predict

    pred = predict(model, test, batch_size=batch_size, dtype=dtype, device=device)
    res: dict[str, Any] = {
        "global": {
            **error_metrics(pred["energy"], pred["forces"], test),
            **force_metrics(pred["forces"], test.forces_nc, test.numbers_n, test.n_atoms_s),
        },
        "elements": element_metrics(pred["forces"], test.forces_nc, test.numbers_n, test.n_atoms_s),
    }
    if clusters is not None:
        n = int(test.n_atoms_s[0])
        res["clusters"] = cluster_metrics(
            clusters,
            test.positions_nc.reshape(len(test), n, 3),
            pred["forces"].reshape(len(test), n, 3),
            test.forces_nc.reshape(len(test), n, 3),
            test.numbers_n[:n],
        )
    figs = {
        "parity.png": parity_figure(
            pred["forces"], test.forces_nc, pred["energy"], test.energy_s, test.n_atoms_s
        )
    }
    return res, pred, figs


def flat_metrics(res: dict[str, Any]) -> dict[str, float]:
    """One model's results as flat MLflow metric names (ASCII)."""
    from ase_mlff.metrics.clusters import flatten_cluster_metrics

    flat = {f"test_{k}": v for k, v in res["global"].items()}
    for el, m in res["elements"].items():
        flat.update({f"element_{el}_{k}": v for k, v in m.items()})
    if "clusters" in res:
        flat.update(flatten_cluster_metrics(res["clusters"]))
    for k, v in res.get("scalars", {}).items():
        flat[k] = v
    return numeric_metrics(flat, keep_nan=True)
