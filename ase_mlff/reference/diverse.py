"""A large, diverse GFN2-xTB set of small CHNO molecules for pre-training (paper 000's
pre-training on a large set, made offline; recipe ``make_diverse_reference``).

    from ase_mlff.reference.diverse import DiverseConfig, make_diverse_reference
    ds = make_diverse_reference(DiverseConfig(), Path("organic_gfn2.npz"))

**Molecules**: the SMILES list shipped as ``ase_mlff/data/shipped/organic_chno_smiles.txt``
(419 neutral CHNO molecules, at most 16 heavy atoms, none of the eight MD17 molecules; its
header says where it came from). :func:`read_smiles` reads it, or any list of the same
format, and refuses what the labelling cannot treat (another element, a net charge, a
SMILES RDKit cannot read) before any work.

**Per molecule** (one RDKit conformer, ETKDGv3 with the molecule's own seed, relaxed with
GFN2-xTB; its frames are all labelled by GFN2-xTB from fresh calculators):

* ``minimum``: the relaxed geometry;
* ``nms_<T>K``: normal-mode sampling at each of ``nms_temperatures_K`` (the ANI-1 recipe,
  Smith, Isayev & Roitberg, Chem. Sci. 8, 3192 (2017), §S1.2): the GFN2-xTB Hessian by
  central differences, the 3N − 6 (3N − 5) vibrational modes q_i (unit Cartesian vectors
  from the mass-weighted eigenvectors) with force constants K_i = q_iᵀ H q_i; per frame
  uniform c_i scaled so that Σ c_i ~ U(0, 1), R_i = ±√(3 c_i N_a k_B T / K_i) and
  x = x₀ + Σ R_i q_i, so the harmonic energy is at most (3/2) N_a k_B T. K_i is floored
  at ``min_force_constant`` (soft torsions would otherwise swing far out of the harmonic
  region), and a frame with two atoms closer than ``min_distance_A`` is drawn again;
* ``md_<T>K``: a short Langevin MD at ``md_temperature_K`` (0.5 fs, friction 0.01 fs⁻¹,
  :func:`~ase_mlff.reference.langevin.langevin_frames`), a frame every ``md_stride`` steps
  after ``md_equilibration_steps``: anharmonic, correlated hot geometries;
* ``stretch``: near-dissociation geometries: a random bond (RDKit's bond list) stretched
  to ``stretch_range`` times its relaxed length. A bond outside a ring: the smaller of the
  two fragments it joins moves rigidly. A ring bond: its second atom moves alone (its H
  atoms stay). Then every atom is moved by N(0, 0.02²) Å.

Frames whose largest force is above ``max_force`` (20 eV/Å) are dropped at assembly and
counted by type (``dropped_above_max_force``): 99 % of the 1000 K MD forces are below
6.1 eV/Å (the largest 13 eV/Å), while a few squeezed ring atoms of the stretched frames
reach 95 eV/Å, whose squared errors would dominate a force loss (paper 004's perturbed
sets are filtered the same way).

A frame whose SCF does not converge even with damped mixing is left out and counted
(provenance ``scf_failures``); a molecule whose relaxation fails is left out and named
(``failed_molecules``). Frames carry ``mol_id`` (the molecule's entry in the SMILES list,
from 0), ``traj_id`` (the same: a trajectory split holds out whole molecules; the shipped
split's test set is every 20th molecule, :data:`ase_mlff.data.io.SHIPPED_SPLITS`) and
``config_type``. The labels
are raw GFN2-xTB energies (eV) and forces (eV/Å) of the neutral closed-shell molecule.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
from ase import Atoms

from ase_mlff.data.dataset import Dataset
from ase_mlff.data.io import SHIPPED_DIR
from ase_mlff.reference.langevin import langevin_frames
from ase_mlff.reference.runner import Job, ReferenceKind, run_reference

log = logging.getLogger(__name__)

#: the shipped molecule list (format: SMILES<TAB>tag<TAB>name, ``#`` comments)
SMILES_FILE = SHIPPED_DIR / "organic_chno_smiles.txt"
ELEMENTS = frozenset({"H", "C", "N", "O"})


@dataclass(frozen=True)
class DiverseConfig:
    """Sampling of each molecule of ``smiles_file`` (module doc); ``workers`` jobs at once."""

    smiles_file: str = str(SMILES_FILE)
    method: str = "GFN2-xTB"
    molecules_per_job: int = 20
    max_molecules: int | None = None
    nms_temperatures_K: tuple[float, ...] = (300.0, 1000.0, 2000.0)
    nms_frames: int = 15
    min_force_constant: float = 0.5
    min_distance_A: float = 0.6
    hessian_step_A: float = 0.005
    md_temperature_K: float = 1000.0
    md_equilibration_steps: int = 100
    md_frames: int = 24
    md_stride: int = 8
    timestep_fs: float = 0.5
    friction_per_fs: float = 0.01
    stretch_frames: int = 10
    stretch_range: tuple[float, float] = (1.2, 1.8)
    relax_fmax: float = 0.05
    #: eV/Å; frames with a larger force are dropped at assembly (None keeps all)
    max_force: float | None = 20.0
    seed: int = 2026
    workers: int = 2

    kind: ClassVar[ReferenceKind]

    def __post_init__(self) -> None:
        for name in ("molecules_per_job", "nms_frames", "md_frames", "md_stride"):
            if int(getattr(self, name)) < (1 if name in ("molecules_per_job", "md_stride") else 0):
                raise ValueError(f"DiverseConfig.{name} must be >= 0 (>= 1 for strides)")
        lo, hi = self.stretch_range
        if not 1.0 < lo <= hi:
            raise ValueError(f"stretch_range must satisfy 1 < lo <= hi, got {self.stretch_range}")

    def frames_per_molecule(self) -> int:
        n_nms = len(self.nms_temperatures_K) * self.nms_frames
        return 1 + n_nms + self.md_frames + self.stretch_frames


def read_smiles(path: str | Path = SMILES_FILE) -> list[tuple[str, str, str]]:
    """``(smiles, tag, name)`` of every line of ``path``; refuses (ValueError naming the
    line) a SMILES RDKit cannot read, another element than H, C, N, O, or a net charge."""
    from rdkit import Chem, RDLogger

    RDLogger.DisableLog("rdApp.*")
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"SMILES list not found: {path}")
    out = []
    for k, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        smiles, *rest = line.split("\t")
        mol = Chem.MolFromSmiles(smiles.strip())
        if mol is None:
            raise ValueError(f"{path}:{k}: RDKit cannot read the SMILES {smiles!r}")
        elements = {a.GetSymbol() for a in mol.GetAtoms()}
        if not elements <= ELEMENTS:
            raise ValueError(
                f"{path}:{k}: {smiles} holds {sorted(elements - ELEMENTS)}; the diverse set is "
                "CHNO only"
            )
        if Chem.GetFormalCharge(mol) != 0:
            raise ValueError(f"{path}:{k}: {smiles} has a net charge; only neutral molecules")
        tag = rest[0].strip() if rest else ""
        name = rest[1].strip() if len(rest) > 1 else smiles
        out.append((smiles.strip(), tag, name))
    if not out:
        raise ValueError(f"{path} lists no molecule")
    return out


def embed(smiles: str, seed: int) -> tuple[Atoms, list[tuple[int, int, bool]]]:
    """One 3-D conformer of ``smiles`` with hydrogens (RDKit ETKDGv3, then MMFF94 when
    RDKit has parameters) and its bonds ``(i, j, in_ring)``."""
    from rdkit import Chem
    from rdkit.Chem import AllChem

    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    params = AllChem.ETKDGv3()
    params.randomSeed = int(seed)
    if AllChem.EmbedMolecule(mol, params) != 0:
        params.useRandomCoords = True
        if AllChem.EmbedMolecule(mol, params) != 0:
            raise RuntimeError(f"RDKit could not embed {smiles}")
    if AllChem.MMFFHasAllMoleculeParams(mol):
        AllChem.MMFFOptimizeMolecule(mol, maxIters=500)
    pos = mol.GetConformer().GetPositions()
    atoms = Atoms([a.GetAtomicNum() for a in mol.GetAtoms()], positions=pos)
    bonds = [(b.GetBeginAtomIdx(), b.GetEndAtomIdx(), b.IsInRing()) for b in mol.GetBonds()]
    return atoms, bonds


def xtb(method: str = "GFN2-xTB", **settings):
    """tblite's ASE calculator, quiet."""
    from tblite.ase import TBLite

    return TBLite(method=method, verbosity=0, **settings)


