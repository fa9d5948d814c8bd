"""Reference data: bulk flexible-TIP3P water at 300 K from OpenMM Langevin MD.

    python -m ase_mlff.recipes.make_water_reference \
        --out ase_mlff/data/shipped/water_tip3p_flex_300K.npz --frames 1600 --seed 2026

Each of ``--trajectories`` independent runs (own lattice start, velocities and Langevin
noise, seeded by ``(seed, traj_id)``) of a 64-molecule (192-atom) cubic box at
0.997 g/cm³ is minimised, equilibrated for ``--equilibration`` fs and then sampled every
``--interval`` fs; the frames are re-labelled in double precision (OpenMM Reference
platform). The runs are Ray tasks, ``--workers`` at once. See
:func:`ase_mlff.reference.water.water_reference_md` and docs/forcefields_water.md. The
result is one :class:`~ase_mlff.data.dataset.Dataset` with per-frame ``traj_id``, ``step``
and ``time_fs``, written as ``--out`` plus ``<out>.provenance.json``.

Defaults: 300 K (paper 003's water benchmark temperature, 64 molecules), 0.5 fs (flexible
O–H bonds; paper 001 also uses 0.5 fs for water), Langevin friction 1/ps.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import replace
from pathlib import Path

from ase_mlff.data.io import SHIPPED_DIR
from ase_mlff.reference.water import WaterMDConfig, make_water_reference

#: where the shipped copy lives
SHIPPED_FILE = SHIPPED_DIR / "water_tip3p_flex_300K.npz"


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    d = WaterMDConfig()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("reference") / SHIPPED_FILE.name)
    p.add_argument("--frames", type=int, default=1600, help="frames in total")
    p.add_argument("--trajectories", type=int, default=2)
    p.add_argument("--molecules", type=int, default=d.n_molecules)
    p.add_argument("--density", type=float, default=d.density_g_cm3, help="g/cm³")
    p.add_argument("--temperature", type=float, default=d.temperature_K, help="K")
    p.add_argument("--timestep", type=float, default=d.timestep_fs, help="fs")
    p.add_argument("--friction", type=float, default=d.friction_per_ps, help="1/ps")
    p.add_argument("--equilibration", type=float, default=d.equilibration_fs, help="fs")
    p.add_argument("--interval", type=float, default=d.interval_fs, help="fs between frames")
    p.add_argument("--ewald-tolerance", type=float, default=d.ewald_error_tolerance)
    p.add_argument("--platform", default=d.platform, choices=["CPU", "Reference"])
    p.add_argument("--threads", type=int, default=d.threads, help="CPU-platform threads")
    p.add_argument("--workers", type=int, default=1, help="trajectories run in parallel")
    p.add_argument("--seed", type=int, default=d.seed)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cfg = replace(
        d,
        n_molecules=a.molecules,
        density_g_cm3=a.density,
        temperature_K=a.temperature,
        timestep_fs=a.timestep,
        friction_per_ps=a.friction,
        equilibration_fs=a.equilibration,
        interval_fs=a.interval,
        ewald_error_tolerance=a.ewald_tolerance,
        platform=a.platform,
        threads=a.threads,
        seed=a.seed,
    )
    ds = make_water_reference(cfg, a.frames, a.trajectories, a.out, a.workers, command=argv)
    size = a.out.stat().st_size / 1e6
    print(
        f"{ds.summary()}\nwrote {a.out} ({size:.1f} MB) in "
        f"{ds.provenance['generation_wall_s']:.0f} s"
    )


if __name__ == "__main__":
    from ase_mlff.recipes.cli import run_recipe

    run_recipe(main)
