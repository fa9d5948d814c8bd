"""Energy and force errors of a potential on a dataset (batched prediction, no per-frame loop
over atoms). Energies in eV (per structure and per atom), forces in eV/Å; the force metrics
are those of :mod:`ase_mlff.metrics.forces` (paper 002, Eqs. 1-4)."""

from __future__ import annotations

import numpy as np
import torch

from ase_mlff.metrics.forces import force_metrics
from ase_mlff.models.prediction import predict


def error_metrics(
    pred_energy_s: np.ndarray,
    pred_forces_nc: np.ndarray,
    dataset,
) -> dict[str, float]:
    """MAE/RMSE of energy (per structure and per atom) and paper 002's force metrics; eV, eV/Å.

    The force entries are :func:`ase_mlff.metrics.forces.force_metrics`: ``forces_mae``
    (Eq. 1), ``forces_rmse``, ``forces_max_err`` (Eq. 2: the mean over frames of each frame's
    largest absolute force-component error, max over atoms and x, y, z), ``fnm_mae`` and
    ``fnm_max_err`` (Eqs. 3-4, errors divided by the relative atomic mass, eV/Å/u).
    """
    de = pred_energy_s - dataset.energy_s
    de_atom = de / dataset.n_atoms_s
    return {
        "energy_mae": float(np.mean(np.abs(de))),
        "energy_rmse": float(np.sqrt(np.mean(de**2))),
        "energy_mae_per_atom": float(np.mean(np.abs(de_atom))),
        "energy_rmse_per_atom": float(np.sqrt(np.mean(de_atom**2))),
        **force_metrics(pred_forces_nc, dataset.forces_nc, dataset.numbers_n, dataset.n_atoms_s),
    }


def evaluate(model: torch.nn.Module, dataset, **kwargs) -> dict[str, float]:
    """:func:`~ase_mlff.models.prediction.predict` (``kwargs``) then :func:`error_metrics`."""
    p = predict(model, dataset, **kwargs)
    return error_metrics(p["energy"], p["forces"], dataset)


#: eV/Å³ -> GPa
EV_A3_TO_GPA = 160.21766208


def stress_errors(pred_s33: np.ndarray, ref_s33: np.ndarray) -> dict[str, float]:
    """MAE / RMSE over the components of the frames with a finite stress label, eV/Å³
    (and the MAE in GPa); NaN when no frame has one."""
    ref = np.asarray(ref_s33)
    ok = np.all(np.isfinite(ref.reshape(len(ref), 9)), axis=1)
    if not ok.any():
        return {"stress_mae": np.nan, "stress_rmse": np.nan, "stress_mae_GPa": np.nan}
    d = np.asarray(pred_s33)[ok] - ref[ok]
    mae = float(np.mean(np.abs(d)))
    return {
        "stress_mae": mae,
        "stress_rmse": float(np.sqrt(np.mean(d**2))),
        "stress_mae_GPa": mae * EV_A3_TO_GPA,
    }


def efs_errors(model: torch.nn.Module, test) -> dict[str, float]:
    """Paper 004's Table 2 on ``test`` (float64 prediction): energy MAE (meV/atom), force
    MAE over all components (meV/Å, atom-weighted) and stress MAE (GPa)."""
    p = predict(model, test, batch_size=16, dtype=torch.float64, stress=True)
    de = (p["energy"] - test.energy_s) / test.n_atoms_s
    return {
        "energy_mae_meV_atom": float(np.mean(np.abs(de)) * 1e3),
        "forces_mae_meV_A": float(np.mean(np.abs(p["forces"] - test.forces_nc)) * 1e3),
        "stress_mae_GPa": stress_errors(p["stress"], test.stress_s33)["stress_mae_GPa"],
    }
