"""The evaluation report (``python -m ase_mlff.recipes.evaluate``, whose module doc lists
what it computes): fine-grained force metrics of every model on a test split, the model
analyses and, given a stability study, which rows of the study belong to which model, the
observables of each model's stable parts against the test frames and the
force-metrics-vs-stability comparison (paper 003, Fig. 3). The numbers come from
:mod:`ase_mlff.metrics.report`, :mod:`ase_mlff.metrics.model_analyses`,
:mod:`ase_mlff.metrics.stable_observables` and :mod:`ase_mlff.metrics.stability`; the
study from :func:`ase_mlff.agents.study.load_study_result`.

    from ase_mlff.agents.evaluation import EvaluationOptions, evaluation_report
    results, out, mlflow_uri = evaluation_report(EvaluationOptions(model=["aspirin-painn"]))
"""

from __future__ import annotations

import csv
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ase_mlff.data import Dataset, load_dataset
from ase_mlff.data.splits import held_out_frames
from ase_mlff.metrics.model_analyses import AnalysisOptions, fes_dihedrals, positions_by_frame
from ase_mlff.metrics.report import flat_metrics
from ase_mlff.utils import write_json

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


@dataclass(frozen=True)
class EvaluationOptions:
    """The evaluation report's choices (the ``evaluate`` recipe's flags of the same names;
    see its module doc for what each analysis computes)."""

    model: tuple[str, ...] | list[str] | None = None
    data: str = "aspirin"
    train_data: str | None = None
    max_test: int | None = None
    n_clusters: int = 3
    cluster_features: str = "aligned"
    latent_data: tuple[str, ...] | list[str] | None = None
    latent_frames: int = 40
    latent_pool: str = "atom"
    bonds: str | None = None
    dihedrals: str | None = None
    reference_frame: int = 21
    n_nearest: int = 100
    reference_calculator: str = "auto"
    no_analyses: bool = False
    stability: Path | None = None
    seed: int = 0
    batch_size: int = 64
    device: str = "cpu"
    dtype: str = "float64"
    out: Path | None = None
    experiment: str = "evaluate"
    tracking_uri: str | None = None

    def analysis(self) -> AnalysisOptions:
        """The options of :func:`~ase_mlff.metrics.model_analyses.model_analyses`."""
        return AnalysisOptions(
            data=self.data,
            latent_data=tuple(self.latent_data or ()),
            latent_frames=self.latent_frames,
            latent_pool=self.latent_pool,
            bonds=self.bonds,
            dihedrals=self.dihedrals,
            reference_frame=self.reference_frame,
            n_nearest=self.n_nearest,
            seed=self.seed,
            device=self.device,
            dtype=self.dtype,
        )


def evaluation_report(opts: EvaluationOptions) -> tuple[dict[str, Any], Path, str]:
    """Force metrics of every model on the test split, the model analyses and, with
    ``opts.stability``, the stability report, into ``opts.out`` and one MLflow parent run
    with a child run per model. Every input is checked before any work. Returns (results,
    output folder, MLflow store)."""
    from ase_mlff.metrics.report import force_report
    from ase_mlff.tracking import Tracker

    t_start = time.perf_counter()
    ev = _prepare(opts)
    tracker = Tracker(opts.experiment, uri=opts.tracking_uri)
    protocol = {
        "models": ev.specs,
        "data": opts.data,
        "n_train_for_clusters": len(ev.train),
        "n_test": len(ev.test),
        "n_clusters": opts.n_clusters if ev.clusters is not None else 0,
        "cluster_features": opts.cluster_features,
        "stability": str(opts.stability) if opts.stability else None,
        "dtype": opts.dtype,
    }
    results: dict[str, Any] = {"protocol": protocol, "models": {}}
    with tracker.run(
        f"evaluate-{time.strftime('%Y%m%d-%H%M%S')}", params=protocol, tags={"recipe": "evaluate"}
    ) as parent:
        preds, model_figs = {}, {}
        for name, model in ev.models.items():
            results["models"][name], preds[name], model_figs[name] = force_report(
                model,
                ev.test,
                ev.clusters,
                batch_size=opts.batch_size,
                dtype=getattr(torch, opts.dtype),
                device=opts.device,
            )
        figures = comparison_figures(results, ev.clusters, ev.train, ev.test)
        if not opts.no_analyses:
            figures.update(_analyses(opts, ev, preds, results, model_figs))
        if opts.stability is not None:
            forces = {n: r["global"] for n, r in results["models"].items()}
            st, st_figs = stability_report(
                opts.stability, ev.specs, ev.models, ev.test, ev.clusters, opts.analysis(), forces
            )
            results["stability"] = st
            figures.update(st_figs)
        results["total_minutes"] = (time.perf_counter() - t_start) / 60
        write_outputs(ev.out, results, figures, ev.models, model_figs, tracker, parent)
    return results, ev.out, tracker.uri


@dataclass
class _Evaluation:
    specs: list[str]
    out: Path
    train: Dataset
    test: Dataset
    molecule: bool
    models: dict[str, Any]
    clusters: Any


