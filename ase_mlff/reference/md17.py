"""GFN2-xTB Langevin MD of the eight MD17 molecules in MD17 atom order (recipe
``make_diverse_reference --set md17``): paper 000's unseen classes, the held-out test of a
model pre-trained on the diverse set, and the latent-space classes.

    from ase_mlff.reference.md17 import MD17SetConfig, make_md17_reference
    ds = make_md17_reference(MD17SetConfig(), Path("md17_gfn2_500K.npz"))

Each molecule is one trajectory (one job of :mod:`~ase_mlff.reference.runner`) with the
protocol of the shipped aspirin set (:mod:`~ase_mlff.reference.molecule`: 500 K, 0.5 fs,
friction 0.01 fs⁻¹, 1 ps equilibration, a frame every 10 steps), from the start geometry
shipped as ``ase_mlff/data/shipped/md17_<name>.xyz`` (aspirin: ``aspirin_md17_order.xyz``),
whose comment line names its source. Frames carry ``molecule`` (index into
:data:`MD17_MOLECULES`), ``traj_id`` (the same), ``step`` and ``time_fs``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from ase_mlff.data.dataset import Dataset
from ase_mlff.data.io import SHIPPED_DIR
from ase_mlff.reference.molecule import _run_trajectory
from ase_mlff.reference.runner import Job, ReferenceKind, run_reference

#: the eight MD17 molecules, in the order of their ``molecule`` index
MD17_MOLECULES = (
    "aspirin",
    "benzene",
    "ethanol",
    "malonaldehyde",
    "naphthalene",
    "salicylic",
    "toluene",
    "uracil",
)


def md17_start(name: str) -> Path:
    """The shipped start geometry of MD17 molecule ``name`` (MD17 atom order)."""
    if name not in MD17_MOLECULES:
        raise ValueError(f"unknown MD17 molecule {name!r}; known: {', '.join(MD17_MOLECULES)}")
    path = SHIPPED_DIR / ("aspirin_md17_order.xyz" if name == "aspirin" else f"md17_{name}.xyz")
    if not path.exists():
        raise FileNotFoundError(f"no shipped start geometry for {name}: {path}")
    return path


@dataclass(frozen=True)
class MD17SetConfig:
    """GFN2-xTB Langevin MD of each of ``molecules`` (the fields of
    :class:`~ase_mlff.reference.molecule.ReferenceMDConfig` that one trajectory uses)."""

    molecules: tuple[str, ...] = MD17_MOLECULES
    method: str = "GFN2-xTB"
    temperature_K: float = 500.0
    timestep_fs: float = 0.5
    friction_per_fs: float = 0.01
    equilibration_fs: float = 1000.0
    stride: int = 10
    frames_per_trajectory: int = 1000
    seed: int = 2026
    workers: int = 2

    kind: ClassVar[ReferenceKind]

    def __post_init__(self) -> None:
        for name in self.molecules:
            md17_start(name)  # refuses an unknown molecule before any work

    def equilibration_steps(self) -> int:
        return int(round(self.equilibration_fs / self.timestep_fs))


def _jobs(cfg: MD17SetConfig, parts_dir: Path) -> list[Job]:
    return [
        Job(name, MD17_MOLECULES.index(name), (cfg.seed, MD17_MOLECULES.index(name)),
            params={"start": str(md17_start(name))})
        for name in cfg.molecules
    ]


def _assemble(cfg: MD17SetConfig, jobs: list[Job], parts: list[Path], out: Path) -> Dataset:
    import ase
    import ase.io
    import tblite

    blocks = []
    for job, part in zip(jobs, parts):
        images = ase.io.read(part, index=":", format="extxyz")
        n = len(images)
        ds = Dataset.from_frames(
            images[0],
            np.stack([a.positions for a in images]),
            np.array([a.info["ref_energy"] for a in images]),
            np.stack([a.arrays["ref_forces"] for a in images]),
            config_type=f"md17_{job.name}",
        )
        ds.extra_s = {
            "molecule": np.full(n, job.index, dtype=np.int64),
            "traj_id": np.full(n, job.index, dtype=np.int64),
            "step": np.array([a.info["step"] for a in images], dtype=np.int64),
            "time_fs": np.array([a.info["time_fs"] for a in images], dtype=float),
        }
        blocks.append(ds)
    ds = Dataset.concatenate(blocks)
    ds.provenance = {
        "method": cfg.method,
        "program": "tblite",
        "program_version": getattr(tblite, "__version__", "unknown"),
        "ase_version": ase.__version__,
        "sampling": "Langevin MD (ase.md.langevin.Langevin, FixCom), one trajectory per molecule",
        "units": {"energy": "eV", "forces": "eV/Angstrom", "positions": "Angstrom"},
        "molecules": {name: i for i, name in enumerate(MD17_MOLECULES)},
        "atom_order": "MD17 (each start file's comment names its source)",
        "start_geometries": {
            job.name: ase.io.read(job.params["start"]).info.get("comment", Path(job.params["start"]).name)
            for job in jobs
        },
        "storage": "positions and forces float32",
        "config": json.loads(json.dumps(asdict(cfg))),
    }
    return ds


MD17SetConfig.kind = ReferenceKind(
    recipe="make_diverse_reference",
    jobs=_jobs,
    run_job=_run_trajectory,
    assemble=_assemble,
    resume_ignores=("workers",),
    single_precision=True,
)


def make_md17_reference(cfg: MD17SetConfig, out: Path, command: list[str] | None = None) -> Dataset:
    """Run the eight trajectories (``cfg.workers`` at once, finished ones reused) and write
    ``out`` plus ``<out>.provenance.json``."""
    return run_reference(cfg, out, cfg.workers, command=command)
