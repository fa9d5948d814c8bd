"""Reference data of hydrogen-combustion reaction 9, HO2 → H + O2 (paper 001 Fig. 4), with
spin-polarised GFN2-xTB through tblite (recipe ``make_combustion_reference``).

    from ase_mlff.reference.combustion import CombustionConfig, make_combustion_reference
    ds = make_combustion_reference(CombustionConfig(), Path("ho2_spgfn2.npz"))

**Open shell.** HO2 is a doublet, and so is the H + O2 channel it dissociates into on its
ground-state surface (H ↓ with triplet O2 ↑↑). Every frame is one doublet
(``multiplicity=2``) with tblite's spin polarisation on (``spin_polarization=1.0``,
spGFN2-xTB; Neugebauer et al., J. Comput. Chem. 44, 2120 (2023)). Without it GFN2-xTB
puts singlet O2 below triplet O2 and overbinds H–O2 by 1.5 eV; :func:`open_shell_evidence`
measures both and the provenance keeps the numbers (docs/recipe_combustion_fes.md).

**Atom order** O1, O2, H3 (paper 001's "O1–H3" order parameter): the H is bound to O1.

**Sampling** (paper 001's fine-tuning data are IRCs, AIMD and normal-mode sampling of
the reaction channels; as there, no frame breaks O2 or pushes H onto O):

* ``md_<T>K``: Langevin MD of HO2 (ASE, FixCom, friction 0.01 fs⁻¹, 0.5 fs) at each of
  ``temperatures_K`` (:func:`~ase_mlff.reference.langevin.langevin_frames`);
* ``path_<k>``: the reaction path: for d(O1–H3) on a grid from ``path_range_A`` the
  spGFN2 geometry relaxed at that fixed distance (:func:`reaction_path`), and frames
  around it, each atom moved by N(0, ``path_sigma_A``²) per Cartesian component, with the
  O1–H3 distance drawn uniformly over the range (linear interpolation between path
  points);
* ``products_<k>``: H + O2, O2 stretched by N(0, 0.03²) Å about its spGFN2 length and H
  at ``products_range_A`` from O1 in a uniformly random direction.

Each block is one job of :mod:`~ase_mlff.reference.runner` (Ray tasks, resume,
provenance); frames keep per-frame ``config_type``, ``d_OH`` and ``d_OO``.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
from ase import Atoms

from ase_mlff.data.dataset import Dataset
from ase_mlff.reference.langevin import langevin_frames
from ase_mlff.reference.runner import Job, ReferenceKind, run_reference

log = logging.getLogger(__name__)

O1, O2, H3 = 0, 1, 2


def spgfn2(method: str = "GFN2-xTB", multiplicity: int = 2, spin_polarization: float | None = 1.0):
    """tblite's ASE calculator for the reaction: a doublet, spin polarisation on."""
    from tblite.ase import TBLite

    return TBLite(
        method=method,
        multiplicity=multiplicity,
        spin_polarization=spin_polarization,
        verbosity=0,
    )


def ho2_guess() -> Atoms:
    """HO2 in the order O1, O2, H3 (Q-Force's r0/θ0: H on O1)."""
    from ase_mlff.forcefields.qforce import species_guess

    return species_guess("HO2")


def relaxed(atoms: Atoms, calc, fix: tuple[int, int] | None = None, fmax: float = 0.005) -> Atoms:
    """``atoms`` relaxed with ``calc`` (ASE BFGS), optionally at a fixed distance."""
    from ase.constraints import FixBondLength
    from ase.optimize import BFGS

    a = atoms.copy()
    if fix is not None:
        a.set_constraint(FixBondLength(*fix))
    a.calc = calc
    BFGS(a, logfile=None).run(fmax=fmax, steps=500)
    a.set_constraint()
    a.info["energy"] = float(a.get_potential_energy())
    a.calc = None
    return a


def reaction_path(grid_A: np.ndarray, method: str = "GFN2-xTB") -> list[Atoms]:
    """The relaxed-scan path along d(O1–H3): for each distance of ``grid_A`` (ascending)
    the spGFN2 geometry relaxed with that distance fixed, each starting from the last."""
    calc = spgfn2(method)
    prev = relaxed(ho2_guess(), calc)
    path = []
    for r in grid_A:
        a = prev.copy()
        a.set_distance(O1, H3, float(r), fix=0)
        prev = relaxed(a, calc, fix=(O1, H3))
        path.append(prev)
    return path


