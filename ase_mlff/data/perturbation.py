"""Two-step perturbation of reference structures for physics-informed pre-training.

Paper 004, Sec. "Pretraining dataset construction", Algorithm 1 ("Two-Step Atomic Position
Perturbation"), per round on positions P (N, 3):

1. compute the pairwise distance matrix D; identify ``n_close_pairs`` *non-overlapping*
   atom pairs with minimum distances (here: greedily, shortest first, a pair is taken only
   if neither atom is already in a taken pair, so no atom is pulled twice);
   for each pair (i, j): s ~ U(0, d_pull), d_ij = P_j - P_i,
   P_i += s d_ij/|d_ij|,  P_j -= s d_ij/|d_ij|  (both atoms move by s: the pair gets
   closer by 2 s);
2. randomly select ``n_sites`` atoms (distinct); for each: V ~ N(0, 1)^3 normalised,
   r ~ U(0, d_pert), P_k += r V.

Distances and d_ij are minimum-image vectors in periodic cells. Positions are not wrapped
back into the cell. As in the paper, s is not capped: when 2 s > |d_ij| the two atoms pass
each other (final separation |d_ij| - 2 s < 0 along the old direction).

Supplementary Table A.1: ``n_aug`` rounds per structure, with strengths given as [a, b)
= ``numpy.linspace(a, b, n_aug, endpoint=False)``, e.g. [1.0, 0.0) with five rounds gives
d = 1.0, 0.8, 0.6, 0.4, 0.2 Å (for both the pull and the perturbation strength).

    from ase_mlff.data.perturbation import PAPER_SETTINGS, perturbed_structures
    frames = perturbed_structures(images, **PAPER_SETTINGS["silica"]["cgcnn"], seed=0)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from ase import Atoms

from ase_mlff.graph.geometry import minimum_image

#: Table A.1 of paper 004: {dataset: {mlip: kwargs of :func:`perturbed_structures`}}
#: (the "Usage" column, the fraction of the QM data used, is not a perturbation setting).
PAPER_SETTINGS: dict[str, dict[str, dict[str, float | int]]] = {
    "silica": {
        "cgcnn": dict(n_aug=5, n_pairs=4, d_pull_max=1.0, n_sites=5, d_pert_max=1.0),
        "torchmd": dict(n_aug=5, n_pairs=4, d_pull_max=1.0, n_sites=5, d_pert_max=1.0),
        "m3gnet": dict(n_aug=5, n_pairs=2, d_pull_max=1.0, n_sites=5, d_pert_max=1.0),
    },
    "phosphorus": {
        "cgcnn": dict(n_aug=5, n_pairs=2, d_pull_max=1.0, n_sites=5, d_pert_max=1.0),
        "torchmd": dict(n_aug=20, n_pairs=2, d_pull_max=2.0, n_sites=5, d_pert_max=2.0),
        "m3gnet": dict(n_aug=5, n_pairs=2, d_pull_max=1.0, n_sites=5, d_pert_max=0.5),
    },
    "mptrj_subset": {
        "cgcnn": dict(n_aug=10, n_pairs=2, d_pull_max=0.5, n_sites=5, d_pert_max=0.25),
        "torchmd": dict(n_aug=25, n_pairs=2, d_pull_max=1.0, n_sites=5, d_pert_max=0.5),
        "m3gnet": dict(n_aug=25, n_pairs=2, d_pull_max=1.0, n_sites=5, d_pert_max=0.5),
    },
}


def strength_schedule(d_max: float, n_aug: int) -> np.ndarray:
    """Table A.1's [d_max, 0): ``linspace(d_max, 0, n_aug, endpoint=False)``, largest first."""
    if n_aug < 1:
        raise ValueError(f"n_aug must be at least 1, got {n_aug}")
    if d_max < 0:
        raise ValueError(f"maximum strength must be non-negative (Å), got {d_max}")
    return np.linspace(d_max, 0.0, n_aug, endpoint=False)


def _mic_vectors(atoms: Atoms) -> tuple[np.ndarray, np.ndarray]:
    """(N, N, 3) minimum-image vectors P_j - P_i and (N, N) distances."""
    pos = np.asarray(atoms.positions, dtype=np.float64)
    vec = pos[None, :, :] - pos[:, None, :]
    if atoms.pbc.any():
        vec = minimum_image(vec, atoms.cell.array, atoms.pbc)
    return vec, np.linalg.norm(vec, axis=-1)


