"""Force-field pre-training for aspirin (paper 001, §2.1 and Figs. 1c, 2): scratch vs
GAFF-pretrained + fine-tuned, on the shipped GFN2-xTB aspirin data.

    python -m ase_mlff.recipes.aspirin_ffpt --profile quick      # < 30 min on 2 CPU cores
    python -m ase_mlff.recipes.aspirin_ffpt --profile paper      # the paper's sizes (GPU)
    python -m ase_mlff.recipes.aspirin_ffpt --model schnet --n-pretrain 50000

Steps:

1. GAFF-2.11 (shipped parameters, MD17 atom order) relaxed from the GFN2-xTB minimum;
   ``--n-pretrain`` frames rattled around it (x + 0.2 Å·ε, no rescaling) and labelled in
   one batched pass by the torch GAFF; stored as ``pretrain_gaff.npz``.
2. Fine-tuning data: 950 train / 50 validation frames of the shipped GFN2-xTB set
   (trajectories 0-3); the test set is the whole held-out trajectory 4.
3. Variants, same architecture and the same fine-tuning budget (epochs and minutes):
   ``scratch`` (lr 1e-3) and ``ffpt`` (pre-train on GAFF at lr 1e-4, then fine-tune every
   weight at lr 1e-4 with the per-element reference energies refitted).
4. Each model: test force/energy errors, MD stability (``--replicas`` Langevin
   trajectories at 500 K, 0.5 fs, friction 2 ps⁻¹ as paper 001; stopped when a bond
   deviates by > 0.5 Å), h(r) MAE of the stable part against the reference trajectory,
   and 1-D scans: a methyl C–H bond stretched to dissociation and an H–C–H angle closed,
   against GFN2-xTB (tblite) and GAFF.

MLflow: one parent run (protocol, GAFF's own test error, comparison table and figures)
and a child run per variant (stage histories, test metrics, t_inst statistics, scans).
An interrupted recipe resumes: finished stages are not trained again.

This module is the command line and the profiles; the study is
:func:`ase_mlff.agents.aspirin_ffpt.aspirin_ffpt_study`.
"""

from __future__ import annotations

from typing import Any

from ase_mlff.agents.aspirin_ffpt import N_TRAIN, aspirin_ffpt_study
from ase_mlff.recipes._ff_pretraining import ffpt_main

PROFILES: dict[str, dict[str, Any]] = {
    "quick": {
        "n_pretrain": 20_000,
        "model": {"hidden": 48, "n_interactions": 3},
        "pretrain": {"epochs": 6, "batch_size": 32, "max_minutes": 5.0},
        "finetune": {"epochs": 60, "batch_size": 16, "max_minutes": 4.0},
        "md_steps": 2000,
        "replicas": 16,
    },
    "paper": {
        "n_pretrain": 100_000,
        "model": {"hidden": 128, "n_interactions": 3},
        "pretrain": {"epochs": 500, "batch_size": 32, "lr_patience": 50},
        "finetune": {"epochs": 2000, "batch_size": 8, "lr_patience": 50},
        "md_steps": 600_000,
        "replicas": 16,
    },
}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    return ffpt_main(argv, __doc__, "aspirin_ffpt", PROFILES, N_TRAIN, aspirin_ffpt_study)


if __name__ == "__main__":
    from ase_mlff.recipes.cli import run_recipe

    run_recipe(main)
