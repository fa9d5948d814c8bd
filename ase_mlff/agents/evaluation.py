"""The evaluation report's parts that read a stability study or build a reference method:
which rows of a study belong to which model, the observables of each model's stable
parts against the test frames and the force-metrics-vs-stability comparison (paper 003,
Fig. 3). The numbers themselves come from :mod:`ase_mlff.metrics.stable_observables` and
:mod:`ase_mlff.metrics.stability`; the study from :func:`ase_mlff.agents.study.load_study_result`.

    from ase_mlff.agents.evaluation import stability_report
    res, figs = stability_report("runs/study", ["aspirin-painn"], models, test, None, opts, forces)
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from ase_mlff.data import Dataset
from ase_mlff.metrics.model_analyses import AnalysisOptions, fes_dihedrals, positions_by_frame

log = logging.getLogger(__name__)


def reference_calculator(choice: str, test: Dataset) -> tuple[str | None, Any]:
    """The reference method for the scans: ``tblite`` (GFN2-xTB) when asked, or with
    ``auto`` when the data were labelled by GFN2-xTB; None otherwise."""
    if choice == "none":
        return None, None
    method = str(test.provenance.get("method", ""))
    if choice == "tblite" or (choice == "auto" and method.upper().startswith("GFN2")):
        from ase_mlff.agents.specs import make_calculator

        return "GFN2-xTB", make_calculator({"name": "tblite"})
    if choice not in ("auto", "tblite"):
        raise ValueError(f"--reference-calculator must be auto, none or tblite, got {choice!r}")
    return None, None


def same_model(a: str, b: str) -> bool:
    """The same checkpoint under two spellings (a shipped name, relative or absolute
    paths); a study row whose checkpoint no longer exists matches only by its string."""
    from ase_mlff.calculators.mlff import resolve_model_path
    from ase_mlff.models.io import CheckpointError

    if a == b:
        return True
    try:
        return resolve_model_path(a).resolve() == resolve_model_path(b).resolve()
    except CheckpointError:
        return False


def study_rows(stability_dir: Path, specs: list[str], names: dict[str, str]) -> dict:
    """``{model name: {"rows": [...], "dir": model directory name}}`` from ``t_inst.csv``."""
    from ase_mlff.agents.study import read_t_inst

    rows = read_t_inst(stability_dir)
    found = {}
    for spec in specs:
        mine = [r for r in rows if same_model(spec, r["model"])]
        if not mine:
            log.warning("model %s is not in the study %s", spec, stability_dir)
            continue
        found[names[spec]] = {"rows": mine, "dir": Path(mine[0]["traj_dir"]).parent.name}
    if not found:
        raise ValueError(f"none of the models {specs} is in the study {stability_dir}")
    return found


def stability_report(
    stability_dir: Path,
    specs: list[str],
    models: dict,
    test: Dataset,
    clusters,
    opts: AnalysisOptions,
    forces: dict[str, dict[str, float]],
) -> tuple[dict, dict]:
    """Trajectory observables over the stable part of every replica and the force metrics
    vs t_inst comparison (paper 003 Fig. 3); ``forces`` maps model name -> its global test
    force metrics, ``clusters`` the conformation clusters of the training set (or None)."""
    from ase_mlff.agents.study import load_study_result, model_dirs
    from ase_mlff.metrics import trajectory as tj
    from ase_mlff.metrics.plots import force_vs_stability_figure, survival_figure
    from ase_mlff.metrics.stability import force_vs_stability, force_vs_stability_table
    from ase_mlff.metrics.stable_observables import replica_observables

    summary = json.loads((Path(stability_dir) / "summary.json").read_text())
    study = study_rows(stability_dir, specs, model_dirs(specs))
    result = load_study_result(stability_dir)
    total_fs = result.total_fs
    trajs = tj.load_study(stability_dir, models=[s["dir"] for s in study.values()])
    periodic = bool(np.any(test.pbc_s3))
    ref_pos = positions_by_frame(test) if test.same_molecule() and not periodic else None
    res: dict[str, Any] = {"total_fs": total_fs, "models": {}}
    figs: dict[str, Any] = {}
    curves, t_by_model, by_model_traj, arrays = {}, {}, {}, {}
    for name, info in study.items():
        rows = info["rows"]
        t = np.array([r["t_inst_fs"] for r in rows], float)
        stable = np.array([r["stable"] for r in rows], bool)
        m: dict[str, Any] = dict(result.summaries[rows[0]["model"]])
        curves[name] = result.km[rows[0]["model"]]
        t_by_model[name] = np.where(stable, total_fs, t)
        runs = by_model_traj[name] = trajs.get(info["dir"], [])
        m["stable_frames"] = int(sum(len(r) for r in runs))
        if runs:
            obs = replica_observables(runs, ref_pos, periodic)
            arrays[name] = {k: obs.pop(k) for k in ("_h", "_contact_map") if k in obs}
            m.update(obs)
            if clusters is not None:
                m.update(_exploration(clusters, models[name], runs, test, opts))
        res["models"][name] = m
    figs["survival.png"] = survival_figure(curves)
    with_frames = {n: r for n, r in by_model_traj.items() if r}
    if ref_pos is not None:
        temperature = float(summary.get("md", {}).get("temperature_K", 300.0))
        figs.update(_molecule_figures(ref_pos, with_frames, arrays, clusters))
        quads = fes_dihedrals(opts.dihedrals, opts.data, test.to_atoms(0, with_labels=False))
        if quads:
            from ase_mlff.metrics.stable_observables import free_energies

            res["fes"] = free_energies(quads, ref_pos, by_model_traj, temperature, res, figs)
    else:
        from ase_mlff.metrics.stable_observables import periodic_observables

        figs.update(periodic_observables(with_frames, test, res))
    if with_frames:
        # RMSD to one structure for all replicas: the clusters' mean training structure
        reference = clusters.reference_ if clusters is not None else None
        figs["md_observables.png"] = tj.observables_figure(with_frames, reference_nc=reference)
    comp = force_vs_stability({n: {**forces[n], **res["models"][n]} for n in res["models"]})
    res["correlation"] = comp["correlation"]
    res["table"] = force_vs_stability_table(comp)
    figs["force_vs_stability.png"] = force_vs_stability_figure(comp, t_by_model)
    return res, figs


def _exploration(clusters, model, runs: list, test: Dataset, opts: AnalysisOptions) -> dict:
    from ase_mlff.metrics.stable_observables import exploration_summary

    pos = np.concatenate([r.positions_tnc for r in runs])
    template = test.to_atoms(0, with_labels=False)
    return exploration_summary(clusters, model, pos, template, device=opts.device, dtype=opts.dtype)


def _molecule_figures(ref_pos: np.ndarray, with_frames: dict, arrays: dict, clusters) -> dict:
    """h(r), contact maps, RMSF and the visited clusters of a molecule's stable parts."""
    from ase_mlff.metrics import trajectory as tj
    from ase_mlff.metrics.distance_distribution import h_of_r, h_of_r_figure

    figs: dict[str, Any] = {}
    r_grid, h_ref = h_of_r(ref_pos)
    ref_map = tj.contact_map(ref_pos)
    h_curves = {"reference (test)": h_ref}
    for name, arr in arrays.items():
        h_curves[name] = arr["_h"]
        figs[f"contact_map_{name}.png"] = tj.contact_map_figure(
            arr["_contact_map"], ref_map, title=f"{name} (lower) vs reference (upper)"
        )
    figs["h_r.png"] = h_of_r_figure(r_grid, h_curves, "h(r) of the stable parts")
    rmsf = {
        n: np.mean([tj.rmsf(r.positions_tnc) for r in runs], axis=0)
        for n, runs in with_frames.items()
    }
    if rmsf:
        figs["rmsf.png"] = tj.rmsf_figure(rmsf)
    if clusters is not None and with_frames:
        from ase_mlff.metrics.clusters import clusters_figure

        visited = {
            n: np.concatenate([r.positions_tnc for r in runs])[::5]
            for n, runs in with_frames.items()
        }
        figs["clusters_md.png"] = clusters_figure(clusters, ref_pos, other=visited)
    return figs