def _prepare(opts: EvaluationOptions) -> _Evaluation:
    """Data, models and the checks of every input; the conformation clusters of a
    molecule's training frames (saved as ``clusters.npz``)."""
    from ase_mlff.metrics.clusters import ConformationClusters

    specs = list(opts.model or []) or ["aspirin-painn"]
    if opts.stability is not None and not (Path(opts.stability) / "t_inst.csv").exists():
        raise FileNotFoundError(
            f"{opts.stability} is not a stability study directory (no t_inst.csv); make one "
            "with python -m ase_mlff.recipes.stability --out DIR"
        )
    out = opts.out or Path("runs") / f"evaluate-{time.strftime('%Y%m%d-%H%M%S')}"
    (out / "figures").mkdir(parents=True, exist_ok=True)
    train, test = split_data(opts.data, opts.train_data, opts.max_test, opts.seed)
    molecule = test.same_molecule() and not is_periodic(test)
    models = load_models(specs, getattr(torch, opts.dtype), opts.device)
    check_inputs(opts, specs, test, molecule)
    clusters = None
    if molecule and train.same_molecule():
        clusters = ConformationClusters(
            n_clusters=opts.n_clusters, features=opts.cluster_features, seed=opts.seed
        ).fit(frames_of(train), train.numbers_n[: train.n_atoms_s[0]])
        clusters.save(out / "clusters.npz")
    return _Evaluation(specs, out, train, test, molecule, models, clusters)


def _analyses(
    opts: EvaluationOptions, ev: _Evaluation, preds: dict, results: dict, model_figs: dict
) -> dict[str, Any]:
    """The model analyses into ``results`` (their scalars beside each model's metrics) and
    ``model_figs``; returns the comparison figures."""
    from ase_mlff.metrics.model_analyses import model_analyses

    reference = reference_calculator(opts.reference_calculator, ev.test)
    ana, ana_figs, per_model_figs = model_analyses(
        ev.models, ev.test, preds, opts.analysis(), ev.molecule, reference=reference
    )
    results["analyses"] = ana
    for name, sc in ana.pop("scalars").items():
        results["models"][name].setdefault("scalars", {}).update(sc)
    for name, f in per_model_figs.items():
        model_figs[name].update(f)
    return ana_figs


# ------------------------------------------------------------------------------- data


def split_data(name: str, train_data: str | None, max_test: int | None, seed: int):
    """(train, test) datasets: the shipped trajectory split, or ``--train-data`` beside the
    evaluated set, or the evaluated set for both (clusters fitted on what is evaluated)."""
    ds = load_dataset(name)
    held_out = held_out_frames(name, ds)
    if train_data is not None:
        train, test = load_dataset(train_data), ds
    elif held_out is not None:
        train, test = ds[np.setdiff1d(np.arange(len(ds)), held_out)], ds[held_out]
    else:
        log.warning("no training split known for %s: clusters are fitted on the test set", name)
        train, test = ds, ds
    if max_test is not None and len(test) > max_test:
        keep = np.sort(np.random.default_rng(seed).choice(len(test), max_test, replace=False))
        test = test[keep]
    return train, test


def frames_of(ds: Dataset) -> np.ndarray:
    """(F, N, 3) positions of a single-molecule dataset."""
    return ds.positions_nc.reshape(len(ds), -1, 3)


def is_periodic(ds: Dataset) -> bool:
    return bool(np.any(ds.pbc_s3))


# ------------------------------------------------------------------------------- models


def load_models(specs: list[str], dtype: torch.dtype, device: str) -> dict[str, Any]:
    from ase_mlff.agents.study import model_dirs
    from ase_mlff.calculators.mlff import resolve_model_path
    from ase_mlff.models.io import load_model

    names = model_dirs(specs)
    models = {}
    for spec in specs:
        model, _ = load_model(resolve_model_path(spec), device=device, dtype=dtype)
        models[names[spec]] = model
    return models


def check_inputs(opts: EvaluationOptions, specs: list[str], test: Dataset, molecule: bool) -> None:
    """Fail before any work: a study that holds none of the models, bonds or torsions that
    do not exist in the molecule (a ring bond cannot be scanned by rigid translation)."""
    from ase_mlff.agents.evaluation import study_rows
    from ase_mlff.agents.study import model_dirs
    from ase_mlff.metrics.bond_forces import bond_fragment
    from ase_mlff.metrics.model_analyses import fes_dihedrals, scan_bonds

    if opts.stability is not None:
        study_rows(opts.stability, specs, model_dirs(specs))
    if opts.latent_pool not in ("atom", "frame"):
        raise ValueError(f"latent_pool must be 'atom' or 'frame', got {opts.latent_pool!r}")
    if opts.latent_pool == "frame" and not opts.latent_data and not opts.no_analyses:
        raise ValueError(
            "latent_pool='frame' needs latent_data: with one dataset the classes are the "
            "elements, which only per-atom samples have"
        )
    if not molecule:
        return
    atoms = test.to_atoms(0, with_labels=False)
    n = len(atoms)
    if not opts.no_analyses:
        for i, j in scan_bonds(opts.bonds, opts.data, atoms).values():
            bond_fragment(atoms, i, j)
    for name, quad in fes_dihedrals(opts.dihedrals, opts.data, atoms).items():
        if not all(0 <= k < n for k in quad):
            raise ValueError(f"torsion {name} names atoms outside 0..{n - 1}")


