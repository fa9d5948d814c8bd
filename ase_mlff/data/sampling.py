"""Samplers of configurations for pre-training data.

Rattling (paper 001, Methods, "Pre-trained data sampling"): N frames around a relaxed
geometry x, each

    x̃ = x + σ ε,   ε ~ N(0, 1) per Cartesian component,

with σ = 0.2 Å and *no* rescaling of x (the denoising-diffusion choice
√(1 − σ²) x + σ ε is deliberately not used: unscaled noise expands the molecule, like a
hot gas of atoms, which resembles the out-of-distribution frames MD runs into).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from ase import Atoms

#: paper 001: 100,000 frames, σ = 0.2 Å
DEFAULT_N_FRAMES = 100_000
DEFAULT_SIGMA = 0.2


def rattle_positions(
    atoms: Atoms, n_frames: int = DEFAULT_N_FRAMES, sigma: float = DEFAULT_SIGMA, seed: int = 0
) -> np.ndarray:
    """(n_frames, N, 3) positions x + σ ε around ``atoms.positions``, seeded, vectorised."""
    if n_frames < 1:
        raise ValueError(f"n_frames must be at least 1, got {n_frames}")
    if not sigma > 0:
        raise ValueError(f"sigma must be positive (Å), got {sigma}")
    if len(atoms) == 0:
        raise ValueError("cannot rattle an empty Atoms")
    rng = np.random.default_rng(seed)
    x = np.asarray(atoms.positions, dtype=np.float64)
    return x[None] + sigma * rng.standard_normal((n_frames, len(atoms), 3))


def rattle(
    structures: Atoms | Sequence[Atoms],
    n_frames: int = DEFAULT_N_FRAMES,
    sigma: float = DEFAULT_SIGMA,
    seed: int = 0,
) -> list[tuple[Atoms, np.ndarray]]:
    """Rattled frames around one or several structures, split evenly between them.

    Returns ``[(structure, positions (n_k, N_k, 3)), ...]``: one block per structure, so
    that each block can be labelled in one batched pass by that structure's force field.
    """
    if isinstance(structures, Atoms):
        structures = [structures]
    if not structures:
        raise ValueError("no structures to rattle")
    counts = np.full(len(structures), n_frames // len(structures))
    counts[: n_frames % len(structures)] += 1
    seeds = np.random.SeedSequence(seed).spawn(len(structures))
    return [
        (a, rattle_positions(a, int(c), sigma, int(s.generate_state(1)[0])))
        for a, c, s in zip(structures, counts, seeds)
        if c > 0
    ]
