"""Local force analyses of a potential: bond-force scans, inter-frame force differences
and force-direction agreement.

1. Bond-length scan by rigid fragment translation (paper 000, Eq. 6, Fig. 6). The bond
   i–j is cut in the covalent graph, the fragment holding j is translated rigidly along
   û_ij = (r_j − r_i)/|r_j − r_i| so that r = |r_ij| runs from 0.95 r0 to 1.05 r0 (21
   geometries), and the bond-projected force

       F∥(r) = (F_j − F_i) · û_ij                                          (Eq. 6)

   and its numerical derivative dF∥/dr are compared between potentials. Sign: for a bond
   with energy E(r), F_j = −E'(r) û_ij and (for a diatomic) F_i = +E'(r) û_ij, so
   F∥ = −2 E'(r): negative (restoring, pulling j back toward i) for a stretched bond,
   positive for a compressed one; for a harmonic bond dF∥/dr = −2k. A smooth potential
   gives a smooth dF∥/dr; :func:`roughness` puts a number on its wiggles.

2. ΔF MAE (paper 000, Eqs. 7-8, Fig. 7). For frames near a reference (by aligned RMSD),
   the bond force of bond (p, q) in frame i is

       F^bond_{i;(p,q)} = (F_i^(q) − F_i^(p)) · û_{i;(p,q)},                (Eq. 7)

   and the error of the change of bond forces between frames i and j,

       MAE_ij = 1/|B| Σ_(p,q) |ΔF^bond_{ij,(p,q)} − ΔF^bond_{ref;ij,(p,q)}|,  (Eq. 8)

   with ΔF_ij = F_j − F_i, measures how consistently a model moves its forces between
   nearby configurations: an error common to all frames cancels.

3. Force-direction agreement (paper 004, appendix B, Fig. B.1): per-atom angles
   θ = arccos(F_a·F_b / |F_a||F_b|) between two force predictions (e.g. an MLIP and the
   EAM it was pre-trained on).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator
from scipy import sparse

from ase_mlff.graph.geometry import BOND_TOLERANCE, perceive_bonds

# ------------------------------------------------------------------ covalent graph


def molecular_graph(atoms: Atoms, tolerance: float = BOND_TOLERANCE) -> sparse.csr_matrix:
    """Symmetric boolean adjacency (N, N) of the covalent bonds found by the project's one
    molecular-graph function, :func:`ase_mlff.graph.geometry.perceive_bonds`."""
    n = len(atoms)
    b = perceive_bonds(atoms, tolerance)
    adj = sparse.coo_matrix((np.ones(len(b), dtype=bool), (b[:, 0], b[:, 1])), shape=(n, n))
    return ((adj + adj.T) > 0).tocsr()


def covalent_bonds(atoms: Atoms, tolerance: float = BOND_TOLERANCE) -> np.ndarray:
    """(B, 2) bonds (p, q), p < q, sorted (the set 𝓑 of Eq. 7)."""
    return perceive_bonds(atoms, tolerance)


def default_aspirin_bonds() -> dict[str, tuple[int, int]]:
    """Paper 000's three aspirin bonds (Fig. 6 a-c) as ``{label: (i, j)}``, MD17 atom order.

    The paper's indices are **0-based**: in the MD17 order (C0-C6, O7, O8, O9, C10, C11,
    O12, H13-H20) C11–O8, C6–O12 and C10–O7 are all covalent bonds with the right
    elements, whereas read 1-based, "O12" would be atom 11, a carbon. Checked against the
    shipped structure (``aspirin_md17_order.xyz``, GFN2-xTB): C11–O8 1.20 Å, C6–O12
    1.38 Å, C10–O7 1.21 Å. Note that C11–O8 is the acetyl carbonyl, a C=O double bond,
    although the paper calls (a) a C–O single bond; C10=O7 is the carboxylic C=O.

    The fragment holding j moves in :func:`fragment_bond_scan`: O8 alone for (a), the
    acetyl group O12-C11(=O8)-C4H3 for (b), O7 alone for (c).
    """
    return {"C11–O8": (11, 8), "C6–O12": (6, 12), "C10=O7": (10, 7)}


# ------------------------------------------------------------------ bond scan (Eq. 6)


def bond_fragment(atoms: Atoms, i: int, j: int, tolerance: float = BOND_TOLERANCE) -> np.ndarray:
    """Indices of the atoms on j's side of the bond i–j once it is cut in the covalent graph.

    Raises ValueError when i–j is not a bond, or when it is a ring bond (i and j stay
    connected after the cut, so no rigid translation changes only that bond).
    """
    from scipy.sparse.csgraph import connected_components

    n = len(atoms)
    if not (0 <= i < n and 0 <= j < n) or i == j:
        raise ValueError(f"need two different atom indices in [0, {n}), got {i}, {j}")
    adj = molecular_graph(atoms, tolerance).tolil()
    if not adj[i, j]:
        d = atoms.get_distance(i, j)
        raise ValueError(
            f"atoms {i} ({atoms[i].symbol}) and {j} ({atoms[j].symbol}) are {d:.3f} Å apart: "
            f"not a covalent bond (covalent radii × {tolerance})"
        )
    adj[i, j] = adj[j, i] = False
    _, comp = connected_components(adj.tocsr(), directed=False)
    if comp[i] == comp[j]:
        raise ValueError(
            f"bond {i}–{j} ({atoms[i].symbol}–{atoms[j].symbol}) is a ring bond: cutting it "
            "leaves one fragment, so no rigid translation changes this bond alone; scan it "
            "by moving atom j only (ase_mlff.metrics.scans.bond_scan) if you must"
        )
    return np.flatnonzero(comp == comp[j])


def fragment_bond_scan(
    atoms: Atoms,
    i: int,
    j: int,
    scale: tuple[float, float] = (0.95, 1.05),
    n_points: int = 21,
    tolerance: float = BOND_TOLERANCE,
) -> tuple[np.ndarray, list[Atoms]]:
    """Bond lengths r (P,) and geometries with the fragment of j translated rigidly along
    û_ij so that |r_j − r_i| = r, r from ``scale[0]·r0`` to ``scale[1]·r0`` (paper 000:
    0.95-1.05 r0, 21 points). Each fragment keeps its internal geometry exactly.
    """
    if n_points < 2:
        raise ValueError(f"n_points must be >= 2, got {n_points}")
    if not 0 < scale[0] < scale[1]:
        raise ValueError(f"scale must be (low, high) with 0 < low < high, got {scale}")
    frag = bond_fragment(atoms, i, j, tolerance)
    rij = atoms.positions[j] - atoms.positions[i]
    r0 = float(np.linalg.norm(rij))
    u = rij / r0
    r = r0 * np.linspace(scale[0], scale[1], n_points)
    images = []
    for rk in r:
        a = atoms.copy()
        a.calc = None
        a.positions[frag] += (rk - r0) * u
        images.append(a)
    return r, images


def _torch_energies_forces(
    model: torch.nn.Module, images: Sequence[Atoms], device: str | torch.device
) -> tuple[np.ndarray, list[np.ndarray]]:
    """All images through the one batched prediction loop in float64 (a copy of the model:
    the caller's module is left as it is)."""
    from ase_mlff.data.dataset import Dataset
    from ase_mlff.models.prediction import predict

    m = copy.deepcopy(model).to(dtype=torch.float64)
    out = predict(m, Dataset.from_atoms(list(images)), device=device, dtype=torch.float64)
    splits = np.cumsum([len(a) for a in images])[:-1]
    return out["energy"], np.split(out["forces"], splits)


def energies_forces(
    potential: torch.nn.Module | Calculator,
    images: Sequence[Atoms],
    device: str | torch.device = "cpu",
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Energies (P,) eV and forces [(N_k, 3)] eV/Å of images: a torch potential in one
    batched float64 call, an ASE calculator image by image."""
    if len(images) == 0:
        raise ValueError("no images given")
    if isinstance(potential, torch.nn.Module):
        return _torch_energies_forces(potential, images, device)
    if not isinstance(potential, Calculator):
        raise TypeError(
            f"expected a torch potential or an ASE calculator, got {type(potential).__name__}"
        )
    energy, forces = np.empty(len(images)), []
    for k, a in enumerate(images):
        b = a.copy()
        b.calc = potential
        energy[k] = b.get_potential_energy()
        forces.append(np.array(b.get_forces(), dtype=np.float64))
    return energy, forces


def bond_force_profile(
    potential: torch.nn.Module | Calculator,
    images: Sequence[Atoms],
    i: int,
    j: int,
    device: str | torch.device = "cpu",
) -> dict[str, np.ndarray]:
    """Bond-projected force along a scan (paper 000, Eq. 6).

    Returns ``r`` (P,) Å, measured on each image; ``f_par`` (P,) = (F_j − F_i)·û_ij in eV/Å
    (negative for a stretched bond: see the module docstring); ``df_dr`` (P,) eV/Å²,
    ``np.gradient(f_par, r)`` (second-order differences, also at the ends); ``energy``
    (P,) eV.
    """
    pos = np.stack([a.positions[[i, j]] for a in images])  # (P, 2, 3)
    rij = pos[:, 1] - pos[:, 0]
    r = np.linalg.norm(rij, axis=1)
    if len(r) < 3 or np.any(np.diff(r) == 0):
        raise ValueError("the scan needs at least 3 images at distinct bond lengths")
    u = rij / r[:, None]
    energy, forces = energies_forces(potential, images, device)
    fij = np.stack([f[j] - f[i] for f in forces])
    f_par = np.einsum("pc,pc->p", fij, u)
    df_dr = np.gradient(f_par, r, edge_order=2)
    return {"r": r, "f_par": f_par, "df_dr": df_dr, "energy": energy}


def roughness(r: np.ndarray, df_dr: np.ndarray, degree: int = 3) -> float:
    """How wiggly a dF∥/dr curve is, eV/Å²: the RMS residual of dF∥/dr about its
    least-squares polynomial of ``degree`` (3) in r, over the interior scan points.

    Why this definition: over a ±5 % scan a physical bond force is, to a very good
    approximation, a low-order polynomial in r (harmonic: linear; anharmonic: a few more
    Taylor terms), so its derivative is fitted almost exactly — the roughness is zero for
    any F∥(r) polynomial of degree ≤ ``degree`` + 1 and tiny for a Morse bond — while the
    small-scale oscillations that paper 000 sees in models trained from scratch (Fig. 6)
    cannot be fitted and stay in the residual. It is in the units of dF∥/dr, so values of
    different models on the same bond compare directly.

    Degree 3 rather than 2: a ±5 % window is only ~0.12 Å wide for a C–O bond, so a
    wiggle of period ~0.15 Å (sin 40r) spans less than one period and a quadratic absorbs
    most of it. On r = 1.2 Å ± 5 %, 21 points, a Morse bond (D = 4.5 eV, a = 2 Å⁻¹) gives
    0.04 (degree 2) / 0.001 (degree 3) eV/Å², the same plus 0.02 sin(40r) eV/Å gives 0.10
    / 0.035: a contrast of 2.5× with degree 2, 30× with degree 3; faster wiggles (sin 100r)
    give ~1.2 with either. Wiggles slower than the window are indistinguishable from
    anharmonicity by any measure on one scan.

    The two end points are left out: ``np.gradient`` uses one-sided differences there,
    whose truncation error differs from that of the central differences inside (for a
    polynomial F∥ the interior error is itself a polynomial the fit absorbs).
    """
    r = np.asarray(r, dtype=np.float64)
    d = np.asarray(df_dr, dtype=np.float64)
    if r.shape != d.shape or r.ndim != 1:
        raise ValueError(f"r and df_dr must be 1-D of equal length, got {r.shape}, {d.shape}")
    r, d = r[1:-1], d[1:-1]
    if len(r) <= degree + 1:
        raise ValueError(f"need at least {degree + 4} scan points for a degree-{degree} fit")
    fit = np.polynomial.Polynomial.fit(r, d, degree)
    return float(np.sqrt(np.mean((d - fit(r)) ** 2)))


def bond_scan_figure(profiles_by_model: Mapping[str, Mapping[str, np.ndarray]], title: str = ""):
    """F∥(r) (top) and dF∥/dr (bottom) of one bond for several potentials, like paper 000's
    Fig. 6; the legend gives each curve's :func:`roughness`."""
    from ase_mlff.metrics.plots import _plt

    if not profiles_by_model:
        raise ValueError("nothing to plot")
    plt = _plt()
    fig, (ax_f, ax_d) = plt.subplots(2, 1, figsize=(4.8, 5.6), sharex=True)
    for name, p in profiles_by_model.items():
        ax_f.plot(p["r"], p["f_par"], marker=".", label=name)
        rough = roughness(p["r"], p["df_dr"]) if len(p["r"]) > 5 else float("nan")
        ax_d.plot(p["r"], p["df_dr"], marker=".", label=f"{name} (roughness {rough:.3g})")
    ax_f.set_ylabel("F∥ = (F_j − F_i)·û_ij (eV/Å)")
    ax_d.set_ylabel("dF∥/dr (eV/Å²)")
    ax_d.set_xlabel("bond length r (Å)")
    ax_f.set_title(title)
    for ax in (ax_f, ax_d):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------ ΔF MAE (Eqs. 7-8)


def nearest_frames(
    positions_fnc: np.ndarray,
    reference_index: int,
    n: int = 100,
    weights: np.ndarray | None = None,
) -> np.ndarray:
    """Indices of the ``n`` frames closest to frame ``reference_index`` by RMSD after
    optimal superposition (Kabsch), closest first; the reference itself comes first."""
    from ase_mlff.metrics.clusters import kabsch_align

    pos = np.asarray(positions_fnc, dtype=np.float64)
    if pos.ndim != 3 or pos.shape[2] != 3:
        raise ValueError(f"positions must be (frames, atoms, 3), got {pos.shape}")
    n_frames = len(pos)
    if not -n_frames <= reference_index < n_frames:
        raise ValueError(f"reference_index {reference_index} out of range for {n_frames} frames")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    ref = reference_index % n_frames
    _, rmsd = kabsch_align(pos, pos[ref], weights=weights)
    rmsd = np.array(rmsd, dtype=np.float64)
    rmsd[ref] = -np.inf
    return np.argsort(rmsd, kind="stable")[: min(n, n_frames)]


def bond_projected_forces(
    positions_fnc: np.ndarray, forces_fnc: np.ndarray, bonds: np.ndarray
) -> np.ndarray:
    """Bond forces (F, B) = (F^(q) − F^(p))·û_(p,q) per frame and bond (paper 000, Eq. 7),
    with û_(p,q) = (r_q − r_p)/|r_q − r_p| of each frame's own geometry."""
    pos = np.asarray(positions_fnc, dtype=np.float64)
    frc = np.asarray(forces_fnc, dtype=np.float64)
    bonds = np.asarray(bonds, dtype=np.int64).reshape(-1, 2)
    if pos.ndim != 3 or pos.shape[2] != 3 or pos.shape != frc.shape:
        raise ValueError(
            f"positions and forces must both be (frames, atoms, 3); got {pos.shape}, {frc.shape}"
        )
    if len(bonds) == 0:
        raise ValueError("no bonds given")
    if bonds.min() < 0 or bonds.max() >= pos.shape[1]:
        raise ValueError(f"bond indices out of range for {pos.shape[1]} atoms")
    p, q = bonds[:, 0], bonds[:, 1]
    d = pos[:, q] - pos[:, p]  # (F, B, 3)
    u = d / np.linalg.norm(d, axis=2, keepdims=True)
    return np.einsum("fbc,fbc->fb", frc[:, q] - frc[:, p], u)


def delta_force_mae(pred_bond_fb: np.ndarray, ref_bond_fb: np.ndarray) -> tuple[np.ndarray, float]:
    """Pairwise ΔF MAE matrix (F, F) and its mean over i < j (paper 000, Eq. 8), eV/Å.

    MAE_ij = mean_b |(P_jb − P_ib) − (R_jb − R_ib)| = mean_b |e_jb − e_ib| with the error
    e = P − R: symmetric, zero on the diagonal, and zero for any error shared by all frames.
    """
    pred = np.asarray(pred_bond_fb, dtype=np.float64)
    ref = np.asarray(ref_bond_fb, dtype=np.float64)
    if pred.shape != ref.shape or pred.ndim != 2:
        raise ValueError(
            f"need two (frames, bonds) arrays of one shape, got {pred.shape}, {ref.shape}"
        )
    if len(pred) < 2:
        raise ValueError("ΔF MAE needs at least two frames")
    err = pred - ref
    mat = np.mean(np.abs(err[None, :, :] - err[:, None, :]), axis=2)
    iu = np.triu_indices(len(err), k=1)
    return mat, float(mat[iu].mean())


def delta_force_figure(matrices_by_model: Mapping[str, np.ndarray], vmax: float | None = None):
    """Upper-triangular heat maps of ΔF MAE matrices (paper 000, Fig. 7), one colour scale
    shared by all panels (dark: small error); titles give the mean over i < j."""
    from ase_mlff.metrics.plots import _plt

    if not matrices_by_model:
        raise ValueError("nothing to plot")
    plt = _plt()
    mats = {k: np.asarray(v, dtype=np.float64) for k, v in matrices_by_model.items()}
    upper = {
        k: np.where(np.triu(np.ones_like(m, dtype=bool), k=1), m, np.nan) for k, m in mats.items()
    }
    if vmax is None:
        vmax = max(float(np.nanmax(m)) if np.isfinite(m).any() else 0.0 for m in upper.values())
    vmax = vmax if vmax > 0 else 1.0
    fig, axes = plt.subplots(1, len(mats), figsize=(4.2 * len(mats) + 0.8, 4.0), squeeze=False)
    im = None
    for ax, (name, m) in zip(axes[0], upper.items()):
        im = ax.imshow(m, cmap="viridis", vmin=0.0, vmax=vmax, origin="upper")
        mean = float(np.nanmean(m)) if np.isfinite(m).any() else float("nan")
        ax.set_title(f"{name}: mean {mean * 1000:.1f} meV/Å", fontsize=10)
        ax.set_xlabel("structure j")
        ax.set_ylabel("structure i")
    fig.colorbar(im, ax=axes[0].tolist(), label="ΔF MAE_ij (eV/Å)")
    return fig


# ------------------------------------------------------------------ force angles


def force_angles(
    forces_a_nc: np.ndarray, forces_b_nc: np.ndarray, min_norm: float = 1e-8
) -> np.ndarray:
    """Angles (degrees) between two force predictions, atom by atom (paper 004, Fig. B.1):
    θ = arccos(F_a·F_b / |F_a||F_b|), the cosine clipped to [−1, 1].

    Atoms where either force is shorter than ``min_norm`` (eV/Å) have no direction and are
    dropped, so the result can be shorter than the input. Arrays of any leading shape
    (..., 3) are flattened to atoms.
    """
    a = np.asarray(forces_a_nc, dtype=np.float64)
    b = np.asarray(forces_b_nc, dtype=np.float64)
    if a.shape != b.shape or a.shape[-1:] != (3,):
        raise ValueError(f"need two force arrays of one shape (..., 3), got {a.shape}, {b.shape}")
    a, b = a.reshape(-1, 3), b.reshape(-1, 3)
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    ok = (na > min_norm) & (nb > min_norm)
    cos = np.einsum("nc,nc->n", a[ok], b[ok]) / (na[ok] * nb[ok])
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def force_angle_figure(angles_by_label: Mapping[str, np.ndarray], bins: int = 36):
    """Overlaid histograms (fraction of atoms) of force angles on 0-180° (paper 004,
    Fig. B.1: 0° aligned, 180° opposed); the legend gives each median."""
    from ase_mlff.metrics.plots import _plt

    if not angles_by_label:
        raise ValueError("nothing to plot")
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    edges = np.linspace(0.0, 180.0, bins + 1)
    for name, theta in angles_by_label.items():
        theta = np.asarray(theta, dtype=np.float64).ravel()
        if len(theta) == 0:
            continue
        w = np.full(len(theta), 1.0 / len(theta))
        ax.hist(
            theta,
            bins=edges,
            weights=w,
            alpha=0.55,
            label=f"{name} (median {np.median(theta):.1f}°)",
        )
    ax.set_xlim(0, 180)
    ax.set_xticks(np.arange(0, 181, 30))
    ax.set_xlabel("angle between force vectors (°)")
    ax.set_ylabel("fraction of atoms")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


__all__ = [
    "bond_force_profile",
    "bond_fragment",
    "bond_projected_forces",
    "bond_scan_figure",
    "covalent_bonds",
    "default_aspirin_bonds",
    "delta_force_figure",
    "delta_force_mae",
    "energies_forces",
    "force_angle_figure",
    "force_angles",
    "fragment_bond_scan",
    "molecular_graph",
    "nearest_frames",
    "roughness",
]
