"""Metric-guided training losses of paper 002 (Wang et al., J. Chem. Phys. 159, 035101
(2023), § III "Guiding MLFF's training by force metrics", Table III).

The paper retrains ViSNet with its fine-grained force metrics as the loss: the
conformation-based F_mae^(k) (Eq. 5) and the element-based F_mae^(S) (Eq. 10), both beating
the global F_mae (Eq. 1) loss on Chignolin (Table III). Summed with equal weight over the
clusters k (elements S), those losses make every cluster (element) count the same however
many frames (atoms) it has. With frames s, per-frame weights w_s, N_s atoms in frame s and
ρ(ΔF) = ΔF² (``loss_error="squared"``, the default) or |ΔF| (``"absolute"``, the paper's MAE
as it is), the loss of one batch is

    L = λ_E Σ_s v_s ρ((E_s − Ê_s)/N_s) / Σ_s v_s
      + λ_F Σ_s v_s Σ_{i∈s} b_i Σ_α ρ(ΔF_iα / m_i) / (3 Σ_s v_s N_s)
      + λ_max Σ_s v_s max_{i∈s,α} |ΔF_iα / m_i| / Σ_s v_s
      + λ_S Σ_s v_s Σ_αβ ρ(σ_s,αβ − σ̂_s,αβ) / (9 Σ_s v_s)

The stress term (paper 004 §2.3: the EAM is fitted to energy, force *and* stress errors)
is in (eV/Å³)² for ``loss_error="squared"``: the stress σ = (1/V) ∂E/∂ε is kept in eV/Å³
(ASE's unit; 1 GPa = 6.2415e-3 eV/Å³), so λ_S ~ 1e3-1e5 makes it comparable to the
energy-per-atom term. Frames whose stress label is not finite (e.g. molecules concatenated
with periodic data) are left out of the stress term and of its normaliser Σ_s v_s.

- ``loss="mse"``: v_s = w_s, b_i = 1 — the trainer's original loss.
- ``loss="cluster_balanced"`` (Eq. 5 averaged over clusters): v_s = w_s · W / (K · W_k(s)),
  W_k = Σ_{s∈k} w_s, W = Σ_s w_s, K the number of (non-empty) clusters, so each cluster's
  frames carry the same total weight W/K (the mean of v over the frames stays that of w).
  Frames need a cluster label ``dataset.extra_s["cluster"]``: :func:`assign_clusters`.
- ``loss="element_balanced"`` (Eq. 10 averaged over elements): b_i = N_s / (E_s · N_s^(Z_i)),
  E_s the number of elements in frame s and N_s^(Z) its atoms of element Z, so every element
  of a frame carries the same share of the force term (Σ_{i∈s} b_i = N_s: the normaliser is
  the one of ``"mse"``; b ≡ 1 when all elements have the same count).
- ``mass_normalised=True``: m_i = u_i, the relative atomic mass (FNM, Eqs. 3-4); else 1.
- ``max_err_weight`` λ_max > 0 adds the frame-averaged maximum component error F_max-err
  (Eq. 2; FNM_max-err, Eq. 4, with ``mass_normalised``).

The cluster factors and element factors come from the dataset arrays, not from the batch,
so the global normalisers ``norms = (Σ_s v_s, Σ_s v_s N_s)`` of a data-parallel global batch
are computed from the dataset as before and the shards add up to the global loss.
"""

from __future__ import annotations

import numpy as np
import torch
from ase.data import atomic_masses

from ase_mlff.graph.batch import Batch
from ase_mlff.training.config import LOSS_ERRORS, LOSSES

CLUSTER_KEY = "cluster"


def assign_clusters(dataset, clusters) -> np.ndarray:
    """Label every frame of ``dataset`` with its nearest conformation cluster.

    ``clusters``: a fitted :class:`~ase_mlff.metrics.clusters.ConformationClusters` of the
    molecule (paper 002 § II A 2, K-means). Sets and returns ``dataset.extra_s["cluster"]``
    (S,) int64; subsets taken afterwards (train/val splits) keep the labels.
    """
    from ase_mlff.metrics.clusters import dataset_positions

    labels, _, _ = clusters.assign(dataset_positions(dataset))
    labels = np.asarray(labels, dtype=np.int64)
    dataset.extra_s[CLUSTER_KEY] = labels
    return labels


