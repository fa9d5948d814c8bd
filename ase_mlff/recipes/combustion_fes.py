"""Paper 001's hydrogen-combustion test, reaction 9 HO2 → H + O2: scratch vs FFPT-FT MLFFs
(Q-Force pre-training, spin-polarised GFN2-xTB fine-tuning) in well-tempered metadynamics,
against the same metadynamics on spGFN2-xTB (see :mod:`ase_mlff.agents.combustion_fes`).

    python -m ase_mlff.recipes.combustion_fes --profile quick

Outputs in ``--out`` (default ``runs/combustion_fes``): ``comparison.md``,
``results.json``, ``fes_maps.npz``, ``figures/`` (F(d(O1–H3), d(O2–H3)) maps, F(r), the
walkers' CV traces, learning curves), per model ``md_<model>/`` (trajectories, MD
checkpoints, PLUMED HILLS files). A rerun skips finished training stages and resumes the
metadynamics. Docs: docs/recipe_combustion_fes.md.
"""

from __future__ import annotations

from typing import Any

from ase_mlff.agents.combustion_fes import N_TRAIN, combustion_fes_study
from ase_mlff.recipes._ff_pretraining import ffpt_main

#: quick: minutes on 2 CPU cores (10 ps walkers); paper: 100 ps walkers
PROFILES: dict[str, dict[str, Any]] = {
    "quick": {
        "n_pretrain": 4000,
        "model": {"hidden": 32, "n_interactions": 2, "cutoff": 5.0},
        "pretrain": {"epochs": 20, "batch_size": 32, "max_minutes": 3.0},
        "finetune": {"epochs": 60, "batch_size": 16, "max_minutes": 4.0},
        "md_steps": 50_000,
        "replicas": 4,
    },
    "paper": {
        "n_pretrain": 20_000,
        "model": {"hidden": 64, "n_interactions": 3, "cutoff": 5.0},
        "pretrain": {"epochs": 200, "batch_size": 32, "lr_patience": 20},
        "finetune": {"epochs": 1000, "batch_size": 16, "lr_patience": 50},
        "md_steps": 500_000,
        "replicas": 8,
    },
}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    return ffpt_main(argv, __doc__, "combustion_fes", PROFILES, N_TRAIN, combustion_fes_study)


if __name__ == "__main__":
    from ase_mlff.recipes.cli import run_recipe

    run_recipe(main)
