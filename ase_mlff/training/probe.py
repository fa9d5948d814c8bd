"""A short MD stability probe for checkpoint selection during training.

Paper 000 (Maheshwari et al., "Beyond Force Metrics", Results and Discussion, "Force Metric
Limitations", Fig. 2): while the validation force MAE falls smoothly with the epochs, the
instability onset time t_inst of MD run with the model of each epoch does not follow it and
may even shrink at later epochs. A checkpoint chosen by the validation error alone can
thus be less stable than an earlier one. The trainer (``TrainConfig.probe_every``) runs this
probe every K epochs: a few replicas of batched Langevin MD from given start structures in
float64 with the default detectors (bond length deviation > 0.5 Å, atom overlap,
non-finite, exploding forces, temperature bounds), seeded so that every probe of a run
starts from the same velocities and noise, and records the mean t_inst (replicas that stay
stable count as the probe length) and the fraction that stayed stable.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence

import numpy as np
import torch
from ase import Atoms

from ase_mlff.md.runner import run_md
from ase_mlff.metrics.stability import t_inst_summary

#: keys :func:`stability_probe` returns (the trainer logs them as they are)
PROBE_KEYS = (
    "probe_t_inst_mean_fs",
    "probe_t_inst_median_fs",
    "probe_t_inst_min_fs",
    "probe_fraction_stable",
    "probe_total_fs",
    "probe_seconds",
)


def select_starts(source, n: int) -> list[Atoms]:
    """``n`` evenly spaced start structures from a list of Atoms or a Dataset (all when it
    holds fewer); labels and calculators are dropped."""
    count = len(source)
    if count == 0:
        raise ValueError("no start structures for the stability probe")
    idx = np.unique(np.linspace(0, count - 1, min(n, count)).round().astype(int))
    if hasattr(source, "to_atoms"):
        return [source.to_atoms(int(i), with_labels=False) for i in idx]
    out = []
    for i in idx:
        a = source[int(i)].copy()
        a.calc = None
        out.append(a)
    return out


def stability_probe(
    model: torch.nn.Module,
    images: Sequence[Atoms],
    *,
    steps: int = 400,
    temperature_K: float = 500.0,
    dt_fs: float = 0.5,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> dict[str, float]:
    """Run the probe on a float64 copy of ``model`` (the model itself is not touched).

    Returns ``probe_t_inst_mean_fs``, ``probe_t_inst_median_fs``, ``probe_t_inst_min_fs``
    (fs; see :func:`~ase_mlff.metrics.stability.survival_summary`: a replica that stayed
    stable is censored at ``steps · dt_fs``, the mean is the restricted mean, i.e. the mean
    of min(t_inst, run length), the Kaplan–Meier median is NaN when more than half the
    replicas outlived the probe),
    ``probe_fraction_stable``, ``probe_total_fs`` and ``probe_seconds`` (wall time).
    """
    if not images:
        raise ValueError("no start structures for the stability probe")
    t0 = time.perf_counter()
    probe_model = copy.deepcopy(model).to(device=device, dtype=torch.float64).eval()
    for p in probe_model.parameters():
        p.requires_grad_(False)
    run = run_md(
        probe_model,
        list(images),
        steps=steps,
        dt=dt_fs,
        integrator="langevin",
        temperature_K=temperature_K,
        seed=seed,
        detectors=None,
        dtype=torch.float64,
        device=device,
    )
    total = steps * dt_fs
    stable = np.array([r.stable for r in run.replicas])
    s = t_inst_summary(run.t_inst(), stable, total)
    return {
        "probe_t_inst_mean_fs": s["t_inst_mean_fs"],
        "probe_t_inst_median_fs": s["t_inst_median_fs"],
        "probe_t_inst_min_fs": s["t_inst_min_fs"],
        "probe_fraction_stable": s["fraction_stable"],
        "probe_total_fs": float(total),
        "probe_seconds": time.perf_counter() - t0,
    }


def is_more_stable(
    candidate: tuple[float, float], incumbent: tuple[float, float] | None, rtol: float = 1e-9
) -> bool:
    """Whether ``(t_inst_mean_fs, val_loss)`` beats the incumbent: a longer mean t_inst wins,
    equal t_inst (within ``rtol``) is broken by the lower validation loss."""
    if incumbent is None:
        return True
    t, loss = candidate
    t0, loss0 = incumbent
    if abs(t - t0) <= rtol * max(abs(t), abs(t0), 1.0):
        return loss < loss0
    return t > t0
