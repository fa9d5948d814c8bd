"""Monomer force-field pre-training for liquid water (paper 001, §2.2 and Fig. 3).

    python -m ase_mlff.recipes.water_ffpt --profile quick
    python -m ase_mlff.recipes.water_ffpt --profile paper

Pre-train on flexible-TIP3P *monomers* only (rattled, x + 0.2 Å·ε, labelled in one
batched pass), fine-tune on bulk water (64 molecules, 300 K): the shipped reference is
flexible TIP3P simulated with OpenMM (PME), see ``docs/forcefields_water.md``. The paper
fine-tunes on paper 003's water set (a classical flexible water model as well) with 950
train / 50 validation frames; the shipped set has 800 frames outside its held-out test
trajectory, so the default here is 750 / 50. Compared with the same architecture trained
from scratch on the same frames and budget:

- test force error on the held-out reference trajectory;
- stability: ``--replicas`` Langevin trajectories (300 K, 0.5 fs, friction 2 ps⁻¹ as
  paper 001) from test frames, stopped when the RDF averaged over a window deviates from
  the reference by ∫|g − g_ref| dr > 3 for any element pair (paper 003, App. A), when
  two atoms come closer than half their start distance (atom overlap, paper 004), or
  when forces or temperature blow up;
- O–O, O–H, H–H RDFs of the stable part against the reference, and the oxygen
  self-diffusion coefficient (MSD over all windows, paper 003, App. A).

Everything goes to MLflow under one parent run with a child run per variant.

This module is the command line and the profiles; the study is
:func:`ase_mlff.agents.water_ffpt.water_ffpt_study`.
"""

from __future__ import annotations

import argparse
from typing import Any

from ase_mlff.agents.water_ffpt import N_TRAIN, water_ffpt_study
from ase_mlff.recipes._ff_pretraining import ffpt_main

__all__ = ["PROFILES", "main"]

PROFILES: dict[str, dict[str, Any]] = {
    "quick": {
        "n_pretrain": 20_000,
        "model": {"hidden": 32, "n_interactions": 2, "cutoff": 5.0},
        "pretrain": {"epochs": 5, "batch_size": 64, "max_minutes": 3.0},
        "finetune": {"epochs": 40, "batch_size": 4, "max_minutes": 4.0},
        "md_steps": 1000,
        "replicas": 2,
        "n_test": 200,
        "rdf_window_fs": 250.0,
    },
    "paper": {
        "n_pretrain": 100_000,
        "model": {"hidden": 128, "n_interactions": 3, "cutoff": 5.0},
        "pretrain": {"epochs": 500, "batch_size": 64, "lr_patience": 50},
        "finetune": {"epochs": 2000, "batch_size": 1, "lr_patience": 50},
        "md_steps": 200_000,
        "replicas": 5,
        "n_test": None,
        "rdf_window_fs": 1000.0,
    },
}


def _n_test(p: argparse.ArgumentParser) -> None:
    p.add_argument("--n-test", type=int, default=None, help="test frames evaluated")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    return ffpt_main(
        argv, __doc__, "water_ffpt", PROFILES, N_TRAIN, water_ffpt_study, extra=_n_test
    )


if __name__ == "__main__":
    from ase_mlff.recipes.cli import run_recipe

    run_recipe(main)
