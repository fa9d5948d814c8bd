"""Batched prediction: the one loop that turns frames into energies, forces and stress.

    from ase_mlff.models.prediction import predict, predict_frames, label_dataset
    out = predict(model, dataset, stress=True)             # {"energy", "forces", "stress"}
    e, f = predict_frames(gaff, atoms, positions_snc)      # one system, many positions
    labelled = label_dataset(eam, perturbed)               # a copy with the potential's labels

Frames are grouped into chunks of whole frames of about ``chunk_atoms`` atoms (at least
one frame each: :func:`frame_chunks`), each chunk is one :class:`~ase_mlff.graph.batch.Batch`
and one call of :func:`~ase_mlff.models.base.compute_properties`. Frames of different
systems and cells mix freely in a chunk. Results are float64 numpy arrays whatever the
model's dtype. The default chunk (42,000 atoms, 2,000 aspirin frames) was the fastest in
``benchmarks/ff_labelling.py``; a smaller one bounds the memory of large models.

Every consumer (error metrics, labelling, scans, RDF of a trained model, the trainer's
validation, the EAM energy refit, recipes) goes through :func:`iter_predictions`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from ase_mlff.graph.batch import Batch
from ase_mlff.models.base import compute_properties
from ase_mlff.utils import DTYPES, show_progress

#: atoms per batched call (2,000 aspirin frames: the fastest chunk for the classical force
#: fields, benchmarks/ff_labelling.py). A model may set its own ``prediction_chunk_atoms``:
#: message-passing models do (:class:`~ase_mlff.models.base.GNNPotential`), whose edge
#: features with the force graph took 15.6 GB for 42,000 atoms (PaiNN, width 64)
DEFAULT_CHUNK_ATOMS = 42_000


def chunk_for(model: torch.nn.Module, chunk_atoms: int | None) -> int:
    """``chunk_atoms`` when given, else the model's ``prediction_chunk_atoms``, else
    :data:`DEFAULT_CHUNK_ATOMS`."""
    if chunk_atoms is not None:
        return int(chunk_atoms)
    return int(getattr(model, "prediction_chunk_atoms", DEFAULT_CHUNK_ATOMS))


def frame_chunks(n_atoms_s: np.ndarray, chunk_atoms: int) -> list[tuple[int, int]]:
    """``[(lo, hi), ...]`` ranges of whole frames covering every frame in order, each of at
    most ``chunk_atoms`` atoms unless a single frame is larger (then that frame alone)."""
    if chunk_atoms < 1:
        raise ValueError(f"chunk_atoms must be >= 1, got {chunk_atoms}")
    ptr = np.concatenate([[0], np.cumsum(np.asarray(n_atoms_s, dtype=np.int64))])
    n = len(ptr) - 1
    # the last frame end within chunk_atoms of each frame start
    ends = np.searchsorted(ptr, ptr[:-1] + chunk_atoms, side="right") - 1
    bounds, lo = [], 0
    while lo < n:
        hi = max(lo + 1, int(ends[lo]))
        bounds.append((lo, hi))
        lo = hi
    return bounds


def _dtype(dtype: str | torch.dtype) -> torch.dtype:
    return DTYPES[dtype] if isinstance(dtype, str) else dtype


def iter_predictions(
    model: torch.nn.Module,
    dataset,
    *,
    stress: bool = False,
    chunk_atoms: int | None = None,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype = "float64",
    batch_size: int | None = None,
    desc: str | None = None,
    evaluate: Callable[[torch.nn.Module, Batch], dict[str, torch.Tensor]] | None = None,
) -> Iterator[tuple[int, int, dict[str, np.ndarray]]]:
    """Yield ``(lo, hi, out)`` per chunk of frames ``lo:hi`` of ``dataset`` (any object with
    the :class:`~ase_mlff.data.dataset.Dataset` arrays), ``out`` holding float64 ``energy``
    (hi − lo,), ``forces`` (atoms of those frames, 3) and with ``stress`` (hi − lo, 3, 3).
    Chunks hold about ``chunk_atoms`` atoms (default: :func:`chunk_for`), or
    ``batch_size`` frames when that is given.
    The model is put in eval mode on ``device``; ``desc`` shows a progress bar.
    ``evaluate(model, batch)``, when given, replaces the energy/forces/stress evaluation
    (e.g. :func:`~ase_mlff.models.hybrid.part_forces`); its tensors come back as float64
    numpy arrays."""
    torch_dtype = _dtype(dtype)
    model = model.to(device=device).eval()
    if batch_size is not None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        n = len(dataset)
        bounds = [(lo, min(lo + batch_size, n)) for lo in range(0, n, batch_size)]
    else:
        bounds = frame_chunks(dataset.n_atoms_s, chunk_for(model, chunk_atoms))
    for lo, hi in tqdm(bounds, desc=desc, leave=False, disable=desc is None or not show_progress()):
        batch = Batch.from_dataset(
            dataset,
            np.arange(lo, hi),
            cutoff=model.cutoff,
            dtype=torch_dtype,
            device=device,
            labels=False,
        )
        with torch.no_grad():  # forces/stress still come by autograd (compute_properties)
            if evaluate is not None:
                res = evaluate(model, batch)
            else:
                res = compute_properties(model, batch, forces=True, stress=stress)
        keys = list(res) if evaluate is not None else ["energy", "forces"] + ["stress"] * stress
        yield lo, hi, {k: res[k].detach().cpu().double().numpy() for k in keys}


def predict(
    model: torch.nn.Module, dataset, *, stress: bool = False, **options: Any
) -> dict[str, np.ndarray]:
    """``energy`` (S,) eV, ``forces`` (N, 3) eV/Å and with ``stress`` (S, 3, 3) eV/Å³ for
    every frame of ``dataset``, float64. ``options`` are :func:`iter_predictions`'
    (``chunk_atoms``, or ``batch_size`` frames per call; ``device``, ``dtype``, ``desc``)."""
    energy = np.empty(len(dataset))
    forces = np.empty((int(np.sum(dataset.n_atoms_s)), 3))
    stress_s33 = np.empty((len(dataset), 3, 3)) if stress else None
    ptr = dataset.ptr_s
    for lo, hi, out in iter_predictions(model, dataset, stress=stress, **options):
        energy[lo:hi] = out["energy"]
        forces[ptr[lo] : ptr[hi]] = out["forces"]
        if stress:
            stress_s33[lo:hi] = out["stress"]
    res = {"energy": energy, "forces": forces}
    if stress:
        res["stress"] = stress_s33
    return res


class _Frames:
    """The Dataset arrays of many frames of one system (``atoms``' numbers, cell, pbc) with
    new positions, without copying the system's arrays per frame until a chunk asks."""

    def __init__(self, atoms, positions_snc: np.ndarray):
        s, n = positions_snc.shape[:2]
        self.numbers_n = np.tile(atoms.numbers, s)
        self.positions_nc = positions_snc.reshape(-1, 3)
        self.n_atoms_s = np.full(s, n)
        self.ptr_s = np.arange(s + 1) * n
        self.cell_s33 = np.broadcast_to(np.asarray(atoms.cell[:], dtype=np.float64), (s, 3, 3))
        self.pbc_s3 = np.broadcast_to(np.asarray(atoms.pbc, dtype=bool), (s, 3))

    def __len__(self) -> int:
        return len(self.n_atoms_s)

    def atom_index(self, frames: np.ndarray) -> np.ndarray:
        n = len(self.positions_nc) // max(len(self), 1)
        return (np.asarray(frames)[:, None] * n + np.arange(n)).reshape(-1)


def predict_frames(
    model: torch.nn.Module, atoms, positions_snc: np.ndarray, **options: Any
) -> tuple[np.ndarray, np.ndarray]:
    """Energies (S,) eV and forces (S, N, 3) eV/Å of frames of one system (``atoms``'
    numbers, cell and pbc) at the positions ``positions_snc`` (S, N, 3); ``options`` as
    :func:`predict`'s."""
    positions_snc = np.asarray(positions_snc, dtype=np.float64)
    if positions_snc.ndim != 3 or positions_snc.shape[1:] != (len(atoms), 3):
        raise ValueError(
            f"positions must be (frames, {len(atoms)}, 3) for this system, "
            f"got {positions_snc.shape}"
        )
    p = predict(model, _Frames(atoms, positions_snc), **options)
    return p["energy"], p["forces"].reshape(positions_snc.shape)


def label_dataset(
    potential: torch.nn.Module,
    dataset,
    *,
    stress: bool | None = None,
    desc: str | None = "labelling",
    **options: Any,
):
    """A copy of ``dataset`` whose energies, forces (and stress) are ``potential``'s.

    ``stress=None`` computes the stress when every frame is periodic in 3-D; ``options``
    as :func:`predict`'s. Everything else (positions, cells, weights, config types, extra
    arrays) is kept; ``provenance["labels"]`` names the potential and the time it took."""
    if stress is None:
        stress = bool(dataset.pbc_s3.all())
    t0 = time.perf_counter()
    p = predict(potential, dataset, stress=stress, desc=desc, **options)
    labelled = dataset.subset(np.arange(len(dataset)))
    labelled.energy_s, labelled.forces_nc = p["energy"], p["forces"]
    labelled.stress_s33 = p.get("stress")
    config: dict[str, Any] = getattr(potential, "config", {})
    labelled.provenance = {
        **dataset.provenance,
        "labels": {
            "potential": config.get("name", type(potential).__name__),
            "config": config,
            "stress": bool(stress),
            "seconds": round(time.perf_counter() - t0, 3),
        },
    }
    return labelled