def open_shell_evidence(method: str = "GFN2-xTB") -> dict[str, float]:
    """What spin polarisation changes, in eV: the O2 triplet–singlet gap (experiment:
    triplet lower by 0.98 eV, a¹Δg) and D_e(HO2 → H + O2) (experiment ≈ 2.3 eV:
    D0 = 2.04 eV plus the HO2–O2 zero-point difference), with and without it."""
    o2 = Atoms("OO", positions=[[0, 0, 0], [1.21, 0, 0]])
    out = {}
    for tag, sp in (("spin_polarized", 1.0), ("restricted", None)):
        e_ho2 = relaxed(ho2_guess(), spgfn2(method, 2, sp)).info["energy"]
        e_t = relaxed(o2, spgfn2(method, 3, sp)).info["energy"]
        e_s = relaxed(o2, spgfn2(method, 1, sp)).info["energy"]
        h = Atoms("H")
        h.calc = spgfn2(method, 2, sp)
        e_h = float(h.get_potential_energy())
        out[f"{tag}_o2_triplet_minus_singlet_eV"] = e_t - e_s
        out[f"{tag}_De_HO2_H_O2_eV"] = e_h + min(e_t, e_s) - e_ho2
    return out


@dataclass(frozen=True)
class CombustionConfig:
    """The reference set of reaction 9 (see the module doc); ``workers`` jobs at once."""

    method: str = "GFN2-xTB"
    temperatures_K: tuple[float, ...] = (300.0, 1000.0, 2000.0)
    md_frames: int = 600
    timestep_fs: float = 0.5
    friction_per_fs: float = 0.01
    equilibration_fs: float = 500.0
    stride: int = 10
    path_range_A: tuple[float, float] = (0.85, 4.0)
    path_points: int = 32
    path_sigma_A: float = 0.05
    path_blocks: int = 2
    path_frames: int = 600
    products_range_A: tuple[float, float] = (2.5, 5.0)
    products_frames: int = 400
    seed: int = 2026
    workers: int = 2

    kind: ClassVar[ReferenceKind]

    def __post_init__(self) -> None:
        lo, hi = self.path_range_A
        if not 0.5 < lo < hi or self.path_points < 2:
            raise ValueError(f"path_range_A must rise above 0.5 Å with >= 2 points: {self}")
        if not 0 < self.products_range_A[0] < self.products_range_A[1]:
            raise ValueError(f"products_range_A must be increasing: {self.products_range_A}")
        if min(self.md_frames, self.path_frames, self.products_frames, self.stride) < 1:
            raise ValueError("frame counts and stride must be >= 1")


def _jobs(cfg: CombustionConfig, parts_dir: Path) -> list[Job]:
    jobs = [
        Job(f"md_{int(t)}K", k, (cfg.seed, k), params={"what": "md", "temperature_K": t})
        for k, t in enumerate(cfg.temperatures_K)
    ]
    n = len(jobs)
    jobs += [
        Job(f"path_{b}", n + b, (cfg.seed, n + b), params={"what": "path"})
        for b in range(cfg.path_blocks)
    ]
    n = len(jobs)
    jobs.append(Job("products_0", n, (cfg.seed, n), params={"what": "products"}))
    return jobs


def _label(
    frames: list[Atoms], cfg: CombustionConfig, path: Path, config_type: str, traj_id: int
) -> None:
    import ase.io

    for a in frames:
        a = a.copy()
        try:
            e, f = single_point(a, cfg.method)
        except RuntimeError as err:  # SCF failed twice: the frame is left out, and counted
            log.warning("%s frame left out: %s", config_type, err)
            continue
        a.info.update(ref_energy=e, config_type=config_type, traj_id=traj_id)
        a.arrays["ref_forces"] = f
        ase.io.write(path, a, format="extxyz", append=True)


