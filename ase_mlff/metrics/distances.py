"""h(r): the distribution of interatomic distances of a molecule along a trajectory.

Paper 003 (appendix, "Distribution of interatomic distances") and paper 000 (§ on h(r)):

    h(r) = 1/(N(N−1)) Σ_i Σ_{j≠i} δ(r − |x_i − x_j|),   averaged over frames,
    MAE_h = ∫_0^∞ |⟨h(r)⟩ − ⟨ĥ(r)⟩| dr,

the δ realised as a histogram on a shared grid (the integral is the sum over bins times
the bin width). Learned simulations use only their stable part.
"""

from __future__ import annotations

import numpy as np

#: grid: 0-10 Å (aspirin's largest distance is ~8 Å), 0.02 Å bins
DEFAULT_R_MAX = 10.0
DEFAULT_BINS = 500


def h_of_r(
    positions_fnc: np.ndarray, r_max: float = DEFAULT_R_MAX, bins: int = DEFAULT_BINS
) -> tuple[np.ndarray, np.ndarray]:
    """(bin centres (B,), density h (B,)) of all pair distances of (F, N, 3) positions.

    Vectorised over frames and pairs; h integrates to the fraction of distances < r_max.
    """
    pos = np.asarray(positions_fnc, dtype=np.float64)
    if pos.ndim != 3 or pos.shape[-1] != 3 or pos.shape[1] < 2:
        raise ValueError(f"positions must be (frames, atoms >= 2, 3), got {pos.shape}")
    i, j = np.triu_indices(pos.shape[1], k=1)
    d = np.linalg.norm(pos[:, j] - pos[:, i], axis=-1).ravel()
    counts, edges = np.histogram(d, bins=bins, range=(0.0, r_max))
    width = edges[1] - edges[0]
    return 0.5 * (edges[1:] + edges[:-1]), counts / (len(d) * width)


def h_of_r_mae(h_model: np.ndarray, h_ref: np.ndarray, r_max: float = DEFAULT_R_MAX) -> float:
    """MAE_h = ∫ |h − ĥ| dr on the shared grid (0 for identical ensembles, ≤ 2)."""
    if h_model.shape != h_ref.shape:
        raise ValueError("both h(r) must be on the same grid")
    return float(np.abs(h_model - h_ref).sum() * r_max / len(h_ref))


def h_of_r_figure(r: np.ndarray, curves: dict[str, np.ndarray], title: str = ""):
    """h(r) of several ensembles on one axis."""
    from ase_mlff.metrics.plots import _plt

    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.4))
    for name, h in curves.items():
        ax.plot(r, h, label=name, lw=1.2)
    ax.set_xlabel("r (Å)")
    ax.set_ylabel("h(r)")
    ax.set_title(title)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
