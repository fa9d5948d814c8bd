"""Global and element-based force metrics of paper 002 (Wang et al., J. Chem. Phys. 159,
035101 (2023), "fine-grained force metrics").

With ΔF_iα^(n) = F̂_iα^(n) − F_iα^(n) the force error of component α of atom i in frame n,
N frames, N_a atoms in a frame and u_i the relative atomic mass of atom i:

    F_mae       = 1/N Σ_n 1/(3N_a) Σ_i Σ_α |ΔF_iα|          (Eq. 1)
    F_max-err   = 1/N Σ_n max_{i,α} |ΔF_iα|                  (Eq. 2)
    FNM_mae     = 1/N Σ_n 1/(3N_a) Σ_i Σ_α |ΔF_iα / u_i|    (Eq. 3)
    FNM_max-err = 1/N Σ_n max_{i,α} |ΔF_iα / u_i|            (Eq. 4)

The element-based metrics (Eqs. 10-13) are the same with i restricted to the atoms of
element S. The conformation-based ones (Eqs. 5-9) live in :mod:`ase_mlff.metrics.clusters`
and reuse :func:`per_frame_force_errors`.

Units: eV/Å for forces (FNM in eV/Å/u). Frames may hold different numbers of atoms; all
sums run on the flat (N_total, 3) arrays with ``np.add.reduceat`` / ``np.maximum.reduceat``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from ase.data import atomic_masses, chemical_symbols

#: keys of one set of force metrics, in display order
METRIC_KEYS = ("forces_mae", "forces_max_err", "fnm_mae", "fnm_max_err")
METRIC_LABELS = {
    "forces_mae": r"$F_\mathrm{mae}$",
    "forces_max_err": r"$F_\mathrm{max\text{-}err}$",
    "fnm_mae": r"$\mathrm{FNM}_\mathrm{mae}$",
    "fnm_max_err": r"$\mathrm{FNM}_\mathrm{max\text{-}err}$",
    "forces_rmse": r"$F_\mathrm{rmse}$",
    "rbp": "RBP",
}


def _prepare(
    pred_forces_nc: np.ndarray,
    ref_forces_nc: np.ndarray,
    numbers_n: np.ndarray,
    n_atoms_s: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Checked |ΔF| (N, 3), masses u (N,), n_atoms (S,) and frame starts (S,)."""
    pred = np.asarray(pred_forces_nc, dtype=np.float64)
    ref = np.asarray(ref_forces_nc, dtype=np.float64)
    z = np.asarray(numbers_n).reshape(-1)
    n_atoms = np.asarray(n_atoms_s).reshape(-1)
    if pred.ndim == 3:
        pred = pred.reshape(-1, 3)
    if ref.ndim == 3:
        ref = ref.reshape(-1, 3)
    if pred.ndim != 2 or pred.shape[1] != 3:
        raise ValueError(f"predicted forces must be (atoms, 3), got {np.shape(pred_forces_nc)}")
    if ref.shape != pred.shape:
        raise ValueError(
            f"predicted forces {np.shape(pred_forces_nc)} and reference forces "
            f"{np.shape(ref_forces_nc)} differ in shape"
        )
    if len(z) != len(pred):
        raise ValueError(f"{len(z)} atomic numbers for {len(pred)} force rows")
    if not np.issubdtype(n_atoms.dtype, np.integer):
        if not np.all(n_atoms == np.round(n_atoms)):
            raise ValueError("n_atoms_s must hold integers")
        n_atoms = n_atoms.astype(np.int64)
    if len(n_atoms) == 0:
        raise ValueError("no frames: n_atoms_s is empty")
    if np.any(n_atoms <= 0):
        raise ValueError("every frame must hold at least one atom (n_atoms_s > 0)")
    if int(n_atoms.sum()) != len(pred):
        raise ValueError(f"n_atoms_s sums to {int(n_atoms.sum())} but there are {len(pred)} atoms")
    if not np.issubdtype(z.dtype, np.integer) or z.min() < 1 or z.max() >= len(atomic_masses):
        raise ValueError("numbers_n must be atomic numbers (integers 1..118)")
    starts = np.concatenate([[0], np.cumsum(n_atoms)[:-1]])
    return np.abs(pred - ref), atomic_masses[z], n_atoms, starts