def single_point(atoms: Atoms, method: str = "GFN2-xTB") -> tuple[float, np.ndarray]:
    """spGFN2-xTB energy and forces of one frame (doublet, spin polarisation on) from a
    fresh calculator, with the damped retry of
    :func:`ase_mlff.reference.diverse.single_point`; RuntimeError when that fails too."""
    from ase_mlff.reference.diverse import single_point as xtb_single_point

    return xtb_single_point(atoms, method, multiplicity=2, spin_polarization=1.0)


def _run_job(cfg: CombustionConfig, job: Job, path: Path) -> None:
    rng = np.random.default_rng(job.seed)
    what = job.params["what"]
    if what == "md":
        _run_md(cfg, job, path, rng)
    elif what == "path":
        _label(path_frames(cfg, rng), cfg, path, "path", job.index)
    else:
        _label(product_frames(cfg, rng), cfg, path, "products", job.index)


def _run_md(cfg: CombustionConfig, job: Job, path: Path, rng: np.random.Generator) -> None:
    import ase.io

    atoms = relaxed(ho2_guess(), spgfn2(cfg.method))
    atoms.calc = spgfn2(cfg.method)
    t = float(job.params["temperature_K"])
    n_eq = int(round(cfg.equilibration_fs / cfg.timestep_fs))
    n_total = n_eq + cfg.md_frames * cfg.stride
    for _ in langevin_frames(
        atoms,
        rng,
        np.full(n_total, t),
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
            ref_energy=float(atoms.get_potential_energy()), config_type=job.name, traj_id=job.index
        )
        frame.arrays["ref_forces"] = atoms.get_forces(apply_constraint=False).copy()
        ase.io.write(path, frame, format="extxyz", append=True)


def path_frames(cfg: CombustionConfig, rng: np.random.Generator) -> list[Atoms]:
    """Frames around the relaxed path (module doc), unlabelled."""
    grid = np.linspace(*cfg.path_range_A, cfg.path_points)
    path = np.stack([a.positions for a in reaction_path(grid, cfg.method)])
    frames = []
    for _ in range(cfg.path_frames):
        r = rng.uniform(*cfg.path_range_A)
        k = min(int(np.searchsorted(grid, r)), len(grid) - 1)
        lo = max(k - 1, 0)
        w = 0.0 if k == lo else (r - grid[lo]) / (grid[k] - grid[lo])
        pos = (1 - w) * path[lo] + w * path[k]
        pos = pos + rng.normal(0.0, cfg.path_sigma_A, pos.shape)
        frames.append(Atoms("OOH", positions=pos))
    return frames


def product_frames(cfg: CombustionConfig, rng: np.random.Generator) -> list[Atoms]:
    """H + O2 frames (module doc), unlabelled."""
    o2 = relaxed(Atoms("OO", positions=[[0, 0, 0], [1.21, 0, 0]]), spgfn2(cfg.method, 3))
    r_oo = o2.get_distance(0, 1)
    frames = []
    for _ in range(cfg.products_frames):
        d = r_oo + rng.normal(0.0, 0.03)
        u = rng.normal(size=3)
        u /= np.linalg.norm(u)
        axis = rng.normal(size=3)
        axis /= np.linalg.norm(axis)
        h = rng.uniform(*cfg.products_range_A) * u
        frames.append(Atoms("OOH", positions=[[0, 0, 0], d * axis, h]))
    return frames


