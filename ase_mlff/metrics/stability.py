"""Stability statistics of MD runs: survival curves and t_inst summaries (paper 003 §3)."""

from __future__ import annotations

import numpy as np


def survival_curve(
    t_inst_fs: np.ndarray, stable: np.ndarray, total_fs: float, n_points: int = 200
) -> tuple[np.ndarray, np.ndarray]:
    """Fraction of replicas still stable at each time; a stable replica never drops out.

    Returns ``(times_fs (T,), fraction (T,))`` on ``n_points`` even times in [0, total].
    """
    times = np.linspace(0.0, total_fs, n_points)
    t = np.where(np.asarray(stable, bool), np.inf, np.asarray(t_inst_fs, float))
    if len(t) == 0:
        return times, np.ones_like(times)
    return times, (t[None, :] > times[:, None]).mean(axis=1)


def t_inst_summary(t_inst_fs: np.ndarray, stable: np.ndarray, total_fs: float) -> dict:
    """Mean/median/min of t_inst (stable replicas count as the run length) and the
    fraction that stayed stable."""
    t = np.where(np.asarray(stable, bool), total_fs, np.asarray(t_inst_fs, float))
    return {
        "t_inst_mean_fs": float(np.mean(t)),
        "t_inst_median_fs": float(np.median(t)),
        "t_inst_min_fs": float(np.min(t)),
        "fraction_stable": float(np.mean(stable)),
        "n_replicas": int(len(t)),
    }


def survival_figure(curves: dict[str, tuple[np.ndarray, np.ndarray]]):
    """Survival curves of several models (label -> (times_fs, fraction)), time in ps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.6))
    for label, (times, frac) in curves.items():
        ax.step(times / 1000.0, frac, where="post", label=label)
    ax.set(xlabel="time (ps)", ylabel="fraction of replicas stable", ylim=(-0.02, 1.02))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig
