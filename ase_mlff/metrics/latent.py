"""Latent-space analysis of a potential's atom embeddings (paper 000, Figs. 4-5).

The per-atom representation a model feeds to its energy readout (``model.atom_features``)
is collected for the atoms of several datasets (paper 000: the validation frames of the
eight MD17 molecules and OC20), projected to 2-D with t-SNE, UMAP (or PCA), and the class
structure of the projection is scored with the silhouette coefficient,

    s(a) = (b(a) − a(a)) / max(a(a), b(a)),

``a(a)``: mean distance of sample ``a`` to the other samples of its class, ``b(a)``: the
smallest mean distance to the samples of another class. ``s`` lies in [−1, 1]; the mean
over samples is the silhouette score (paper 000, Fig. 5: histograms of per-sample values
with the mean marked). Classes are the datasets (or the elements).

    feats, labels, numbers = atom_embeddings(model, {"aspirin": ds_a, "ethanol": ds_e})
    keep = subsample(len(feats), max_points=5000, seed=0)
    proj = project(feats[keep], "tsne", seed=0)
    per_sample, mean = silhouette(proj, labels[keep])

or all of it at once with :func:`latent_analysis`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from ase import Atoms

from ase_mlff.data.dataset import Dataset
from ase_mlff.models.prediction import iter_predictions

METHODS = ("tsne", "umap", "pca")


def _has_atom_features(model: torch.nn.Module) -> bool:
    from ase_mlff.models.base import GNNPotential

    fn = getattr(type(model), "atom_features", None)
    return callable(fn) and fn is not GNNPotential.atom_features


def _param_dtype_device(model: torch.nn.Module) -> tuple[torch.dtype, torch.device]:
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype, p.device
    return torch.float64, torch.device("cpu")


def _as_sources(data: Any) -> dict[str, Any]:
    """{name: Dataset | list[Atoms]} from a dict, a single Dataset or a list of Atoms."""
    if isinstance(data, Mapping):
        if not data:
            raise ValueError("no datasets given")
        return {str(k): v for k, v in data.items()}
    if isinstance(data, Atoms):
        return {"data": [data]}
    return {"data": data}


def _frames(n: int, max_frames: int | None) -> np.ndarray:
    """All frames, or ``max_frames`` of them evenly spread over the set (reproducible)."""
    if max_frames is None or max_frames >= n:
        return np.arange(n)
    if max_frames < 1:
        raise ValueError(f"max_frames must be >= 1, got {max_frames}")
    return np.unique(np.linspace(0, n - 1, max_frames).round().astype(np.int64))


@torch.no_grad()
def atom_embeddings(
    model: torch.nn.Module,
    datasets: Mapping[str, Any] | Any,
    *,
    batch_size: int = 64,
    device: str | torch.device | None = None,
    max_frames: int | None = None,
    pool: str = "atom",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-atom embeddings ``model.atom_features(batch)`` of every atom of every frame, or
    with ``pool="frame"`` their mean over each frame's atoms (one sample per configuration).

    Args:
        model: a potential with ``atom_features(batch) -> (N, F)`` (SchNet, PaiNN: the
            input of the readout, paper 000's "atomic environment embeddings").
        datasets: ``{name: Dataset or list[Atoms]}`` (the name is the class label of its
            atoms); a bare Dataset or list of Atoms is labelled ``"data"``.
        batch_size: frames per forward pass.
        device: where the model runs; default: the device of its parameters. Batches
            take the parameters' dtype; the frames go through the one batched loop
            (:func:`~ase_mlff.models.prediction.iter_predictions`, model in eval mode).
        max_frames: per dataset, at most this many frames, evenly spread over it.
        pool: ``"atom"`` (a sample per atom) or ``"frame"`` (a sample per frame: the mean
            of its atoms' embeddings). Paper 000 (Figs. 4-5) stacks "samples" of the eight
            MD17 molecules and OC20 and finds each molecule a compact cluster; per atom,
            the same chemical environment (an aromatic C-H, say) recurs in many molecules,
            so per-frame samples are what can form one cluster per molecule.

    Returns:
        ``features`` (M, F) float64, ``labels`` (M,) dataset name of each sample and
        ``numbers`` (M,) the atomic number of each atom (``pool="atom"``; M = total atoms
        of the frames used) or the atom count of each frame (``pool="frame"``; M = frames).
    """
    if pool not in ("atom", "frame"):
        raise ValueError(f"pool must be 'atom' or 'frame', got {pool!r}")
    if not _has_atom_features(model):
        raise TypeError(
            f"{type(model).__name__} has no atom_features(batch) method: latent-space "
            "analyses need a message-passing model that exposes its per-atom embeddings "
            "(SchNet, PaiNN)"
        )
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    dtype, model_device = _param_dtype_device(model)
    device = model_device if device is None else torch.device(device)
    feats, labels, numbers = [], [], []
    for name, source in _as_sources(datasets).items():
        is_atoms = isinstance(source, Sequence) and not hasattr(source, "numbers_n")
        if is_atoms and not all(isinstance(a, Atoms) for a in source):
            raise TypeError(f"{name!r}: expected a Dataset or a list of ase.Atoms")
        frames = _frames(len(source), max_frames)
        if len(frames) == 0:
            raise ValueError(f"dataset {name!r} is empty")
        sub = Dataset.from_atoms([source[k] for k in frames]) if is_atoms else source[frames]
        chunks = iter_predictions(
            model,
            sub,
            batch_size=batch_size,
            dtype=dtype,
            device=device,
            evaluate=lambda m, b: {"h": m.atom_features(b)},
        )
        h = np.concatenate([out["h"] for _, _, out in chunks])
        if pool == "frame":
            ptr = np.asarray(sub.ptr_s)
            h = np.add.reduceat(h, ptr[:-1], axis=0) / np.diff(ptr)[:, None]
            numbers.append(np.diff(ptr))
        else:
            numbers.append(np.asarray(sub.numbers_n))
        feats.append(h)
        labels.append(np.full(len(h), name, dtype=object))
    return (
        np.concatenate(feats),
        np.concatenate(labels).astype(str),
        np.concatenate(numbers),
    )


