"""An evaluation report for one or several models: fine-grained force metrics on a test
split, model analyses and, given a stability study, trajectory observables and the
force-metrics-vs-stability table.

    python -m ase_mlff.recipes.evaluate --model aspirin-painn --data aspirin
    python -m ase_mlff.recipes.evaluate --model runs/a/scratch/best --model runs/a/ffpt/best \\
        --data aspirin --stability runs/a/stability
    python -m ase_mlff.recipes.evaluate --model m --data my_set.extxyz --train-data train.extxyz

What it computes, per model:

1. **Force metrics** on the test split (paper 002): energy MAE/RMSE per structure and per
   atom, F_mae, F_rmse, F_max-err (Eq. 2), FNM_mae and FNM_max-err (Eqs. 3-4); per element
   (Eqs. 10-13); per conformation cluster (Eqs. 5-8) with the ratio of bad points (Eq. 9),
   the K-means clusters fitted once on the training part of the data (the shipped
   trajectory split, or ``--train-data``) and saved as ``clusters.npz``.
2. **Model analyses** (molecules; paper 000 and 004): atom embeddings projected by t-SNE
   and UMAP with silhouette scores (classes: the datasets given by ``--latent-data``, else
   the elements); bond-length scans with F∥(r), dF∥/dr and its roughness, beside the
   reference method when it can run here (GFN2-xTB for GFN2-xTB data); the ΔF MAE over the
   ``--n-nearest`` test frames closest to ``--reference-frame``; force-angle distributions
   between each model and the reference forces (and between models).
3. **Trajectory observables** with ``--stability DIR`` (the output directory of
   ``recipes.stability`` or of ``agents.run_stability_study``), over the stable part of
   every replica: h(r) MAE (molecules) or element-pair RDF MAE and self-diffusion
   (periodic), RMSD and RMSF, contact map against the reference, free energy along
   torsions (``--dihedrals``; aspirin's carboxyl and ester torsions by default, paper 003
   Eqs. 5-7), Lindemann index, minimum-distance series, energy drift,
   explored/unexplored ratio of the visited conformations with the mean force norm in
   each region; and across models the table of force metrics vs t_inst with Spearman's ρ
   (paper 003 Fig. 3).

Output: ``--out`` holds ``summary.md``, ``metrics.csv`` (one row per model),
``results.json``, ``clusters.npz`` and ``figures/``. MLflow: a parent run with the
comparison and its figures, a child run per model with its metrics and figures.
"""

from __future__ import annotations

import argparse
import csv
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ase_mlff.data import Dataset, load_dataset
from ase_mlff.data.io import SHIPPED_DATASETS
from ase_mlff.data.splits import held_out_frames
from ase_mlff.metrics.report import flat_metrics
from ase_mlff.utils import write_json

log = logging.getLogger(__name__)


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


def analysis_options(a: argparse.Namespace):
    """The analysis flags as :class:`~ase_mlff.metrics.model_analyses.AnalysisOptions`."""
    from ase_mlff.metrics.model_analyses import AnalysisOptions

    return AnalysisOptions(
        data=a.data,
        latent_data=tuple(a.latent_data or ()),
        latent_frames=a.latent_frames,
        bonds=a.bonds,
        dihedrals=a.dihedrals,
        reference_frame=a.reference_frame,
        n_nearest=a.n_nearest,
        seed=a.seed,
        device=a.device,
        dtype=a.dtype,
    )


def check_inputs(a, specs: list[str], test: Dataset, molecule: bool) -> None:
    """Fail before any work: a study that holds none of the models, bonds or torsions that
    do not exist in the molecule (a ring bond cannot be scanned by rigid translation)."""
    from ase_mlff.agents.evaluation import study_rows
    from ase_mlff.agents.study import model_dirs
    from ase_mlff.metrics.bond_forces import bond_fragment
    from ase_mlff.metrics.model_analyses import fes_dihedrals, scan_bonds

    if a.stability is not None:
        study_rows(a.stability, specs, model_dirs(specs))
    if not molecule:
        return
    atoms = test.to_atoms(0, with_labels=False)
    n = len(atoms)
    if not a.no_analyses:
        for i, j in scan_bonds(a.bonds, a.data, atoms).values():
            bond_fragment(atoms, i, j)
    for name, quad in fes_dihedrals(a.dihedrals, a.data, atoms).items():
        if not all(0 <= k < n for k in quad):
            raise ValueError(f"torsion {name} names atoms outside 0..{n - 1}")


