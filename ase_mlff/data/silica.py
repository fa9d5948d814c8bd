"""Silica (SiO2) structures: crystalline polymorphs, strained and rattled cells.

The polymorphs are built with :func:`ase.spacegroup.crystal` from their experimental
space groups, lattice parameters and Wyckoff positions, and repeated to 24-48 atoms:

========================  ==========  ==================================  ======  =====
name                      space group  cell (Å)                            repeat  atoms
========================  ==========  ==================================  ======  =====
``alpha_quartz``          P3₂21 (154)  a 4.9137, c 5.4047                  2×2×1   36
``alpha_cristobalite``    P4₁2₁2 (92)  a 4.9709, c 6.9278                  2×1×1   24
``beta_cristobalite``     Fd-3m (227)  a 7.16 (ideal, linear Si–O–Si)      1×1×1   24
``beta_tridymite``        P6₃/mmc (194) a 5.03, c 8.22 (ideal)             2×1×1   24
``stishovite``            P4₂/mnm (136) a 4.1801, c 2.6678 (six-fold Si)    2×2×2   48
========================  ==========  ==================================  ======  =====

Quartz: Si (0.4697, 0, 2/3), O (0.4135, 0.2669, −0.2142) in ASE's P3₂21 setting
(Levien et al., Am. Mineral. 65, 920 (1980); Si–O 1.604/1.613 Å). α-cristobalite: Si
(0.3003, 0.3003, 0), O (0.2392, 0.1044, 0.1787) (Pluth et al. 1985). Stishovite: O
(0.3062, 0.3062, 0). The ideal β-cristobalite and β-tridymite have straight Si–O–Si
bonds (Si–O 1.55 Å); they are meant as starting points that the reference relaxes. Every
test in ``tests/test_silica.py`` checks four-fold (six-fold for stishovite) Si and two-fold
(three-fold) O coordination.

These are the structure sources of :mod:`ase_mlff.recipes.make_silica_reference`, which
relaxes them with GFN1-xTB and samples around them, as the GAP-22 silica set that paper 004
uses samples crystalline, strained, liquid and melt-quenched silica (Erhard et al. 2022).
"""

from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.spacegroup import crystal

#: name -> (crystal kwargs, repeat)
POLYMORPHS: dict[str, tuple[dict, tuple[int, int, int]]] = {
    "alpha_quartz": (
        dict(
            symbols=["Si", "O"],
            basis=[(0.4697, 0.0, 2 / 3), (0.4135, 0.2669, -0.21423333)],
            spacegroup=154,
            cellpar=[4.9137, 4.9137, 5.4047, 90, 90, 120],
        ),
        (2, 2, 1),
    ),
    "alpha_cristobalite": (
        dict(
            symbols=["Si", "O"],
            basis=[(0.3003, 0.3003, 0.0), (0.2392, 0.1044, 0.1787)],
            spacegroup=92,
            cellpar=[4.9709, 4.9709, 6.9278, 90, 90, 90],
        ),
        (2, 1, 1),
    ),
    "beta_cristobalite": (
        dict(
            symbols=["Si", "O"],
            basis=[(0.0, 0.0, 0.0), (0.125, 0.125, 0.125)],
            spacegroup=227,
            setting=1,
            cellpar=[7.16, 7.16, 7.16, 90, 90, 90],
        ),
        (1, 1, 1),
    ),
    "beta_tridymite": (
        dict(
            symbols=["Si", "O", "O"],
            basis=[(1 / 3, 2 / 3, 0.4375), (1 / 3, 2 / 3, 0.25), (0.5, 0.0, 0.0)],
            spacegroup=194,
            cellpar=[5.03, 5.03, 8.22, 90, 90, 120],
        ),
        (2, 1, 1),
    ),
    "stishovite": (
        dict(
            symbols=["Si", "O"],
            basis=[(0.0, 0.0, 0.0), (0.3062, 0.3062, 0.0)],
            spacegroup=136,
            cellpar=[4.1801, 4.1801, 2.6678, 90, 90, 90],
        ),
        (2, 2, 2),
    ),
}


def silica_polymorph(name: str, repeat: tuple[int, int, int] | None = None) -> Atoms:
    """The experimental cell of polymorph ``name``, repeated (default: the table above)."""
    if name not in POLYMORPHS:
        raise KeyError(f"unknown silica polymorph {name!r}; known: {sorted(POLYMORPHS)}")
    kwargs, default_repeat = POLYMORPHS[name]
    atoms = crystal(**kwargs).repeat(repeat or default_repeat)
    atoms.info["polymorph"] = name
    return atoms


def strained_rattled(
    atoms: Atoms,
    n: int,
    rng: np.random.Generator,
    max_normal_strain: float = 0.05,
    max_shear_strain: float = 0.03,
    sigma_range: tuple[float, float] = (0.01, 0.06),
) -> list[Atoms]:
    """``n`` copies of ``atoms`` with a random symmetric strain and Gaussian rattling.

    Strain: ε_aa ~ U(±max_normal), ε_ab = ε_ba ~ U(±max_shear); cell' = cell (1 + ε) with
    fractional coordinates kept. Rattle: x += σ ξ, ξ ~ N(0, 1)³, σ ~ U(sigma_range) per
    copy. Vectorised over copies and atoms.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    eps = np.zeros((n, 3, 3))
    iu = np.triu_indices(3, 1)
    eps[:, [0, 1, 2], [0, 1, 2]] = rng.uniform(-max_normal_strain, max_normal_strain, (n, 3))
    shear = rng.uniform(-max_shear_strain, max_shear_strain, (n, 3))
    eps[:, iu[0], iu[1]] = shear
    eps[:, iu[1], iu[0]] = shear
    cells = np.asarray(atoms.cell[:])[None] @ (np.eye(3)[None] + eps)
    frac = atoms.get_scaled_positions(wrap=False)
    sigma = rng.uniform(*sigma_range, n)
    pos = np.einsum("nc,scd->snd", frac, cells)
    pos += sigma[:, None, None] * rng.standard_normal(pos.shape)
    out = []
    for k in range(n):
        a = Atoms(atoms.numbers, positions=pos[k], cell=cells[k], pbc=True)
        a.info.update(strain_voigt=eps[k][[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]].tolist())
        a.info["rattle_sigma"] = float(sigma[k])
        out.append(a)
    return out