def cluster_balance(labels_s: np.ndarray, weight_s: np.ndarray | None = None) -> np.ndarray:
    """(S,) factors c_s = W / (K · W_k(s)) making each cluster's total weight W/K (see module
    doc); clusters whose frames all have zero weight are left out of K."""
    labels = np.asarray(labels_s).reshape(-1)
    w = np.ones(len(labels)) if weight_s is None else np.asarray(weight_s, float).reshape(-1)
    if len(w) != len(labels):
        raise ValueError(f"{len(labels)} cluster labels for {len(w)} frame weights")
    _, inverse = np.unique(labels, return_inverse=True)
    w_k = np.bincount(inverse, weights=w)
    k_eff = int(np.count_nonzero(w_k > 0))
    if k_eff == 0:
        return np.ones(len(labels))
    return np.where(w_k[inverse] > 0, w.sum() / (k_eff * np.where(w_k > 0, w_k, 1.0)[inverse]), 0)


def element_balance(numbers_n: np.ndarray, n_atoms_s: np.ndarray) -> np.ndarray:
    """(N,) per-atom factors b_i = N_s / (E_s · N_s^(Z_i)) (see module doc)."""
    z = np.asarray(numbers_n, dtype=np.int64).reshape(-1)
    n_atoms = np.asarray(n_atoms_s, dtype=np.int64).reshape(-1)
    frame = np.repeat(np.arange(len(n_atoms)), n_atoms)
    _, group, count = np.unique(frame * 1000 + z, return_inverse=True, return_counts=True)
    first_frame = np.zeros(len(count), dtype=np.int64)
    first_frame[group] = frame
    n_elements_s = np.bincount(first_frame, minlength=len(n_atoms))
    return n_atoms[frame] / (n_elements_s[frame] * count[group])


def frame_weights(dataset, loss: str = "mse") -> np.ndarray:
    """(S,) effective frame weights v_s of ``loss`` on ``dataset`` (see module doc)."""
    _check_loss(loss)
    w = np.ones(len(dataset)) if dataset.weight_s is None else np.asarray(dataset.weight_s, float)
    if loss != "cluster_balanced":
        return w
    if CLUSTER_KEY not in dataset.extra_s:
        raise ValueError(
            'loss="cluster_balanced" needs a conformation cluster per frame in '
            'dataset.extra_s["cluster"]: fit ase_mlff.metrics.clusters.ConformationClusters '
            "and call ase_mlff.training.losses.assign_clusters(dataset, clusters) first"
        )
    return w * cluster_balance(dataset.extra_s[CLUSTER_KEY], w)


def atom_factors(dataset, loss: str = "mse") -> np.ndarray | None:
    """(N,) per-atom force factors b_i of ``loss`` on ``dataset``; None when all are 1."""
    _check_loss(loss)
    if loss != "element_balanced":
        return None
    return element_balance(dataset.numbers_n, dataset.n_atoms_s)


def global_norms(dataset, frames: np.ndarray, v_s: np.ndarray) -> tuple[float, float]:
    """``(Σ_s v_s, Σ_s v_s N_s)`` over ``frames``: the normalisers of one (global) batch."""
    v = v_s[frames]
    return float(v.sum()), float((v * dataset.n_atoms_s[frames]).sum())


def _check_loss(loss: str) -> None:
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")


