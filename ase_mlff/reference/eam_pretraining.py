"""Paper 004's pre-training set: the training frames perturbed (Algorithm 1) and labelled by
the fitted EAM, with the frames the EAM labels with extreme forces dropped.

    from ase_mlff.reference.eam_pretraining import pretraining_set
    pre = pretraining_set(train, fitted_eam, PAPER_SETTINGS["silica"]["torchmd"], seed=0)

One pass is :func:`ase_mlff.reference.sampling.perturbed_dataset`; this module adds passes
with new seeds until the set has ``n_aug`` frames per training frame.
"""

from __future__ import annotations

import numpy as np
import torch

from ase_mlff.data.dataset import Dataset
from ase_mlff.reference.sampling import perturbed_dataset

#: frames of the pre-training set whose largest EAM force is above this are dropped
#: (eV/Å; ~10x the largest force of the quantum data, see perturbed_dataset)
MAX_LABEL_FORCE = 100.0
#: perturbation passes (each the Table A.1 schedule with its own seed) at most, to reach
#: n_aug x N frames after dropping
MAX_PASSES = 10


def pretraining_set(
    train: Dataset, eam: torch.nn.Module, perturb: dict, seed: int, device: str = "cpu"
) -> Dataset:
    """Algorithm 1 with Table A.1's settings (``perturb``: ``n_aug``, ``n_pairs``, ...),
    labelled by the fitted EAM, frames with EAM forces above :data:`MAX_LABEL_FORCE`
    dropped; passes with new seeds (``seed * 1000 + k``) are added until the set has
    n_aug × len(train) frames (or :data:`MAX_PASSES` passes ran).

    Raises:
        RuntimeError: when every perturbed frame was dropped.
    """
    target = perturb["n_aug"] * len(train)
    parts, dropped = [], 0
    for k in range(MAX_PASSES):
        part = perturbed_dataset(
            train,
            eam,
            **perturb,
            seed=seed * 1000 + k,
            device=device,
            max_label_force=MAX_LABEL_FORCE,
        )
        dropped += part.provenance["dropped_frames"]
        if len(part):
            parts.append(part)
        if sum(len(p) for p in parts) >= target:
            break
    if not parts:
        raise RuntimeError(
            f"every perturbed frame had EAM forces above {MAX_LABEL_FORCE} eV/Å; "
            "the fitted EAM is not usable for pre-training"
        )
    pre = Dataset.concatenate(parts)
    pre = pre[np.arange(min(len(pre), target))]
    pre.provenance = {
        **parts[0].provenance,
        "passes": len(parts),
        "dropped_frames": dropped,
        "max_label_force": MAX_LABEL_FORCE,
        "n_frames": len(pre),
    }
    return pre
