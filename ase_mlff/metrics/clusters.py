"""Conformation clusters and conformation-based force metrics of paper 002 (Wang et al., J.
Chem. Phys. 159, 035101 (2023)).

The training conformations of one molecule are clustered with K-means and shown in the plane
of their first two principal components (paper Fig. 1d-f). For cluster k with N^(k) frames
(Clus_k), the force metrics of Eqs. 1-4 restricted to its frames are

    F_mae^(k)       = 1/N^(k) Σ_{n∈Clus_k} 1/(3N_a) Σ_i Σ_α |ΔF_iα^(n)|           (Eq. 5)
    F_max-err^(k)   = 1/N^(k) Σ_{n∈Clus_k} max_{i,α} |ΔF_iα^(n)|                   (Eq. 6)
    FNM_mae^(k)     = 1/N^(k) Σ_{n∈Clus_k} 1/(3N_a) Σ_i Σ_α |ΔF_iα^(n) / u_i|     (Eq. 7)
    FNM_max-err^(k) = 1/N^(k) Σ_{n∈Clus_k} max_{i,α} |ΔF_iα^(n) / u_i|             (Eq. 8)
    RBP^(k) = |{n ∈ Clus_k : F_mae^(n) > F_mae}| / |Clus_k|                         (Eq. 9)

with F_mae the global Eq. 1 over all frames evaluated. Explored / unexplored (paper § II B 1):
a cluster's radius is the largest distance from its centre to its members; a conformation is
unexplored when its distance to the nearest centre exceeds that cluster's radius, otherwise
it is explored and belongs to that cluster (Fig. 3).

Features: ``"aligned"`` uses the Cartesian coordinates after Kabsch alignment onto a reference
(the mean training structure after one alignment round onto the first frame), flattened;
``"distances"`` the upper triangle of the interatomic distance matrix (rotation invariant).
Distances to cluster centres are Euclidean in that feature space (Å).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ase_mlff.metrics.forces import METRIC_LABELS, metrics_from_per_frame, per_frame_force_errors
from ase_mlff.utils import numeric_metrics

FEATURES = ("aligned", "distances")
_FORMAT_VERSION = 1
#: relative tolerance of the radius test, so that training frames are explored despite
#: round-off differences between the fit and a later assignment
_RADIUS_RTOL = 1e-9


def kabsch_align(
    positions_fnc: np.ndarray,
    reference_nc: np.ndarray,
    weights: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Rigidly superimpose every frame onto ``reference_nc`` (Kabsch, batched SVD).

    Args:
        positions_fnc: (F, N, 3) frames with the reference's atom order, Å.
        reference_nc: (N, 3) reference structure, Å.
        weights: optional (N,) non-negative atom weights (e.g. masses); uniform by default.

    Returns:
        ``aligned_fnc`` (F, N, 3): each frame rotated (proper rotation, det = +1: no
        reflection is ever applied) and translated so that its weighted centroid sits on the
        reference's, minimising the weighted RMSD; ``rmsd_f`` (F,): the remaining
        sqrt(Σ_i w_i |x_i − r_i|² / Σ_i w_i), Å.
    """
    pos = np.asarray(positions_fnc, dtype=np.float64)
    ref = np.asarray(reference_nc, dtype=np.float64)
    if pos.ndim != 3 or pos.shape[-1] != 3:
        raise ValueError(f"positions must be (frames, atoms, 3), got {pos.shape}")
    if ref.shape != pos.shape[1:]:
        raise ValueError(f"reference {ref.shape} does not match frames of shape {pos.shape[1:]}")
    n_atoms = pos.shape[1]
    if weights is None:
        w = np.full(n_atoms, 1.0 / n_atoms)
    else:
        w = np.asarray(weights, dtype=np.float64).reshape(-1)
        if w.shape != (n_atoms,):
            raise ValueError(f"weights must be ({n_atoms},), got {np.shape(weights)}")
        if np.any(w < 0) or not w.sum() > 0:
            raise ValueError("weights must be non-negative with a positive sum")
        w = w / w.sum()
    c_ref = w @ ref
    q = ref - c_ref
    p = pos - np.einsum("n,fnc->fc", w, pos)[:, None, :]
    h = np.einsum("fni,n,nj->fij", p, w, q)  # weighted covariance P^T W Q, (F, 3, 3)
    u, _, vt = np.linalg.svd(h)
    d = np.where(np.linalg.det(u @ vt) < 0, -1.0, 1.0)  # -1 where the optimum is a reflection
    u[:, :, 2] *= d[:, None]
    aligned = p @ (u @ vt) + c_ref  # x R^T with R = V diag(1, 1, d) U^T
    rmsd = np.sqrt(np.einsum("n,fn->f", w, ((aligned - ref) ** 2).sum(axis=-1)))
    return aligned, rmsd


