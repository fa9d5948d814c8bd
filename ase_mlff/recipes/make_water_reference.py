"""Reference data: bulk flexible-TIP3P water at 300 K from OpenMM Langevin MD.

    python -m ase_mlff.recipes.make_water_reference \
        --out ase_mlff/data/shipped/water_tip3p_flex_300K.npz --frames 1600 --seed 2026

Each of ``--trajectories`` independent runs (own lattice start, velocities and Langevin
noise, seeded by ``(seed, traj_id)``) of a 64-molecule (192-atom) cubic box at
0.997 g/cm³ is minimised, equilibrated for ``--equilibration`` fs and then sampled every
``--interval`` fs; the frames are re-labelled in double precision (OpenMM Reference
platform). See :func:`ase_mlff.forcefields.water.water_reference_md` and
docs/forcefields_water.md. The result is one :class:`~ase_mlff.data.dataset.Dataset`
with per-frame ``traj_id``, ``step`` and ``time_fs``, written as ``--out`` plus
``<out>.provenance.json``.

Defaults: 300 K (paper 003's water benchmark temperature, 64 molecules), 0.5 fs (flexible
O–H bonds; paper 001 also uses 0.5 fs for water), Langevin friction 1/ps.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np

from ase_mlff.data.dataset import Dataset
from ase_mlff.data.io import SHIPPED_DIR, provenance_path
from ase_mlff.forcefields.water import WaterMDConfig, water_reference_md
from ase_mlff.utils import show_progress

log = logging.getLogger(__name__)

#: where the shipped copy lives
SHIPPED_FILE = SHIPPED_DIR / "water_tip3p_flex_300K.npz"


def _run(args: tuple[WaterMDConfig, int, bool]) -> Dataset:
    cfg, traj_id, progress = args
    return water_reference_md(cfg, traj_id=traj_id, progress=progress)


def make_water_reference(
    cfg: WaterMDConfig, n_frames: int, trajectories: int, out: Path, workers: int = 1
) -> Dataset:
    """Run ``trajectories`` runs holding ``n_frames`` frames in total; write ``out``."""
    if trajectories < 1 or n_frames < trajectories:
        raise ValueError(
            f"need at least one frame per trajectory ({n_frames} frames, "
            f"{trajectories} trajectories)"
        )
    sizes = [len(a) for a in np.array_split(np.arange(n_frames), trajectories)]
    jobs = [(replace(cfg, n_frames=k), t, show_progress()) for t, k in enumerate(sizes)]
    for job in jobs:
        job[0].validate()
    t0 = time.perf_counter()
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=min(workers, len(jobs))) as pool:
            parts = list(pool.map(_run, jobs))
    else:
        parts = [_run(j) for j in jobs]
    wall = time.perf_counter() - t0
    ds = Dataset.concatenate(parts)
    prov = dict(parts[0].provenance)
    prov["config"] = {**prov["config"], "n_frames": n_frames}
    prov["n_trajectories"] = trajectories
    prov["frames_per_trajectory"] = sizes
    prov["trajectories"] = {k: v for p in parts for k, v in p.provenance["trajectories"].items()}
    prov.update(
        generation_wall_s=wall,
        workers=workers,
        created=time.strftime("%Y-%m-%dT%H:%M:%S"),
        python=platform.python_version(),
        command="python -m ase_mlff.recipes.make_water_reference " + " ".join(sys.argv[1:]),
    )
    ds.provenance = prov
    ds.save_npz(out)
    provenance_path(out).write_text(json.dumps(prov, indent=2, default=str))
    return ds


def main(argv: list[str] | None = None) -> None:
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
    ds = make_water_reference(cfg, a.frames, a.trajectories, a.out, a.workers)
    size = a.out.stat().st_size / 1e6
    print(
        f"{ds.summary()}\nwrote {a.out} ({size:.1f} MB) in "
        f"{ds.provenance['generation_wall_s']:.0f} s"
    )


if __name__ == "__main__":
    main()
