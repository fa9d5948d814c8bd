"""Reference data for a material: periodic silica (SiO2) labelled with GFN1-xTB (tblite).

    python -m ase_mlff.recipes.make_silica_reference \
        --out ase_mlff/data/shipped/silica_gfn1.npz --workers 2

Energies, forces *and stress* of 24-48-atom periodic cells, sampled the way the GAP-22
silica set of paper 004 is (crystalline, distorted, liquid and melt-quenched silica), from
five polymorphs (:mod:`ase_mlff.data.silica`):

1. ``relax``: each polymorph relaxed with GFN1-xTB (FIRE on positions and cell through
   :class:`ase.filters.FrechetCellFilter`, fmax 0.05 eV/Å), every ``--relax-stride``-th
   step kept;
2. ``strained``: ``--strained`` copies of each relaxed cell with a random symmetric strain
   (normal ≤ 5 %, shear ≤ 3 %) and Gaussian rattling σ ~ U(0.01, 0.06) Å;
3. ``md_2000K``: NVT Langevin MD at 2,000 K, 2 fs (paper 004's silica MD protocol), from
   the relaxed quartz, α- and β-cristobalite and β-tridymite cells: ``--md-equilibration``
   steps, then a frame every ``--md-stride`` steps; these runs are also the reference
   ensemble for RDFs;
4. ``melt_quench``: the relaxed β-cristobalite cell melted at ``--melt-temperature`` K,
   then quenched linearly to 300 K (fixed volume), a frame every ``--md-stride`` steps.

Every job runs in its own process (spawn, one OpenMP thread) and appends its frames to
``<out>.parts/<job>.xyz`` as it makes them; a finished job is renamed from ``.tmp.xyz``,
so a rerun skips finished jobs and keeps their frames. Frames where the SCC does not
converge are skipped and counted in the provenance.

Split: frames are grouped in blocks of ``--block`` consecutive frames of one job (so MD
frames a few fs apart never straddle train and test); ``--test-blocks`` blocks drawn at
random are the test set. They are numbered first: ``traj_id`` 0 … test_blocks−1, the
shipped split ``SHIPPED_SPLITS["silica"]``.

GFN1-xTB, not DFT: it puts quartz at 2.29 g/cm³ (experiment 2.65; GFN2-xTB 2.57 but five
times slower here), so the cells are relaxed with it first and every sample is drawn
around its own minimum. The method and versions are in ``<out>.provenance.json``.
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
from ase_mlff.data.silica import POLYMORPHS

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


def _static_job(args: tuple[SilicaConfig, str, int, str, str]) -> str:
    """Relax one polymorph (keeping every relax_stride-th step), write the relaxed cell,
    then label strained and rattled copies of it."""
    cfg, name, source, part, relaxed_path = args
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import ase.io
    from ase.filters import FrechetCellFilter
    from ase.optimize import FIRE

    from ase_mlff.data.silica import silica_polymorph, strained_rattled

    tmp = Path(part).with_suffix(".tmp.xyz")
    tmp.unlink(missing_ok=True)
    atoms = silica_polymorph(name)
    calc = _calc(cfg)
    atoms.calc = calc
    opt = FIRE(FrechetCellFilter(atoms), logfile=None)
    k = 0
    for _ in opt.irun(fmax=cfg.relax_fmax, steps=cfg.relax_steps):
        if opt.nsteps % cfg.relax_stride == 0:
            fr = _labelled(atoms, calc, dict(config_type="relax", source=source, step=k))
            if fr is not None:
                ase.io.write(tmp, fr, format="extxyz", append=True)
            k += 1
    relaxed = atoms.copy()
    relaxed.info.update(polymorph=name, relax_steps=opt.nsteps)
    relaxed.calc = None
    ase.io.write(relaxed_path, relaxed, format="extxyz")
    rng = np.random.default_rng([cfg.seed, source])
    n = cfg.strained if len(atoms) <= 36 else max(1, (2 * cfg.strained) // 3)
    for j, a in enumerate(strained_rattled(relaxed, n, rng)):
        fr = _labelled(a, calc, dict(config_type="strained", source=source, step=j))
        if fr is not None:
            ase.io.write(tmp, fr, format="extxyz", append=True)
    tmp.replace(part)
    return part


def _md_job(args: tuple[SilicaConfig, str, int, str, str, str]) -> str:
    """NVT Langevin MD (``kind`` md_2000K) or melt-quench from a relaxed polymorph."""
    cfg, kind, source, start_path, part, progress = args
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import ase.io
    from ase import units
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary
    from tqdm import tqdm

    tmp = Path(part).with_suffix(".tmp.xyz")
    tmp.unlink(missing_ok=True)
    rng = np.random.default_rng([cfg.seed, source])
    atoms = ase.io.read(start_path)
    atoms.calc = _calc(cfg)
    if kind == "melt_quench":
        t_of_step = np.concatenate(
            [
                np.full(cfg.melt_steps, cfg.melt_temperature_K),
                np.linspace(cfg.melt_temperature_K, 300.0, cfg.quench_steps),
            ]
        )
        first = 0
    else:
        n = cfg.md_equilibration + cfg.md_frames * cfg.md_stride
        t_of_step = np.full(n, cfg.md_temperature_K)
        first = cfg.md_equilibration
    MaxwellBoltzmannDistribution(atoms, temperature_K=float(t_of_step[0]), rng=rng)
    Stationary(atoms)
    dyn = Langevin(
        atoms,
        timestep=cfg.timestep_fs * units.fs,
        temperature_K=float(t_of_step[0]),
        friction=cfg.friction_per_fs / units.fs,
        rng=rng,
        fixcm=False,
    )
    for step in tqdm(range(1, len(t_of_step) + 1), desc=f"{kind} {source}", disable=not progress):
        dyn.set_temperature(temperature_K=float(t_of_step[step - 1]))
        try:
            dyn.run(1)
        except Exception as exc:  # SCC failure: keep what was stored
            log.warning("%s %d: MD stopped at step %d (%s)", kind, source, step, exc)
            break
        if step > first and (step - first) % cfg.md_stride == 0:
            info = dict(
                config_type=kind,
                source=source,
                step=step,
                time_fs=step * cfg.timestep_fs,
                temperature_K=float(t_of_step[step - 1]),
            )
            fr = atoms.copy()
            from ase.calculators.singlepoint import SinglePointCalculator

            fr.calc = SinglePointCalculator(
                fr,
                energy=atoms.get_potential_energy(),
                forces=atoms.get_forces(),
                stress=atoms.get_stress(),
            )
            fr.info.update(info)
            ase.io.write(tmp, fr, format="extxyz", append=True)
    tmp.replace(part)
    return part


def _run_pool(fn, jobs: list, workers: int) -> None:
    if not jobs:
        return
    # spawn, not fork: forked children inherit locks held by the parent's threads
    with ProcessPoolExecutor(
        max_workers=max(1, min(workers, len(jobs))),
        mp_context=multiprocessing.get_context("spawn"),
    ) as pool:
        for path in pool.map(fn, jobs):
            log.info("finished %s", path)


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


def make_silica_reference(cfg: SilicaConfig, out: Path, workers: int = 2) -> Dataset:
    """Run every job (skipping finished ones) and write ``out`` + provenance + polymorphs."""
    import ase
    import ase.io
    import tblite

    parts_dir = out.with_name(out.name + ".parts")
    parts_dir.mkdir(parents=True, exist_ok=True)
    names = list(POLYMORPHS)
    t0 = time.perf_counter()
    static = []
    for s, name in enumerate(names):
        part = parts_dir / f"{s:02d}_{name}_static.xyz"
        if not part.exists():
            static.append((cfg, name, s, str(part), str(parts_dir / f"{name}_relaxed.xyz")))
    _run_pool(_static_job, static, workers)
    md = []
    progress = "1" if sys.stderr.isatty() else ""
    for k, name in enumerate(MD_POLYMORPHS):
        s = len(names) + k
        part = parts_dir / f"{s:02d}_{name}_md.xyz"
        if not part.exists():
            md.append(
                (cfg, "md_2000K", s, str(parts_dir / f"{name}_relaxed.xyz"), str(part), progress)
            )
    s_melt = len(names) + len(MD_POLYMORPHS)
    melt_part = parts_dir / f"{s_melt:02d}_melt_quench.xyz"
    if not melt_part.exists():
        start = parts_dir / "beta_cristobalite_relaxed.xyz"
        md.append((cfg, "melt_quench", s_melt, str(start), str(melt_part), progress))
    _run_pool(_md_job, md, workers)
    wall = time.perf_counter() - t0

    parts = sorted(p for p in parts_dir.glob("*.xyz") if not p.name.endswith("_relaxed.xyz"))
    parts = [p for p in parts if not p.name.endswith(".tmp.xyz")]
    images = [a for p in parts for a in ase.io.read(p, index=":", format="extxyz")]
    ds = Dataset.from_atoms(images, require_labels=True)
    source = np.array([a.info["source"] for a in images], dtype=np.int64)
    block_s, n_blocks = assign_blocks(source, cfg.block, cfg.test_blocks, cfg.seed)
    ds.extra_s = {
        "traj_id": block_s,
        "source": source,
        "step": np.array([a.info["step"] for a in images], dtype=np.int64),
    }
    relaxed = [ase.io.read(parts_dir / f"{n}_relaxed.xyz") for n in names]
    ase.io.write(out.with_name(POLYMORPHS_FILE.name), relaxed, format="extxyz")
    sources = {int(s): f"{n} relax+strained" for s, n in enumerate(names)}
    sources.update({len(names) + k: f"{n} NVT 2000 K" for k, n in enumerate(MD_POLYMORPHS)})
    sources[s_melt] = "beta_cristobalite melt-quench"
    kinds, counts = np.unique(ds.config_type_s, return_counts=True)
    ds.provenance = {
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
            for n, a in zip(names, relaxed)
        },
        "split": {"blocks": n_blocks, "test_groups": list(range(cfg.test_blocks))},
        "generation_wall_s": wall,
        "workers": workers,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "python": platform.python_version(),
        "command": "python -m ase_mlff.recipes.make_silica_reference " + " ".join(sys.argv[1:]),
    }
    ds.save_npz(out)
    provenance_path(out).write_text(json.dumps(ds.provenance, indent=2, default=str))
    return ds


def _density(atoms) -> float:
    return round(float(atoms.get_masses().sum() * 1.66053907 / atoms.get_volume()), 4)


def main(argv: list[str] | None = None) -> None:
    d = SilicaConfig()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("reference") / SHIPPED_FILE.name)
    p.add_argument("--workers", type=int, default=2)
    for f, v in asdict(d).items():
        if f != "method":
            p.add_argument("--" + f.replace("_", "-"), type=type(v), default=v)
    p.add_argument("--method", default=d.method, choices=["GFN1-xTB", "GFN2-xTB"])
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cfg = SilicaConfig(**{f: getattr(a, f) for f in asdict(d)})
    t0 = time.perf_counter()
    ds = make_silica_reference(cfg, a.out, a.workers)
    print(f"{ds.summary()}\nwrote {a.out} in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
