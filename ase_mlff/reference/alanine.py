"""Reference data: alanine dipeptide (ACE-ALA-NME) with AMBER ff14SB and GBn2 implicit
solvent, from OpenMM's well-tempered metadynamics on φ/ψ plus plain Langevin MD.

    from ase_mlff.reference.alanine import AlanineConfig, make_alanine_reference
    ds = make_alanine_reference(AlanineConfig(), Path("alanine_amber14_gbn2.npz"))

Paper 003 (§4, Fig. 5) learns an implicitly solvated force field for alanine dipeptide
and judges the models by F(φ) and F(ψ) from metadynamics. Here the reference force field
is OpenMM's own ``amber14-all.xml`` with ``implicit/gbn2.xml`` (no cutoff, no constraints:
the MLFFs are trained on flexible hydrogens). The molecule is built by RDKit (ETKDG,
seed 7, MMFF-optimised) with L-alanine's stereocentre and ordered ACE, ALA, NME.

Jobs (:mod:`ase_mlff.reference.runner`, one Ray task each):

* ``metad_k``: well-tempered metadynamics of OpenMM (``openmm.app.Metadynamics``) on φ
  (C–N–Cα–C) and ψ (N–Cα–C–N), paper 003's hills (1.2 kJ/mol, σ = 0.35 rad) every
  ``pace_fs``, bias factor 6 (MDsim's PLUMED input), so that all six basins appear;
  frames every ``interval_fs``; its free energy F(ψ, φ) on OpenMM's grid at the end;
* ``md_k``: plain 300 K Langevin MD from the minimised start, frames every
  ``interval_fs``.

Every frame is re-labelled without the bias on the Reference platform (double precision),
energies in eV and forces in eV/Å. The assembled set has per-frame ``traj_id``,
``time_fs``, ``phi`` and ``psi`` (rad) and config types ``metad``/``md``. The reference
F(φ, ψ), the mean of the walkers' F (each shifted to minimum 0), and its marginals
F(φ), F(ψ) are written to ``<out stem>_fes.npz`` (:func:`load_reference_fes`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from ase import Atoms

from ase_mlff.data.dataset import Dataset
from ase_mlff.reference.runner import Job, ReferenceKind, run_reference

KJ_PER_EV = 96.48533212331
#: molar gas constant, kJ/(mol K)
R_KJ = 8.314462618e-3
#: ACE-L-ALA-NME as SMILES (Cα is S: L-alanine), in the atom order RDKit embeds before
#: reordering by residue. Without the stereo mark RDKit may embed D-alanine, whose
#: Ramachandran map is the mirror image (φ, ψ) → (−φ, −ψ).
SMILES = "CC(=O)N[C@@H](C)C(=O)NC"


@dataclass(frozen=True)
class AlanineConfig:
    """The settings of :func:`make_alanine_reference`; the defaults made the shipped set."""

    solvent: str = "gbn2"  # implicit/<solvent>.xml, or "vacuum"
    temperature_K: float = 300.0
    timestep_fs: float = 1.0
    friction_per_ps: float = 1.0
    metad_walkers: int = 2
    metad_ps: float = 1000.0
    md_trajectories: int = 1
    md_ps: float = 100.0
    interval_fs: float = 500.0
    height_kj: float = 1.2
    sigma_rad: float = 0.35
    pace_fs: float = 500.0
    bias_factor: float = 6.0
    grid: int = 64
    platform: str = "CPU"
    threads: int = 1
    seed: int = 2026

    kind: ClassVar[ReferenceKind]

    def validate(self) -> None:
        positive = ("temperature_K", "timestep_fs", "friction_per_ps", "interval_fs")
        for name in (*positive, "height_kj", "sigma_rad", "pace_fs", "metad_ps"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.bias_factor <= 1:
            raise ValueError(f"bias_factor must be > 1, got {self.bias_factor}")
        if self.metad_walkers < 1 or self.md_trajectories < 0 or self.md_ps < 0:
            raise ValueError("metad_walkers must be ≥ 1; md_trajectories and md_ps ≥ 0")
        if self.solvent != "vacuum" and self.solvent not in ("gbn2", "gbn", "obc2", "obc1"):
            raise ValueError(f"solvent must be vacuum, gbn2, gbn, obc1 or obc2: {self.solvent!r}")
        for name in ("interval_fs", "pace_fs"):
            steps = getattr(self, name) / self.timestep_fs
            if abs(steps - round(steps)) > 1e-9:
                raise ValueError(f"{name} must be a multiple of timestep_fs")


def alanine_dipeptide(solvent: str = "gbn2") -> tuple[Any, Any, np.ndarray, tuple, tuple]:
    """(OpenMM System, Topology, positions (N, 3) in Å, φ atoms, ψ atoms) of ACE-ALA-NME,
    AMBER ff14SB with ``implicit/<solvent>.xml`` (or in vacuum), no cutoff, no
    constraints."""
    from openmm import app
    from rdkit import Chem
    from rdkit.Chem import AllChem

    mol = Chem.AddHs(Chem.MolFromSmiles(SMILES))
    AllChem.EmbedMolecule(mol, randomSeed=7)
    AllChem.MMFFOptimizeMolecule(mol)
    heavy = {0: 0, 1: 0, 2: 0, 3: 1, 4: 1, 5: 1, 6: 1, 7: 1, 8: 2, 9: 2}  # ACE, ALA, NME
    res_of = {
        a.GetIdx(): heavy.get(a.GetIdx(), heavy.get(a.GetNeighbors()[0].GetIdx()))
        for a in mol.GetAtoms()
    }
    order = sorted(range(mol.GetNumAtoms()), key=lambda i: (res_of[i], i))
    new = {old: k for k, old in enumerate(order)}
    top = app.Topology()
    chain = top.addChain()
    residues = [top.addResidue(n, chain) for n in ("ACE", "ALA", "NME")]
    atoms = []
    for old in order:
        a = mol.GetAtomWithIdx(old)
        el = app.element.Element.getByAtomicNumber(a.GetAtomicNum())
        atoms.append(top.addAtom(f"{a.GetSymbol()}{old}", el, residues[res_of[old]]))
    for b in mol.GetBonds():
        top.addBond(atoms[new[b.GetBeginAtomIdx()]], atoms[new[b.GetEndAtomIdx()]])
    files = ["amber14-all.xml"] + ([] if solvent == "vacuum" else [f"implicit/{solvent}.xml"])
    system = app.ForceField(*files).createSystem(
        top, nonbondedMethod=app.NoCutoff, constraints=None
    )
    phi = tuple(new[i] for i in (1, 3, 4, 6))  # C(ACE)-N-CA-C
    psi = tuple(new[i] for i in (3, 4, 6, 8))  # N-CA-C-N(NME)
    return system, top, mol.GetConformer().GetPositions()[order], phi, psi


def dihedrals(pos_tn3: np.ndarray, quad: tuple[int, int, int, int]) -> np.ndarray:
    """(T,) dihedral angles (rad, in (−π, π]) of atoms ``quad`` in frames (T, N, 3), with
    the IUPAC sign convention of ASE's ``get_dihedral`` (mapped to (−π, π])."""
    p = np.asarray(pos_tn3, dtype=np.float64)[:, list(quad)]
    b0, b1, b2 = p[:, 0] - p[:, 1], p[:, 2] - p[:, 1], p[:, 3] - p[:, 2]
    b1n = b1 / np.linalg.norm(b1, axis=1, keepdims=True)
    v = b0 - np.sum(b0 * b1n, axis=1, keepdims=True) * b1n
    w = b2 - np.sum(b2 * b1n, axis=1, keepdims=True) * b1n
    x = np.sum(v * w, axis=1)
    y = np.sum(np.cross(b1n, v) * w, axis=1)
    return np.arctan2(y, x)