# ------------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", action="append", help="shipped name or checkpoint (repeatable)")
    p.add_argument(
        "--data", default="aspirin", help=f"shipped ({', '.join(SHIPPED_DATASETS)}) or a file"
    )
    p.add_argument("--train-data", default=None, help="fit the conformation clusters on this")
    p.add_argument("--max-test", type=int, default=None, help="subsample the test split")
    p.add_argument("--n-clusters", type=int, default=3, help="paper 002: 3 for aspirin")
    p.add_argument("--cluster-features", default="aligned", choices=["aligned", "distances"])
    p.add_argument("--latent-data", action="append", default=None, help="extra latent classes")
    p.add_argument("--latent-frames", type=int, default=40, help="frames per latent dataset")
    p.add_argument("--bonds", default=None, help="bonds to scan, e.g. '10-6,5-11' (0-based)")
    p.add_argument("--dihedrals", default=None, help="torsions for F(φ), e.g. '0-5-10-7'")
    p.add_argument("--reference-frame", type=int, default=21, help="ΔF MAE centre (paper 000)")
    p.add_argument("--n-nearest", type=int, default=100, help="ΔF MAE neighbourhood size")
    p.add_argument("--reference-calculator", default="auto", help="'auto', 'none' or 'tblite'")
    p.add_argument("--no-analyses", action="store_true", help="force metrics only")
    p.add_argument("--stability", type=Path, default=None, help="a stability study directory")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--experiment", default="evaluate")
    p.add_argument("--tracking-uri", default=None)
    return p


def main(argv: list[str] | None = None) -> dict[str, Any]:
    a = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from ase_mlff.metrics.clusters import ConformationClusters
    from ase_mlff.metrics.report import force_report
    from ase_mlff.tracking import Tracker

    specs = a.model or ["aspirin-painn"]
    if a.stability is not None and not (a.stability / "t_inst.csv").exists():
        raise FileNotFoundError(
            f"{a.stability} is not a stability study directory (no t_inst.csv); make one "
            "with python -m ase_mlff.recipes.stability --out DIR"
        )
    out = a.out or Path("runs") / f"evaluate-{time.strftime('%Y%m%d-%H%M%S')}"
    (out / "figures").mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    train, test = split_data(a.data, a.train_data, a.max_test, a.seed)
    molecule = test.same_molecule() and not is_periodic(test)
    dtype = getattr(torch, a.dtype)
    models = load_models(specs, dtype, a.device)
    check_inputs(a, specs, test, molecule)

    clusters = None
    if molecule and train.same_molecule():
        clusters = ConformationClusters(
            n_clusters=a.n_clusters, features=a.cluster_features, seed=a.seed
        ).fit(frames_of(train), train.numbers_n[: train.n_atoms_s[0]])
        clusters.save(out / "clusters.npz")

    tracker = Tracker(a.experiment, uri=a.tracking_uri)
    protocol = {
        "models": specs,
        "data": a.data,
        "n_train_for_clusters": len(train),
        "n_test": len(test),
        "n_clusters": a.n_clusters if clusters is not None else 0,
        "cluster_features": a.cluster_features,
        "stability": str(a.stability) if a.stability else None,
        "dtype": a.dtype,
    }
    results: dict[str, Any] = {"protocol": protocol, "models": {}}
    figures: dict[str, Any] = {}
    with tracker.run(
        f"evaluate-{time.strftime('%Y%m%d-%H%M%S')}", params=protocol, tags={"recipe": "evaluate"}
    ) as parent:
        preds, model_figs = {}, {}
        for name, model in models.items():
            res, preds[name], model_figs[name] = force_report(
                model, test, clusters, batch_size=a.batch_size, dtype=dtype, device=a.device
            )
            results["models"][name] = res
        figures.update(comparison_figures(results, clusters, train, test))

        if not a.no_analyses:
            from ase_mlff.agents.evaluation import reference_calculator
            from ase_mlff.metrics.model_analyses import model_analyses

            reference = reference_calculator(a.reference_calculator, test)
            ana, ana_figs, per_model_figs = model_analyses(
                models, test, preds, analysis_options(a), molecule, reference=reference
            )
            results["analyses"] = ana
            for name, sc in ana.pop("scalars").items():
                results["models"][name].setdefault("scalars", {}).update(sc)
            figures.update(ana_figs)
            for name, f in per_model_figs.items():
                model_figs[name].update(f)

        if a.stability is not None:
            from ase_mlff.agents.evaluation import stability_report

            forces = {n: r["global"] for n, r in results["models"].items()}
            opts = analysis_options(a)
            st, st_figs = stability_report(a.stability, specs, models, test, clusters, opts, forces)
            results["stability"] = st
            figures.update(st_figs)

        results["total_minutes"] = (time.perf_counter() - t_start) / 60
        write_outputs(out, results, figures, models, model_figs, tracker, parent)
    print((out / "summary.md").read_text())
    print(f"results in {out}; MLflow store: {tracker.uri}")
    return results


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


if __name__ == "__main__":
    main()