def pair_distances(positions_fnc: np.ndarray) -> np.ndarray:
    """(F, N(N−1)/2) upper-triangle interatomic distances of (F, N, 3) frames, Å."""
    pos = np.asarray(positions_fnc, dtype=np.float64)
    i, j = np.triu_indices(pos.shape[1], k=1)
    return np.linalg.norm(pos[:, j] - pos[:, i], axis=-1)


def dataset_positions(dataset) -> np.ndarray:
    """(F, N, 3) positions of a :class:`~ase_mlff.data.dataset.Dataset` of one molecule."""
    if not dataset.same_molecule():
        raise ValueError(
            "conformation clusters need frames of one molecule with the same atoms in the "
            "same order (dataset.same_molecule() is False)"
        )
    return dataset.positions_nc.reshape(len(dataset), -1, 3)


class ConformationClusters:
    """K-means clusters of the training conformations of one molecule, with PCA projection.

    Fit once on the training frames (:meth:`fit` / :meth:`fit_dataset`), then :meth:`assign`
    any frames (test set, MD trajectory) to their nearest cluster and classify them as
    explored / unexplored, :meth:`project` them onto the first two principal components,
    :meth:`save` / :meth:`load` as one ``.npz`` (arrays plus the settings as JSON; no pickle).

    Clusters are numbered by decreasing size on the training frames.

    Fitted attributes: ``reference_`` (N, 3), ``centres_`` (K, D), ``radii_`` (K,),
    ``pca_components_`` (2, D), ``pca_mean_`` (D,), ``explained_variance_ratio_`` (2,),
    ``labels_`` (training frames' clusters), ``numbers_`` (atomic numbers or None).
    """

    def __init__(
        self,
        n_clusters: int = 3,
        features: str = "aligned",
        seed: int = 0,
        n_init: int = 10,
    ) -> None:
        if features not in FEATURES:
            raise ValueError(f"features must be one of {FEATURES}, got {features!r}")
        if int(n_clusters) < 1:
            raise ValueError(f"n_clusters must be >= 1, got {n_clusters}")
        self.n_clusters = int(n_clusters)
        self.features = features
        self.seed = int(seed)
        self.n_init = int(n_init)
        self.reference_: np.ndarray | None = None
        self.centres_: np.ndarray | None = None
        self.radii_: np.ndarray | None = None
        self.pca_components_: np.ndarray | None = None
        self.pca_mean_: np.ndarray | None = None
        self.explained_variance_ratio_: np.ndarray | None = None
        self.labels_: np.ndarray | None = None
        self.numbers_: np.ndarray | None = None

    def __repr__(self) -> str:
        state = "unfitted" if self.centres_ is None else f"fitted on {len(self.labels_)} frames"
        return (
            f"ConformationClusters(n_clusters={self.n_clusters}, features={self.features!r}, "
            f"seed={self.seed}; {state})"
        )

    # ----------------------------------------------------------------- helpers
    @property
    def is_fitted(self) -> bool:
        return self.centres_ is not None

    def _check_positions(self, positions_fnc: Any, fitting: bool = False) -> np.ndarray:
        try:
            pos = np.asarray(positions_fnc, dtype=np.float64)
        except ValueError as err:
            raise ValueError(
                "frames must all have the same number of atoms (one molecule, same atom order)"
            ) from err
        if pos.ndim != 3 or pos.shape[-1] != 3:
            raise ValueError(
                f"positions must be (frames, atoms, 3) of one molecule, got {pos.shape}"
            )
        if pos.shape[1] < 2:
            raise ValueError("conformations need at least 2 atoms")
        if not np.all(np.isfinite(pos)):
            raise ValueError("positions contain NaN or inf")
        if not fitting:
            if not self.is_fitted:
                raise ValueError("ConformationClusters is not fitted: call fit() first")
            if pos.shape[1] != len(self.reference_):
                raise ValueError(
                    f"frames have {pos.shape[1]} atoms but the clusters were fitted on "
                    f"{len(self.reference_)}"
                )
        return pos

    def _features(self, pos: np.ndarray) -> np.ndarray:
        if self.features == "aligned":
            aligned, _ = kabsch_align(pos, self.reference_)
            return aligned.reshape(len(pos), -1)
        return pair_distances(pos)

    def _nearest(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        c = self.centres_
        d2 = (x**2).sum(axis=1)[:, None] - 2.0 * x @ c.T + (c**2).sum(axis=1)[None, :]
        labels = np.argmin(d2, axis=1)
        return labels, np.sqrt(np.maximum(d2[np.arange(len(x)), labels], 0.0))

    # --------------------------------------------------------------------- fit
    def fit(self, positions_fnc: np.ndarray, numbers_n: np.ndarray | None = None):
        """Fit on (F, N, 3) training frames of one molecule (same atom order); returns self.

        ``numbers_n`` (N,), optional, is kept to check later inputs' atom order.
        """
        from sklearn.cluster import KMeans
        from sklearn.decomposition import PCA

        pos = self._check_positions(positions_fnc, fitting=True)
        n_frames, n_atoms = pos.shape[:2]
        if n_frames < self.n_clusters:
            raise ValueError(f"{n_frames} frames cannot make {self.n_clusters} clusters")
        if numbers_n is not None:
            numbers_n = np.asarray(numbers_n, dtype=np.int64).reshape(-1)
            if len(numbers_n) != n_atoms:
                raise ValueError(f"{len(numbers_n)} atomic numbers for {n_atoms} atoms")
        self.numbers_ = numbers_n
        first = pos[0] - pos[0].mean(axis=0)
        if self.features == "aligned":
            mean = kabsch_align(pos, first)[0].mean(axis=0)
            self.reference_ = mean - mean.mean(axis=0)
        else:
            self.reference_ = first
        x = self._features(pos)
        km = KMeans(n_clusters=self.n_clusters, n_init=self.n_init, random_state=self.seed)
        km.fit(x)
        # number clusters by decreasing size (ties: KMeans order)
        order = np.argsort(-np.bincount(km.labels_, minlength=self.n_clusters), kind="stable")
        self.centres_ = km.cluster_centers_[order]
        labels, dist = self._nearest(x)
        self.labels_ = labels
        self.radii_ = np.zeros(self.n_clusters)
        np.maximum.at(self.radii_, labels, dist)
        n_comp = min(2, x.shape[1], n_frames)
        pca = PCA(n_components=n_comp, random_state=self.seed).fit(x)
        self.pca_components_ = np.zeros((2, x.shape[1]))
        self.pca_components_[:n_comp] = pca.components_
        self.pca_mean_ = pca.mean_.copy()
        self.explained_variance_ratio_ = np.zeros(2)
        self.explained_variance_ratio_[:n_comp] = pca.explained_variance_ratio_
        return self

    def fit_dataset(self, dataset):
        """:meth:`fit` on a :class:`~ase_mlff.data.dataset.Dataset` (needs ``same_molecule()``)."""
        pos = dataset_positions(dataset)
        return self.fit(pos, dataset.numbers_n[: pos.shape[1]])

    # ------------------------------------------------------------------ assign
    def assign(self, positions_fnc: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(labels_f, distance_to_nearest_centre_f (Å), explored_f) of (F, N, 3) frames.

        A frame is unexplored when its distance to the nearest centre exceeds that cluster's
        radius (paper § II B 1); its label is still the nearest cluster.
        """
        pos = self._check_positions(positions_fnc)
        labels, dist = self._nearest(self._features(pos))
        radius = self.radii_[labels]
        explored = dist <= radius * (1.0 + _RADIUS_RTOL) + _RADIUS_RTOL
        return labels, dist, explored

    def project(self, positions_fnc: np.ndarray) -> np.ndarray:
        """(F, 2) coordinates of the frames on the first two principal components."""
        pos = self._check_positions(positions_fnc)
        return (self._features(pos) - self.pca_mean_) @ self.pca_components_.T

    def project_centres(self) -> np.ndarray:
        """(K, 2) cluster centres on the first two principal components."""
        if not self.is_fitted:
            raise ValueError("ConformationClusters is not fitted: call fit() first")
        return (self.centres_ - self.pca_mean_) @ self.pca_components_.T

    # ------------------------------------------------------------------ saving
    def save(self, path: str | Path) -> Path:
        """Write one ``.npz`` (arrays + settings as a JSON string); returns its path."""
        if not self.is_fitted:
            raise ValueError("ConformationClusters is not fitted: nothing to save")
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_name(path.name + ".npz")
        path.parent.mkdir(parents=True, exist_ok=True)
        settings = {
            "format_version": _FORMAT_VERSION,
            "n_clusters": self.n_clusters,
            "features": self.features,
            "seed": self.seed,
            "n_init": self.n_init,
        }
        np.savez(
            path,
            settings=np.array(json.dumps(settings)),
            reference=self.reference_,
            centres=self.centres_,
            radii=self.radii_,
            pca_components=self.pca_components_,
            pca_mean=self.pca_mean_,
            explained_variance_ratio=self.explained_variance_ratio_,
            labels=self.labels_,
            numbers=np.zeros(0, np.int64) if self.numbers_ is None else self.numbers_,
        )
        return path

    @classmethod
    def load(cls, path: str | Path) -> ConformationClusters:
        """Read a file written by :meth:`save`."""
        with np.load(path, allow_pickle=False) as f:
            settings = json.loads(str(f["settings"]))
            if settings.get("format_version") != _FORMAT_VERSION:
                raise ValueError(f"{path}: unsupported format {settings.get('format_version')}")
            obj = cls(
                n_clusters=settings["n_clusters"],
                features=settings["features"],
                seed=settings["seed"],
                n_init=settings["n_init"],
            )
            obj.reference_ = f["reference"]
            obj.centres_ = f["centres"]
            obj.radii_ = f["radii"]
            obj.pca_components_ = f["pca_components"]
            obj.pca_mean_ = f["pca_mean"]
            obj.explained_variance_ratio_ = f["explained_variance_ratio"]
            obj.labels_ = f["labels"]
            obj.numbers_ = f["numbers"] if len(f["numbers"]) else None
        return obj


# --------------------------------------------------------------------- metrics
def _frame_numbers(clusters: ConformationClusters, numbers_n: Any, n_frames: int, n_atoms: int):
    z = np.asarray(numbers_n).reshape(-1)
    if len(z) == n_atoms:
        z = np.tile(z, n_frames)
    elif len(z) != n_frames * n_atoms:
        raise ValueError(
            f"numbers_n must be ({n_atoms},) or ({n_frames * n_atoms},), got {len(z)} entries"
        )
    if clusters.numbers_ is not None and np.any(z.reshape(n_frames, n_atoms) != clusters.numbers_):
        raise ValueError("atomic numbers differ from those the clusters were fitted on")
    return z


def cluster_metrics(
    clusters: ConformationClusters,
    positions_fnc: np.ndarray,
    pred_forces_nc: np.ndarray,
    ref_forces_nc: np.ndarray,
    numbers_n: np.ndarray,
) -> dict[str, Any]:
    """Conformation-based force metrics, Eqs. 5-9, of F frames of the fitted molecule.

    Args:
        clusters: fitted :class:`ConformationClusters`.
        positions_fnc: (F, N, 3) frames (e.g. the test set).
        pred_forces_nc, ref_forces_nc: (F·N, 3) or (F, N, 3) forces, eV/Å.
        numbers_n: (N,) or (F·N,) atomic numbers.

    Returns:
        ``{"clusters": [per cluster k: {"cluster", "n_frames", "fraction", "n_unexplored",
        "forces_mae" (Eq. 5), "forces_rmse", "forces_max_err" (Eq. 6), "fnm_mae" (Eq. 7),
        "fnm_max_err" (Eq. 8), "rbp" (Eq. 9)}], "global": {Eqs. 1-4, "forces_rmse",
        "n_frames", "explored_fraction", "rbp" (fraction of all frames above F_mae)}}``;
        eV/Å (FNM eV/Å/u). Each frame belongs to its nearest cluster, explored or not;
        clusters without frames get NaN metrics. RBP compares a frame's F_mae^(n) with the
        global F_mae of all frames given.
    """
    pos = clusters._check_positions(positions_fnc)
    n_frames, n_atoms = pos.shape[:2]
    z = _frame_numbers(clusters, numbers_n, n_frames, n_atoms)
    per = per_frame_force_errors(
        pred_forces_nc, ref_forces_nc, z, np.full(n_frames, n_atoms, dtype=np.int64)
    )
    labels, _, explored = clusters.assign(pos)
    glob: dict[str, Any] = metrics_from_per_frame(per)
    bad = (per["mae_s"] > glob["forces_mae"]).astype(np.float64)
    k_all = clusters.n_clusters
    n_k = np.bincount(labels, minlength=k_all)

    def cluster_mean(v: np.ndarray) -> np.ndarray:
        s = np.bincount(labels, weights=v, minlength=k_all)
        return np.where(n_k > 0, s / np.maximum(n_k, 1), np.nan)

    cols = {
        "forces_mae": cluster_mean(per["mae_s"]),
        "forces_rmse": np.sqrt(cluster_mean(per["mse_s"])),
        "forces_max_err": cluster_mean(per["max_err_s"]),
        "fnm_mae": cluster_mean(per["fnm_mae_s"]),
        "fnm_max_err": cluster_mean(per["fnm_max_err_s"]),
        "rbp": cluster_mean(bad),
    }
    n_unexp = np.bincount(labels[~explored], minlength=k_all)
    per_cluster = [
        {
            "cluster": k,
            "n_frames": int(n_k[k]),
            "fraction": float(n_k[k] / n_frames),
            "n_unexplored": int(n_unexp[k]),
            **{key: float(v[k]) for key, v in cols.items()},
        }
        for k in range(k_all)
    ]
    glob.update(
        n_frames=int(n_frames),
        explored_fraction=float(explored.mean()),
        rbp=float(bad.mean()),
    )
    return {"clusters": per_cluster, "global": glob}


def flatten_cluster_metrics(results: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Flat ``{name: float}`` of :func:`cluster_metrics` output for logging.

    Per-cluster values become ``{prefix}cluster{k}_{name}`` (e.g. ``cluster0_forces_mae``,
    ``cluster0_rbp``); the global ones ``{prefix}global_{name}``.
    """
    out: dict[str, Any] = {}
    for c in results["clusters"]:
        out.update({f"cluster{c['cluster']}_{k}": v for k, v in c.items() if k != "cluster"})
    out.update({f"global_{k}": v for k, v in results.get("global", {}).items()})
    return numeric_metrics(out, prefix, keep_nan=True)


def exploration(
    clusters: ConformationClusters,
    positions_fnc: np.ndarray,
    forces_nc: np.ndarray | None = None,
) -> dict[str, Any]:
    """Explored / unexplored frames (e.g. of an MD trajectory) w.r.t. the training clusters.

    Returns numbers ``n_frames``, ``n_explored``, ``n_unexplored``, ``explored_fraction``,
    ``unexplored_fraction`` (paper Fig. 3a), ``unexplored_by_cluster`` (K,) and per-frame
    ``explored_f`` (bool), ``labels_f``, ``distance_f`` (Å). With ``forces_nc`` ((F·N, 3) or
    (F, N, 3), eV/Å) also ``force_norm_f`` (per frame mean of the per-atom force norm) and
    ``mean_force_norm_explored`` / ``mean_force_norm_unexplored`` (eV/Å; NaN for an empty
    region), the quantity of paper Fig. 3b-d.
    """
    pos = clusters._check_positions(positions_fnc)
    n_frames, n_atoms = pos.shape[:2]
    labels, dist, explored = clusters.assign(pos)
    n_exp = int(explored.sum())
    out: dict[str, Any] = {
        "n_frames": int(n_frames),
        "n_explored": n_exp,
        "n_unexplored": int(n_frames - n_exp),
        "explored_fraction": n_exp / n_frames if n_frames else float("nan"),
        "unexplored_fraction": (n_frames - n_exp) / n_frames if n_frames else float("nan"),
        "unexplored_by_cluster": np.bincount(labels[~explored], minlength=clusters.n_clusters),
        "explored_f": explored,
        "labels_f": labels,
        "distance_f": dist,
    }
    if forces_nc is not None:
        f = np.asarray(forces_nc, dtype=np.float64)
        if f.size != n_frames * n_atoms * 3:
            raise ValueError(
                f"forces must be ({n_frames * n_atoms}, 3) or ({n_frames}, {n_atoms}, 3), "
                f"got {f.shape}"
            )
        norm_f = np.linalg.norm(f.reshape(n_frames, n_atoms, 3), axis=-1).mean(axis=1)
        out["force_norm_f"] = norm_f
        out["mean_force_norm_explored"] = float(norm_f[explored].mean()) if n_exp else np.nan
        out["mean_force_norm_unexplored"] = (
            float(norm_f[~explored].mean()) if n_exp < n_frames else np.nan
        )
    return out


# --------------------------------------------------------------------- figures
def _scale(key: str) -> tuple[float, str]:
    if key.startswith("fnm_"):
        return 1e3, " (meV/Å/u)"
    if key.startswith("forces_"):
        return 1e3, " (meV/Å)"
    return 1.0, ""


def _results_by_model(results: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    if not results:
        raise ValueError("no cluster results to plot")
    if "clusters" in results:
        return {"": results}
    return dict(results)


def clusters_figure(
    clusters: ConformationClusters,
    train_positions: np.ndarray,
    other: np.ndarray | Mapping[str, np.ndarray] | None = None,
    title: str = "",
):
    """PCA plane of the training frames coloured by cluster (paper Fig. 1d-f), centres as
    numbered stars; optionally other frames (an array or {name: array} of (F, N, 3), e.g.
    MD trajectories) overlaid, explored as dots and unexplored as crosses (Fig. 3a)."""
    from ase_mlff.metrics.plots import _plt

    plt = _plt()
    xy = clusters.project(train_positions)
    labels, _, _ = clusters.assign(train_positions)
    cmap = plt.get_cmap("tab10")
    fig, ax = plt.subplots(figsize=(6, 4.8))
    for k in range(clusters.n_clusters):
        m = labels == k
        ax.scatter(*xy[m].T, s=6, alpha=0.35, color=cmap(k % 10), label=f"cluster {k}")
    cxy = clusters.project_centres()
    ax.scatter(*cxy.T, marker="*", s=160, color="gold", edgecolor="k", zorder=5)
    for k, (cx, cy) in enumerate(cxy):
        ax.annotate(str(k), (cx, cy), xytext=(4, 4), textcoords="offset points", weight="bold")
    if other is not None:
        sets = {"": other} if not isinstance(other, Mapping) else dict(other)
        overlay = ["k", "crimson", "darkviolet", "saddlebrown", "darkcyan", "olive"]
        for s, (name, pos) in enumerate(sets.items()):
            res = exploration(clusters, pos)
            oxy = clusters.project(pos)
            exp = res["explored_f"]
            colour = overlay[s % len(overlay)]
            tag = f"{name} " if name else ""
            ax.scatter(
                *oxy[exp].T,
                s=10,
                facecolor="none",
                edgecolor=colour,
                linewidth=0.6,
                label=f"{tag}explored",
            )
            ax.scatter(
                *oxy[~exp].T,
                s=14,
                marker="x",
                color=colour,
                label=f"{tag}unexplored ({100 * res['unexplored_fraction']:.1f}%)",
            )
    evr = clusters.explained_variance_ratio_
    ax.set_xlabel(f"PC1 ({100 * evr[0]:.0f}%)")
    ax.set_ylabel(f"PC2 ({100 * evr[1]:.0f}%)")
    ax.set_title(title)
    ax.legend(fontsize=7, markerscale=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def cluster_bars_figure(
    results_by_model: Mapping[str, Any],
    keys: Sequence[str] = ("forces_mae", "rbp"),
    title: str = "",
):
    """Per-cluster bars, one panel per metric, one bar per model (paper Fig. 1g-l).

    ``results_by_model``: one :func:`cluster_metrics` output or {model: output}. The global
    value of each model is drawn as a dashed line of its colour.
    """
    from ase_mlff.metrics.plots import _plt

    plt = _plt()
    by_model = _results_by_model(results_by_model)
    models = list(by_model)
    n_k = max(len(r["clusters"]) for r in by_model.values())
    x = np.arange(n_k)
    width = 0.8 / len(models)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    fig, axes = plt.subplots(1, len(keys), figsize=(3.6 * len(keys) + 0.6, 3.4), squeeze=False)
    for ax, key in zip(axes[0], keys):
        factor, unit = _scale(key)
        for m, model in enumerate(models):
            res = by_model[model]
            vals = np.full(n_k, np.nan)
            for c in res["clusters"]:
                vals[c["cluster"]] = c[key] * factor
            colour = colours[m % len(colours)]
            ax.bar(x - 0.4 + width * (m + 0.5), vals, width, color=colour, label=model or None)
            if key in res.get("global", {}):
                ax.axhline(res["global"][key] * factor, color=colour, ls="--", lw=0.9)
        ax.set_xticks(x, [f"{k}" for k in x])
        ax.set_xlabel("cluster")
        ax.set_ylabel(METRIC_LABELS.get(key, key) + unit)
        ax.grid(alpha=0.3, axis="y")
        if len(models) > 1 or models[0]:
            ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def radar_figure(
    results_by_model: Mapping[str, Any],
    key: str | Sequence[str] = "forces_mae",
    title: str = "",
):
    """Radar chart of a per-cluster metric, one polygon per model (paper Fig. 8c-d).

    ``key`` may be a sequence of metric names for one radar per metric.
    """
    from ase_mlff.metrics.plots import _plt

    plt = _plt()
    by_model = _results_by_model(results_by_model)
    keys = [key] if isinstance(key, str) else list(key)
    n_k = max(len(r["clusters"]) for r in by_model.values())
    angles = 2 * np.pi * np.arange(n_k) / n_k
    closed = np.append(angles, angles[0])
    fig, axes = plt.subplots(
        1,
        len(keys),
        figsize=(4.2 * len(keys), 4.2),
        subplot_kw={"projection": "polar"},
        squeeze=False,
    )
    for ax, k in zip(axes[0], keys):
        factor, unit = _scale(k)
        for model, res in by_model.items():
            vals = np.full(n_k, np.nan)
            for c in res["clusters"]:
                vals[c["cluster"]] = c[k] * factor
            ring = np.append(vals, vals[0])
            ax.plot(closed, ring, marker="o", ms=3, label=model or None)
            ax.fill(closed, ring, alpha=0.12)
        ax.set_xticks(angles, [f"cluster {i}" for i in range(n_k)])
        ax.tick_params(axis="x", pad=10)
        ax.set_rlabel_position(90.0 / max(n_k, 1))
        ax.set_title(METRIC_LABELS.get(k, k) + unit, fontsize=10)
        if len(by_model) > 1 or next(iter(by_model)):
            ax.legend(fontsize=7, loc="upper right", bbox_to_anchor=(1.25, 1.1))
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
