"""Free energy along collective variables and its error (paper 003, Appendix A, Eqs. 5-7).

Given samples of a collective variable ξ(x) from an equilibrium (or reweighted biased)
trajectory, with p(ξ) the marginal density,

    F(ξ) = −k_B T ln p(ξ)                                    (Eq. 5)

estimated on a histogram (F in eV, shifted to min 0, NaN where no sample fell), and

    MAE_F(φ) = ∫_{−π}^{π} |F(φ) − F̂(φ)| dφ,   likewise for ψ    (Eqs. 6-7)

realised as a sum over bins times the bin width (times the bin area in 2-D). Free
energies of unvisited bins are infinite: the MAE integrates over the bins populated by
both ensembles, and :func:`fes_unvisited_fraction` reports what share of the reference's
populated bins the model never visits (a model that stays in one basin has a small MAE
over a small domain; both numbers are needed).

Collective variables: :func:`dihedrals` (radians in [−π, π); alanine dipeptide's φ is
C−N−Cα−C and ψ is N−Cα−C−N, paper 003) and :func:`distances`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from ase import units


def _positions(positions_tnc: np.ndarray) -> np.ndarray:
    pos = np.asarray(positions_tnc, dtype=np.float64)
    if pos.ndim == 2 and pos.shape[-1] == 3:
        pos = pos[None]
    if pos.ndim != 3 or pos.shape[-1] != 3:
        raise ValueError(f"positions must be (frames, atoms, 3), got {pos.shape}")
    return pos


def _index(idx, width: int, n_atoms: int, what: str) -> np.ndarray:
    a = np.asarray(idx, dtype=np.int64)
    if a.ndim == 1 and len(a) == width:
        a = a[None]
    if a.ndim != 2 or a.shape[1] != width:
        raise ValueError(f"{what} must be ({width},) or (K, {width}) atom indices, got {a.shape}")
    if a.size and (a.min() < -n_atoms or a.max() >= n_atoms):
        raise ValueError(f"{what} index out of range for {n_atoms} atoms")
    return a


def dihedrals(positions_tnc: np.ndarray, quads) -> np.ndarray:
    """(T, K) dihedral angles of atom quadruplets ``quads`` (K, 4), radians in [−π, π).

    The angle between the planes (a, b, c) and (b, c, d), signed as
    :meth:`ase.Atoms.get_dihedral` (which returns the same angle in degrees in [0, 360)).
    """
    pos = _positions(positions_tnc)
    q = _index(quads, 4, pos.shape[1], "quads")
    p0, p1, p2, p3 = (pos[:, q[:, k]] for k in range(4))
    b0, b1, b2 = p1 - p0, p2 - p1, p3 - p2
    b1n = b1 / np.linalg.norm(b1, axis=-1, keepdims=True)
    v = -b0 - np.einsum("tkc,tkc->tk", -b0, b1n)[..., None] * b1n
    w = b2 - np.einsum("tkc,tkc->tk", b2, b1n)[..., None] * b1n
    x = np.einsum("tkc,tkc->tk", v, w)
    y = np.einsum("tkc,tkc->tk", np.cross(b1n, v), w)
    phi = np.arctan2(y, x)
    return np.where(phi >= np.pi, phi - 2.0 * np.pi, phi)


def distances(positions_tnc: np.ndarray, pairs, cell_33: np.ndarray | None = None) -> np.ndarray:
    """(T, K) distances of atom pairs ``pairs`` (K, 2), Å (minimum image with a cell)."""
    from ase_mlff.graph.geometry import minimum_image

    pos = _positions(positions_tnc)
    p = _index(pairs, 2, pos.shape[1], "pairs")
    d = minimum_image(pos[:, p[:, 1]] - pos[:, p[:, 0]], cell_33)
    return np.linalg.norm(d, axis=-1)


def _free_energy(p: np.ndarray, temperature_K: float) -> np.ndarray:
    if temperature_K <= 0:
        raise ValueError("temperature_K must be positive")
    with np.errstate(divide="ignore"):
        f = -units.kB * temperature_K * np.log(p)
    f[~np.isfinite(f)] = np.nan
    if np.isfinite(f).any():
        f -= np.nanmin(f)
    return f


def free_energy_1d(
    cv_t: np.ndarray,
    bins: int | np.ndarray = 60,
    range: tuple[float, float] = (-np.pi, np.pi),
    temperature_K: float = 300.0,
    weights: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(bin centres, F (B,) eV) with F = −k_B T ln p(ξ) (Eq. 5), min F = 0, NaN where p = 0.

    ``cv_t`` may have any shape (all samples are pooled, e.g. (T,) or (replicas, T));
    ``weights`` (same shape), e.g. exp(βV_bias) for reweighting a metadynamics run; samples
    outside ``range`` are dropped, so p is normalised over the range.
    """
    cv = np.asarray(cv_t, dtype=np.float64).ravel()
    w = None if weights is None else np.asarray(weights, np.float64).ravel()
    if w is not None and len(w) != len(cv):
        raise ValueError(f"{len(w)} weights for {len(cv)} samples")
    if len(cv) == 0:
        raise ValueError("no samples given")
    p, edges = np.histogram(cv, bins=bins, range=range, weights=w, density=True)
    return 0.5 * (edges[1:] + edges[:-1]), _free_energy(p, temperature_K)


