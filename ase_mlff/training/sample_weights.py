"""Fine-tuning by reweighting (paper 002, Wang et al., J. Chem. Phys. 159, 035101 (2023),
§ III, "the third approach, fine-tuning").

The paper reweights every sample of the original training set to raise the importance of
the conformations the model handles badly: "the weights were determined by the RBP
calculated for each cluster. If a cluster had a higher RBP compared to other clusters,
larger weights were assigned to the samples in the cluster." It does not give the mapping;
ours, for cluster k with ratio of bad points RBP_k (Eq. 9, the fraction of the cluster's
frames whose F_mae^(n) exceeds the global F_mae of all frames) and r_k = RBP_k / mean_k RBP
(mean over the non-empty clusters):

    scheme="linear":  m_k = 1 + strength · r_k
    scheme="exp":     m_k = exp(strength · r_k)

then every frame s of cluster k gets w_s = m_k / mean_s' m_k(s') (mean 1 over the frames).
All RBP_k = 0 (no frame above the global mean) gives w ≡ 1. Fine-tuning is then the usual
:class:`~ase_mlff.training.trainer.Trainer` on the same data with ``dataset.weight_s = w``
(the loss honours ``weight_s``), e.g. via :func:`~ase_mlff.training.stage.run_stage` with
``init_from`` the original model.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

SCHEMES = ("linear", "exp")


def rbp_multipliers(rbp_k: np.ndarray, *, scheme: str = "linear", strength: float = 1.0):
    """(K,) cluster multipliers m_k from RBP_k (NaN for empty clusters: left NaN)."""
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")
    if strength < 0:
        raise ValueError(f"strength must be >= 0, got {strength}")
    rbp = np.asarray(rbp_k, dtype=np.float64)
    ok = np.isfinite(rbp)
    mean = float(rbp[ok].mean()) if ok.any() else 0.0
    r = rbp / mean if mean > 0 else np.where(ok, 0.0, np.nan)
    return 1.0 + strength * r if scheme == "linear" else np.exp(strength * r)


def rbp_weights_from_forces(
    pred_forces_nc: np.ndarray,
    dataset,
    clusters,
    *,
    scheme: str = "linear",
    strength: float = 1.0,
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """:func:`rbp_weights` from given predicted forces (N, 3) of ``dataset``'s frames."""
    from ase_mlff.metrics.clusters import cluster_metrics, dataset_positions

    pos = dataset_positions(dataset)
    res = cluster_metrics(
        clusters, pos, pred_forces_nc, dataset.forces_nc, dataset.numbers_n[: pos.shape[1]]
    )
    rbp = np.array([c["rbp"] for c in res["clusters"]])
    mult = rbp_multipliers(rbp, scheme=scheme, strength=strength)
    labels, _, _ = clusters.assign(pos)
    w = mult[labels]
    w = w / w.mean()
    norm = float(mult[labels].mean())
    table = [
        {
            "cluster": c["cluster"],
            "n_frames": c["n_frames"],
            "rbp": c["rbp"],
            "forces_mae": c["forces_mae"],
            "forces_max_err": c["forces_max_err"],
            "multiplier": float(mult[c["cluster"]]),
            "weight": float(mult[c["cluster"]] / norm) if c["n_frames"] else float("nan"),
        }
        for c in res["clusters"]
    ]
    return w, table


def rbp_weights(
    model: torch.nn.Module,
    dataset,
    clusters,
    *,
    scheme: str = "linear",
    strength: float = 1.0,
    batch_size: int = 64,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Per-frame weights (S,) of ``dataset`` from the per-cluster RBP of ``model``.

    Predicts the forces of every frame, computes the conformation-based metrics of
    :func:`~ase_mlff.metrics.clusters.cluster_metrics` with the fitted ``clusters`` and maps
    RBP_k to weights as in the module doc (larger for worse clusters, mean 1 over frames).

    Returns ``(weight_s, table)``: ``table`` has one row per cluster with ``cluster``,
    ``n_frames``, ``rbp``, ``forces_mae``, ``forces_max_err`` (eV/Å), ``multiplier`` m_k and
    ``weight`` (the normalised per-frame weight of its frames). ``dataset`` is unchanged:
    set ``dataset.weight_s = weight_s`` to fine-tune on it. ``device``/``dtype`` default to
    those of the model's parameters.
    """
    from ase_mlff.models.prediction import predict

    ref = next(iter(model.parameters()), None)
    if ref is None:
        ref = next(iter(model.buffers()))
    device = ref.device if device is None else device
    dtype = ref.dtype if dtype is None else dtype
    model.eval()
    pred = predict(model, dataset, batch_size=batch_size, device=device, dtype=dtype)
    return rbp_weights_from_forces(
        pred["forces"], dataset, clusters, scheme=scheme, strength=strength
    )