def single_point(atoms: Atoms, method: str = "GFN2-xTB", **settings) -> tuple[float, np.ndarray]:
    """Energy (eV) and forces (eV/Å) of one frame from a fresh tblite calculator (no earlier
    wave function as the guess: the frames are unrelated); an SCF that does not converge
    is tried once more with damped mixing and 500 iterations. Raises RuntimeError when
    that fails too. ``settings`` go to tblite (e.g. multiplicity, spin polarisation)."""
    from ase.calculators.calculator import CalculationFailed

    last: Exception | None = None
    for extra in ({}, {"mixer_damping": 0.1, "max_iterations": 500}):
        a = atoms.copy()
        a.calc = xtb(method, **settings)
        a.calc.set(**extra)
        try:
            return float(a.get_potential_energy()), a.get_forces().copy()
        except CalculationFailed as err:
            last = err
    raise RuntimeError(f"{method} SCF did not converge: {last}")


def hessian(atoms: Atoms, calc, step: float = 0.005) -> np.ndarray:
    """(3N, 3N) Hessian, eV/Å², by central differences of the forces, symmetrised."""
    a = atoms.copy()
    a.calc = calc
    x0 = a.positions.copy()
    n3 = 3 * len(a)
    h = np.zeros((n3, n3))
    for k in range(n3):
        rows = []
        for sign in (1.0, -1.0):
            x = x0.copy()
            x.reshape(-1)[k] += sign * step
            a.positions = x
            rows.append(a.get_forces().reshape(-1))
        h[k] = -(rows[0] - rows[1]) / (2.0 * step)
    return 0.5 * (h + h.T)


