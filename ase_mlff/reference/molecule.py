"""Reference data of a molecule: GFN2-xTB (tblite) Langevin MD, several trajectories as
Ray tasks (the shipped aspirin set; recipe ``make_reference``).

    from ase_mlff.reference.molecule import ReferenceMDConfig, make_molecule_reference
    ds = make_molecule_reference(ReferenceMDConfig(trajectories=5), Path("aspirin.npz"))

Each trajectory is one job (:mod:`~ase_mlff.reference.runner`) with its own seed
``(seed, traj_id)``: from the start geometry, Maxwell–Boltzmann velocities,
``equilibration_fs`` of equilibration, then a frame every ``stride`` steps
(:func:`~ase_mlff.reference.langevin.langevin_frames`). A frame keeps the GFN2-xTB energy
and the *raw* forces (``apply_constraint=False``: FixCom steers the MD, it must not
project the labels). The frames are assembled into one
:class:`~ase_mlff.data.dataset.Dataset` with per-frame ``traj_id``, ``step`` and
``time_fs``, so the continuous trajectories stay available as the reference ensemble.

Protocol defaults follow the papers: 500 K, 0.5 fs, friction 0.01 fs⁻¹ (paper 003 §4.1
uses 500 K and 0.5 fs for MD17; paper 001 uses Langevin with 2 ps⁻¹ friction at 0.5 fs).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from ase_mlff.data.dataset import Dataset
from ase_mlff.data.io import SHIPPED_DIR
from ase_mlff.reference.langevin import langevin_frames
from ase_mlff.reference.runner import Job, ReferenceKind, run_reference

log = logging.getLogger(__name__)

#: start geometries that ship with the package (atom order documented in docs/data.md)
START_GEOMETRIES = {"aspirin": SHIPPED_DIR / "aspirin_md17_order.xyz"}


@dataclass(frozen=True)
class ReferenceMDConfig:
    """GFN2-xTB (or GFN1-xTB) Langevin MD of one molecule; ``workers`` trajectories at once."""

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

    kind: ClassVar[ReferenceKind]

    def equilibration_steps(self) -> int:
        return int(round(self.equilibration_fs / self.timestep_fs))


def start_geometry(molecule: str, start: Path | None = None) -> Path:
    """``start`` if given, else the shipped start geometry of ``molecule``."""
    path = Path(start) if start else START_GEOMETRIES.get(molecule)
    if path is None or not path.exists():
        raise FileNotFoundError(
            f"no start geometry for molecule {molecule!r}; pass --start FILE "
            f"(shipped: {sorted(START_GEOMETRIES)})"
        )
    return path


def _jobs(cfg: ReferenceMDConfig, parts_dir: Path, start: Path | None = None) -> list[Job]:
    path = str(start_geometry(cfg.molecule, start).absolute())
    return [
        Job(f"traj_{t:03d}", t, (cfg.seed, t), params={"start": path})
        for t in range(cfg.trajectories)
    ]


def _run_trajectory(cfg: ReferenceMDConfig, job: Job, path: Path) -> None:
    """One trajectory; each frame is appended to the extxyz ``path`` as it is made."""
    import ase.io
    from tblite.ase import TBLite

    atoms = ase.io.read(job.params["start"])
    atoms.calc = TBLite(method=cfg.method, verbosity=0)
    n_eq = cfg.equilibration_steps()
    n_total = n_eq + cfg.frames_per_trajectory * cfg.stride
    for step in langevin_frames(
        atoms,
        np.random.default_rng(job.seed),
        np.full(n_total, cfg.temperature_K),
        dt_fs=cfg.timestep_fs,
        friction_per_fs=cfg.friction_per_fs,
        first=n_eq,
        stride=cfg.stride,
        molecule=True,
        name=job.name,
    ):
        frame = atoms.copy()
        frame.calc = None
        frame.set_constraint()
        frame.info.update(
            traj_id=job.index,
            step=step,
            time_fs=step * cfg.timestep_fs,
            ref_energy=float(atoms.get_potential_energy()),
        )
        frame.arrays["ref_forces"] = atoms.get_forces(apply_constraint=False).copy()
        ase.io.write(path, frame, format="extxyz", append=True)


def _assemble(cfg: ReferenceMDConfig, jobs: list[Job], parts: list[Path], out: Path) -> Dataset:
    import ase
    import ase.io
    import tblite

    images = [a for p in parts for a in ase.io.read(p, index=":", format="extxyz")]
    n = len(images)
    z = images[0].numbers
    return Dataset(
        numbers_n=np.tile(z, n),
        positions_nc=np.stack([a.positions for a in images]).reshape(-1, 3),
        n_atoms_s=np.full(n, len(z)),
        cell_s33=np.zeros((n, 3, 3)),
        pbc_s3=np.zeros((n, 3), bool),
        energy_s=np.array([a.info["ref_energy"] for a in images]),
        forces_nc=np.stack([a.arrays["ref_forces"] for a in images]).reshape(-1, 3),
        config_type_s=np.full(n, "md"),
        extra_s={
            key: np.array([a.info[key] for a in images], dtype=dtype)
            for key, dtype in (("traj_id", np.int64), ("step", np.int64), ("time_fs", float))
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
            "start_geometry": Path(jobs[0].params["start"]).name,
            "config": asdict(cfg),
        },
    )


ReferenceMDConfig.kind = ReferenceKind(
    recipe="make_reference",
    jobs=_jobs,
    run_job=_run_trajectory,
    assemble=_assemble,
    resume_ignores=("workers",),
)


def make_molecule_reference(
    cfg: ReferenceMDConfig,
    out: Path,
    start: Path | None = None,
    command: list[str] | None = None,
) -> Dataset:
    """Run the reference MD (``cfg.workers`` trajectories at once, finished trajectories
    of an interrupted run reused) and write ``out`` (npz) plus ``<out>.provenance.json``."""
    return run_reference(cfg, out, cfg.workers, command=command, start=start)