def free_energy_2d(
    cv_x: np.ndarray,
    cv_y: np.ndarray,
    bins: int | Sequence = 60,
    range: Sequence[tuple[float, float]] = ((-np.pi, np.pi), (-np.pi, np.pi)),
    temperature_K: float = 300.0,
    weights: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x centres (Bx,), y centres (By,), F (Bx, By) eV) of two CVs, e.g. F(φ, ψ)
    (a Ramachandran free energy surface), as :func:`free_energy_1d`; ``F[i, j]`` is at
    ``(x[i], y[j])``."""
    x = np.asarray(cv_x, dtype=np.float64).ravel()
    y = np.asarray(cv_y, dtype=np.float64).ravel()
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"need equally many samples of both CVs, got {len(x)} and {len(y)}")
    w = None if weights is None else np.asarray(weights, np.float64).ravel()
    p, ex, ey = np.histogram2d(x, y, bins=bins, range=range, weights=w, density=True)
    centre = lambda e: 0.5 * (e[1:] + e[:-1])  # noqa: E731
    return centre(ex), centre(ey), _free_energy(p, temperature_K)


def fes_mae(F_model: np.ndarray, F_ref: np.ndarray, bin_width: float) -> float:
    """∫ |F − F̂| dξ (Eqs. 6-7) over the bins populated in both (finite in both), eV·rad.

    ``bin_width`` is dξ (a 1-D grid) or the bin area dξ₁dξ₂ (a 2-D grid). Both surfaces
    are used as given (from :func:`free_energy_1d`/``2d``: each shifted to min 0). Bins
    either ensemble never visited are left out; see :func:`fes_unvisited_fraction`.
    Returns NaN when no bin is populated in both.
    """
    a, b = np.asarray(F_model, dtype=np.float64), np.asarray(F_ref, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"both free energies must be on the same grid; {a.shape} vs {b.shape}")
    both = np.isfinite(a) & np.isfinite(b)
    if not both.any():
        return float("nan")
    return float(np.abs(a[both] - b[both]).sum() * bin_width)


def fes_unvisited_fraction(F_model: np.ndarray, F_ref: np.ndarray) -> float:
    """Fraction of the reference's populated bins where the model has no sample."""
    a, b = np.asarray(F_model, dtype=np.float64), np.asarray(F_ref, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"both free energies must be on the same grid; {a.shape} vs {b.shape}")
    ref = np.isfinite(b)
    if not ref.any():
        raise ValueError("the reference populates no bin")
    return float((ref & ~np.isfinite(a)).sum() / ref.sum())


def fes_figure(
    centres: np.ndarray,
    curves: dict[str, np.ndarray],
    xlabel: str = "ξ (rad)",
    title: str = "",
    ax=None,
):
    """1-D free energy curves F(ξ) (eV), one per ensemble."""
    from ase_mlff.metrics.plots import axes_or_new, finish_axes

    fig, ax = axes_or_new(ax, (5, 3.4))
    for name, f in curves.items():
        ax.plot(centres, f, lw=1.2, label=name)
    ax.set(xlabel=xlabel, ylabel="F (eV)")
    return finish_axes(fig, ax, title)


def fes2d_figure(
    x: np.ndarray,
    y: np.ndarray,
    surfaces: dict[str, np.ndarray],
    xlabel: str = "φ (rad)",
    ylabel: str = "ψ (rad)",
    vmax: float | None = None,
    title: str = "",
):
    """Ramachandran-style heat maps F(x, y) (eV), one panel per surface, shared colour
    scale (unvisited bins blank)."""
    from ase_mlff.metrics.plots import _plt

    plt = _plt()
    if not surfaces:
        raise ValueError("no surfaces given")
    finite = [np.asarray(f)[np.isfinite(f)] for f in surfaces.values()]
    top = vmax if vmax is not None else max((float(f.max()) for f in finite if f.size), default=1.0)
    n = len(surfaces)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n + 0.8, 3.8), squeeze=False)
    im = None
    for ax, (name, f) in zip(axes[0], surfaces.items()):
        im = ax.pcolormesh(
            x, y, np.ma.masked_invalid(np.asarray(f)).T, shading="nearest", vmin=0.0, vmax=top
        )
        ax.set(xlabel=xlabel, ylabel=ylabel, title=name, aspect="equal")
    fig.colorbar(im, ax=axes[0].tolist(), label="F (eV)")
    if title:
        fig.suptitle(title)
    return fig
