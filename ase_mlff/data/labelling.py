"""Label configurations with a reference: a batched torch potential or any ASE calculator.

    from ase_mlff.data.labelling import label_positions, rattled_dataset
    ds = rattled_dataset(relaxed_aspirin, gaff_potential("aspirin"), n_frames=100_000)

A torch potential (classical force field, EAM, a trained GNN) labels many frames per
call, in chunks of ``chunk_atoms`` atoms; an ASE calculator (tblite, OpenMM, ...) is
called frame by frame.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator
from tqdm import tqdm

from ase_mlff.data.dataset import Dataset
from ase_mlff.data.sampling import DEFAULT_N_FRAMES, DEFAULT_SIGMA, rattle
from ase_mlff.graph.batch import Batch
from ase_mlff.models.base import compute_properties
from ase_mlff.utils import DTYPES, show_progress

log = logging.getLogger(__name__)

#: atoms per batched call (2,000 aspirin frames: the fastest chunk, benchmarks/ff_labelling.py)
DEFAULT_CHUNK_ATOMS = 42_000


def label_positions(
    potential: torch.nn.Module,
    atoms: Atoms,
    positions_snc: np.ndarray,
    *,
    chunk_atoms: int = DEFAULT_CHUNK_ATOMS,
    device: str | torch.device = "cpu",
    dtype: str = "float64",
    desc: str = "labelling",
) -> tuple[np.ndarray, np.ndarray]:
    """Energies (S,) eV and forces (S, N, 3) eV/Å of frames of one system (``atoms``'
    numbers, cell and pbc) with new positions, in batched chunks."""
    positions_snc = np.asarray(positions_snc, dtype=np.float64)
    if positions_snc.ndim != 3 or positions_snc.shape[1:] != (len(atoms), 3):
        raise ValueError(
            f"positions must be (frames, {len(atoms)}, 3) for this system, "
            f"got {positions_snc.shape}"
        )
    n_frames, n_atoms = positions_snc.shape[:2]
    chunk = max(1, chunk_atoms // n_atoms)
    model = potential.to(device=device).eval()
    torch_dtype = DTYPES[dtype]
    energy = np.empty(n_frames)
    forces = np.empty_like(positions_snc)
    cell = np.asarray(atoms.cell[:], dtype=np.float64)
    for start in tqdm(
        range(0, n_frames, chunk), desc=desc, leave=False, disable=not show_progress()
    ):
        stop = min(start + chunk, n_frames)
        s = stop - start
        batch = Batch.from_arrays(
            np.tile(atoms.numbers, s),
            positions_snc[start:stop].reshape(-1, 3),
            np.full(s, n_atoms),
            np.repeat(cell[None], s, axis=0),
            np.repeat(atoms.pbc[None], s, axis=0),
            cutoff=model.cutoff,
            dtype=torch_dtype,
            device=device,
        )
        out = compute_properties(model, batch, forces=True)
        energy[start:stop] = out["energy"].cpu().double().numpy()
        forces[start:stop] = out["forces"].cpu().double().numpy().reshape(s, n_atoms, 3)
    return energy, forces


def label_dataset(
    potential: torch.nn.Module,
    dataset: Dataset,
    *,
    stress: bool | None = None,
    chunk_atoms: int = DEFAULT_CHUNK_ATOMS,
    device: str | torch.device = "cpu",
    dtype: str = "float64",
    desc: str = "labelling",
) -> Dataset:
    """A copy of ``dataset`` whose energies, forces (and stress) are ``potential``'s.

    Frames of any systems and cells (e.g. perturbed crystals, each with its own cell) are
    labelled in batched calls of about ``chunk_atoms`` atoms. ``stress=None`` computes the
    stress when every frame is periodic in 3-D. Everything else (positions, cells, weights,
    config types, extra arrays) is kept; ``provenance["labels"]`` names the potential.
    """
    if stress is None:
        stress = bool(dataset.pbc_s3.all())
    model = potential.to(device=device).eval()
    torch_dtype = DTYPES[dtype]
    energy = np.empty(len(dataset))
    forces = np.empty_like(dataset.positions_nc)
    stress_s33 = np.empty((len(dataset), 3, 3)) if stress else None
    ptr = dataset.ptr_s
    ends = np.searchsorted(ptr, ptr[:-1] + chunk_atoms, side="right") - 1
    starts, start = [], 0
    while start < len(dataset):  # chunks of whole frames, each at least one frame
        starts.append(start)
        start = max(start + 1, int(ends[start]))
    bounds = list(zip(starts, starts[1:] + [len(dataset)]))
    t0 = time.perf_counter()
    for lo, hi in tqdm(bounds, desc=desc, leave=False, disable=not show_progress()):
        frames = np.arange(lo, hi)
        batch = Batch.from_dataset(
            dataset, frames, cutoff=model.cutoff, dtype=torch_dtype, device=device, labels=False
        )
        out = compute_properties(model, batch, forces=True, stress=stress)
        energy[lo:hi] = out["energy"].detach().cpu().double().numpy()
        forces[ptr[lo] : ptr[hi]] = out["forces"].detach().cpu().double().numpy()
        if stress:
            stress_s33[lo:hi] = out["stress"].detach().cpu().double().numpy()
    labelled = dataset.subset(np.arange(len(dataset)))
    labelled.energy_s, labelled.forces_nc, labelled.stress_s33 = energy, forces, stress_s33
    name = getattr(potential, "config", {}).get("name", type(potential).__name__)
    labelled.provenance = {
        **dataset.provenance,
        "labels": {
            "potential": name,
            "config": getattr(potential, "config", {}),
            "stress": bool(stress),
            "seconds": round(time.perf_counter() - t0, 3),
        },
    }
    return labelled


def label_with_calculator(calc: Calculator, images: Sequence[Atoms], desc: str = "labelling"):
    """Energies (S,) and forces (list of (N_k, 3)) from an ASE calculator, frame by frame."""
    energy = np.empty(len(images))
    forces = []
    for k, a in enumerate(tqdm(images, desc=desc, leave=False, disable=not show_progress())):
        a = a.copy()
        a.calc = calc
        energy[k] = a.get_potential_energy()
        forces.append(a.get_forces(apply_constraint=False))
    return energy, forces


def rattled_dataset(
    structures: Atoms | Sequence[Atoms],
    reference: torch.nn.Module | Callable[[Atoms], torch.nn.Module],
    n_frames: int = DEFAULT_N_FRAMES,
    sigma: float = DEFAULT_SIGMA,
    seed: int = 0,
    *,
    config_type: str = "rattled",
    reference_name: str | None = None,
    chunk_atoms: int = DEFAULT_CHUNK_ATOMS,
    device: str = "cpu",
    provenance: dict[str, Any] | None = None,
) -> Dataset:
    """Rattle (x + σε, paper 001) around ``structures`` and label in batched passes.

    Args:
        structures: relaxed geometries; frames are split evenly between them.
        reference: one potential for every structure, or a function structure -> potential
            (e.g. :func:`ase_mlff.forcefields.qforce.qforce_potential` per species).
        reference_name: how the labels were made, for the provenance.
    """
    blocks = rattle(structures, n_frames, sigma, seed)
    parts = []
    t0 = time.perf_counter()
    for atoms, pos in blocks:
        pot = reference if isinstance(reference, torch.nn.Module) else reference(atoms)
        e, f = label_positions(pot, atoms, pos, chunk_atoms=chunk_atoms, device=device)
        s, n = pos.shape[:2]
        parts.append(
            Dataset(
                numbers_n=np.tile(atoms.numbers, s),
                positions_nc=pos.reshape(-1, 3),
                n_atoms_s=np.full(s, n),
                cell_s33=np.repeat(np.asarray(atoms.cell[:])[None], s, axis=0),
                pbc_s3=np.repeat(atoms.pbc[None], s, axis=0),
                energy_s=e,
                forces_nc=f.reshape(-1, 3),
                config_type_s=np.full(s, config_type),
            )
        )
    seconds = time.perf_counter() - t0
    ds = parts[0] if len(parts) == 1 else Dataset.concatenate(parts)
    around = [structures] if isinstance(structures, Atoms) else list(structures)
    ds.provenance = {
        "sampling": "rattle x + sigma*eps (paper 001, no rescaling)",
        "n_frames": int(n_frames),
        "sigma_A": float(sigma),
        "seed": int(seed),
        "around": [a.get_chemical_formula() for a in around],
        "reference": reference_name
        or getattr(reference, "config", {}).get("name", type(reference).__name__),
        "labelling_seconds": round(seconds, 3),
        **(provenance or {}),
    }
    log.info("labelled %d rattled frames in %.2f s", len(ds), seconds)
    return ds