def subsample(n: int, max_points: int = 5000, seed: int = 0) -> np.ndarray:
    """Sorted indices of at most ``max_points`` of ``n`` samples, drawn without replacement
    with a seeded generator (t-SNE is O(M log M)-O(M²): keep M at a few thousand)."""
    if n <= max_points:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=max_points, replace=False))


def standardise(features: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance per feature (constant features stay zero)."""
    x = np.asarray(features, dtype=np.float64)
    std = x.std(axis=0)
    return (x - x.mean(axis=0)) / np.where(std > 0, std, 1.0)


def project(features: np.ndarray, method: str = "tsne", seed: int = 0, **kw: Any) -> np.ndarray:
    """2-D projection (M, 2) of standardised ``features`` (M, F).

    ``method``: ``"tsne"`` (:class:`sklearn.manifold.TSNE`, PCA initialisation; perplexity
    30 or less for small M), ``"umap"`` (:class:`umap.UMAP`; a fixed ``random_state``
    makes it deterministic and single-threaded; the first call JIT-compiles for seconds)
    or ``"pca"``. ``seed`` fixes the result; ``kw`` go to the estimator.
    """
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"features must be (M, F), got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("features contain NaN or inf")
    m = len(x)
    if m < 3:
        raise ValueError(f"need at least 3 samples to project, got {m}")
    x = standardise(x)
    if method == "tsne":
        from sklearn.manifold import TSNE

        opts = {"perplexity": min(30.0, (m - 1) / 3.0), "init": "pca", "random_state": seed}
        return TSNE(n_components=2, **{**opts, **kw}).fit_transform(x)
    if method == "umap":
        import umap

        # a fixed random_state forces one thread anyway: say so and skip umap's warning
        opts = {"n_neighbors": min(15, m - 1), "random_state": seed, "n_jobs": 1}
        return np.asarray(umap.UMAP(n_components=2, **{**opts, **kw}).fit_transform(x))
    if method == "pca":
        from sklearn.decomposition import PCA

        return PCA(n_components=2, random_state=seed, **kw).fit_transform(x)
    raise ValueError(f"unknown projection method {method!r}; choose from {METHODS}")


def silhouette(projection: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, float]:
    """Per-sample silhouette coefficients (M,) and their mean (the silhouette score) of a
    projection (M, 2) with class ``labels`` (M,), Euclidean distances (paper 000, Fig. 5)."""
    from sklearn.metrics import silhouette_samples

    x = np.asarray(projection, dtype=np.float64)
    labels = np.asarray(labels)
    if len(x) != len(labels):
        raise ValueError(f"{len(x)} samples but {len(labels)} labels")
    n_classes = len(np.unique(labels))
    if not 2 <= n_classes <= len(x) - 1:
        raise ValueError(
            f"the silhouette needs 2 <= number of classes <= samples - 1; got {n_classes} "
            f"classes for {len(x)} samples"
        )
    s = silhouette_samples(x, labels)
    return s, float(np.mean(s))


def latent_analysis(
    features: np.ndarray,
    labels: np.ndarray,
    methods: Sequence[str] = ("tsne", "umap"),
    *,
    max_points: int = 5000,
    seed: int = 0,
) -> dict[str, Any]:
    """Subsample, project with each method and score: ``{"index": kept indices,
    "labels": their labels, "projection": {method: (m, 2)}, "silhouette": {method:
    per-sample (m,)}, "silhouette_mean": {method: float}}``."""
    keep = subsample(len(features), max_points, seed)
    feats, labs = np.asarray(features)[keep], np.asarray(labels)[keep]
    out: dict[str, Any] = {
        "index": keep,
        "labels": labs,
        "projection": {},
        "silhouette": {},
        "silhouette_mean": {},
    }
    for method in methods:
        p = project(feats, method, seed=seed)
        s, mean = silhouette(p, labs)
        out["projection"][method], out["silhouette"][method] = p, s
        out["silhouette_mean"][method] = mean
    return out


# ---------------------------------------------------------------------------- figures
def _grid(panels: Mapping[str, Any]) -> list[list[tuple[str, tuple[str, ...], Any]]]:
    """Rows of (title, keys, value): ``{model: {method: x}}`` -> one row per model, one
    column per method (keys ``(model, method)``); ``{name: x}`` -> one row (keys ``(name,)``).
    """
    if not panels:
        raise ValueError("nothing to plot")
    if all(isinstance(v, Mapping) for v in panels.values()):
        return [[(f"{m} — {k}", (m, k), x) for k, x in row.items()] for m, row in panels.items()]
    return [[(str(k), (k,), x) for k, x in panels.items()]]


def _lookup(tree: Any, keys: tuple[str, ...]) -> Any:
    for k in keys:
        tree = tree[k]
    return tree


def latent_figure(
    projections_by_model: Mapping[str, Any],
    labels: np.ndarray | Mapping[str, np.ndarray],
    *,
    silhouettes: Mapping[str, Any] | None = None,
    point_size: float = 2.0,
):
    """Scatter of the 2-D projections coloured by class (paper 000, Fig. 4).

    ``projections_by_model``: ``{model: {method: (M, 2)}}`` (rows: models, columns:
    methods) or ``{name: (M, 2)}``. ``labels``: the class of each point, shared (M,) or
    ``{model: (M,)}``. ``silhouettes`` (same nesting, floats) adds the mean to the titles.
    """
    from ase_mlff.metrics.plots import _plt

    plt = _plt()
    rows = _grid(projections_by_model)
    ncol = max(len(r) for r in rows)
    fig, axes = plt.subplots(len(rows), ncol, figsize=(4.2 * ncol, 4.0 * len(rows)), squeeze=False)
    all_labels = (
        np.concatenate([np.asarray(v) for v in labels.values()])
        if isinstance(labels, Mapping)
        else np.asarray(labels)
    )
    classes = list(np.unique(all_labels))
    cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    for r, row in enumerate(rows):
        for c, (title, keys, proj) in enumerate(row):
            ax = axes[r, c]
            lab = np.asarray(labels[keys[0]] if isinstance(labels, Mapping) else labels)
            proj = np.asarray(proj)
            if proj.ndim != 2 or proj.shape[1] != 2 or len(proj) != len(lab):
                raise ValueError(f"{title}: projection of shape {proj.shape} for {len(lab)} labels")
            for k, cls in enumerate(classes):
                sel = lab == cls
                ax.scatter(
                    proj[sel, 0], proj[sel, 1], s=point_size, color=cmap(k % cmap.N), label=cls
                )
            if silhouettes is not None:
                title = f"{title} (silhouette {float(_lookup(silhouettes, keys)):.2f})"
            ax.set_title(title, fontsize=10)
            ax.set_xticks([])
            ax.set_yticks([])
        for c in range(len(row), ncol):
            axes[r, c].set_axis_off()
    handles, names = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, names, loc="center right", markerscale=4, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0, 0.86, 1))
    return fig


def silhouette_figure(silhouettes_by_model: Mapping[str, Any], *, bins: int = 40):
    """Histograms of per-sample silhouette values with the mean marked (paper 000, Fig. 5).

    ``silhouettes_by_model``: ``{model: {method: (M,)}}`` or ``{name: (M,)}``.
    """
    from ase_mlff.metrics.plots import _plt

    plt = _plt()
    rows = _grid(silhouettes_by_model)
    ncol = max(len(r) for r in rows)
    fig, axes = plt.subplots(len(rows), ncol, figsize=(4.0 * ncol, 3.2 * len(rows)), squeeze=False)
    edges = np.linspace(-1.0, 1.0, bins + 1)
    for r, row in enumerate(rows):
        for c, (title, _, s) in enumerate(row):
            ax = axes[r, c]
            s = np.asarray(s, dtype=np.float64)
            mean = float(np.mean(s))
            ax.hist(s, bins=edges, color="C0", alpha=0.8)
            ax.axvline(mean, color="C3", ls="--", label=f"mean {mean:.3f}")
            ax.set_xlim(-1, 1)
            ax.set_xlabel("per-sample silhouette")
            ax.set_ylabel("count")
            ax.set_title(title, fontsize=10)
            ax.legend(fontsize=8)
        for c in range(len(row), ncol):
            axes[r, c].set_axis_off()
    fig.tight_layout()
    return fig


__all__ = [
    "METHODS",
    "atom_embeddings",
    "latent_analysis",
    "latent_figure",
    "project",
    "silhouette",
    "silhouette_figure",
    "standardise",
    "subsample",
]
