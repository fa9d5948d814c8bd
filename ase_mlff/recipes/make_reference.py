"""Reference data: GFN2-xTB (tblite) Langevin MD of a molecule, several trajectories in parallel.

    python -m ase_mlff.recipes.make_reference --molecule aspirin --trajectories 5 \
        --frames-per-trajectory 1200 --out ase_mlff/data/shipped/aspirin_gfn2_500K.npz

Each trajectory is one Ray task (one OpenMP thread, ``--workers`` at once) from the start
geometry with its own seed ``(seed, trajectory)``: Maxwell-Boltzmann velocities,
``--equilibration`` fs of equilibration, then a frame every ``--stride`` steps. A finished
trajectory is kept in ``<out>.parts/`` until the set is written, so a rerun of an
interrupted run reuses the finished trajectories and recomputes the others from their
start (a resumed Langevin trajectory would not be bit-identical). The frames become one
dataset with per-frame ``traj_id``, ``step`` and ``time_fs``
(:mod:`ase_mlff.reference.molecule`), written as ``--out`` plus ``<out>.provenance.json``.

Protocol defaults follow the papers: 500 K, 0.5 fs, friction 0.01 fs⁻¹ (paper 003 §4.1 uses
500 K and 0.5 fs for MD17; paper 001 uses Langevin with 2 ps⁻¹ friction at 0.5 fs).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from ase_mlff.reference.molecule import ReferenceMDConfig, make_molecule_reference


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    d = ReferenceMDConfig()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--molecule", default=d.molecule)
    p.add_argument("--start", type=Path, default=None, help="start geometry (any ASE format)")
    p.add_argument("--method", default=d.method, choices=["GFN2-xTB", "GFN1-xTB"])
    p.add_argument("--temperature", type=float, default=d.temperature_K, help="K")
    p.add_argument("--timestep", type=float, default=d.timestep_fs, help="fs")
    p.add_argument("--friction", type=float, default=d.friction_per_fs, help="1/fs")
    p.add_argument("--equilibration", type=float, default=d.equilibration_fs, help="fs")
    p.add_argument("--stride", type=int, default=d.stride, help="steps between frames")
    p.add_argument("--frames-per-trajectory", type=int, default=d.frames_per_trajectory)
    p.add_argument("--trajectories", type=int, default=d.trajectories)
    p.add_argument("--workers", type=int, default=d.workers)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--out", type=Path, default=Path("reference") / "aspirin_gfn2_500K.npz")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cfg = ReferenceMDConfig(
        molecule=a.molecule,
        method=a.method,
        temperature_K=a.temperature,
        timestep_fs=a.timestep,
        friction_per_fs=a.friction,
        equilibration_fs=a.equilibration,
        stride=a.stride,
        frames_per_trajectory=a.frames_per_trajectory,
        trajectories=a.trajectories,
        seed=a.seed,
        workers=a.workers,
    )
    t0 = time.perf_counter()
    ds = make_molecule_reference(cfg, a.out, a.start, command=argv)
    print(f"{ds.summary()}\nwrote {a.out} in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    from ase_mlff.recipes.cli import run_recipe

    run_recipe(main)