def _assemble(cfg: CombustionConfig, jobs: list[Job], parts: list[Path], out: Path) -> Dataset:
    import ase
    import ase.io
    import tblite

    images = [a for p in parts for a in ase.io.read(p, index=":", format="extxyz")]
    n = len(images)
    pos = np.stack([a.positions for a in images])
    return Dataset(
        numbers_n=np.tile(images[0].numbers, n),
        positions_nc=pos.reshape(-1, 3),
        n_atoms_s=np.full(n, 3),
        cell_s33=np.zeros((n, 3, 3)),
        pbc_s3=np.zeros((n, 3), bool),
        energy_s=np.array([a.info["ref_energy"] for a in images]),
        forces_nc=np.stack([a.arrays["ref_forces"] for a in images]).reshape(-1, 3),
        config_type_s=np.array([a.info["config_type"] for a in images]),
        extra_s={
            "d_OH": np.linalg.norm(pos[:, H3] - pos[:, O1], axis=1),
            "d_OO": np.linalg.norm(pos[:, O2] - pos[:, O1], axis=1),
            # the job of each frame: md_<T>K 0, 1, ...; path_<b>; products_0 last
            "traj_id": np.array([a.info["traj_id"] for a in images], dtype=np.int64),
        },
        provenance={
            "method": f"sp{cfg.method} (tblite, multiplicity 2, spin_polarization 1.0)",
            "program": "tblite",
            "program_version": getattr(tblite, "__version__", "unknown"),
            "ase_version": ase.__version__,
            "reaction": "HO2 -> H + O2 (paper 001 reaction 9)",
            "atom_order": "O1, O2, H3 (H bound to O1)",
            "sampling": "Langevin MD of HO2, relaxed-scan path along d(O1-H3) with noise, "
            "H + O2 products (ase_mlff.reference.combustion)",
            "open_shell_evidence_eV": open_shell_evidence(cfg.method),
            "left_out_scf_failures": {
                "path": cfg.path_blocks * cfg.path_frames
                - sum(a.info["config_type"] == "path" for a in images),
                "products": cfg.products_frames
                - sum(a.info["config_type"] == "products" for a in images),
            },
            "units": {"energy": "eV", "forces": "eV/Angstrom", "positions": "Angstrom"},
            "config": asdict(cfg),
        },
    )


CombustionConfig.kind = ReferenceKind(
    recipe="make_combustion_reference",
    jobs=_jobs,
    run_job=_run_job,
    assemble=_assemble,
    resume_ignores=("workers",),
)


def make_combustion_reference(
    cfg: CombustionConfig, out: Path, command: list[str] | None = None
) -> Dataset:
    """Make the set (``cfg.workers`` jobs at once, finished jobs of an interrupted run
    reused) and write ``out`` (npz) plus ``<out>.provenance.json``."""
    return run_reference(cfg, out, cfg.workers, command=command)


def qforce_pretraining_frames(
    n_frames: int, sigma_A: float = 0.2, seed: int = 0, products_fraction: float = 0.5
) -> Dataset:
    """Paper 001's force-field pre-training set for reaction 9: rattled HO2 (x + σ·ε about
    its Q-Force minimum) and rattled H + O2 (O2 about its minimum, H at 2.5–5 Å from O1
    in a random direction), labelled by the non-reactive Q-Force field of paper 001
    Table 1: HO2's terms for HO2, O2's alone for H + O2 (no H–O2 interaction, as the
    paper's isolated species). Atom order O1, O2, H3."""
    from ase_mlff.forcefields.qforce import qforce_potential, relaxed_species
    from ase_mlff.reference.sampling import predict_frames

    rng = np.random.default_rng(seed)
    n_prod = int(round(n_frames * products_fraction))
    ho2, o2 = relaxed_species("HO2"), relaxed_species("O2")
    pos_r = ho2.positions[None] + rng.normal(0.0, sigma_A, (n_frames - n_prod, 3, 3))
    u = rng.normal(size=(n_prod, 3))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    oo = o2.positions[None] + rng.normal(0.0, sigma_A, (n_prod, 2, 3))
    h = oo[:, 0] + rng.uniform(2.5, 5.0, (n_prod, 1)) * u
    pos_p = np.concatenate([oo, h[:, None]], axis=1)
    apart = Atoms("OOH", positions=[o2.positions[0], o2.positions[1], [9.0, 9.0, 9.0]])
    parts = []
    for template, pos, kind in ((ho2, pos_r, "qforce_HO2"), (apart, pos_p, "qforce_H+O2")):
        e, f = predict_frames(qforce_potential(template), template, pos)
        parts.append(Dataset.from_frames(template, pos, e, f, kind))
    ds = Dataset.concatenate(parts)
    ds.provenance = {
        "method": "Q-Force non-reactive FF, paper 001 Table 1 (ase_mlff.forcefields.qforce)",
        "sampling": f"rattled x + {sigma_A} A * N(0, 1) about HO2 and O2; H + O2 with H at "
        "2.5-5 A from O1",
        "n_frames": int(n_frames),
        "seed": int(seed),
    }
    return ds