def closest_disjoint_pairs(atoms: Atoms, n_pairs: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``n_pairs`` closest pairs (i < j) sharing no atom, shortest first (greedy), and
    their (n, 3) minimum-image vectors P_j - P_i. Fewer if the structure has < 2 n atoms."""
    vec, dist = _mic_vectors(atoms)
    iu, ju = np.triu_indices(len(atoms), k=1)
    order = np.argsort(dist[iu, ju], kind="stable")
    used = np.zeros(len(atoms), dtype=bool)
    pairs: list[tuple[int, int]] = []
    for k in order:  # early exit: stops after n_pairs picks
        if len(pairs) >= n_pairs:
            break
        i, j = iu[k], ju[k]
        if not (used[i] or used[j]):
            used[i] = used[j] = True
            pairs.append((int(i), int(j)))
    pairs_p2 = np.array(pairs, dtype=np.int64).reshape(-1, 2)
    return pairs_p2, vec[pairs_p2[:, 0], pairs_p2[:, 1]].reshape(-1, 3)


def two_step_perturbation(
    atoms: Atoms,
    *,
    n_pairs: int,
    d_pull: float,
    n_sites: int,
    d_pert: float,
    rng: np.random.Generator,
) -> Atoms:
    """One round of Algorithm 1 (paper 004): pull the closest disjoint pairs, then rattle
    random sites. Returns a copy; ``info`` records ``perturb_pairs`` (p, 2), ``perturb_pull``
    s (p,), ``perturb_sites`` (k,), ``perturb_r`` r (k,), ``perturb_d_pull``,
    ``perturb_d_pert``. ``n_pairs`` and ``n_sites`` are capped at N // 2 and N."""
    n = len(atoms)
    if n == 0:
        raise ValueError("cannot perturb an empty Atoms")
    if n_pairs < 0 or n_sites < 0:
        raise ValueError(f"n_pairs and n_sites must be non-negative, got {n_pairs}, {n_sites}")
    if d_pull < 0 or d_pert < 0:
        raise ValueError(f"strengths must be non-negative (Å), got {d_pull}, {d_pert}")
    out = atoms.copy()
    pos = np.array(atoms.positions, dtype=np.float64)

    # step 1: pull the closest non-overlapping pairs together, each atom by s
    pairs, d_ij = closest_disjoint_pairs(atoms, min(n_pairs, n // 2))
    s = rng.uniform(0.0, d_pull, len(pairs))
    step = s[:, None] * d_ij / np.linalg.norm(d_ij, axis=1, keepdims=True)
    pos[pairs[:, 0]] += step  # pairs are disjoint: no repeated indices
    pos[pairs[:, 1]] -= step

    # step 2: displace random distinct sites by r in a uniformly random direction
    sites = rng.choice(n, size=min(n_sites, n), replace=False)
    v = rng.standard_normal((len(sites), 3))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    r = rng.uniform(0.0, d_pert, len(sites))
    pos[sites] += r[:, None] * v

    out.positions = pos
    out.info.update(
        perturb_pairs=pairs,
        perturb_pull=s,
        perturb_sites=sites.astype(np.int64),
        perturb_r=r,
        perturb_d_pull=float(d_pull),
        perturb_d_pert=float(d_pert),
    )
    return out


def perturbed_structures(
    images: Atoms | Sequence[Atoms],
    *,
    n_aug: int,
    n_pairs: int,
    d_pull_max: float,
    n_sites: int,
    d_pert_max: float,
    seed: int = 0,
) -> list[Atoms]:
    """``n_aug`` rounds of :func:`two_step_perturbation` per structure (paper 004, Table
    A.1), round k with d_pull, d_pert = ``strength_schedule(d_max, n_aug)[k]``.

    Every round starts from the reference structure. Output is structure-major
    (structure 0 rounds 0..n_aug-1, structure 1, ...); ``info["perturb_round"]`` = k and
    ``info["perturb_source"]`` = index of the input structure. Seeded by ``seed``.
    """
    if isinstance(images, Atoms):
        images = [images]
    if not images:
        raise ValueError("no structures to perturb")
    pulls = strength_schedule(d_pull_max, n_aug)
    perts = strength_schedule(d_pert_max, n_aug)
    rng = np.random.default_rng(seed)
    frames = []
    for src, atoms in enumerate(images):
        for k in range(n_aug):
            a = two_step_perturbation(
                atoms,
                n_pairs=n_pairs,
                d_pull=float(pulls[k]),
                n_sites=n_sites,
                d_pert=float(perts[k]),
                rng=rng,
            )
            a.info.update(perturb_round=k, perturb_source=src)
            frames.append(a)
    return frames