def per_frame_force_errors(
    pred_forces_nc: np.ndarray,
    ref_forces_nc: np.ndarray,
    numbers_n: np.ndarray,
    n_atoms_s: np.ndarray,
) -> dict[str, np.ndarray]:
    """Per-frame force errors, each (S,): the summands of Eqs. 1-4.

    - ``mae_s``: 1/(3N_a) Σ_i Σ_α |ΔF_iα| (the F_mae^(n) of Eq. 9), eV/Å
    - ``max_err_s``: max_{i,α} |ΔF_iα| (component-wise, Eq. 2), eV/Å
    - ``fnm_mae_s``: 1/(3N_a) Σ_i Σ_α |ΔF_iα / u_i| (Eq. 3), eV/Å/u
    - ``fnm_max_err_s``: max_{i,α} |ΔF_iα / u_i| (Eq. 4), eV/Å/u
    - ``mse_s``: 1/(3N_a) Σ_i Σ_α ΔF_iα² (for the RMSE), (eV/Å)²

    Forces are flat (N_total, 3) arrays of all frames concatenated (or (S, N_a, 3) when all
    frames have the same size); ``n_atoms_s`` gives each frame's atom count.
    """
    abs_nc, u_n, n_atoms, starts = _prepare(pred_forces_nc, ref_forces_nc, numbers_n, n_atoms_s)
    fnm_nc = abs_nc / u_n[:, None]
    three_n = 3.0 * n_atoms
    return {
        "mae_s": np.add.reduceat(abs_nc.sum(axis=1), starts) / three_n,
        "max_err_s": np.maximum.reduceat(abs_nc.max(axis=1), starts),
        "fnm_mae_s": np.add.reduceat(fnm_nc.sum(axis=1), starts) / three_n,
        "fnm_max_err_s": np.maximum.reduceat(fnm_nc.max(axis=1), starts),
        "mse_s": np.add.reduceat((abs_nc**2).sum(axis=1), starts) / three_n,
    }