def comparison_figures(results, clusters, train, test) -> dict[str, Any]:
    from ase_mlff.metrics.clusters import cluster_bars_figure, clusters_figure, radar_figure
    from ase_mlff.metrics.forces import element_figure

    per_model = results["models"]
    figs = {"elements.png": element_figure({n: r["elements"] for n, r in per_model.items()})}
    if clusters is not None:
        figs["clusters_pca.png"] = clusters_figure(clusters, frames_of(train))
        by_model = {n: r["clusters"] for n, r in per_model.items()}
        figs["clusters_bars.png"] = cluster_bars_figure(by_model)
        if clusters.n_clusters >= 3:
            figs["clusters_radar_mae.png"] = radar_figure(by_model, key="forces_mae")
            figs["clusters_radar_max_err.png"] = radar_figure(by_model, key="forces_max_err")
    return figs


def summary_markdown(results: dict[str, Any]) -> str:
    lines = [
        "## Force metrics on the test split (paper 002)",
        "",
        "| model | E-MAE (meV/atom) | F-MAE (meV/Å) | F-RMSE (meV/Å) | F max-err (meV/Å) | "
        "FNM-MAE (meV/Å/u) | FNM max-err (meV/Å/u) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in results["models"].items():
        g = r["global"]
        lines.append(
            f"| {name} | {g['energy_mae_per_atom'] * 1e3:.2f} | {g['forces_mae'] * 1e3:.1f} | "
            f"{g['forces_rmse'] * 1e3:.1f} | {g['forces_max_err'] * 1e3:.1f} | "
            f"{g['fnm_mae'] * 1e3:.2f} | {g['fnm_max_err'] * 1e3:.2f} |"
        )
    lines += ["", "### Per element: F-MAE / FNM-MAE (meV/Å, meV/Å/u)", ""]
    elements = sorted({e for r in results["models"].values() for e in r["elements"]})
    lines += ["| model | " + " | ".join(elements) + " |", "|---" * (len(elements) + 1) + "|"]
    for name, r in results["models"].items():
        cells = [
            f"{r['elements'][e]['forces_mae'] * 1e3:.1f} / {r['elements'][e]['fnm_mae'] * 1e3:.2f}"
            for e in elements
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    first = next(iter(results["models"].values()))
    if "clusters" in first:
        k = len(first["clusters"]["clusters"])
        lines += ["", "### Per conformation cluster: F-MAE (meV/Å) and RBP", ""]
        lines += ["| model | " + " | ".join(f"cluster {c}" for c in range(k)) + " |"]
        lines += ["|---" * (k + 1) + "|"]
        for name, r in results["models"].items():
            cells = [
                f"{c['forces_mae'] * 1e3:.1f} / {c['rbp']:.2f}" for c in r["clusters"]["clusters"]
            ]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if "analyses" in results:
        from ase_mlff.metrics.model_analyses import analyses_markdown

        lines += ["", analyses_markdown(results["analyses"])]
    if "stability" in results:
        from ase_mlff.metrics.stable_observables import stability_markdown

        lines += ["", stability_markdown(results["stability"])]
    return "\n".join(lines) + "\n"


def write_outputs(out, results, figures, models, model_figs, tracker, parent) -> None:
    from ase_mlff.metrics.plots import _plt

    plt = _plt()
    fig_dir = out / "figures"
    for fname, fig in figures.items():
        fig.savefig(fig_dir / fname, dpi=120, bbox_inches="tight")
        parent.log_figure(fig, fname)
        plt.close(fig)
    rows = []
    for name in models:
        flat = flat_metrics(results["models"][name])
        if "stability" in results and name in results["stability"]["models"]:
            flat.update(
                {
                    f"md_{k}": v
                    for k, v in results["stability"]["models"][name].items()
                    if isinstance(v, (int, float))
                }
            )
        rows.append({"model": name, **flat})
        with tracker.run(name, params={"model": name}, parent=parent) as child:
            child.log_metrics(flat)
            for fname, fig in model_figs[name].items():
                fig.savefig(fig_dir / f"{name}_{fname}", dpi=120, bbox_inches="tight")
                child.log_figure(fig, fname)
                plt.close(fig)
        parent.log_metrics({f"{name}.{k}": v for k, v in flat.items() if k.startswith("test_")})
    keys = sorted({k for r in rows for k in r} - {"model"})
    with open(out / "metrics.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["model", *keys])
        w.writeheader()
        w.writerows(rows)
    (out / "summary.md").write_text(summary_markdown(results))
    write_json(out / "results.json", results, nan_as_null=False)
    for f in ("summary.md", "metrics.csv", "results.json"):
        parent.log_artifact(out / f)
    if (out / "clusters.npz").exists():
        parent.log_artifact(out / "clusters.npz")
    parent.log_metrics({"total_minutes": results["total_minutes"]})
