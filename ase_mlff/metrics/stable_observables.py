"""Observables of the stable parts of MD runs against the test frames, for the evaluation
report's stability section (papers 000, 002 and 003): per model, the Lindemann index,
the closest approach, temperature and energy drift; for a molecule h(r), the contact map,
RMSD and RMSF, the free-energy profiles of chosen torsions and the explored share of
the visited configurations; for a periodic system the element-pair RDFs and the
self-diffusion coefficients.

Each quantity is one of the metric modules (:mod:`~ase_mlff.metrics.trajectory`,
:mod:`~ase_mlff.metrics.fes`, :mod:`~ase_mlff.metrics.rdf`, ...); reading the study
itself is :func:`ase_mlff.agents.evaluation.stability_report`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from ase.data import chemical_symbols

from ase_mlff.data import Dataset
from ase_mlff.metrics import trajectory as tj


def replica_observables(runs: list, ref_pos: np.ndarray | None, periodic: bool) -> dict:
    """Observables of one model's stable parts (``runs``: its
    :class:`~ase_mlff.metrics.trajectory.Trajectory` list, not empty): the mean global
    Lindemann index, the closest approach, the mean temperature, the energy drift and, for
    a molecule with reference frames ``ref_pos``, h(r) MAE, the contact-map MAE and the
    mean final RMSD. Returns the numbers, plus ``"_h"`` (h(r)) and ``"_contact_map"``
    arrays for the figures."""
    from ase_mlff.metrics.distance_distribution import h_of_r, h_of_r_mae

    m: dict[str, Any] = {}
    pos = np.concatenate([r.positions_tnc for r in runs])
    m["lindemann_global"] = float(
        np.mean([tj.lindemann_index(r.positions_tnc, r.cell_33, r.pbc_3)[1] for r in runs])
    )
    m["min_distance_min_A"] = float(
        min(tj.min_distance_series(r.positions_tnc, r.cell_33, r.pbc_3).min() for r in runs)
    )
    m["temperature_mean_K"] = float(np.mean(np.concatenate([r.temperature_t for r in runs])))
    drift = [
        tj.energy_drift(r.time_fs_t, r.total_energy_t, r.n_atoms)["drift_eV_per_ps_per_atom"]
        for r in runs
        if len(r) > 2
    ]
    if drift:
        m["energy_drift_eV_per_ps_per_atom"] = float(np.mean(drift))
    if not periodic and ref_pos is not None:
        _, h_ref = h_of_r(ref_pos)
        _, m["_h"] = h_of_r(pos)
        m["h_r_mae"] = h_of_r_mae(m["_h"], h_ref)
        m["_contact_map"] = tj.contact_map(pos)
        m["contact_map_mae_A"] = tj.contact_map_mae(m["_contact_map"], tj.contact_map(ref_pos))
        m["rmsd_final_mean_A"] = float(
            np.mean([tj.rmsd_series(r.positions_tnc, r.positions_tnc[0])[-1] for r in runs])
        )
    return m


def free_energies(quads, ref_pos, by_model_traj, temperature, res, figs) -> dict:
    """F(φ) = −kT ln p(φ) of each torsion over the stable frames against the reference
    test frames, MAE_F (paper 003 Eqs. 5-7), the share of reference bins never visited,
    and the 2-D surface of the first two torsions."""
    from ase_mlff.metrics.fes import (
        dihedrals,
        fes2d_figure,
        fes_figure,
        fes_mae,
        fes_unvisited_fraction,
        free_energy_1d,
        free_energy_2d,
    )
    from ase_mlff.metrics.plots import _plt

    names, q = list(quads), np.array(list(quads.values()))
    bins = 36
    width = 2 * np.pi / bins
    ref_phi = dihedrals(ref_pos, q)
    phis = {
        n: dihedrals(np.concatenate([r.positions_tnc for r in runs]), q)
        for n, runs in by_model_traj.items()
        if runs
    }
    plt = _plt()
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 3.4), squeeze=False)
    out: dict[str, Any] = {"temperature_K": temperature, "bins": bins}
    for k, name in enumerate(names):
        x, f_ref = free_energy_1d(ref_phi[:, k], bins, temperature_K=temperature)
        curves = {"reference (test)": f_ref}
        for model, phi in phis.items():
            _, f = free_energy_1d(phi[:, k], bins, temperature_K=temperature)
            curves[model] = f
            res["models"][model][f"fes_mae_{name}_eV_rad"] = fes_mae(f, f_ref, width)
            res["models"][model][f"fes_unvisited_{name}"] = fes_unvisited_fraction(f, f_ref)
        fes_figure(x, curves, xlabel=f"{name} (rad)", title=f"F({name})", ax=axes[0, k])
    fig.tight_layout()
    figs["fes_1d.png"] = fig
    if len(names) >= 2:
        surfaces = {}
        x, y, surfaces["reference (test)"] = free_energy_2d(
            ref_phi[:, 0], ref_phi[:, 1], bins, temperature_K=temperature
        )
        for model, phi in phis.items():
            surfaces[model] = free_energy_2d(phi[:, 0], phi[:, 1], bins, temperature_K=temperature)[
                2
            ]
        figs["fes_2d.png"] = fes2d_figure(x, y, surfaces, f"{names[0]} (rad)", f"{names[1]} (rad)")
    out["dihedrals"] = {n: list(map(int, v)) for n, v in quads.items()}
    return out


def exploration_summary(
    clusters,
    model,
    pos: np.ndarray,
    template,
    *,
    device="cpu",
    dtype="float64",
    max_frames: int = 500,
) -> dict:
    """Explored/unexplored share of the visited frames (all of them) and the mean force
    norm of the model in each region (at most ``max_frames`` frames evaluated)."""
    from ase_mlff.metrics.clusters import exploration
    from ase_mlff.models.prediction import predict_frames

    ex = exploration(clusters, pos)
    out = {"explored_fraction": ex["explored_fraction"]}
    pick = np.linspace(0, len(pos) - 1, min(max_frames, len(pos))).astype(int)
    _, forces = predict_frames(model, template, pos[pick], dtype=dtype, device=device)
    exf = exploration(clusters, pos[pick], forces)
    out["mean_force_norm_explored"] = exf["mean_force_norm_explored"]
    out["mean_force_norm_unexplored"] = exf["mean_force_norm_unexplored"]
    return out


def periodic_observables(with_frames: dict, test: Dataset, res: dict) -> dict:
    """Element-pair RDFs against the test frames (paper 003 Appendix A) and self-diffusion
    of each element from the MSD over all windows of half the shortest stable run."""
    from ase_mlff.metrics.diffusion import diffusion_coefficient
    from ase_mlff.metrics.rdf import rdf_figure, rdf_mae, rdf_of_frames

    figs: dict[str, Any] = {}
    elements = sorted(set(test.numbers_n.tolist()))
    pairs = [(x, y) for k, x in enumerate(elements) for y in elements[k:]]
    cell = test.cell_s33[0]
    heights = np.abs(np.linalg.det(cell)) / np.linalg.norm(
        np.cross(cell[[1, 2, 0]], cell[[2, 0, 1]]), axis=1
    )
    r_max = float(min(6.0, 0.5 * heights.min()))
    r, g_ref = rdf_of_frames(test.to_atoms_list(with_labels=False), pairs, r_max)
    curves = {}
    for name, runs in with_frames.items():
        atoms = [x for tr in runs for x in tr.to_atoms()]
        _, g = rdf_of_frames(atoms, pairs, r_max)
        maes = rdf_mae(g, g_ref, r_max)
        for (x, y), v in zip(pairs, np.atleast_1d(maes)):
            res["models"][name][f"rdf_mae_{chemical_symbols[x]}{chemical_symbols[y]}"] = float(v)
        curves[name] = g
        for z in elements:
            sel = np.flatnonzero(runs[0].numbers_n == z)
            ds = []
            for tr in runs:
                if len(tr) < 4:
                    continue
                dt = float(np.median(np.diff(tr.time_fs_t)))
                window = dt * (len(tr) // 2)
                ds.append(
                    diffusion_coefficient(tr.positions_tnc, dt, window, tr.cell_33, atoms=sel)
                )
            if ds:  # Å²/fs -> cm²/s
                res["models"][name][f"diffusion_{chemical_symbols[z]}_cm2_s"] = 0.1 * float(
                    np.mean(ds)
                )
    panels = {
        f"{chemical_symbols[x]}-{chemical_symbols[y]}": {
            "reference (test)": g_ref[k],
            **{n: g[k] for n, g in curves.items()},
        }
        for k, (x, y) in enumerate(pairs)
    }
    figs["rdf.png"] = rdf_figure(r, panels, title="g(r) of the stable parts")
    return figs


def stability_markdown(st: dict) -> str:
    lines = [
        f"## Stability study ({st['total_fs'] / 1000:.2f} ps per replica)",
        "",
        "Force metrics beside stability, models sorted by force MAE (paper 003 Fig. 3):",
        "",
        st["table"],
        "Trajectory observables over the stable parts:",
        "",
    ]
    keys = sorted({k for m in st["models"].values() for k in m} - {"n_replicas"})
    lines += ["| quantity | " + " | ".join(st["models"]) + " |"]
    lines += ["|---" * (len(st["models"]) + 1) + "|"]
    for k in keys:
        cells = [
            f"{m[k]:.4g}" if isinstance(m.get(k), (int, float)) else "—"
            for m in st["models"].values()
        ]
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
