"""1-D energy scans that expose holes in a potential energy surface (paper 001, Fig. 1c
and Fig. 2a-b): a bond stretched to dissociation, an angle closed until two atoms collide.

Geometries are built from one structure: for a bond i–j, atom j moves along the bond
axis; for an angle i–c–j, atom j rotates about c in the i–c–j plane at fixed |c–j|. Every
other atom stays. Energies come from any ASE calculator or any batched potential of the
project (all points in one call).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator


def bond_scan(atoms: Atoms, i: int, j: int, distances: Sequence[float]) -> list[Atoms]:
    """Copies of ``atoms`` with atom ``j`` at each distance from ``i`` along the i→j axis."""
    u = atoms.positions[j] - atoms.positions[i]
    u = u / np.linalg.norm(u)
    out = []
    for r in distances:
        a = atoms.copy()
        a.calc = None
        a.positions[j] = atoms.positions[i] + float(r) * u
        out.append(a)
    return out


def angle_scan(atoms: Atoms, i: int, c: int, j: int, angles_deg: Sequence[float]) -> list[Atoms]:
    """Copies with the angle i–c–j set to each value by rotating ``j`` about ``c``."""
    a_vec = atoms.positions[i] - atoms.positions[c]
    b_vec = atoms.positions[j] - atoms.positions[c]
    e1 = a_vec / np.linalg.norm(a_vec)
    perp = b_vec - (b_vec @ e1) * e1
    if np.linalg.norm(perp) < 1e-8:
        raise ValueError("the three atoms are collinear: the scan plane is undefined")
    e2 = perp / np.linalg.norm(perp)
    r = np.linalg.norm(b_vec)
    out = []
    for theta in np.radians(np.asarray(angles_deg, dtype=float)):
        a = atoms.copy()
        a.calc = None
        a.positions[j] = atoms.positions[c] + r * (np.cos(theta) * e1 + np.sin(theta) * e2)
        out.append(a)
    return out


def scan_energies(reference: Calculator | torch.nn.Module, images: Sequence[Atoms]) -> np.ndarray:
    """Energies (eV) of the scan geometries: an ASE calculator point by point, a torch
    potential in one batched call (float64)."""
    if isinstance(reference, torch.nn.Module):
        from ase_mlff.models.prediction import predict_frames

        pos = np.stack([a.positions for a in images])
        e, _ = predict_frames(reference, images[0], pos)
        return e
    out = np.empty(len(images))
    for k, a in enumerate(images):
        b = a.copy()
        b.calc = reference
        out[k] = b.get_potential_energy()
    return out


def methyl_atoms(atoms: Atoms) -> tuple[int, list[int]]:
    """(carbon, [its three hydrogens]) of the first CH3 group, from covalent connectivity."""
    from ase_mlff.graph.geometry import perceive_bonds

    b = perceive_bonds(atoms)
    i, j = np.concatenate([b[:, 0], b[:, 1]]), np.concatenate([b[:, 1], b[:, 0]])
    z = atoms.numbers
    for c in np.flatnonzero(z == 6):
        hs = sorted(j[(i == c) & (z[j] == 1)].tolist())
        if len(hs) == 3:
            return int(c), hs
    raise ValueError("no CH3 group found in this structure")


def scan_figure(x: np.ndarray, curves: dict[str, np.ndarray], xlabel: str, title: str = ""):
    """Energy relative to each curve's value at the reference geometry (``x`` closest to
    the start), one line per potential; clipped to a readable window."""
    from ase_mlff.metrics.plots import _plt

    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    lo, hi = 0.0, 0.0
    for name, e in curves.items():
        ax.plot(x, e, marker=".", label=name)
        lo, hi = min(lo, np.nanmin(e)), max(hi, np.nanpercentile(e, 75))
    ax.set_ylim(max(lo - 0.5, -15), min(hi + 1.0, 30))
    ax.set_xlabel(xlabel)
    ax.set_ylabel("E − E(reference geometry) (eV)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig
