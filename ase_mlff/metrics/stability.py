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


#: force metrics the correlation table sets against stability (paper 002 Table I, Eqs. 1-4)
FORCE_METRICS = ("forces_mae", "forces_max_err", "fnm_mae", "fnm_max_err")


def force_vs_stability(models: dict[str, dict[str, float]]) -> dict:
    """Force metrics beside MD stability across models (paper 003 key observation 1).

    ``models`` maps a model name to a flat dict holding at least ``forces_mae`` and
    ``t_inst_mean_fs`` (any of :data:`FORCE_METRICS`, ``fraction_stable``, ``h_r_mae`` are
    used when present). Returns ``rows`` sorted by force MAE in descending order (the
    x-axis of paper 003 Fig. 3) and, per force metric, Spearman's rank correlation with
    the mean t_inst over the models (NaN with fewer than three models: a rank correlation
    of two points is ±1 by construction and says nothing).
    """
    from scipy.stats import spearmanr

    if not models:
        raise ValueError("no models to compare")
    for name, m in models.items():
        missing = {"forces_mae", "t_inst_mean_fs"} - set(m)
        if missing:
            raise ValueError(f"model {name!r} lacks {sorted(missing)}")
    rows = sorted(({"model": k, **v} for k, v in models.items()), key=lambda r: -r["forces_mae"])
    t = np.array([r["t_inst_mean_fs"] for r in rows], float)
    corr: dict[str, dict[str, float]] = {}
    for key in FORCE_METRICS:
        if not all(key in r for r in rows):
            continue
        x = np.array([r[key] for r in rows], float)
        if len(rows) < 3 or np.ptp(x) == 0 or np.ptp(t) == 0:
            corr[key] = {"spearman_rho": float("nan"), "p_value": float("nan")}
        else:
            res = spearmanr(x, t)
            corr[key] = {"spearman_rho": float(res.statistic), "p_value": float(res.pvalue)}
    return {"rows": rows, "correlation": corr}


def force_vs_stability_table(result: dict) -> str:
    """Markdown: models by descending force MAE beside their stability, then Spearman ρ."""
    rows = result["rows"]
    head = (
        "| model | F-MAE (meV/Å) | F max-err (meV/Å) | FNM-MAE (meV/Å/u) | stable | "
        "t_inst mean (fs) | h(r) MAE |\n|---|---|---|---|---|---|---|\n"
    )
    nan = float("nan")
    lines = []
    for r in rows:
        stable = (
            f"{round(r['fraction_stable'] * r['n_replicas'])}/{r['n_replicas']}"
            if "fraction_stable" in r and "n_replicas" in r
            else "—"
        )
        lines.append(
            f"| {r['model']} | {r['forces_mae'] * 1e3:.1f} | "
            f"{r.get('forces_max_err', nan) * 1e3:.1f} | {r.get('fnm_mae', nan) * 1e3:.2f} | "
            f"{stable} | {r['t_inst_mean_fs']:.0f} | {r.get('h_r_mae', nan):.3f} |"
        )
    corr = "\n".join(
        f"- {k} vs mean t_inst: Spearman ρ = {v['spearman_rho']:.2f} (p = {v['p_value']:.2g})"
        for k, v in result["correlation"].items()
    )
    return head + "\n".join(lines) + "\n\n" + corr + "\n"


def force_vs_stability_figure(result: dict, t_inst_by_model: dict | None = None):
    """Paper 003 Fig. 3: models on the x-axis sorted by force MAE (descending); panels of
    force MAE, mean t_inst (95 % confidence interval from the replicas when
    ``t_inst_by_model`` gives each model's per-replica times) and h(r) MAE if known."""
    from ase_mlff.metrics.plots import _plt

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


def t_inst_vs_epoch_figure(histories: dict[str, list[dict[str, float]]]):
    """Mean t_inst of the training-time stability probes against the epoch, beside the
    validation force MAE (paper 000 Fig. 2b: stability varies while the force error
    falls). ``histories``: model -> trainer history rows (those with a probe are used)."""
    from ase_mlff.metrics.plots import _plt

    plt = _plt()
    fig, (ax_t, ax_f) = plt.subplots(1, 2, figsize=(9, 3.4))
    for name, hist in histories.items():
        probed = [h for h in hist if "probe_t_inst_mean_fs" in h]
        (line,) = ax_t.plot(
            [h["epoch"] for h in probed],
            [h["probe_t_inst_mean_fs"] / 1000 for h in probed],
            marker="o",
            label=name,
        )
        ax_f.plot(
            [h["epoch"] for h in hist],
            [h["val_forces_mae"] * 1e3 for h in hist],
            color=line.get_color(),
            label=name,
        )
    ax_t.set(xlabel="epoch", ylabel="probe mean t_inst (ps)")
    ax_f.set(xlabel="epoch", ylabel="validation force MAE (meV/Å)", yscale="log")
    for a in (ax_t, ax_f):
        a.grid(alpha=0.3)
        a.legend(fontsize=7)
    fig.tight_layout()
    return fig
