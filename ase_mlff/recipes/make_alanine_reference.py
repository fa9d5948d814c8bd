"""Reference data: alanine dipeptide, AMBER ff14SB + GBn2 implicit solvent, from OpenMM's
well-tempered metadynamics on φ/ψ and plain Langevin MD (paper 003's alanine system).

    python -m ase_mlff.recipes.make_alanine_reference \\
        --out ase_mlff/data/shipped/alanine_amber14_gbn2.npz --workers 2

Writes the frames (energies and forces re-labelled without the bias, per-frame φ, ψ,
``traj_id``, ``time_fs``), ``<out>.provenance.json`` and the reference free energy
``<out stem>_fes.npz`` (F(φ, ψ) and its marginals, kJ/mol). See
:mod:`ase_mlff.reference.alanine` and docs/recipe_alanine_fes.md. A rerun resumes: the
finished trajectories are kept.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import fields, replace
from pathlib import Path

from ase_mlff.data.io import SHIPPED_DIR
from ase_mlff.recipes.cli import run_recipe
from ase_mlff.reference.alanine import AlanineConfig, make_alanine_reference

#: where the shipped copy lives
SHIPPED_FILE = SHIPPED_DIR / "alanine_amber14_gbn2.npz"


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    d = AlanineConfig()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("reference") / SHIPPED_FILE.name)
    p.add_argument("--workers", type=int, default=1, help="trajectories run in parallel")
    for f in fields(AlanineConfig):
        if f.name == "kind":
            continue
        p.add_argument(f"--{f.name.replace('_', '-')}", type=type(getattr(d, f.name)), default=None)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    changes = {
        f.name: getattr(a, f.name)
        for f in fields(AlanineConfig)
        if f.name != "kind" and getattr(a, f.name) is not None
    }
    cfg = replace(d, **changes)
    cfg.validate()
    make_alanine_reference(cfg, a.out, workers=a.workers, command=argv)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    run_recipe(main)