def metrics_from_per_frame(per_frame: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Frame averages of :func:`per_frame_force_errors` output: Eqs. 1-4 (and the RMSE).

    Averaging a subset of the frames gives the cluster metrics, Eqs. 5-8.
    """
    return {
        "forces_mae": float(np.mean(per_frame["mae_s"])),
        "forces_rmse": float(np.sqrt(np.mean(per_frame["mse_s"]))),
        "forces_max_err": float(np.mean(per_frame["max_err_s"])),
        "fnm_mae": float(np.mean(per_frame["fnm_mae_s"])),
        "fnm_max_err": float(np.mean(per_frame["fnm_max_err_s"])),
    }


def force_metrics(
    pred_forces_nc: np.ndarray,
    ref_forces_nc: np.ndarray,
    numbers_n: np.ndarray,
    n_atoms_s: np.ndarray,
) -> dict[str, float]:
    """Global force metrics of paper 002 (eV/Å; FNM in eV/Å/u).

    - ``forces_mae``: Eq. 1, the mean over frames of each frame's mean |ΔF_iα| (equal to the
      plain mean over all components when all frames have the same number of atoms)
    - ``forces_rmse``: sqrt(1/N Σ_n 1/(3N_a) Σ_i Σ_α ΔF_iα²) (not in the paper; weighted like
      Eq. 1, the usual component RMSE for frames of equal size)
    - ``forces_max_err``: Eq. 2, the mean over frames of max over atoms *and components*
    - ``fnm_mae``, ``fnm_max_err``: Eqs. 3-4, errors divided by u_i = ``atomic_masses[Z_i]``
    """
    return metrics_from_per_frame(
        per_frame_force_errors(pred_forces_nc, ref_forces_nc, numbers_n, n_atoms_s)
    )


def element_metrics(
    pred_forces_nc: np.ndarray,
    ref_forces_nc: np.ndarray,
    numbers_n: np.ndarray,
    n_atoms_s: np.ndarray,
) -> dict[str, dict[str, float]]:
    """Element-based force metrics, Eqs. 10-13, keyed by chemical symbol (sorted by Z).

    For element S and frame n, with the N_a^(S) atoms of S in that frame:
    ``forces_mae`` = 1/(3N_a^(S)) Σ_{i∈S} Σ_α |ΔF_iα| (Eq. 10), ``forces_max_err`` =
    max_{i∈S, α} |ΔF_iα| (Eq. 11), ``fnm_mae`` / ``fnm_max_err`` the same divided by u_i
    (Eqs. 12-13); each averaged over the frames that contain S (all frames for one
    molecule). Also ``n_atoms`` (atoms of S over all frames) and ``n_frames``.
    """
    abs_nc, u_n, n_atoms, _ = _prepare(pred_forces_nc, ref_forces_nc, numbers_n, n_atoms_s)
    z_n = np.asarray(numbers_n).reshape(-1)
    frame_n = np.repeat(np.arange(len(n_atoms)), n_atoms)
    sum_n = abs_nc.sum(axis=1)
    max_n = abs_nc.max(axis=1)
    out: dict[str, dict[str, float]] = {}
    for z in np.unique(z_n):  # a handful of elements; the work per element is vectorised
        sel = z_n == z
        frames, first, count = np.unique(frame_n[sel], return_index=True, return_counts=True)
        u = float(atomic_masses[z])
        mae_f = np.add.reduceat(sum_n[sel], first) / (3.0 * count)
        max_f = np.maximum.reduceat(max_n[sel], first)
        out[chemical_symbols[z]] = {
            "forces_mae": float(mae_f.mean()),
            "forces_max_err": float(max_f.mean()),
            "fnm_mae": float(mae_f.mean() / u),
            "fnm_max_err": float(max_f.mean() / u),
            "n_atoms": int(sel.sum()),
            "n_frames": len(frames),
        }
    return out


def element_figure(element_results: Mapping, title: str = ""):
    """Grouped bars per element like paper 002's Table II / Fig. 8a-b.

    Left: F_mae (solid) and F_max-err (hatched) in meV/Å; right (log scale): FNM_mae and
    FNM_max-err in meV/Å/u. ``element_results`` is the output of :func:`element_metrics` or a
    dict model name -> that output (models side by side, one colour each).
    """
    from ase_mlff.metrics.plots import _plt

    plt = _plt()
    if not element_results:
        raise ValueError("no element results to plot")
    first = next(iter(element_results.values()))
    single = isinstance(first, Mapping) and "forces_mae" in first
    by_model = {"": element_results} if single else dict(element_results)
    symbols: list[str] = []
    for res in by_model.values():
        symbols += [s for s in res if s not in symbols]
    z_of = {s: chemical_symbols.index(s) for s in symbols}
    symbols.sort(key=z_of.__getitem__)
    models = list(by_model)
    n_bars = 2 * len(models)
    width = 0.8 / n_bars
    x = np.arange(len(symbols))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    width_in = min(16.0, max(7.0, 2.0 + 1.2 * len(symbols) * max(1.0, len(models) / 1.5)))
    fig, axes = plt.subplots(1, 2, figsize=(width_in, 3.6))
    panels = [
        (("forces_mae", "forces_max_err"), "force error (meV/Å)", False),
        (("fnm_mae", "fnm_max_err"), "force error / mass (meV/Å/u)", True),
    ]
    for ax, (keys, ylabel, log) in zip(axes, panels):
        for m, model in enumerate(models):
            for j, key in enumerate(keys):
                vals = [
                    by_model[model][s][key] * 1e3 if s in by_model[model] else np.nan
                    for s in symbols
                ]
                pos = x - 0.4 + width * (2 * m + j + 0.5)
                label = f"{model} {METRIC_LABELS[key]}".strip()
                ax.bar(
                    pos,
                    vals,
                    width,
                    color=colours[m % len(colours)],
                    alpha=1.0 if j == 0 else 0.55,
                    hatch=None if j == 0 else "//",
                    edgecolor="k",
                    linewidth=0.4,
                    label=label,
                )
        ax.set_xticks(x, symbols)
        ax.set_ylabel(ylabel)
        if log:  # H's FNM is ~12x C's
            ax.set_yscale("log")
        ax.grid(alpha=0.3, axis="y", which="both")
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
