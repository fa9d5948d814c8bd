"""Physics-informed pre-training with a learnable EAM, on silica (paper 004).

    python -m ase_mlff.recipes.eam_pretraining --profile quick
    python -m ase_mlff.recipes.eam_pretraining --profile paper
    python -m ase_mlff.recipes.eam_pretraining --data my_silica.extxyz --n-test 300

Data: the shipped periodic silica set (GFN1-xTB energies, forces and stress; made by
:mod:`ase_mlff.recipes.make_silica_reference`) with its held-out test blocks, or any file
the readers take (extxyz with stress, e.g. the GAP-22 silica set the paper uses), split at
random. Paper 004's stress test: only ``--fraction`` (10 %) of the training pool is used,
for the EAM fit as well as for the MLIPs.

Variants, each an MLflow child run under one parent run:

- ``eam``: the EAM of Eqs. 1-3 fitted alone (AdamW, MAE of energy, forces and stress);
- ``baseline``: the MLIP trained from scratch on the quantum data;
- ``sam``: the same with sharpness-aware minimisation (paper 004's second baseline);
- ``eam_pretrained``: the training frames perturbed ``n_aug`` times (Algorithm 1, Table A.1
  silica/TorchMD-NET row: 5 rounds, 4 pulled pairs and 5 displaced sites, strengths
  [1.0, 0.0) Å), labelled by the fitted EAM (energy, forces, stress), the MLIP pre-trained
  on them and fine-tuned on the quantum data (:func:`ase_mlff.training.stage.run_stage`);
- ``hybrid``: E = E_MLIP + E_EAM (appendix B), the fitted EAM and a fresh MLIP trained
  jointly on the quantum data.

The MLIP variants train side by side in Ray tasks (:func:`ase_mlff.agents.training.
train_variants_parallel`). Evaluation:

- **Table 1**: MD of every MLIP variant from ``--starts`` test structures (100 in the paper)
  for ``--md-steps`` steps (5,000) of 2 fs at 2,000 K, NVT Langevin and NPT Berendsen, all
  replicas of a run in one batched engine; a trajectory is stopped as soon as two atoms
  come closer than half their initial minimum distance (atom overlap); the Lindemann
  criterion (local q_i > 0.25 or global > 0.2) is judged over the whole run, as the paper's
  temporal average; non-finite values, forces > 100 eV/Å or T > 10⁵ K stop a run as
  "other". The table counts the trajectories flagged by each criterion.
- **Table 2**: energy (meV/atom), force (meV/Å) and stress (GPa) MAE on the test set.
- **RDFs** (Si–O, O–O, Si–Si) of NVT runs from the four relaxed polymorphs against the
  reference GFN1-xTB NVT MD at 2,000 K from the same cells, with their MAE.
- **Force angles** (Fig. B.1): hybrid EAM part vs MLIP part; fitted EAM vs the fine-tuned
  (and the baseline) MLIP, atom by atom on the test set.
- Figures: the fitted EAM's decomposition (Fig. 2), minimum-distance histograms of the
  quantum and the pre-training data (Fig. 6b), learning curves, unphysical counts, RDFs.

This module is the command line and the profiles; the study is
:func:`ase_mlff.agents.eam_pretraining.eam_pretraining_study`.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from ase_mlff.agents.eam_pretraining import (
    MD_PROTOCOLS,
    VARIANTS,
    StudyOptions,
    eam_pretraining_study,
)

__all__ = ["PROFILES", "VARIANTS", "main"]

PROFILES: dict[str, dict[str, Any]] = {
    "quick": {
        "fraction": 0.1,
        "n_val": 30,
        "model": {"name": "painn", "hidden": 32, "n_interactions": 2, "cutoff": 5.0},
        "eam": {"name": "eam", "cutoff": 6.0, "n_density_terms": 2},
        "eam_train": {
            "epochs": 400,
            "batch_size": 16,
            "lr": 0.1,
            "lr_patience": 20,
            "early_stopping_patience": 60,
            "max_minutes": 3.0,
        },
        "train": {"epochs": 400, "batch_size": 4, "lr": 2e-3, "max_minutes": 5.0},
        "pretrain": {"epochs": 100, "batch_size": 8, "lr": 2e-3, "max_minutes": 4.0},
        "finetune": {"epochs": 400, "batch_size": 4, "lr": 1e-3, "max_minutes": 5.0},
        "starts": 24,
        "md_steps": 1000,
        "record_every": 10,
        "md_dtype": "float32",
    },
    "paper": {
        "fraction": 0.1,
        "n_val": 30,
        "model": {"name": "painn", "hidden": 128, "n_interactions": 3, "cutoff": 5.0},
        "eam": {"name": "eam", "cutoff": 6.0, "n_density_terms": 2},
        "eam_train": {
            "epochs": 1000,
            "batch_size": 16,
            "lr": 0.1,
            "lr_patience": 20,
            "early_stopping_patience": 100,
        },
        "train": {"epochs": 200, "batch_size": 4, "lr": 1e-3, "lr_patience": 20},
        "pretrain": {"epochs": 50, "batch_size": 8, "lr": 1e-3, "lr_patience": 10},
        "finetune": {"epochs": 200, "batch_size": 4, "lr": 5e-4, "lr_patience": 20},
        "starts": 100,
        "md_steps": 5000,
        "record_every": 20,
        "md_dtype": "float32",
    },
}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--profile", default="quick", choices=sorted(PROFILES))
    p.add_argument("--data", default="silica", help="shipped name or a file with stress labels")
    p.add_argument("--fraction", type=float, default=None, help="share of the training pool")
    p.add_argument("--n-test", type=int, default=None, help="test frames (files only)")
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset")
    p.add_argument("--starts", type=int, default=None, help="MD replicas from test structures")
    p.add_argument("--md-steps", type=int, default=None)
    p.add_argument("--ensembles", default="NVT,NPT")
    p.add_argument(
        "--minutes", type=float, default=None, help="budget of each training stage (EAM too)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, default=Path("runs") / "eam_pretraining")
    p.add_argument("--experiment", default="eam_pretraining")
    p.add_argument("--tracking-uri", default=None)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    variants = [v for v in a.variants.split(",") if v]
    unknown = set(variants) - set(VARIANTS)
    ensembles = [e for e in a.ensembles.split(",") if e]
    if unknown or not variants:
        raise SystemExit(f"--variants: unknown {sorted(unknown)}; choose from {VARIANTS}")
    if set(ensembles) - set(MD_PROTOCOLS):
        raise SystemExit(f"--ensembles: choose from {sorted(MD_PROTOCOLS)}")
    opts = StudyOptions(**{**vars(a), "variants": variants, "ensembles": ensembles})
    outcome = eam_pretraining_study(PROFILES[a.profile], opts)
    print(outcome.table)
    minutes = outcome.results["total_minutes"]
    print(f"results in {outcome.out}; {minutes:.1f} min; MLflow store: {outcome.tracking_uri}")
    return outcome.results


if __name__ == "__main__":
    from ase_mlff.recipes.cli import run_recipe

    run_recipe(main)
