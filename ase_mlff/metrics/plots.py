"""Figures for training results (matplotlib, Agg backend; callers save or log them)."""

from __future__ import annotations

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def axes_or_new(ax, figsize: tuple[float, float]):
    """``(fig, ax)``: a new figure when ``ax`` is None (``fig`` is None when drawing into a
    caller's axes); finish with :func:`finish_axes`."""
    if ax is not None:
        return None, ax
    return _plt().subplots(figsize=figsize)


def finish_axes(fig, ax, title: str = ""):
    """Title, grid and legend of one panel; the figure that holds it (laid out if new)."""
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    if fig is not None:
        fig.tight_layout()
    return fig if fig is not None else ax.figure


def learning_curve_figure(history: list[dict[str, float]]):
    """Validation force MAE (meV/Å) and energy MAE (meV/atom) per epoch, log scale."""
    plt = _plt()
    ep = [h["epoch"] for h in history]
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.4))
    ax[0].plot(ep, [h["val_forces_mae"] * 1e3 for h in history])
    ax[0].set_ylabel("validation force MAE (meV/Å)")
    ax[1].plot(ep, [h["val_energy_mae_per_atom"] * 1e3 for h in history])
    ax[1].set_ylabel("validation energy MAE (meV/atom)")
    for a in ax:
        a.set_xlabel("epoch")
        a.set_yscale("log")
        a.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def parity_figure(
    pred_forces_nc: np.ndarray,
    ref_forces_nc: np.ndarray,
    pred_energy_s: np.ndarray,
    ref_energy_s: np.ndarray,
    n_atoms_s: np.ndarray,
    title: str = "",
):
    """Predicted vs reference force components (eV/Å) and energies (eV, mean removed)."""
    plt = _plt()
    fig, ax = plt.subplots(1, 2, figsize=(9, 4))
    f_ref, f_pred = ref_forces_nc.ravel(), pred_forces_nc.ravel()
    lim = np.abs(f_ref).max() * 1.05
    ax[0].hexbin(f_ref, f_pred, gridsize=80, bins="log", cmap="viridis", mincnt=1)
    ax[0].plot([-lim, lim], [-lim, lim], "k--", lw=0.8)
    mae_f = np.mean(np.abs(f_pred - f_ref)) * 1e3
    ax[0].set(
        xlabel="reference force (eV/Å)",
        ylabel="predicted force (eV/Å)",
        title=f"forces: MAE {mae_f:.1f} meV/Å",
    )
    e_ref = ref_energy_s - ref_energy_s.mean()
    e_pred = pred_energy_s - ref_energy_s.mean()
    ax[1].scatter(e_ref, e_pred, s=3, alpha=0.5)
    lo, hi = e_ref.min(), e_ref.max()
    ax[1].plot([lo, hi], [lo, hi], "k--", lw=0.8)
    mae_e = np.mean(np.abs((pred_energy_s - ref_energy_s) / n_atoms_s)) * 1e3
    ax[1].set(
        xlabel="reference energy − mean (eV)",
        ylabel="predicted energy − mean (eV)",
        title=f"energies: MAE {mae_e:.2f} meV/atom",
    )
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