def marginal(f_2d: np.ndarray, axis: int, temperature_K: float) -> np.ndarray:
    """F of one CV from a 2-D F (kJ/mol): −kT ln Σ exp(−F/kT) over ``axis``, minimum 0."""
    kt = R_KJ * temperature_K
    m = -kt * np.log(np.exp(-(f_2d - f_2d.min()) / kt).sum(axis=axis))
    return m - m.min()


# ----------------------------------------------------------------------------- jobs
def _jobs(cfg: AlanineConfig, parts_dir: Path) -> list[Job]:
    cfg.validate()
    jobs = [
        Job(f"metad_{k}", k, (cfg.seed, k), params={"kind": "metad", "ps": cfg.metad_ps})
        for k in range(cfg.metad_walkers)
    ]
    n = cfg.metad_walkers
    if cfg.md_ps > 0:
        jobs += [
            Job(f"md_{k}", n + k, (cfg.seed, n + k), params={"kind": "md", "ps": cfg.md_ps})
            for k in range(cfg.md_trajectories)
        ]
    return jobs


def _simulation(cfg: AlanineConfig, seed: int, metad: bool):
    """A minimised OpenMM Simulation (with its Metadynamics, or None) and φ/ψ atoms."""
    import openmm
    from openmm import app, unit

    system, top, pos, phi, psi = alanine_dipeptide(cfg.solvent)
    meta = None
    if metad:
        cvs = []
        for quad in (phi, psi):
            f = openmm.CustomTorsionForce("theta")
            f.addTorsion(*quad, [])
            cvs.append(app.BiasVariable(f, -np.pi, np.pi, cfg.sigma_rad, True, gridWidth=cfg.grid))
        pace = round(cfg.pace_fs / cfg.timestep_fs)
        meta = app.Metadynamics(
            system,
            cvs,
            cfg.temperature_K * unit.kelvin,
            cfg.bias_factor,
            cfg.height_kj * unit.kilojoule_per_mole,
            pace,
        )
    integ = openmm.LangevinMiddleIntegrator(
        cfg.temperature_K * unit.kelvin,
        cfg.friction_per_ps / unit.picosecond,
        cfg.timestep_fs * unit.femtosecond,
    )
    integ.setRandomNumberSeed(seed)
    platform = openmm.Platform.getPlatformByName(cfg.platform)
    props = {"Threads": str(cfg.threads)} if cfg.platform == "CPU" else {}
    sim = app.Simulation(top, system, integ, platform, props)
    sim.context.setPositions(pos * 0.1 * unit.nanometer)
    sim.minimizeEnergy()
    sim.context.setVelocitiesToTemperature(cfg.temperature_K * unit.kelvin, seed)
    return sim, meta, phi, psi


