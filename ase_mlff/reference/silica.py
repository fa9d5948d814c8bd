"""Reference data for a material: periodic silica (SiO2) labelled with GFN1-xTB (tblite),
the shipped silica set (recipe ``make_silica_reference``).

    from ase_mlff.reference.silica import SilicaConfig, make_silica_reference
    ds = make_silica_reference(SilicaConfig(), Path("silica_gfn1.npz"), workers=2)

Energies, forces *and stress* of 24-48-atom periodic cells, sampled the way the GAP-22
silica set of paper 004 is (crystalline, distorted, liquid and melt-quenched silica), from
five polymorphs (:mod:`ase_mlff.data.silica`). The jobs (:mod:`~ase_mlff.reference.runner`):

1. stage 0, one job per polymorph: ``relax``, the polymorph relaxed with GFN1-xTB (FIRE
   on positions and cell through :class:`ase.filters.FrechetCellFilter`, fmax
   ``relax_fmax``), every ``relax_stride``-th step kept; then ``strained``: ``strained``
   copies of the relaxed cell with a random symmetric strain (normal ≤ 5 %, shear ≤ 3 %)
   and Gaussian rattling σ ~ U(0.01, 0.06) Å (two thirds as many for cells over 36
   atoms). The relaxed cell goes to ``<out>.parts/<polymorph>_relaxed.xyz``;
2. stage 1, ``md_2000K``: NVT Langevin MD at 2,000 K, 2 fs (paper 004's silica MD
   protocol), from the relaxed quartz, α- and β-cristobalite and β-tridymite cells:
   ``md_equilibration`` steps, then a frame every ``md_stride`` steps; these runs are also
   the reference ensemble for RDFs;
3. stage 1, ``melt_quench``: the relaxed β-cristobalite cell melted at
   ``melt_temperature_K``, then quenched linearly to 300 K (fixed volume), a frame every
   ``md_stride`` steps.

Job ``s`` (``source`` s) draws from ``(seed, s)``. Frames where the SCC does not converge
are skipped; an MD run whose SCC fails keeps the frames made before. The parts stay in
``<out>.parts/``; the relaxed cells are also written beside ``out``
(``silica_gfn1_polymorphs.xyz``).

Split: frames are grouped in blocks of ``block`` consecutive frames of one job (so MD
frames a few fs apart never straddle train and test); ``test_blocks`` blocks drawn at
random are the test set. They are numbered first: ``traj_id`` 0 … test_blocks−1, the
shipped split ``SHIPPED_SPLITS["silica"]`` (:func:`assign_blocks`).

GFN1-xTB, not DFT: it puts quartz at 2.29 g/cm³ (experiment 2.65; GFN2-xTB 2.57 but five
times slower here), so the cells are relaxed with it first and every sample is drawn
around its own minimum.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ase_mlff.data.dataset import Dataset
from ase_mlff.data.io import SHIPPED_DIR
from ase_mlff.data.silica import POLYMORPHS
from ase_mlff.reference.langevin import langevin_frames
from ase_mlff.reference.runner import Job, ReferenceKind, run_reference

log = logging.getLogger(__name__)

SHIPPED_FILE = SHIPPED_DIR / "silica_gfn1.npz"
#: the GFN1-xTB-relaxed polymorphs (start structures of the reference MD)
POLYMORPHS_FILE = SHIPPED_DIR / "silica_gfn1_polymorphs.xyz"
MD_POLYMORPHS = ("alpha_quartz", "alpha_cristobalite", "beta_cristobalite", "beta_tridymite")


@dataclass(frozen=True)
class SilicaConfig:
    method: str = "GFN1-xTB"
    relax_fmax: float = 0.05
    relax_steps: int = 200
    relax_stride: int = 4
    strained: int = 60
    md_temperature_K: float = 2000.0
    timestep_fs: float = 2.0
    friction_per_fs: float = 0.01
    md_equilibration: int = 50
    md_stride: int = 4
    md_frames: int = 100
    melt_temperature_K: float = 4000.0
    melt_steps: int = 250
    quench_steps: int = 300
    block: int = 8
    test_blocks: int = 20
    seed: int = 2026

    kind: ClassVar[ReferenceKind]


def _calc(cfg: SilicaConfig):
    from tblite.ase import TBLite

    return TBLite(method=cfg.method, verbosity=0)


def _labelled(atoms, calc, info: dict):
    """A copy of ``atoms`` with energy, forces and stress from ``calc``; None when the
    SCC fails."""
    from ase.calculators.singlepoint import SinglePointCalculator

    a = atoms.copy()
    a.calc = calc
    try:
        e = a.get_potential_energy()
        f = a.get_forces()
        s = a.get_stress()
    except Exception as exc:  # tblite raises a RuntimeError when the SCC fails
        log.warning("%s: labelling failed (%s), frame skipped", info, exc)
        return None
    out = atoms.copy()
    out.calc = SinglePointCalculator(out, energy=e, forces=f, stress=s)
    out.info.update(info)
    return out


def _static_job(cfg: SilicaConfig, job: Job, path: Path) -> None:
    """Relax one polymorph (keeping every relax_stride-th step), write the relaxed cell,
    then label strained and rattled copies of it."""
    import ase.io
    from ase.filters import FrechetCellFilter
    from ase.optimize import FIRE

    from ase_mlff.data.silica import silica_polymorph, strained_rattled

    name, source = job.params["polymorph"], job.index
    atoms = silica_polymorph(name)
    calc = _calc(cfg)
    atoms.calc = calc
    opt = FIRE(FrechetCellFilter(atoms), logfile=None)
    k = 0
    for _ in opt.irun(fmax=cfg.relax_fmax, steps=cfg.relax_steps):
        if opt.nsteps % cfg.relax_stride == 0:
            fr = _labelled(atoms, calc, dict(config_type="relax", source=source, step=k))
            if fr is not None:
                ase.io.write(path, fr, format="extxyz", append=True)
            k += 1
    relaxed = atoms.copy()
    relaxed.info.update(polymorph=name, relax_steps=opt.nsteps)
    relaxed.calc = None
    ase.io.write(job.params["relaxed"], relaxed, format="extxyz")
    rng = np.random.default_rng(job.seed)
    n = cfg.strained if len(atoms) <= 36 else max(1, (2 * cfg.strained) // 3)
    for j, a in enumerate(strained_rattled(relaxed, n, rng)):
        fr = _labelled(a, calc, dict(config_type="strained", source=source, step=j))
        if fr is not None:
            ase.io.write(path, fr, format="extxyz", append=True)


def _temperature_schedule(cfg: SilicaConfig, kind: str) -> tuple[np.ndarray, int]:
    """(target temperature of every step, K; steps before the first stored frame)."""
    if kind == "melt_quench":
        melt = np.full(cfg.melt_steps, cfg.melt_temperature_K)
        quench = np.linspace(cfg.melt_temperature_K, 300.0, cfg.quench_steps)
        return np.concatenate([melt, quench]), 0
    n = cfg.md_equilibration + cfg.md_frames * cfg.md_stride
    return np.full(n, cfg.md_temperature_K), cfg.md_equilibration


def _md_job(cfg: SilicaConfig, job: Job, path: Path) -> None:
    """NVT Langevin MD (``md_2000K``) or melt-quench from a relaxed polymorph."""
    import ase.io
    from ase.calculators.singlepoint import SinglePointCalculator

    kind = job.params["kind"]
    atoms = ase.io.read(job.params["start"])
    atoms.calc = _calc(cfg)
    t_of_step, first = _temperature_schedule(cfg, kind)
    for step in langevin_frames(
        atoms,
        np.random.default_rng(job.seed),
        t_of_step,
        dt_fs=cfg.timestep_fs,
        friction_per_fs=cfg.friction_per_fs,
        first=first,
        stride=cfg.md_stride,
        molecule=False,
        stop_on_error=True,
        name=f"{kind} {job.index}",
    ):
        fr = atoms.copy()
        fr.calc = SinglePointCalculator(
            fr,
            energy=atoms.get_potential_energy(),
            forces=atoms.get_forces(),
            stress=atoms.get_stress(),
        )
        fr.info.update(
            config_type=kind,
            source=job.index,
            step=step,
            time_fs=step * cfg.timestep_fs,
            temperature_K=float(t_of_step[step - 1]),
        )
        ase.io.write(path, fr, format="extxyz", append=True)


def _run_job(cfg: SilicaConfig, job: Job, path: Path) -> None:
    (_static_job if job.stage == 0 else _md_job)(cfg, job, path)


def _jobs(cfg: SilicaConfig, parts_dir: Path) -> list[Job]:
    """Static jobs (sources 0-4), then the MD jobs (5-8) and the melt-quench (9)."""
    names = list(POLYMORPHS)
    relaxed = {n: str(parts_dir / f"{n}_relaxed.xyz") for n in names}
    jobs = [
        Job(f"{s:02d}_{n}_static", s, (cfg.seed, s), 0, {"polymorph": n, "relaxed": relaxed[n]})
        for s, n in enumerate(names)
    ]
    for k, n in enumerate(MD_POLYMORPHS):
        s = len(names) + k
        params = {"kind": "md_2000K", "polymorph": n, "start": relaxed[n]}
        jobs.append(Job(f"{s:02d}_{n}_md", s, (cfg.seed, s), 1, params))
    s = len(names) + len(MD_POLYMORPHS)
    start = "beta_cristobalite"
    params = {"kind": "melt_quench", "polymorph": start, "start": relaxed[start]}
    jobs.append(Job(f"{s:02d}_melt_quench", s, (cfg.seed, s), 1, params))
    return jobs


def assign_blocks(
    source_s: np.ndarray, block: int, test_blocks: int, seed: int
) -> tuple[np.ndarray, int]:
    """Per-frame block id: ``block`` consecutive frames of one source form a block; the
    ``test_blocks`` blocks drawn at random get ids 0 … test_blocks − 1."""
    source_s = np.asarray(source_s)
    block_s = np.empty(len(source_s), dtype=np.int64)
    n_blocks = 0
    for src in np.unique(source_s):  # a handful of sources, not a loop over atoms
        idx = np.flatnonzero(source_s == src)
        block_s[idx] = n_blocks + np.arange(len(idx)) // block
        n_blocks = int(block_s[idx].max()) + 1
    if test_blocks >= n_blocks:
        raise ValueError(f"{test_blocks} test blocks asked, only {n_blocks} blocks")
    order = np.random.default_rng(seed).permutation(n_blocks)  # order[k] -> new id k
    new_id = np.empty(n_blocks, dtype=np.int64)
    new_id[order] = np.arange(n_blocks)
    return new_id[block_s], n_blocks


def _density(atoms) -> float:
    return round(float(atoms.get_masses().sum() * 1.66053907 / atoms.get_volume()), 4)


def _assemble(cfg: SilicaConfig, jobs: list[Job], parts: list[Path], out: Path) -> Dataset:
    """Every job's frames in job order, the block split, the relaxed cells beside ``out``."""
    import ase.io

    images = [a for p in parts for a in ase.io.read(p, index=":", format="extxyz")]
    ds = Dataset.from_atoms(images, require_labels=True)
    source = np.array([a.info["source"] for a in images], dtype=np.int64)
    block_s, n_blocks = assign_blocks(source, cfg.block, cfg.test_blocks, cfg.seed)
    ds.extra_s = {
        "traj_id": block_s,
        "source": source,
        "step": np.array([a.info["step"] for a in images], dtype=np.int64),
    }
    static = [j for j in jobs if j.stage == 0]
    relaxed = [ase.io.read(j.params["relaxed"]) for j in static]
    ase.io.write(out.with_name(POLYMORPHS_FILE.name), relaxed, format="extxyz")
    names = [j.params["polymorph"] for j in static]
    ds.provenance = _provenance(cfg, ds, jobs, dict(zip(names, relaxed)), n_blocks)
    return ds


