"""Figures of training and stability results (matplotlib, Agg backend; callers save or log
them). The numbers they draw come from :mod:`ase_mlff.metrics.stability` and the trainer's
history; nothing is computed here that is not also in those results."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ase_mlff.metrics.stability import KaplanMeier


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


def _curve_steps(curve) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    if isinstance(curve, KaplanMeier):
        return curve.steps()
    if len(curve) == 4:
        return tuple(np.asarray(c, float) for c in curve)
    times, frac = curve
    return np.asarray(times, float), np.asarray(frac, float), None, None


def survival_figure(curves: Mapping[str, Any]):
    """Survival curves of several models, time in ps, as steps. ``curves``: label ->
    :class:`KaplanMeier` (drawn with its confidence band), ``(times_fs, S, lower, upper)``
    (band too) or ``(times_fs, fraction)`` (curve only)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for label, curve in curves.items():
        times, frac, lo, hi = _curve_steps(curve)
        (line,) = ax.step(times / 1000.0, frac, where="post", label=label)
        if lo is not None:
            ax.fill_between(
                times / 1000.0, lo, hi, step="post", alpha=0.2, color=line.get_color(), lw=0
            )
    ax.set(xlabel="time (ps)", ylabel="fraction of replicas stable", ylim=(-0.02, 1.02))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def force_vs_stability_figure(result: dict, t_inst_by_model: dict | None = None):
    """Paper 003 Fig. 3: models on the x-axis sorted by force MAE (descending); panels of
    force MAE, mean t_inst (95 % confidence interval from the replicas when
    ``t_inst_by_model`` gives each model's per-replica times) and h(r) MAE if known."""
    plt = _plt()
    rows = result["rows"]
    names = [r["model"] for r in rows]
    x = np.arange(len(rows))
    has_h = all("h_r_mae" in r for r in rows)
    fig, ax = plt.subplots(1, 3 if has_h else 2, figsize=(3.6 * (3 if has_h else 2), 3.6))
    ax[0].bar(x, [r["forces_mae"] * 1e3 for r in rows], color="tab:blue")
    ax[0].set_ylabel("force MAE (meV/Å)")
    t = np.array([r["t_inst_mean_fs"] / 1000 for r in rows])
    err = None
    if t_inst_by_model:
        err = [
            1.96 * np.std(t_inst_by_model[n], ddof=1) / np.sqrt(len(t_inst_by_model[n])) / 1000
            if len(t_inst_by_model.get(n, ())) > 1
            else 0.0
            for n in names
        ]
    ax[1].bar(x, t, yerr=err, color="tab:green", capsize=3)
    ax[1].set_ylabel("mean t_inst (ps)")
    if has_h:
        ax[2].bar(x, [r["h_r_mae"] for r in rows], color="tab:orange")
        ax[2].set_ylabel("h(r) MAE")
    for a in ax:
        a.set_xticks(x, names, rotation=30, ha="right")
        a.grid(alpha=0.3, axis="y")
    fig.suptitle("models sorted by force MAE (descending)")
    fig.tight_layout()
    return fig


def t_inst_vs_epoch_figure(histories: dict[str, Any]):
    """Mean t_inst of the training-time stability probes against the epoch, beside the
    validation force MAE (paper 000 Fig. 2b: stability varies while the force error
    falls). ``histories``: model -> trainer history rows (those with a probe are used),
    or model -> one history per training seed: then the points are the mean over the
    seeds with error bars of ± one sample standard deviation (paper 000's three runs)."""
    plt = _plt()
    fig, (ax_t, ax_f) = plt.subplots(1, 2, figsize=(9, 3.4))
    for name, hist in histories.items():
        runs = hist if hist and isinstance(hist[0], list) else [hist]
        t_by_epoch: dict[int, list[float]] = {}
        f_by_epoch: dict[int, list[float]] = {}
        for rows in runs:
            for h in rows:
                f_by_epoch.setdefault(int(h["epoch"]), []).append(h["val_forces_mae"] * 1e3)
                if "probe_t_inst_mean_fs" in h:
                    t_by_epoch.setdefault(int(h["epoch"]), []).append(
                        h["probe_t_inst_mean_fs"] / 1000
                    )
        ep = sorted(t_by_epoch)
        mean = [float(np.mean(t_by_epoch[e])) for e in ep]
        err = [
            float(np.std(t_by_epoch[e], ddof=1)) if len(t_by_epoch[e]) > 1 else 0.0 for e in ep
        ]
        line = ax_t.errorbar(ep, mean, yerr=err, marker="o", capsize=3, label=name)
        ef = sorted(f_by_epoch)
        ax_f.plot(
            ef,
            [float(np.mean(f_by_epoch[e])) for e in ef],
            color=line.lines[0].get_color(),
            label=name,
        )
    ax_t.set(xlabel="epoch", ylabel="probe mean t_inst (ps)")
    ax_f.set(xlabel="epoch", ylabel="validation force MAE (meV/Å)", yscale="log")
    for a in (ax_t, ax_f):
        a.grid(alpha=0.3)
        a.legend(fontsize=7)
    fig.tight_layout()
    return fig