def _run_job(cfg: AlanineConfig, job: Job, path: Path) -> None:
    """One trajectory: frames every ``interval_fs``, re-labelled without the bias."""
    from openmm import unit

    from ase_mlff.calculators.openmm import openmm_energies_forces

    metad = job.params["kind"] == "metad"
    seed = int(np.random.default_rng(job.seed).integers(1, 2**31 - 1))
    sim, meta, phi, psi = _simulation(cfg, seed, metad)
    stride = round(cfg.interval_fs / cfg.timestep_fs)
    n_frames = int(job.params["ps"] * 1000.0 / cfg.interval_fs)
    frames = []
    for _ in range(n_frames):
        if meta is not None:
            meta.step(sim, stride)
        else:
            sim.step(stride)
        state = sim.context.getState(getPositions=True)
        frames.append(state.getPositions(asNumpy=True).value_in_unit(unit.angstrom))
    pos = np.array(frames)
    system, top, _, _, _ = alanine_dipeptide(cfg.solvent)  # without the bias force
    energy, forces = openmm_energies_forces(system, pos, platform="Reference")
    numbers = np.array([a.element.atomic_number for a in top.atoms()])
    times = cfg.interval_fs * np.arange(1, n_frames + 1)
    prov: dict[str, Any] = {"seed": seed}
    if meta is not None:
        prov["fes_kj_psi_phi"] = (
            meta.getFreeEnergy().value_in_unit(unit.kilojoule_per_mole).tolist()
        )
    Dataset.from_frames(
        Atoms(numbers=numbers),
        pos,
        energy,
        forces,
        job.params["kind"],
        extra_s={
            "traj_id": np.full(n_frames, job.index, dtype=np.int64),
            "time_fs": times,
            "phi": dihedrals(pos, phi),
            "psi": dihedrals(pos, psi),
        },
        provenance=prov,
    ).save_npz(path)


