"""Q-Force-style non-reactive bonded force field of the hydrogen-combustion species.

Paper 001 (Yuan & Head-Gordon), Methods and Table 1: Q-Force [Sami et al., JCTC 17,
4946 (2021)] parameters for H2, OH, O2, H2O, HO2 and H2O2 (the atoms H and O have no
terms), with

    E_bond     = D (1 − exp(−β (r − r0)))² − D,   β = √(k_r / 2D)
    E_angle    = ½ k_θ (θ − θ0)²
    E_dihedral = k_φ (1 + cos(n φ − φ0))

in nm, kJ/mol, rad in the table; converted here to Å, eV, rad. (The paper prints the
Morse exponent as k_r (r − r0)/2D, which is not dimensionless; β = √(k_r/2D) is the Morse
width whose curvature at r0 equals k_r, Q-Force's and GROMACS' convention; for H2 it
gives β = 1.98 Å⁻¹, the textbook value.)

Topology: given as bonds, or perceived from distances of a (relaxed) geometry; every
connected fragment must be one of the species of the table. Systems of several
fragments (e.g. H + O2) are the sum of their fragments' terms, with no inter-fragment
interaction, as in the paper's single-molecule pre-training data.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
from ase import Atoms
from ase.data import chemical_symbols

from ase_mlff.graph.geometry import perceive_bonds as graph_bonds
from ase_mlff.models.classical import ClassicalPotential, Topology
from ase_mlff.utils import KJ_PER_MOL

NM = 10.0  # Å

#: paper 001 Table 1, units nm, kJ/mol, rad: species -> terms keyed by element pattern
#: bonds: (pair, r0, k_r, D); angles: (triple, theta0, k_theta); dihedrals: (phi0, k, n)
QFORCE_TABLE: dict[str, dict] = {
    "H2": {"bonds": {("H", "H"): (0.074451338, 352643.84, 450.529259)}},
    "OH": {"bonds": {("O", "H"): (0.097519183, 472095.947, 441.538052)}},
    "O2": {"bonds": {("O", "O"): (0.119614093, 839237.053, 529.522227)}},
    "H2O": {
        "bonds": {("O", "H"): (0.096205047, 511168.368, 476.339341)},
        "angles": {("H", "O", "H"): (1.83330493, 448.270537)},
    },
    "HO2": {
        "bonds": {
            ("O", "O"): (0.131276144, 462105.576, 306.492086),
            ("O", "H"): (0.09757723, 451086.258, 441.538052),
        },
        "angles": {("H", "O", "O"): (1.84308154, 698.279951)},
    },
    "H2O2": {
        "bonds": {
            ("O", "O"): (0.143811214, 316472.666, 234.832386),
            ("O", "H"): (0.096527728, 493591.819, 441.538052),
        },
        "angles": {("H", "O", "O"): (1.73955327, 638.30292)},
        "dihedrals": [
            (0.0, 5.9853054, 1),
            (3.14159265, -3.0246061, 2),
            (0.0, -2.185907, 3),
            (3.14159265, 0.650878, 4),
        ],
    },
    "H": {},
    "O": {},
}

#: the species of the table, by element counts
_BY_FORMULA = {
    frozenset(Counter({"H": 2}).items()): "H2",
    frozenset(Counter({"O": 1, "H": 1}).items()): "OH",
    frozenset(Counter({"O": 2}).items()): "O2",
    frozenset(Counter({"O": 1, "H": 2}).items()): "H2O",
    frozenset(Counter({"O": 2, "H": 1}).items()): "HO2",
    frozenset(Counter({"O": 2, "H": 2}).items()): "H2O2",
    frozenset(Counter({"H": 1}).items()): "H",
    frozenset(Counter({"O": 1}).items()): "O",
}

#: bond perception: a pair is bonded when closer than this (Å); O–H 0.97, O–O 1.44,
#: H–H 0.74 at equilibrium; the longest Table-1 bond (H2O2 O–O) is 1.44 Å
BOND_CUTOFF = {("H", "H"): 1.05, ("H", "O"): 1.30, ("O", "O"): 1.75}


def perceive_bonds(atoms: Atoms) -> np.ndarray:
    """(B, 2) bonded pairs i < j of an H/O structure: the project's one molecular-graph
    function (:func:`ase_mlff.graph.geometry.perceive_bonds`) with the cutoffs of
    :data:`BOND_CUTOFF` for every element pair of this chemistry."""
    sym = np.array(atoms.get_chemical_symbols())
    bad = sorted(set(sym) - {"H", "O"})
    if bad:
        raise ValueError(
            f"the Q-Force hydrogen-combustion force field knows H and O only, got {bad}"
        )
    return graph_bonds(atoms, pair_cutoffs=BOND_CUTOFF)


def _fragments(n: int, bonds: np.ndarray) -> list[np.ndarray]:
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    adj = coo_matrix((np.ones(len(bonds)), (bonds[:, 0], bonds[:, 1])), shape=(n, n))
    _, label = connected_components(adj, directed=False)
    return [np.flatnonzero(label == k) for k in np.unique(label)]


def qforce_topology(atoms: Atoms, bonds: np.ndarray | None = None) -> Topology:
    """The Table-1 force field for the fragments of ``atoms`` (bonds given or perceived).

    Raises ValueError for a fragment that is not H, O, H2, OH, O2, H2O, HO2 or H2O2, or
    whose connectivity differs from that species' (e.g. H–O–O–H drawn as H–H–O–O).
    """
    sym = np.array(atoms.get_chemical_symbols())
    bonds = perceive_bonds(atoms) if bonds is None else np.asarray(bonds, np.int64).reshape(-1, 2)
    n = len(atoms)
    neighbours: list[set[int]] = [set() for _ in range(n)]
    for a, b in bonds:
        neighbours[a].add(int(b))
        neighbours[b].add(int(a))
    terms: dict[str, list] = {k: [] for k in ("morse", "angles", "torsions")}
    params: dict[str, list] = {
        k: [] for k in ("m_r0", "m_k", "m_d", "a_t0", "a_k", "t_n", "t_p", "t_k")
    }
    names = []
    for frag in _fragments(n, bonds):
        formula = Counter(sym[frag].tolist())
        species = _BY_FORMULA.get(frozenset(formula.items()))
        if species is None:
            label = "".join(f"{e}{c if c > 1 else ''}" for e, c in sorted(formula.items()))
            raise ValueError(
                f"fragment {label} (atoms {frag.tolist()}) is not a species of paper 001 "
                f"Table 1 ({', '.join(s for s in QFORCE_TABLE)})"
            )
        names.append(species)
        table = QFORCE_TABLE[species]
        fbonds = [(a, b) for a, b in bonds if a in frag]
        expected_bonds = {"H2": 1, "OH": 1, "O2": 1, "H2O": 2, "HO2": 2, "H2O2": 3}.get(species, 0)
        if len(fbonds) != expected_bonds:
            raise ValueError(
                f"{species} (atoms {frag.tolist()}) has {len(fbonds)} bonds, "
                f"expected {expected_bonds}"
            )
        for a, b in fbonds:
            key = tuple(sorted((sym[a], sym[b]), key=lambda e: e != "O"))  # O first
            if key not in table["bonds"]:
                raise ValueError(f"{species}: no {key[0]}-{key[1]} bond in Table 1")
            r0, k, d = table["bonds"][key]
            terms["morse"].append((a, b))
            params["m_r0"].append(r0 * NM)
            params["m_k"].append(k * KJ_PER_MOL / NM**2)
            params["m_d"].append(d * KJ_PER_MOL)
        for pattern, (t0, k) in table.get("angles", {}).items():
            for centre in frag:
                if sym[centre] != pattern[1]:
                    continue
                nb = sorted(neighbours[centre])
                for x in range(len(nb)):
                    for y in range(x + 1, len(nb)):
                        i, j = nb[x], nb[y]
                        if sorted((sym[i], sym[j])) != sorted((pattern[0], pattern[2])):
                            continue
                        terms["angles"].append((i, centre, j))
                        params["a_t0"].append(t0)
                        params["a_k"].append(k * KJ_PER_MOL)
        for phi0, k, mult in table.get("dihedrals", []):
            # H–O–O–H: the only dihedral of H2O2
            o = [a for a in frag if sym[a] == "O"]
            h = [next(x for x in neighbours[a] if sym[x] == "H") for a in o]
            terms["torsions"].append((h[0], o[0], o[1], h[1]))
            params["t_n"].append(mult)
            params["t_p"].append(phi0)
            params["t_k"].append(k * KJ_PER_MOL)
    return Topology(
        numbers=atoms.numbers.copy(),
        morse=np.array(terms["morse"], np.int64).reshape(-1, 2),
        morse_r0=params["m_r0"],
        morse_k=params["m_k"],
        morse_d=params["m_d"],
        angles=np.array(terms["angles"], np.int64).reshape(-1, 3),
        angle_theta0=params["a_t0"],
        angle_k=params["a_k"],
        torsions=np.array(terms["torsions"], np.int64).reshape(-1, 4),
        torsion_n=params["t_n"],
        torsion_phase=params["t_p"],
        torsion_k=params["t_k"],
        name="qforce:" + "+".join(names),
    )


def qforce_potential(atoms: Atoms, bonds: np.ndarray | None = None) -> ClassicalPotential:
    """The batched potential of :func:`qforce_topology` (atoms in the order of ``atoms``)."""
    return ClassicalPotential(qforce_topology(atoms, bonds))


def species_guess(name: str) -> Atoms:
    """An unrelaxed geometry of a Table-1 species from its r0/θ0 (H2O2 at φ = 115°)."""
    if name not in QFORCE_TABLE:
        raise ValueError(f"unknown species {name!r}; known: {sorted(QFORCE_TABLE)}")
    t = QFORCE_TABLE[name]
    b = {k: v[0] * NM for k, v in t.get("bonds", {}).items()}
    a = {k: v[0] for k, v in t.get("angles", {}).items()}
    if name in ("H", "O"):
        return Atoms(name, positions=[[0, 0, 0]])
    if name in ("H2", "O2", "OH"):
        r = next(iter(b.values()))
        return Atoms(name, positions=[[0, 0, 0], [r, 0, 0]])
    if name == "H2O":
        r, th = b[("O", "H")], a[("H", "O", "H")]
        return Atoms("OH2", positions=[[0, 0, 0], [r, 0, 0], [r * np.cos(th), r * np.sin(th), 0]])
    if name == "HO2":
        roo, roh, th = b[("O", "O")], b[("O", "H")], a[("H", "O", "O")]
        return Atoms(
            "OOH", positions=[[0, 0, 0], [roo, 0, 0], [roh * np.cos(th), roh * np.sin(th), 0]]
        )
    roo, roh, th = b[("O", "O")], b[("O", "H")], a[("H", "O", "O")]
    phi = np.deg2rad(115.0)
    h1 = [roh * np.cos(th), roh * np.sin(th), 0]
    h2 = [roo - roh * np.cos(th), roh * np.sin(th) * np.cos(phi), roh * np.sin(th) * np.sin(phi)]
    return Atoms("OOHH", positions=[[0, 0, 0], [roo, 0, 0], h1, h2])


def relaxed_species(name: str, fmax: float = 1e-4) -> Atoms:
    """A Table-1 species relaxed with its own force field (ASE BFGS)."""
    from ase.optimize import BFGS

    from ase_mlff.calculators.mlff import MLFFCalculator

    atoms = species_guess(name)
    if len(atoms) == 1:
        return atoms
    atoms.calc = MLFFCalculator(qforce_potential(atoms))
    BFGS(atoms, logfile=None).run(fmax=fmax, steps=500)
    out = atoms.copy()
    out.calc = None
    return out


def describe(topology: Topology) -> str:
    """One line per term, for docs and debugging."""
    sym = [chemical_symbols[z] for z in topology.numbers]
    lines = [
        f"morse {sym[a]}{a}-{sym[b]}{b} r0={r0:.4f} Å D={d:.3f} eV"
        for (a, b), r0, d in zip(topology.morse, topology.morse_r0, topology.morse_d)
    ]
    lines += [
        f"angle {sym[i]}{i}-{sym[j]}{j}-{sym[k]}{k} θ0={np.degrees(t):.2f}°"
        for (i, j, k), t in zip(topology.angles, topology.angle_theta0)
    ]
    return "\n".join(lines)
