"""Paper 003's alanine-dipeptide free-energy test: scratch vs FFPT MLFFs trained on the
shipped AMBER ff14SB + GBn2 set, then well-tempered metadynamics on φ/ψ from the six
minima of the reference F(φ, ψ) (see :mod:`ase_mlff.agents.alanine_fes`).

    python -m ase_mlff.recipes.alanine_fes --profile quick

Outputs in ``--out`` (default ``runs/alanine_fes``): ``comparison.md``, ``results.json``,
``figures/`` (F(φ), F(ψ), Ramachandran plots, learning curves), per variant ``md_<v>/``
(trajectories, MD checkpoints, PLUMED HILLS files). A rerun skips finished training
stages and resumes the metadynamics. Docs: docs/recipe_alanine_fes.md.
"""

from __future__ import annotations

from typing import Any

from ase_mlff.agents.alanine_fes import N_TRAIN, alanine_fes_study
from ase_mlff.recipes._ff_pretraining import ffpt_main

#: quick: minutes on 2 CPU cores; paper: paper 003's hills every 1 ps over 2 ns walkers
PROFILES: dict[str, dict[str, Any]] = {
    "quick": {
        "n_pretrain": 3000,
        "model": {"hidden": 32, "n_interactions": 2, "cutoff": 5.0},
        "pretrain": {"epochs": 30, "batch_size": 32, "max_minutes": 3.0},
        "finetune": {"epochs": 100, "batch_size": 16, "max_minutes": 4.0},
        "md_steps": 40_000,
        "replicas": 6,
        "dt_fs": 1.0,
        "friction": 0.001,
        "pace_steps": 50,
    },
    "paper": {
        "n_pretrain": 20_000,
        "model": {"hidden": 128, "n_interactions": 3, "cutoff": 5.0},
        "pretrain": {"epochs": 200, "batch_size": 32, "lr_patience": 20},
        "finetune": {"epochs": 1000, "batch_size": 8, "lr_patience": 50},
        "md_steps": 4_000_000,
        "replicas": 6,
        "dt_fs": 0.5,
        "friction": 0.001,
        "pace_steps": 2000,
    },
}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    return ffpt_main(argv, __doc__, "alanine_fes", PROFILES, N_TRAIN, alanine_fes_study)


if __name__ == "__main__":
    from ase_mlff.recipes.cli import run_recipe

    run_recipe(main)
