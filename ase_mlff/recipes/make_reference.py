"""Reference data: GFN2-xTB (tblite) Langevin MD of a molecule, several trajectories in parallel.

    python -m ase_mlff.recipes.make_reference --molecule aspirin --trajectories 5 \
        --frames-per-trajectory 1200 --out ase_mlff/data/shipped/aspirin_gfn2_500K.npz

Each trajectory runs in its own process (one OpenMP thread each) from the start geometry
with its own seed: Maxwell-Boltzmann velocities, ``--equilibration-fs`` of equilibration,
then a frame every ``--stride`` steps. Frames are appended to a per-trajectory extxyz file
as they are made (``<out>.parts/``), so an interrupted run keeps what it computed and a
rerun resumes each trajectory from its last stored frame is *not* attempted (a resumed
Langevin trajectory would not be bit-identical); the parts are assembled into one
:class:`~ase_mlff.data.dataset.Dataset` with per-frame ``traj_id``, ``step`` and
``time_fs``, so the continuous trajectories stay available as the reference ensemble.

Protocol defaults follow the papers: 500 K, 0.5 fs, friction 0.01 fs⁻¹ (paper 003 §4.1 uses
500 K and 0.5 fs for MD17; paper 001 uses Langevin with 2 ps⁻¹ friction at 0.5 fs).
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ase_mlff.data.dataset import Dataset
from ase_mlff.data.io import SHIPPED_DIR, provenance_path
from ase_mlff.utils import show_progress

log = logging.getLogger(__name__)

#: start geometries that ship with the package (atom order documented in docs/data.md)
START_GEOMETRIES = {"aspirin": SHIPPED_DIR / "aspirin_md17_order.xyz"}


@dataclass(frozen=True)
class ReferenceMDConfig:
    molecule: str = "aspirin"
    method: str = "GFN2-xTB"
    temperature_K: float = 500.0
    timestep_fs: float = 0.5
    friction_per_fs: float = 0.01
    equilibration_fs: float = 1000.0
    stride: int = 10
    frames_per_trajectory: int = 1200
    trajectories: int = 5
    seed: int = 2026
    workers: int = 2


def _run_trajectory(args: tuple[ReferenceMDConfig, str, int, str]) -> str:
    """Run one trajectory in a worker process; returns the path of its extxyz part."""
    cfg, start_path, traj_id, part_path = args
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import ase.io
    from ase import units
    from ase.constraints import FixCom
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary, ZeroRotation
    from tblite.ase import TBLite
    from tqdm import tqdm

    rng = np.random.default_rng([cfg.seed, traj_id])
    atoms = ase.io.read(start_path)
    atoms.calc = TBLite(method=cfg.method, verbosity=0)
    MaxwellBoltzmannDistribution(atoms, temperature_K=cfg.temperature_K, rng=rng)
    Stationary(atoms)
    ZeroRotation(atoms)
    atoms.set_constraint(FixCom())  # the centre of mass stays put (ASE's recommended way)
    dyn = Langevin(
        atoms,
        timestep=cfg.timestep_fs * units.fs,
        temperature_K=cfg.temperature_K,
        friction=cfg.friction_per_fs / units.fs,
        rng=rng,
        fixcm=False,
    )
    n_eq = int(round(cfg.equilibration_fs / cfg.timestep_fs))
    n_total = n_eq + cfg.frames_per_trajectory * cfg.stride
    part = Path(part_path)
    tmp = part.with_suffix(".tmp.xyz")
    tmp.unlink(missing_ok=True)
    bar = tqdm(total=n_total, desc=f"traj {traj_id}", position=traj_id, disable=not show_progress())
    step = 0

    def store() -> None:
        if step <= n_eq or (step - n_eq) % cfg.stride:
            return
        frame = atoms.copy()
        frame.calc = None
        frame.set_constraint()
        frame.info.update(
            traj_id=traj_id,
            step=step,
            time_fs=step * cfg.timestep_fs,
            ref_energy=float(atoms.get_potential_energy()),
        )
        # the raw reference forces: FixCom must not project the labels (it only steers MD)
        frame.arrays["ref_forces"] = atoms.get_forces(apply_constraint=False).copy()
        ase.io.write(tmp, frame, format="extxyz", append=True)

    while step < n_total:
        dyn.run(1)
        step += 1
        store()
        bar.update(1)
    bar.close()
    tmp.replace(part)
    return str(part)


def _assemble(parts: list[Path], cfg: ReferenceMDConfig, start_path: Path) -> Dataset:
    import ase
    import ase.io
    import tblite

    images = []
    for p in parts:
        images.extend(ase.io.read(p, index=":", format="extxyz"))
    n = len(images)
    z = images[0].numbers
    pos = np.stack([a.positions for a in images])
    forces = np.stack([a.arrays["ref_forces"] for a in images])
    energy = np.array([a.info["ref_energy"] for a in images])
    return Dataset(
        numbers_n=np.tile(z, n),
        positions_nc=pos.reshape(-1, 3),
        n_atoms_s=np.full(n, len(z)),
        cell_s33=np.zeros((n, 3, 3)),
        pbc_s3=np.zeros((n, 3), bool),
        energy_s=energy,
        forces_nc=forces.reshape(-1, 3),
        config_type_s=np.full(n, "md"),
        extra_s={
            "traj_id": np.array([a.info["traj_id"] for a in images], dtype=np.int64),
            "step": np.array([a.info["step"] for a in images], dtype=np.int64),
            "time_fs": np.array([a.info["time_fs"] for a in images], dtype=np.float64),
        },
        provenance={
            "method": cfg.method,
            "program": "tblite",
            "program_version": getattr(tblite, "__version__", "unknown"),
            "ase_version": ase.__version__,
            "sampling": "Langevin MD (ase.md.langevin.Langevin, FixCom)",
            "units": {"energy": "eV", "forces": "eV/Angstrom", "positions": "Angstrom"},
            "atom_order": "MD17 aspirin convention (see docs/data.md)"
            if cfg.molecule == "aspirin"
            else "as in the start geometry",
            "start_geometry": start_path.name,
            "config": asdict(cfg),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "python": platform.python_version(),
            "command": "python -m ase_mlff.recipes.make_reference " + " ".join(sys.argv[1:]),
        },
    )


def make_reference(cfg: ReferenceMDConfig, out: Path, start: Path | None = None) -> Dataset:
    """Run the reference MD and write ``out`` (npz) plus ``<out>.provenance.json``."""
    start_path = Path(start) if start else START_GEOMETRIES.get(cfg.molecule)
    if start_path is None or not Path(start_path).exists():
        raise FileNotFoundError(
            f"no start geometry for molecule {cfg.molecule!r}; pass --start FILE "
            f"(shipped: {sorted(START_GEOMETRIES)})"
        )
    parts_dir = out.with_name(out.name + ".parts")
    parts_dir.mkdir(parents=True, exist_ok=True)
    jobs = []
    for t in range(cfg.trajectories):
        part = parts_dir / f"traj_{t:03d}.xyz"
        if part.exists():
            log.info("trajectory %d already complete at %s, reusing it", t, part)
            continue
        jobs.append((cfg, str(start_path), t, str(part)))
    if jobs:
        # spawn, not fork: a forked child inherits locks held by the parent's threads (Ray,
        # MLflow, OpenMM, tqdm) and can deadlock in its first import
        with ProcessPoolExecutor(
            max_workers=max(1, min(cfg.workers, len(jobs))),
            mp_context=multiprocessing.get_context("spawn"),
        ) as pool:
            for path in pool.map(_run_trajectory, jobs):
                log.info("finished %s", path)
    parts = [parts_dir / f"traj_{t:03d}.xyz" for t in range(cfg.trajectories)]
    ds = _assemble(parts, cfg, Path(start_path))
    ds.save_npz(out)
    provenance_path(out).write_text(json.dumps(ds.provenance, indent=2, default=str))
    for p in parts:
        p.unlink()
    parts_dir.rmdir()
    return ds


def main(argv: list[str] | None = None) -> None:
    defaults = ReferenceMDConfig()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--molecule", default=defaults.molecule)
    p.add_argument("--start", type=Path, default=None, help="start geometry (any ASE format)")
    p.add_argument("--method", default=defaults.method, choices=["GFN2-xTB", "GFN1-xTB"])
    p.add_argument("--temperature", type=float, default=defaults.temperature_K, help="K")
    p.add_argument("--timestep", type=float, default=defaults.timestep_fs, help="fs")
    p.add_argument("--friction", type=float, default=defaults.friction_per_fs, help="1/fs")
    p.add_argument("--equilibration", type=float, default=defaults.equilibration_fs, help="fs")
    p.add_argument("--stride", type=int, default=defaults.stride, help="steps between frames")
    p.add_argument("--frames-per-trajectory", type=int, default=defaults.frames_per_trajectory)
    p.add_argument("--trajectories", type=int, default=defaults.trajectories)
    p.add_argument("--workers", type=int, default=defaults.workers)
    p.add_argument("--seed", type=int, default=defaults.seed)
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
    ds = make_reference(cfg, a.out, a.start)
    print(f"{ds.summary()}\nwrote {a.out} in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