def _provenance(
    cfg: SilicaConfig, ds: Dataset, jobs: list[Job], relaxed: dict, n_blocks: int
) -> dict[str, Any]:
    import ase
    import tblite

    what = {"md_2000K": "NVT 2000 K", "melt_quench": "melt-quench"}
    sources = {
        j.index: f"{j.params['polymorph']} {what.get(j.params.get('kind'), 'relax+strained')}"
        for j in jobs
    }
    kinds, counts = np.unique(ds.config_type_s, return_counts=True)
    return {
        "method": cfg.method,
        "program": "tblite",
        "program_version": getattr(tblite, "__version__", "unknown"),
        "ase_version": ase.__version__,
        "units": {"energy": "eV", "forces": "eV/Angstrom", "stress": "eV/Angstrom^3 (ASE sign)"},
        "sampling": "relax + strained/rattled + NVT Langevin 2000 K + melt-quench "
        "(ase_mlff.recipes.make_silica_reference)",
        "config": asdict(cfg),
        "sources": sources,
        "frames_per_config_type": {str(k): int(c) for k, c in zip(kinds, counts)},
        "relaxed_cells": {
            n: {"cellpar": a.cell.cellpar().round(4).tolist(), "density_g_cm3": _density(a)}
            for n, a in relaxed.items()
        },
        "split": {"blocks": n_blocks, "test_groups": list(range(cfg.test_blocks))},
    }


SilicaConfig.kind = ReferenceKind(
    recipe="make_silica_reference",
    jobs=_jobs,
    run_job=_run_job,
    assemble=_assemble,
    keep_parts=True,
)


def make_silica_reference(
    cfg: SilicaConfig, out: Path, workers: int = 2, command: list[str] | None = None
) -> Dataset:
    """Run every job (skipping finished ones, ``workers`` at once) and write ``out`` +
    provenance + the relaxed polymorphs."""
    return run_reference(cfg, out, workers, command=command)
