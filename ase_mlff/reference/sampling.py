"""Reference data made by sampling configurations and labelling them with a potential.

    from ase_mlff.reference.sampling import rattled_dataset, perturbed_dataset
    ds = rattled_dataset(relaxed_aspirin, gaff_potential("aspirin"), n_frames=100_000)
    pre = perturbed_dataset(quartz_frames, fitted_eam, **PAPER_SETTINGS["silica"]["cgcnn"])

* :func:`rattled_dataset`: rattling x + σε around relaxed structures (paper 001), labelled
  by a classical force field, for force-field pre-training.
* :func:`perturbed_dataset`: paper 004's two-step perturbation (Algorithm 1) of every frame
  of a set, labelled by the fitted EAM, for physics-informed pre-training.

Sampling lives in :mod:`ase_mlff.data.sampling` and :mod:`ase_mlff.data.perturbation`
(geometry only); labelling is :func:`ase_mlff.models.prediction.predict_frames` /
:func:`~ase_mlff.models.prediction.label_dataset`, batched over frames. Labelling with an
ASE calculator (GFN2-xTB, OpenMM) in parallel is :func:`ase_mlff.agents.labelling.label_frames`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from ase import Atoms

from ase_mlff.data.dataset import Dataset
from ase_mlff.data.perturbation import perturbed_structures
from ase_mlff.data.sampling import DEFAULT_N_FRAMES, DEFAULT_SIGMA, rattle
from ase_mlff.models.prediction import DEFAULT_CHUNK_ATOMS, label_dataset, predict_frames

log = logging.getLogger(__name__)


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
        e, f = predict_frames(pot, atoms, pos, chunk_atoms=chunk_atoms, device=device)
        parts.append(Dataset.from_frames(atoms, pos, e, f, config_type))
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


def perturbed_dataset(
    dataset,
    potential,
    *,
    n_aug: int,
    n_pairs: int,
    d_pull_max: float,
    n_sites: int,
    d_pert_max: float,
    seed: int = 0,
    device: str = "cpu",
    stress: bool | None = None,
    max_label_force: float | None = None,
):
    """Paper 004's pre-training set: every frame of ``dataset`` perturbed ``n_aug`` times
    (:func:`~ase_mlff.data.perturbation.perturbed_structures`) and labelled by
    ``potential`` (the fitted EAM) in batched calls, with stress when the frames are
    periodic. Returns a
    :class:`~ase_mlff.data.dataset.Dataset` (config type ``perturbed``) with per-frame
    ``perturb_round`` and ``perturb_source`` (index into ``dataset``).

    ``max_label_force`` (eV/Å): drop frames whose largest labelled force is above it, and
    frames whose labels are not finite (not in the paper, which keeps every frame; pulls
    of up to 2 × d_pull can move bonded atoms through each other, onto the EAM's Morse
    wall); ``provenance["dropped_frames"]`` counts what was dropped."""
    settings = dict(
        n_aug=n_aug,
        n_pairs=n_pairs,
        d_pull_max=d_pull_max,
        n_sites=n_sites,
        d_pert_max=d_pert_max,
        seed=seed,
    )
    images = perturbed_structures(dataset.to_atoms_list(with_labels=False), **settings)
    for a in images:
        a.info["config_type"] = "perturbed"
    ds = Dataset.from_atoms(
        images,
        provenance={
            "sampling": "two-step perturbation, paper 004 Algorithm 1",
            "settings": settings,
            "n_source_frames": len(dataset),
        },
    )
    ds.extra_s = {
        "perturb_round": np.array([a.info["perturb_round"] for a in images]),
        "perturb_source": np.array([a.info["perturb_source"] for a in images]),
    }
    labelled = label_dataset(potential, ds, stress=stress, device=device, desc="EAM labels")
    labelled.provenance["dropped_frames"] = 0
    if max_label_force is not None:
        f_n = np.linalg.norm(labelled.forces_nc, axis=1)
        f_s = np.maximum.reduceat(f_n, labelled.ptr_s[:-1])
        keep = np.isfinite(labelled.energy_s) & (f_s <= max_label_force)
        prov = {
            **labelled.provenance,
            "max_label_force": float(max_label_force),
            "dropped_frames": int((~keep).sum()),
        }
        labelled = labelled[np.flatnonzero(keep)]
        labelled.provenance = prov
    return labelled
