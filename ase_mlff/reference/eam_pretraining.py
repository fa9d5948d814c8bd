"""Paper 004's pre-training set: the training frames perturbed (Algorithm 1) and labelled by
the fitted EAM.

    from ase_mlff.reference.eam_pretraining import pretraining_set
    pre = pretraining_set(train, fitted_eam, PAPER_SETTINGS["silica"]["torchmd"], seed=0)

One pass is :func:`ase_mlff.reference.sampling.perturbed_dataset`. As in the paper every
Algorithm-1 frame is kept, however large its EAM forces (the close contacts are the point,
paper 004 Fig. 6b; the MAE loss tolerates the large labels); only frames whose labels are
not finite are dropped. ``max_label_force`` drops frames above a force (not in the paper),
and passes with new seeds are then added until the set has ``n_aug`` frames per training
frame.
"""

from __future__ import annotations

import numpy as np
import torch

from ase_mlff.data.dataset import Dataset
from ase_mlff.reference.sampling import perturbed_dataset

#: perturbation passes (each the Table A.1 schedule with its own seed) at most, to reach
#: n_aug x N frames after dropping
MAX_PASSES = 10


def pretraining_set(
    train: Dataset,
    eam: torch.nn.Module,
    perturb: dict,
    seed: int,
    device: str = "cpu",
    max_label_force: float | None = None,
) -> Dataset:
    """Algorithm 1 with Table A.1's settings (``perturb``: ``n_aug``, ``n_pairs``, ...),
    labelled by the fitted EAM. Frames with non-finite labels, and with ``max_label_force``
    (eV/Å) those with a larger EAM force, are dropped; passes with new seeds
    (``seed * 1000 + k``) are then added until the set has n_aug × len(train) frames (or
    :data:`MAX_PASSES` passes ran). The provenance records the passes, the dropped frames
    and the largest label force kept.

    Raises:
        RuntimeError: when every perturbed frame was dropped.
    """
    target = perturb["n_aug"] * len(train)
    limit = np.inf if max_label_force is None else float(max_label_force)
    parts, dropped = [], 0
    for k in range(MAX_PASSES):
        part = perturbed_dataset(
            train, eam, **perturb, seed=seed * 1000 + k, device=device, max_label_force=limit
        )
        dropped += part.provenance["dropped_frames"]
        if len(part):
            parts.append(part)
        if sum(len(p) for p in parts) >= target:
            break
    if not parts:
        raise RuntimeError(
            f"every perturbed frame had non-finite EAM labels or forces above {limit} eV/Å; "
            "the fitted EAM is not usable for pre-training"
        )
    pre = Dataset.concatenate(parts)
    pre = pre[np.arange(min(len(pre), target))]
    f_max = float(np.linalg.norm(pre.forces_nc, axis=1).max()) if len(pre) else float("nan")
    pre.provenance = {
        **parts[0].provenance,
        "passes": len(parts),
        "dropped_frames": dropped,
        "max_label_force": max_label_force,
        "largest_label_force": f_max,
        "n_frames": len(pre),
    }
    return pre