def rigid_body_basis(atoms: Atoms) -> np.ndarray:
    """(3N, 5 or 6) orthonormal basis of the mass-weighted translations and rotations."""
    m = atoms.get_masses()
    x = atoms.positions - atoms.get_center_of_mass()
    sq = np.sqrt(m)[:, None]
    vecs = []
    for c in range(3):
        t = np.zeros_like(x)
        t[:, c] = 1.0
        vecs.append((sq * t).reshape(-1))
        vecs.append((sq * np.cross(t, x)).reshape(-1))
    u, s, _ = np.linalg.svd(np.stack(vecs, axis=1), full_matrices=False)
    return u[:, s > 1e-6 * s.max()]


def normal_modes(atoms: Atoms, hess: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vibrational modes of ``hess``: unit Cartesian vectors q (M, N, 3) and force constants
    K_i = q_iᵀ H' q_i (eV/Å²), M = 3N − 6 (3N − 5 for a linear molecule).

    Translations and rotations are projected out of the mass-weighted Hessian first
    (P = 1 − BBᵀ, B = :func:`rigid_body_basis`, as Gaussian's and ASE's analyses do): at a
    geometry relaxed only to 0.05 eV/Å a soft torsion and a rotation would otherwise mix,
    and taking the six lowest eigenvalues would drop part of the torsion and keep part of
    a rotation. H' = M^½ P M^-½ H M^-½ P M^½ is the projected Cartesian Hessian."""
    m = np.repeat(atoms.get_masses(), 3)
    b = rigid_body_basis(atoms)
    proj = np.eye(len(m)) - b @ b.T
    mw = proj @ (hess / np.sqrt(np.outer(m, m))) @ proj
    lam, vec = np.linalg.eigh(0.5 * (mw + mw.T))
    internal = np.argsort(np.linalg.norm(b.T @ vec, axis=0))[: len(m) - b.shape[1]]
    vec = vec[:, np.sort(internal)]
    q = vec / np.sqrt(m)[:, None]
    q /= np.linalg.norm(q, axis=0)
    h_proj = np.sqrt(np.outer(m, m)) * mw
    k = np.einsum("im,ij,jm->m", q, h_proj, q)
    return q.T.reshape(-1, len(atoms), 3), k


def _is_linear(pos: np.ndarray) -> bool:
    if len(pos) < 3:
        return True
    centred = pos - pos.mean(axis=0)
    s = np.linalg.svd(centred, compute_uv=False)
    return bool(s[1] < 1e-3 * max(s[0], 1e-12))


def nms_positions(
    atoms: Atoms,
    modes: np.ndarray,
    force_constants: np.ndarray,
    temperature_K: float,
    n: int,
    rng: np.random.Generator,
    *,
    min_force_constant: float = 0.5,
    min_distance_A: float = 0.6,
) -> np.ndarray:
    """(n, N, 3) normal-mode samples around ``atoms`` (module doc, ANI-1's recipe)."""
    from ase import units

    kt = units.kB * temperature_K
    k = np.maximum(force_constants, min_force_constant)
    out = []
    for _ in range(100 * max(n, 1)):
        if len(out) == n:
            break
        c = rng.uniform(size=len(k))
        c *= rng.uniform() / c.sum()
        r = rng.choice((-1.0, 1.0), size=len(k)) * np.sqrt(3.0 * c * len(atoms) * kt / k)
        pos = atoms.positions + np.einsum("m,mnc->nc", r, modes)
        if _min_distance(pos) >= min_distance_A:
            out.append(pos)
    if len(out) < n:
        raise RuntimeError(
            f"normal-mode sampling at {temperature_K:g} K: only {len(out)} of {n} frames kept "
            f"atoms {min_distance_A} Å apart in {100 * max(n, 1)} draws"
        )
    return np.stack(out) if out else np.zeros((0, len(atoms), 3))


def _min_distance(pos: np.ndarray) -> float:
    if len(pos) < 2:
        return np.inf
    d = np.linalg.norm(pos[:, None] - pos[None], axis=-1)
    return float(d[np.triu_indices(len(pos), 1)].min())


def stretched_positions(
    atoms: Atoms,
    bonds: list[tuple[int, int, bool]],
    n: int,
    rng: np.random.Generator,
    stretch_range: tuple[float, float] = (1.2, 1.8),
    sigma_A: float = 0.02,
) -> np.ndarray:
    """(n, N, 3) near-dissociation frames: a random bond stretched by a factor drawn from
    ``stretch_range`` (module doc)."""
    import networkx as nx

    if not bonds or n == 0:
        return np.zeros((0, len(atoms), 3))
    graph = nx.Graph([(i, j) for i, j, _ in bonds])
    out = []
    for _ in range(n):
        i, j, ring = bonds[int(rng.integers(len(bonds)))]
        moved = [j]
        if not ring:
            g = graph.copy()
            g.remove_edge(i, j)
            side_i, side_j = nx.node_connected_component(g, i), nx.node_connected_component(g, j)
            moved, i, j = (sorted(side_j), i, j) if len(side_j) <= len(side_i) else (
                sorted(side_i),
                j,
                i,
            )
        pos = atoms.positions.copy()
        v = pos[j] - pos[i]
        pos[moved] += (rng.uniform(*stretch_range) - 1.0) * v
        out.append(pos + rng.normal(0.0, sigma_A, pos.shape))
    return np.stack(out)


def relax(atoms: Atoms, method: str, fmax: float, steps: int = 500) -> Atoms:
    """``atoms`` relaxed with GFN2-xTB (ASE BFGS); raises RuntimeError when not converged."""
    from ase.optimize import BFGS

    a = atoms.copy()
    a.calc = xtb(method)
    opt = BFGS(a, logfile=None)
    if not opt.run(fmax=fmax, steps=steps):
        raise RuntimeError(f"GFN2-xTB relaxation did not reach fmax {fmax} in {steps} steps")
    a.calc = None
    return a


def sample_molecule(
    cfg: DiverseConfig, smiles: str, rng: np.random.Generator, seed: int
) -> tuple[list[tuple[str, np.ndarray]], Atoms]:
    """Unlabelled frames ``(config_type, positions)`` of one molecule (module doc) and its
    relaxed geometry. The MD frames come labelled (their forces drive the MD): they are
    returned as ``("md_<T>K", positions, energy, forces)``."""
    raw, bonds = embed(smiles, seed)
    x0 = relax(raw, cfg.method, cfg.relax_fmax)
    frames: list[tuple] = [("minimum", x0.positions.copy())]
    modes, k = normal_modes(x0, hessian(x0, xtb(cfg.method), cfg.hessian_step_A))
    for t in cfg.nms_temperatures_K:
        for pos in nms_positions(
            x0,
            modes,
            k,
            t,
            cfg.nms_frames,
            rng,
            min_force_constant=cfg.min_force_constant,
            min_distance_A=cfg.min_distance_A,
        ):
            frames.append((f"nms_{t:.0f}K", pos))
    for pos in stretched_positions(x0, bonds, cfg.stretch_frames, rng, cfg.stretch_range):
        frames.append(("stretch", pos))
    if cfg.md_frames:
        frames.extend(_md_frames(cfg, x0, rng))
    return frames, x0


def _md_frames(cfg: DiverseConfig, x0: Atoms, rng: np.random.Generator) -> list[tuple]:
    atoms = x0.copy()
    atoms.calc = xtb(cfg.method)
    n_total = cfg.md_equilibration_steps + cfg.md_frames * cfg.md_stride
    out = []
    label = f"md_{cfg.md_temperature_K:.0f}K"
    for _ in langevin_frames(
        atoms,
        rng,
        np.full(n_total, cfg.md_temperature_K),
        dt_fs=cfg.timestep_fs,
        friction_per_fs=cfg.friction_per_fs,
        first=cfg.md_equilibration_steps,
        stride=cfg.md_stride,
        molecule=True,
        stop_on_error=True,
    ):
        e = float(atoms.get_potential_energy())
        f = atoms.get_forces(apply_constraint=False).copy()
        out.append((label, atoms.positions.copy(), e, f))
    return out


def _jobs(cfg: DiverseConfig, parts_dir: Path) -> list[Job]:
    molecules = read_smiles(cfg.smiles_file)
    if cfg.max_molecules is not None:
        molecules = molecules[: int(cfg.max_molecules)]
    per = int(cfg.molecules_per_job)
    return [
        Job(
            f"block_{b:03d}",
            b,
            (cfg.seed, b),
            # the SMILES themselves: an edited list is another run (refused on resume)
            params={
                "mol_ids": list(range(s, min(s + per, len(molecules)))),
                "smiles": [m[0] for m in molecules[s : s + per]],
            },
        )
        for b, s in enumerate(range(0, len(molecules), per))
    ]


def _run_block(cfg: DiverseConfig, job: Job, path: Path) -> None:
    """The molecules of one job, each with its own stream ``(seed, 1000 + mol_id)``."""
    molecules = read_smiles(cfg.smiles_file)
    parts, failed, scf_failures = [], {}, 0
    for mol_id in job.params["mol_ids"]:
        smiles = molecules[mol_id][0]
        rng = np.random.default_rng((cfg.seed, 1000 + mol_id))
        try:
            frames, x0 = sample_molecule(cfg, smiles, rng, seed=cfg.seed + mol_id)
        except Exception as err:  # noqa: BLE001 - a molecule that cannot be relaxed is skipped
            log.warning("%s (%d): left out: %s", smiles, mol_id, err)
            failed[smiles] = str(err)
            continue
        kept, n_fail = _label(cfg, x0, frames)
        scf_failures += n_fail
        if kept is not None:
            kept.extra_s = {
                "mol_id": np.full(len(kept), mol_id, dtype=np.int64),
                # the molecule is the group a split holds out (unseen molecules)
                "traj_id": np.full(len(kept), mol_id, dtype=np.int64),
            }
            parts.append(kept)
    ds = Dataset.concatenate(parts) if parts else None
    if ds is None:
        return
    ds.provenance = {"failed_molecules": failed, "scf_failures": scf_failures}
    ds.save_npz(path)


def _label(cfg: DiverseConfig, x0: Atoms, frames: list[tuple]) -> tuple[Dataset | None, int]:
    """GFN2-xTB labels of the unlabelled frames (MD frames are labelled already)."""
    pos, e, f, ctype = [], [], [], []
    failures = 0
    for frame in frames:
        if len(frame) == 4:
            label, p, energy, forces = frame
        else:
            label, p = frame
            try:
                energy, forces = single_point(Atoms(x0.numbers, positions=p), cfg.method)
            except RuntimeError:
                failures += 1
                continue
        pos.append(p)
        e.append(energy)
        f.append(forces)
        ctype.append(label)
    if not pos:
        return None, failures
    ds = Dataset.from_frames(x0, np.stack(pos), np.array(e), np.stack(f))
    ds.config_type_s = np.array(ctype)
    return ds, failures


def _assemble(cfg: DiverseConfig, jobs: list[Job], parts: list[Path], out: Path) -> Dataset:
    import ase
    import tblite

    blocks = [Dataset.load_npz(p) for p in parts if p.stat().st_size > 0]
    if not blocks:
        raise RuntimeError("no molecule of the list gave a frame; see the log for why")
    failed: dict[str, str] = {}
    scf = 0
    for b in blocks:
        failed.update(b.provenance.get("failed_molecules", {}))
        scf += int(b.provenance.get("scf_failures", 0))
    present = {int(i) for b in blocks for i in np.unique(b.extra_s["mol_id"])}
    for job in jobs:  # a block whose every molecule failed wrote no part
        for mol_id, smiles in zip(job.params["mol_ids"], job.params["smiles"]):
            if mol_id not in present and smiles not in failed:
                failed[smiles] = "no frame (its whole block failed; see the log)"
    ds, dropped = _drop_extreme(Dataset.concatenate(blocks), cfg.max_force)
    molecules = read_smiles(cfg.smiles_file)
    ds.provenance = {
        "method": cfg.method,
        "program": "tblite",
        "program_version": getattr(tblite, "__version__", "unknown"),
        "ase_version": ase.__version__,
        "sampling": "per molecule: GFN2-xTB minimum, normal-mode sampling (ANI-1), short "
        "Langevin MD, stretched bonds (ase_mlff.reference.diverse)",
        "units": {"energy": "eV", "forces": "eV/Angstrom", "positions": "Angstrom"},
        "smiles_file": Path(cfg.smiles_file).name,
        "molecules": [m[0] for m in molecules],
        "n_molecules_listed": len(molecules)
        if cfg.max_molecules is None
        else min(len(molecules), int(cfg.max_molecules)),
        "n_molecules": int(len(np.unique(ds.extra_s["mol_id"]))),
        "failed_molecules": failed,
        "scf_failures": scf,
        "max_force_eV_A": cfg.max_force,
        "dropped_above_max_force": dropped,
        "frames_by_type": {
            str(k): int(v) for k, v in zip(*np.unique(ds.config_type_s, return_counts=True))
        },
        "storage": "positions and forces float32",
        "config": json.loads(json.dumps(asdict(cfg))),
    }
    return ds


def _drop_extreme(ds: Dataset, max_force: float | None) -> tuple[Dataset, dict[str, int]]:
    """``ds`` without the frames whose largest force is above ``max_force`` (eV/Å), and
    how many of each config type went."""
    if max_force is None:
        return ds, {}
    f = np.linalg.norm(ds.forces_nc, axis=1)
    worst = np.maximum.reduceat(f, ds.ptr_s[:-1])
    drop = worst > max_force
    kinds, counts = np.unique(ds.config_type_s[drop], return_counts=True)
    return ds[np.flatnonzero(~drop)], {str(k): int(c) for k, c in zip(kinds, counts)}


DiverseConfig.kind = ReferenceKind(
    recipe="make_diverse_reference",
    jobs=_jobs,
    run_job=_run_block,
    assemble=_assemble,
    part_suffix=".npz",
    resume_ignores=("workers", "max_force"),  # max_force acts at assembly only
    single_precision=True,
)


def make_diverse_reference(
    cfg: DiverseConfig, out: Path, command: list[str] | None = None
) -> Dataset:
    """Make the diverse set (``cfg.workers`` jobs at once as Ray tasks, finished jobs of an
    interrupted run reused) and write ``out`` (npz, positions and forces float32) plus
    ``<out>.provenance.json``."""
    return run_reference(cfg, out, cfg.workers, command=command)