def training_loss(
    out: dict[str, torch.Tensor],
    batch: Batch,
    *,
    energy_weight: float = 1.0,
    force_weight: float = 20.0,
    atom_factor_n: torch.Tensor | None = None,
    loss_error: str = "squared",
    mass_normalised: bool = False,
    max_err_weight: float = 0.0,
    norms: tuple[float, float] | None = None,
    stress_weight: float = 0.0,
    stress_norm: float | None = None,
) -> torch.Tensor:
    """The loss L of the module doc for one batch (or one data-parallel shard).

    ``batch.weight_s`` must hold the effective frame weights v_s (:func:`frame_weights`),
    ``atom_factor_n`` the batch atoms' b_i (:func:`atom_factors`; None: all 1). ``norms``
    replaces the batch's own normalisers ``(Σ_s v_s, Σ_s v_s N_s)``, so that the shards of a
    global batch add up to its loss. With the defaults it is the weighted energy-per-atom +
    force MSE of the trainer's module doc.
    """
    if loss_error not in LOSS_ERRORS:
        raise ValueError(f"loss_error must be one of {LOSS_ERRORS}, got {loss_error!r}")
    rho = torch.square if loss_error == "squared" else torch.abs
    w_s = batch.weight_s if batch.weight_s is not None else torch.ones_like(batch.energy_s)
    w_s = w_s.double()
    de = (out["energy"] - batch.energy_s) / batch.n_atoms_s
    f_dtype = out["forces"].dtype
    w_n = w_s[batch.system_n].to(f_dtype)
    norm_s, norm_n = (w_s.sum(), w_n.sum()) if norms is None else norms
    e_loss = (w_s * rho(de)).sum() / norm_s
    df = out["forces"] - batch.forces_nc
    if mass_normalised:
        u = torch.as_tensor(atomic_masses, dtype=f_dtype, device=df.device)[batch.numbers_n]
        df = df / u[:, None]
    df_n = rho(df).sum(dim=1)
    a_n = w_n if atom_factor_n is None else w_n * atom_factor_n.to(f_dtype)
    f_loss = (a_n * df_n).sum() / (3.0 * norm_n)
    loss = energy_weight * e_loss.to(f_loss.dtype) + force_weight * f_loss
    if max_err_weight:
        fmax_s = torch.zeros(batch.n_systems, dtype=f_dtype, device=df.device).scatter_reduce(
            0, batch.system_n, df.abs().amax(dim=1), reduce="amax", include_self=False
        )
        loss = loss + max_err_weight * (w_s.to(f_dtype) * fmax_s).sum() / norm_s
    if stress_weight:
        loss = loss + stress_weight * stress_loss(
            out, batch, w_s.to(f_dtype), rho=rho, norm=stress_norm
        )
    return loss


def stress_mask(stress_s33: np.ndarray | torch.Tensor):
    """(S,) True for frames whose (3, 3) stress label is all finite."""
    if isinstance(stress_s33, torch.Tensor):
        return torch.isfinite(stress_s33).flatten(1).all(dim=1)
    return np.all(np.isfinite(np.asarray(stress_s33).reshape(len(stress_s33), 9)), axis=1)


def stress_norm(dataset, frames: np.ndarray, v_s: np.ndarray) -> float:
    """Σ_s v_s over the ``frames`` with a stress label: the stress term's normaliser of one
    (global) batch, so that data-parallel shards add up to the global loss."""
    frames = np.asarray(frames, dtype=np.int64)
    if dataset.stress_s33 is None:
        return 0.0
    return float(v_s[frames][stress_mask(dataset.stress_s33[frames])].sum())


def stress_loss(
    out: dict[str, torch.Tensor],
    batch: Batch,
    v_s: torch.Tensor,
    *,
    rho=torch.square,
    norm: float | None = None,
) -> torch.Tensor:
    """Σ_s v_s Σ_αβ ρ(σ_s − σ̂_s)_αβ / (9 Σ_s v_s), frames without a finite stress label
    left out (eV/Å³ errors, see module doc). ``norm`` replaces the batch's Σ_s v_s."""
    if batch.stress_s33 is None or "stress" not in out:
        raise ValueError("the stress loss needs stress labels and predicted stress")
    ok = stress_mask(batch.stress_s33)
    v = torch.where(ok, v_s, torch.zeros_like(v_s))
    target = torch.where(ok[:, None, None], batch.stress_s33, torch.zeros_like(batch.stress_s33))
    ds = out["stress"] - target.to(out["stress"].dtype)
    per_frame = rho(ds).flatten(1).sum(dim=1)
    per_frame = torch.where(ok, per_frame, torch.zeros_like(per_frame))
    denom = v.sum() if norm is None else norm
    if float(denom) == 0.0:
        return per_frame.sum() * 0.0
    return (v.to(per_frame.dtype) * per_frame).sum() / (9.0 * denom)
