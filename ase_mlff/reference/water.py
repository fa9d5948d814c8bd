"""Reference data of bulk water: flexible-TIP3P Langevin MD with OpenMM, several
trajectories as Ray tasks (the shipped water set; recipe ``make_water_reference``).

    from ase_mlff.reference.water import WaterMDConfig, water_reference_md
    ds = water_reference_md(WaterMDConfig(n_frames=100), traj_id=0)

:func:`water_reference_md` is one trajectory; :func:`make_water_reference` splits a
number of frames over trajectories (one job each, :mod:`~ase_mlff.reference.runner`) and
writes the set. OpenMM is the reference method here, so the MD runs on OpenMM's
``LangevinMiddleIntegrator`` (not on the project's MD drivers); the system, its
parameters and the evaluator come from :mod:`ase_mlff.forcefields.water`. See
docs/forcefields_water.md.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

import numpy as np

from ase_mlff.calculators.openmm import get_platform
from ase_mlff.data.dataset import Dataset
from ase_mlff.forcefields.water import (
    DEFAULT_DENSITY,
    TIP3P_XML,
    WATER_NUMBERS,
    BulkWater,
    OpenMMEvaluator,
    bulk_water_system,
    nonbonded_settings,
    tip3p_parameters,
    water_box_length,
)
from ase_mlff.reference.runner import Job, ReferenceKind, run_reference
from ase_mlff.utils import KJ_PER_MOL

if TYPE_CHECKING:  # OpenMM is imported inside the functions that need it
    import openmm

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WaterMDConfig:
    """Protocol of :func:`water_reference_md` (one trajectory)."""

    n_molecules: int = 64
    density_g_cm3: float = DEFAULT_DENSITY
    temperature_K: float = 300.0
    timestep_fs: float = 0.5
    friction_per_ps: float = 1.0
    equilibration_fs: float = 5000.0
    interval_fs: float = 50.0
    n_frames: int = 1000
    seed: int = 2026
    platform: str = "CPU"
    threads: int = 1
    label_platform: str = "Reference"
    cutoff_nm: float | None = None
    switch_width_nm: float | None = 0.1
    dispersion_correction: bool = True
    ewald_error_tolerance: float = 1e-5

    kind: ClassVar[ReferenceKind]

    def steps(self) -> tuple[int, int]:
        """(equilibration steps, steps between stored frames)."""
        n_eq = int(round(self.equilibration_fs / self.timestep_fs))
        stride = int(round(self.interval_fs / self.timestep_fs))
        if stride < 1 or abs(stride * self.timestep_fs - self.interval_fs) > 1e-9:
            raise ValueError(
                f"interval {self.interval_fs} fs is not a positive multiple of the "
                f"time step {self.timestep_fs} fs"
            )
        return n_eq, stride

    def validate(self) -> None:
        water_box_length(self.n_molecules, self.density_g_cm3)  # checks n and the density
        if self.temperature_K <= 0:
            raise ValueError(f"temperature must be positive, got {self.temperature_K} K")
        if not (0 < self.timestep_fs <= 1.0):
            raise ValueError(
                f"time step {self.timestep_fs} fs: flexible O–H bonds (period ~9 fs) need "
                "0 < dt ≤ 1 fs (0.5 fs recommended)"
            )
        if self.friction_per_ps < 0 or self.equilibration_fs < 0:
            raise ValueError("friction and equilibration time must be non-negative")
        if self.n_frames < 1:
            raise ValueError(f"n_frames must be positive, got {self.n_frames}")
        self.steps()


class _Samples(NamedTuple):
    """The stored frames of one trajectory and what they cost."""

    positions: np.ndarray  # (frames, atoms, 3) Å, wrapped by molecule
    forces: np.ndarray  # (frames, atoms, 3) eV/Å, label platform
    energy: np.ndarray  # (frames,) eV, label platform
    temperature: np.ndarray  # (frames,) K, instantaneous
    md_s: float
    label_s: float


def water_reference_md(
    config: WaterMDConfig | None = None, traj_id: int = 0, progress: bool = False, **overrides: Any
) -> Dataset:
    """One Langevin trajectory of bulk flexible TIP3P water, labelled frames as a Dataset.

    Protocol: :func:`~ase_mlff.forcefields.water.bulk_water_system` (seed from
    ``(config.seed, traj_id)``), L-BFGS minimisation, Maxwell–Boltzmann velocities at T,
    ``LangevinMiddleIntegrator`` (OpenMM's BAOAB-type Langevin splitting) at T with
    ``friction_per_ps`` and ``timestep_fs``, NVT at the given density;
    ``equilibration_fs`` discarded, then a frame every ``interval_fs``. The MD runs on
    ``platform`` (CPU, single thread: mixed precision); every stored frame (positions
    wrapped by molecule into the box, float64 Å) is re-labelled on the ``label_platform``
    (Reference: double precision), so the stored energy (eV) and forces (eV/Å) are the
    exact model values at the stored positions.

    Returns a Dataset with pbc, cell, config_type ``"tip3p_flex_bulk"`` and extra
    ``traj_id``, ``step`` and ``time_fs`` (from the start of the run).
    """
    cfg = config or WaterMDConfig()
    if overrides:
        cfg = WaterMDConfig(**{**cfg.__dict__, **overrides})
    cfg.validate()
    return _trajectory(cfg, traj_id, (cfg.seed, traj_id), progress)


def _trajectory(cfg: WaterMDConfig, traj_id: int, seed: tuple[int, int], progress: bool) -> Dataset:
    """:func:`water_reference_md` of a checked config, its random stream ``seed``."""
    rng = np.random.default_rng(seed)
    box_seed, vel_seed, langevin_seed = (int(x) for x in rng.integers(1, 2**31 - 1, size=3))
    seeds = {"box": box_seed, "velocities": vel_seed, "langevin": langevin_seed}
    bulk = bulk_water_system(
        cfg.n_molecules,
        cfg.density_g_cm3,
        box_seed,
        cutoff_nm=cfg.cutoff_nm,
        switch_width_nm=cfg.switch_width_nm,
        dispersion_correction=cfg.dispersion_correction,
        ewald_error_tolerance=cfg.ewald_error_tolerance,
    )
    context, integrator, e_min = _start_md(cfg, bulk, seeds)
    label = OpenMMEvaluator(bulk.system, platform=cfg.label_platform, threads=cfg.threads)
    samples = _sample(cfg, context, integrator, label, bulk.box, traj_id, progress)
    log.info(
        "traj %d: %d frames, <T> = %.1f K, <E> = %.4f eV",
        traj_id,
        cfg.n_frames,
        samples.temperature.mean(),
        samples.energy.mean(),
    )
    provenance = _provenance(cfg, traj_id, bulk, label, seeds, e_min, samples)
    return _dataset(cfg, traj_id, bulk.box, samples, provenance)


def _start_md(
    cfg: WaterMDConfig, bulk: BulkWater, seeds: dict[str, int]
) -> tuple[openmm.Context, openmm.LangevinMiddleIntegrator, float]:
    """The MD context: lattice start minimised (L-BFGS), Maxwell–Boltzmann velocities.
    Returns (context, integrator, minimised energy in kJ/mol)."""
    import openmm
    import openmm.unit as u

    plat, props = get_platform(cfg.platform, cfg.threads)
    integrator = openmm.LangevinMiddleIntegrator(
        cfg.temperature_K * u.kelvin,
        cfg.friction_per_ps / u.picosecond,
        cfg.timestep_fs * u.femtosecond,
    )
    integrator.setRandomNumberSeed(seeds["langevin"])  # 0 would mean "pick a random seed"
    context = openmm.Context(bulk.system, integrator, plat, props)
    context.setPositions(u.Quantity(bulk.positions / 10.0, u.nanometer))
    openmm.LocalEnergyMinimizer.minimize(context, 10.0, 0)
    state = context.getState(getEnergy=True)
    e_min = state.getPotentialEnergy().value_in_unit(u.kilojoule_per_mole)
    context.setVelocitiesToTemperature(cfg.temperature_K * u.kelvin, seeds["velocities"])
    return context, integrator, e_min


def _sample(
    cfg: WaterMDConfig,
    context: openmm.Context,
    integrator: openmm.LangevinMiddleIntegrator,
    label: OpenMMEvaluator,
    box: np.ndarray,
    traj_id: int,
    progress: bool,
) -> _Samples:
    """Equilibrate, then store a frame every ``stride`` steps, labelled by ``label``."""
    import openmm.unit as u
    from tqdm import tqdm

    n_eq, stride = cfg.steps()
    n_atoms = 3 * cfg.n_molecules
    dof = 3 * n_atoms - 3  # 3N minus the 3 of the removed centre-of-mass motion
    k_b = float(u.MOLAR_GAS_CONSTANT_R.value_in_unit(u.kilojoule_per_mole / u.kelvin))
    pos_s = np.empty((cfg.n_frames, n_atoms, 3))
    f_s = np.empty((cfg.n_frames, n_atoms, 3))
    e_s = np.empty(cfg.n_frames)
    temps = np.empty(cfg.n_frames)
    total = n_eq + cfg.n_frames * stride
    bar = tqdm(total=total, desc=f"water traj {traj_id}", disable=not progress, unit="step")
    t_md = t_label = 0.0
    done = 0
    while done < n_eq:
        k = min(1000, n_eq - done)
        t0 = time.perf_counter()
        integrator.step(k)
        t_md += time.perf_counter() - t0
        done += k
        bar.update(k)
    for s in range(cfg.n_frames):
        t0 = time.perf_counter()
        integrator.step(stride)
        state = context.getState(getPositions=True, getEnergy=True, enforcePeriodicBox=True)
        t1 = time.perf_counter()
        pos = np.asarray(state.getPositions(asNumpy=True).value_in_unit(u.nanometer)) * 10.0
        pos_s[s] = pos
        e_s[s], f_s[s] = label(pos, box)
        t_md += t1 - t0
        t_label += time.perf_counter() - t1
        ke = state.getKineticEnergy().value_in_unit(u.kilojoule_per_mole)
        temps[s] = 2.0 * ke / (dof * k_b)
        bar.update(stride)
    bar.close()
    return _Samples(pos_s, f_s, e_s, temps, t_md, t_label)


def _provenance(
    cfg: WaterMDConfig,
    traj_id: int,
    bulk: BulkWater,
    label: OpenMMEvaluator,
    seeds: dict[str, int],
    e_min: float,
    samples: _Samples,
) -> dict[str, Any]:
    """Model, parameters, PME settings, platforms, protocol, seeds and timings."""
    import openmm

    n_eq, stride = cfg.steps()
    md_platform = f"CPU (Threads={cfg.threads})" if cfg.platform == "CPU" else cfg.platform
    label_platform = cfg.label_platform
    if label_platform == "Reference":
        label_platform = "Reference (double precision)"
    return {
        "model": "flexible TIP3P (OpenMM tip3p.xml, rigidWater=False, constraints=None)",
        "force_field_file": "openmm/app/data/" + TIP3P_XML,
        "parameters": tip3p_parameters().table(),
        "nonbonded": nonbonded_settings(bulk.system, label.context),
        "program": "OpenMM",
        "program_version": openmm.Platform.getOpenMMVersion(),
        "md_platform": md_platform,
        "label_platform": label_platform,
        "sampling": (
            f"NVT Langevin MD (openmm.LangevinMiddleIntegrator, {cfg.temperature_K} K, "
            f"friction {cfg.friction_per_ps}/ps, dt {cfg.timestep_fs} fs), CMMotionRemover, "
            "L-BFGS-minimised lattice start, velocities Maxwell-Boltzmann"
        ),
        "config": cfg.__dict__,
        "box_A": bulk.box.tolist(),
        "minimized_energy_eV": e_min * KJ_PER_MOL,
        "trajectories": {
            str(traj_id): {
                "mean_temperature_K": float(samples.temperature.mean()),
                "std_temperature_K": float(samples.temperature.std()),
                "mean_energy_eV": float(samples.energy.mean()),
                "seeds": seeds,
                "md_ms_per_step": 1e3 * samples.md_s / (n_eq + cfg.n_frames * stride),
                "label_ms_per_frame": 1e3 * samples.label_s / cfg.n_frames,
                "wall_s": samples.md_s + samples.label_s,
            }
        },
        "units": {"energy": "eV", "forces": "eV/Angstrom", "positions": "Angstrom"},
        "atom_order": "O, H, H per molecule (OpenMM residue HOH: O, H1, H2)",
    }


def _dataset(
    cfg: WaterMDConfig,
    traj_id: int,
    box: np.ndarray,
    samples: _Samples,
    provenance: dict[str, Any],
) -> Dataset:
    n_eq, stride = cfg.steps()
    n, n_atoms = cfg.n_frames, 3 * cfg.n_molecules
    steps = n_eq + stride * np.arange(1, n + 1)
    return Dataset(
        numbers_n=np.tile(WATER_NUMBERS, n * cfg.n_molecules),
        positions_nc=samples.positions.reshape(-1, 3),
        n_atoms_s=np.full(n, n_atoms),
        cell_s33=np.tile(np.diag(box), (n, 1, 1)),
        pbc_s3=np.ones((n, 3), bool),
        energy_s=samples.energy,
        forces_nc=samples.forces.reshape(-1, 3),
        config_type_s=np.full(n, "tip3p_flex_bulk"),
        extra_s={
            "traj_id": np.full(n, traj_id, dtype=np.int64),
            "step": steps.astype(np.int64),
            "time_fs": steps * cfg.timestep_fs,
        },
        provenance=provenance,
    )


# --------------------------------------------------------------------------- the set
def _frame_counts(n_frames: int, trajectories: int) -> list[int]:
    if trajectories < 1 or n_frames < trajectories:
        raise ValueError(
            f"need at least one frame per trajectory ({n_frames} frames, "
            f"{trajectories} trajectories)"
        )
    return [len(a) for a in np.array_split(np.arange(n_frames), trajectories)]


def _jobs(cfg: WaterMDConfig, parts_dir: Path, n_frames: int, trajectories: int) -> list[Job]:
    jobs = [
        Job(f"traj_{t:03d}", t, (cfg.seed, t), params={"n_frames": k})
        for t, k in enumerate(_frame_counts(n_frames, trajectories))
    ]
    for job in jobs:
        replace(cfg, n_frames=job.params["n_frames"]).validate()
    return jobs


def _run_trajectory(cfg: WaterMDConfig, job: Job, path: Path) -> None:
    one = replace(cfg, n_frames=job.params["n_frames"])
    _trajectory(one, job.index, job.seed, progress=False).save_npz(path)


def _assemble(cfg: WaterMDConfig, jobs: list[Job], parts: list[Path], out: Path) -> Dataset:
    """The trajectories in job order; the provenance of the first, with every
    trajectory's statistics and seeds."""
    datasets = [Dataset.load_npz(p) for p in parts]
    ds = Dataset.concatenate(datasets)
    sizes = [job.params["n_frames"] for job in jobs]
    prov = dict(datasets[0].provenance)
    prov["config"] = {**prov["config"], "n_frames": sum(sizes)}
    prov["n_trajectories"] = len(jobs)
    prov["frames_per_trajectory"] = sizes
    prov["trajectories"] = {k: v for d in datasets for k, v in d.provenance["trajectories"].items()}
    ds.provenance = prov
    return ds


WaterMDConfig.kind = ReferenceKind(
    recipe="make_water_reference",
    jobs=_jobs,
    run_job=_run_trajectory,
    assemble=_assemble,
    part_suffix=".npz",
    threads=lambda cfg: cfg.threads,
)


def make_water_reference(
    cfg: WaterMDConfig,
    n_frames: int,
    trajectories: int,
    out: Path,
    workers: int = 1,
    command: list[str] | None = None,
) -> Dataset:
    """``trajectories`` runs holding ``n_frames`` frames in total (``workers`` at once);
    writes ``out`` (npz) plus ``<out>.provenance.json``."""
    return run_reference(
        cfg, out, workers, command=command, n_frames=n_frames, trajectories=trajectories
    )
