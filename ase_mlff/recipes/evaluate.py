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
import logging
from pathlib import Path
from typing import Any

from ase_mlff.agents.evaluation import EvaluationOptions, evaluation_report
from ase_mlff.data.io import SHIPPED_DATASETS


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
    p.add_argument(
        "--latent-pool",
        default="atom",
        choices=["atom", "frame"],
        help="a latent sample per atom, or per frame (mean of its atoms)",
    )
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
    results, out, uri = evaluation_report(EvaluationOptions(**vars(a)))
    print((out / "summary.md").read_text())
    print(f"results in {out}; MLflow store: {uri}")
    return results


if __name__ == "__main__":
    from ase_mlff.recipes.cli import run_recipe

    run_recipe(main)