def _assemble(cfg: AlanineConfig, jobs: list[Job], parts: list[Path], out: Path) -> Dataset:
    """The trajectories in job order, the provenance, and the reference FES file."""
    import openmm

    datasets = [Dataset.load_npz(p) for p in parts]
    ds = Dataset.concatenate(datasets)
    walkers = [
        np.array(d.provenance["fes_kj_psi_phi"])
        for d in datasets
        if "fes_kj_psi_phi" in d.provenance
    ]
    f2d = np.mean([f - f.min() for f in walkers], axis=0)
    grid = np.linspace(-np.pi, np.pi, cfg.grid)
    np.savez(
        fes_path(out),
        grid_rad=grid,
        fes_kj_psi_phi=f2d,
        fes_phi_kj=marginal(f2d, 0, cfg.temperature_K),
        fes_psi_kj=marginal(f2d, 1, cfg.temperature_K),
        walkers_kj_psi_phi=np.array(walkers),
    )
    ds.provenance = {
        "method": "AMBER ff14SB (amber14-all.xml)"
        + ("" if cfg.solvent == "vacuum" else f" + implicit/{cfg.solvent}.xml"),
        "program": "OpenMM",
        "program_version": openmm.__version__,
        "molecule": "ACE-ALA-NME from RDKit (ETKDG seed 7, MMFF), residue order",
        "sampling": "OpenMM well-tempered metadynamics on phi/psi (app.Metadynamics) and "
        "plain Langevin MD (LangevinMiddleIntegrator), frames re-labelled without the "
        "bias on the Reference platform",
        "config": asdict(cfg),
        "seeds": {j.name: d.provenance["seed"] for j, d in zip(jobs, datasets)},
        "fes_file": fes_path(out).name,
        "units": {"energy": "eV", "forces": "eV/Angstrom", "positions": "Angstrom"},
    }
    return ds


def fes_path(out: Path) -> Path:
    """``<out stem>_fes.npz`` beside the data set ``out``."""
    out = Path(out)
    return out.with_name(out.stem + "_fes.npz")


def load_reference_fes(data_path: Path) -> dict[str, np.ndarray]:
    """The reference free energies written with a data set: ``grid_rad`` (G,),
    ``fes_kj_psi_phi`` (G, G), ``fes_phi_kj`` and ``fes_psi_kj`` (G,), kJ/mol."""
    path = fes_path(data_path)
    if not path.exists():
        raise FileNotFoundError(
            f"no reference free energy {path}: make the set with "
            "python -m ase_mlff.recipes.make_alanine_reference"
        )
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


AlanineConfig.kind = ReferenceKind(
    recipe="make_alanine_reference",
    jobs=_jobs,
    run_job=_run_job,
    assemble=_assemble,
    part_suffix=".npz",
    threads=lambda cfg: cfg.threads,
)


def make_alanine_reference(
    cfg: AlanineConfig, out: Path, workers: int = 1, command: list[str] | None = None
) -> Dataset:
    """Run the jobs (``workers`` at once), write ``out`` (npz), ``<out>.provenance.json``
    and the reference FES ``<out stem>_fes.npz``."""
    return run_reference(cfg, out, workers, command=command)


__all__ = [
    "AlanineConfig",
    "alanine_dipeptide",
    "dihedrals",
    "fes_path",
    "load_reference_fes",
    "make_alanine_reference",
    "marginal",
]
