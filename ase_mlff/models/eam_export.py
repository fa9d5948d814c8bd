"""Write an :class:`ase_mlff.models.eam.EAM` as a LAMMPS ``eam/fs`` (DYNAMO setfl) table.

Layout (LAMMPS ``pair_style eam/fs``; the same layout ``matscipy.calculators.eam.io.
read_eam(kind="eam/fs")`` reads)::

    3 comment lines
    N  El_1 ... El_N
    Nrho drho Nr dr cutoff
    for each element b = 1..N:
        Z_b  mass_b  lattice-constant  lattice-type
        F_b(ρ)  at ρ = 0, drho, ..., (Nrho-1) drho
        ρ_{a b}(r) for a = 1..N, at r = 0, dr, ..., (Nr-1) dr
    for each pair a >= b (order (1,1), (2,1), (2,2), (3,1), ...):
        r·φ_ab(r) at r = 0, dr, ..., (Nr-1) dr      (LAMMPS tables hold r times the pair term)

Density convention: the j-th density table in the block of element b is the density that
an atom of element b *contributes* at a centre of element j (LAMMPS ``type2rhor[jtype]
[itype]`` for the density at atom i of type itype; matscipy evaluates ``f[Z_j][Z_i]``).
In the model's notation (ρ_ab: centre a, neighbour b) block b, table a is ρ_ab.

All tabulated functions include the model's cutoff switch f_c, so they vanish at r_c.

The per-element reference energy E_atom has no slot of its own in ``eam/fs``. Since F_a is
evaluated exactly once per atom, a constant added to F_a is the same thing as a per-element
energy; ``atomic_energy_in_embedding=True`` (default) therefore folds E_atom into the F
tables and the file reproduces the full model energy. With ``False`` the file holds the
plain EAM part (energies equal the model's minus Σ_i E_atom(a_i); forces are equal).

Outside the tables: LAMMPS clamps ρ above (Nrho-1)·drho (with a warning) and matscipy's
splines extrapolate; choose ``rho_max`` large enough for the structures simulated.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from ase.data import atomic_masses

from ase_mlff.models.eam import EAM


def _block(values: np.ndarray, per_line: int = 5) -> str:
    v = np.asarray(values, dtype=np.float64).ravel()
    lines = [" ".join(f"{x:.16e}" for x in v[k : k + per_line]) for k in range(0, len(v), per_line)]
    return "\n".join(lines) + "\n"


def default_rho_max(model: EAM, n_neighbours: int = 16, r_min: float = 1.0) -> float:
    """A generous density range: ``n_neighbours`` neighbours at ``r_min`` of the largest ρ_ab."""
    r = torch.full((1,), r_min, dtype=torch.float64)
    n = len(model.species)
    best = 0.0
    with torch.no_grad():
        for a in range(n):
            for b in range(n):
                ia, ib = torch.tensor([a]), torch.tensor([b])
                best = max(best, float(model.density(r, ia, ib)))
    return n_neighbours * best


def write_eam_fs(
    model: EAM,
    path: str | Path,
    nrho: int = 10000,
    drho: float | None = None,
    nr: int = 10000,
    dr: float | None = None,
    *,
    rho_max: float | None = None,
    atomic_energy_in_embedding: bool = True,
    comment: str = "",
) -> Path:
    """Write ``model`` to ``path`` as an ``eam/fs`` setfl file; returns the path.

    ``dr`` defaults to r_c / (nr - 1) (the last grid point is the cutoff), ``drho`` to
    ``rho_max / (nrho - 1)`` with ``rho_max`` from :func:`default_rho_max`.
    """
    path = Path(path)
    if dr is None:
        dr = model.cutoff / (nr - 1)
    if drho is None:
        drho = (default_rho_max(model) if rho_max is None else rho_max) / (nrho - 1)
    n = len(model.species)
    r = torch.arange(nr, dtype=torch.float64) * dr
    rho = torch.arange(nrho, dtype=torch.float64) * drho
    p = {k: v.detach().double() for k, v in model.params().items()}

    def full(x: torch.Tensor, k: int) -> torch.Tensor:
        return torch.full_like(x, k, dtype=torch.long)

    lines = [
        "# ase_mlff learnable EAM (paper 004, Eqs. 1-3) exported as LAMMPS eam/fs\n",
        f"# E_atom {'folded into F' if atomic_energy_in_embedding else 'NOT included'}; "
        f"quintic cutoff switch width {model.cutoff_width:g} A. {comment}\n",
        "# Morse pairs D[(1-exp(-a(r-re)))^2-1], densities sum_k A exp(-beta r), F=B(rho-rho0)^2\n",
        f"{n} {' '.join(model.symbols)}\n",
        f"{nrho} {drho:.16e} {nr} {dr:.16e} {model.cutoff:.16e}\n",
    ]
    with torch.no_grad():
        for b, z in enumerate(model.species):
            lines.append(f"{z} {atomic_masses[z]:.6f} 0.0 none\n")
            emb = p["B"][b] * (rho - p["rho0"][b]) ** 2
            if atomic_energy_in_embedding:
                emb = emb + p["e_atom"][b]
            lines.append(_block(emb.numpy()))
            for a in range(n):
                lines.append(_block(model.density(r, full(r, a), full(r, b)).numpy()))
        for a in range(n):
            for b in range(a + 1):
                lines.append(_block((r * model.pair(r, full(r, a), full(r, b))).numpy()))
    path.write_text("".join(lines))
    return path


__all__ = ["default_rho_max", "write_eam_fs"]
