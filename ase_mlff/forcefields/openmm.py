"""OpenMM ``System`` -> :class:`~ase_mlff.models.classical.Topology`, and atom-order matching.

:func:`topology_from_openmm` reads the standard forces of an OpenMM ``System`` and converts
every term to Å, eV, rad, e, so that :class:`~ase_mlff.models.classical.ClassicalPotential`
reproduces OpenMM's energies and forces (Reference platform: ~1e-10 relative with ASE's
Coulomb constant, ~1e-15 with OpenMM's; see ``tests/test_gaff.py``):

============================  ==========================================================
OpenMM force                  Topology terms (OpenMM user guide, "Standard Forces")
============================  ==========================================================
``HarmonicBondForce``         ``bonds``: E = ½ k (r − r0)²
``HarmonicAngleForce``        ``angles``: E = ½ k (θ − θ0)²
``PeriodicTorsionForce``      ``torsions``: E = k (1 + cos(n φ − φ0))
``NonbondedForce`` (NoCutoff) ``pairs``: E = k_e q_i q_j / r + 4 ε ((σ/r)¹² − (σ/r)⁶) over
                              every i < j; exceptions give (q_i q_j, σ, ε) of their pair
                              (1-4 pairs, already scaled), exceptions with zero charge
                              product and zero ε are excluded pairs; all other pairs use
                              Lorentz–Berthelot σ = (σ_i + σ_j)/2, ε = √(ε_i ε_j)
``CMMotionRemover``           ignored (no energy)
============================  ==========================================================

Unit conversions (ASE units, CODATA 2014 as ``ase.units``): 1 nm = 10 Å,
1 kJ/mol = ``units.kJ / units.mol`` eV = 0.0103643 eV, so k [kJ/mol/nm²] × 0.0103643/100
-> eV/Å². The Coulomb constant is the Topology's (``COULOMB_EV_A`` = 14.3996454 eV·Å);
OpenMM's ``ONE_4PI_EPS0`` = 138.935457644 kJ/mol·nm converts to the same value within
9.1e-10 relative (pass ``coulomb=OPENMM_COULOMB_EV_A`` for machine-precision agreement).

:func:`match_atoms` maps a force field built in one atom order (e.g. the order antechamber
wrote) onto the order of another structure (e.g. the MD17 order of a dataset) by
labelled-graph isomorphism (networkx VF2, nodes labelled by element).
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import TYPE_CHECKING, Any

import numpy as np
from ase import Atoms
from ase.data import chemical_symbols

from ase_mlff.calculators.openmm import load_system
from ase_mlff.graph.geometry import BOND_TOLERANCE, perceive_bonds
from ase_mlff.models.classical import COULOMB_EV_A, Topology
from ase_mlff.utils import KJ_PER_MOL

if TYPE_CHECKING:  # pragma: no cover
    import openmm

log = logging.getLogger(__name__)

#: Å per nm
NM = 10.0
#: OpenMM's Coulomb constant ONE_4PI_EPS0 = 138.93545764438198 kJ/mol·nm/e² (OpenMM 8,
#: CODATA 2018) in eV·Å; ASE's ``COULOMB_EV_A`` (CODATA 2014) is 9.1e-10 relative smaller.
OPENMM_COULOMB_EV_A = 138.93545764438198 * NM * KJ_PER_MOL

_IGNORED_FORCES = ("CMMotionRemover",)
_SUPPORTED_FORCES = (
    "HarmonicBondForce",
    "HarmonicAngleForce",
    "PeriodicTorsionForce",
    "NonbondedForce",
)


def _value(q: Any, unit: Any) -> float:
    """A plain float from an OpenMM Quantity (or from a bare number, already in MD units)."""
    return float(q.value_in_unit(unit)) if hasattr(q, "value_in_unit") else float(q)


def _pair_table(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All i < j pairs of n atoms (row-major, as ``np.triu_indices``) and their (n, n) index."""
    i, j = np.triu_indices(n, k=1)
    index = np.full((n, n), -1, dtype=np.int64)
    index[i, j] = np.arange(len(i))
    return i.astype(np.int64), j.astype(np.int64), index


def _nonbonded_pairs(force: openmm.NonbondedForce, n: int) -> dict[str, np.ndarray]:
    """Pairs of a NoCutoff NonbondedForce with combined (qq, σ, ε) in e², Å, eV."""
    import openmm
    from openmm import unit

    if force.getNonbondedMethod() != openmm.NonbondedForce.NoCutoff:
        names = {
            openmm.NonbondedForce.CutoffNonPeriodic: "CutoffNonPeriodic",
            openmm.NonbondedForce.CutoffPeriodic: "CutoffPeriodic",
            openmm.NonbondedForce.Ewald: "Ewald",
            openmm.NonbondedForce.PME: "PME",
            openmm.NonbondedForce.LJPME: "LJPME",
        }
        method = names.get(force.getNonbondedMethod(), str(force.getNonbondedMethod()))
        raise ValueError(
            f"NonbondedForce uses nonbondedMethod={method}; only NoCutoff (every pair, no "
            "periodic images) converts to a Topology. Build the System with "
            "nonbondedMethod=NoCutoff, or evaluate it frame by frame with "
            "ase_mlff.calculators.openmm.OpenMMCalculator"
        )
    if force.getNumParticleParameterOffsets() or force.getNumExceptionParameterOffsets():
        raise ValueError(
            "NonbondedForce has parameter offsets (global-parameter dependent charges/LJ); "
            "these are not supported"
        )
    if force.getNumParticles() != n:
        raise ValueError(f"NonbondedForce has {force.getNumParticles()} particles, system {n}")
    q = np.empty(n)
    sig = np.empty(n)
    eps = np.empty(n)
    for k in range(n):
        qk, sk, ek = force.getParticleParameters(k)
        q[k] = _value(qk, unit.elementary_charge)
        sig[k] = _value(sk, unit.nanometer) * NM
        eps[k] = _value(ek, unit.kilojoule_per_mole) * KJ_PER_MOL
    i, j, index = _pair_table(n)
    qq = q[i] * q[j]
    sigma = 0.5 * (sig[i] + sig[j])
    epsilon = np.sqrt(eps[i] * eps[j])
    n_exc = force.getNumExceptions()
    ei = np.empty(n_exc, np.int64)
    ej = np.empty(n_exc, np.int64)
    eqq = np.empty(n_exc)
    esig = np.empty(n_exc)
    eeps = np.empty(n_exc)
    for k in range(n_exc):
        a, b, c, s, e = force.getExceptionParameters(k)
        ei[k], ej[k] = min(a, b), max(a, b)
        eqq[k] = _value(c, unit.elementary_charge**2)
        esig[k] = _value(s, unit.nanometer) * NM
        eeps[k] = _value(e, unit.kilojoule_per_mole) * KJ_PER_MOL
    if n_exc:
        if np.any(ei == ej):
            raise ValueError("NonbondedForce has an exception of an atom with itself")
        slot = index[ei, ej]
        if len(np.unique(slot)) != n_exc:
            raise ValueError("NonbondedForce lists the same exception pair twice")
        qq[slot], sigma[slot], epsilon[slot] = eqq, esig, eeps
    # a pair with no charge product and no ε contributes exactly nothing (excluded pairs)
    keep = (qq != 0.0) | (epsilon != 0.0)
    log.debug("NonbondedForce: %d pairs, %d exceptions, %d kept", len(i), n_exc, keep.sum())
    return {
        "pairs": np.stack([i[keep], j[keep]], axis=1),
        "pair_qq": qq[keep],
        "pair_sigma": sigma[keep],
        "pair_epsilon": epsilon[keep],
    }


def topology_from_openmm(
    system: openmm.System | str,
    numbers: np.ndarray | list[int],
    name: str = "",
    coulomb: float = COULOMB_EV_A,
) -> Topology:
    """The Topology (Å, eV, rad, e) of an OpenMM System's standard forces.

    Args:
        system: an ``openmm.System`` (or its XML, or an XML file path).
        numbers: atomic numbers of the System's particles, in the System's order.
        name: stored as ``Topology.name``.
        coulomb: Coulomb constant of the Topology, eV·Å: ASE's by default (so the
            Topology combines with others), equal to OpenMM's within 9.1e-10 relative;
            ``OPENMM_COULOMB_EV_A`` reproduces OpenMM to machine precision.

    Raises:
        ValueError: a force other than HarmonicBondForce, HarmonicAngleForce,
            PeriodicTorsionForce, NonbondedForce (NoCutoff) or CMMotionRemover; virtual
            sites; periodic bonded forces; a particle count that does not match ``numbers``.
    """

    system = load_system(system)
    numbers = np.asarray(numbers, dtype=np.int64)
    n = system.getNumParticles()
    if len(numbers) != n:
        raise ValueError(f"{len(numbers)} atomic numbers given for a System of {n} particles")
    virtual = [k for k in range(n) if system.isVirtualSite(k)]
    if virtual:
        raise ValueError(f"virtual sites (particles {virtual[:5]}...) are not supported")
    if system.getNumConstraints():
        log.warning(
            "the System has %d constraints; the Topology has none (energies and forces agree, "
            "but dynamics with it are unconstrained)",
            system.getNumConstraints(),
        )
    others = [
        type(f).__name__
        for f in system.getForces()
        if type(f).__name__ not in _SUPPORTED_FORCES + _IGNORED_FORCES
    ]
    if others:
        raise ValueError(
            f"cannot convert force(s) {', '.join(sorted(set(others)))}; supported: "
            f"{', '.join(_SUPPORTED_FORCES)} (NoCutoff) and {', '.join(_IGNORED_FORCES)} (ignored)"
        )
    terms: dict[str, list[np.ndarray]] = {}
    for force in system.getForces():
        kind = type(force).__name__
        if kind in _IGNORED_FORCES:
            continue
        if kind != "NonbondedForce" and force.usesPeriodicBoundaryConditions():
            raise ValueError(f"{kind} uses periodic boundary conditions; not supported")
        parts = _nonbonded_pairs(force, n) if kind == "NonbondedForce" else _bonded_terms(force)
        for key, value in parts.items():
            terms.setdefault(key, []).append(value)
    arrays = {key: np.concatenate(parts) for key, parts in terms.items()}
    top = Topology(numbers=numbers, coulomb=coulomb, name=name, **arrays)
    log.info(
        "OpenMM System -> Topology %r: %d bonds, %d angles, %d torsions, %d pairs",
        name,
        len(top.bonds),
        len(top.angles),
        len(top.torsions),
        len(top.pairs),
    )
    return top


def _bonded_terms(force) -> dict[str, np.ndarray]:
    """The Topology arrays (Å, eV, rad) of one HarmonicBond-, HarmonicAngle- or
    PeriodicTorsionForce; torsions with a zero barrier (common in Amber files) are left
    out, as they add nothing."""
    from openmm import unit

    kj = unit.kilojoule_per_mole
    kind = type(force).__name__
    if kind == "HarmonicBondForce":
        rows = [force.getBondParameters(k) for k in range(force.getNumBonds())]
        return {
            "bonds": np.array([r[:2] for r in rows], np.int64).reshape(-1, 2),
            "bond_r0": np.array([_value(r[2], unit.nanometer) * NM for r in rows]),
            "bond_k": np.array([_value(r[3], kj / unit.nanometer**2) for r in rows])
            * KJ_PER_MOL
            / NM**2,
        }
    if kind == "HarmonicAngleForce":
        rows = [force.getAngleParameters(k) for k in range(force.getNumAngles())]
        return {
            "angles": np.array([r[:3] for r in rows], np.int64).reshape(-1, 3),
            "angle_theta0": np.array([_value(r[3], unit.radian) for r in rows]),
            "angle_k": np.array([_value(r[4], kj / unit.radian**2) for r in rows]) * KJ_PER_MOL,
        }
    rows = [force.getTorsionParameters(k) for k in range(force.getNumTorsions())]
    k_ev = np.array([_value(r[6], kj) for r in rows]) * KJ_PER_MOL
    keep = k_ev != 0.0
    return {
        "torsions": np.array([r[:4] for r in rows], np.int64).reshape(-1, 4)[keep],
        "torsion_n": np.array([int(r[4]) for r in rows], np.int64)[keep],
        "torsion_phase": np.array([_value(r[5], unit.radian) for r in rows])[keep],
        "torsion_k": k_ev[keep],
    }


def permute_system(system: openmm.System | str, order: np.ndarray) -> openmm.System:
    """A copy of the System with particles re-ordered: new particle k is old ``order[k]``.

    Supports the forces :func:`topology_from_openmm` supports (any nonbonded method).
    """
    import openmm

    system = load_system(system)
    n = system.getNumParticles()
    order = np.asarray(order, dtype=np.int64)
    if sorted(order.tolist()) != list(range(n)):
        raise ValueError(f"order must be a permutation of the System's {n} particles")
    new = np.empty(n, np.int64)
    new[order] = np.arange(n)
    out = openmm.System()
    out.setDefaultPeriodicBoxVectors(*system.getDefaultPeriodicBoxVectors())
    for k in range(n):
        out.addParticle(system.getParticleMass(int(order[k])))
    for c in range(system.getNumConstraints()):
        a, b, d = system.getConstraintParameters(c)
        out.addConstraint(int(new[a]), int(new[b]), d)
    for force in system.getForces():
        kind = type(force).__name__
        f = openmm.XmlSerializer.clone(force)
        if kind == "HarmonicBondForce":
            for k in range(f.getNumBonds()):
                a, b, *p = force.getBondParameters(k)
                f.setBondParameters(k, int(new[a]), int(new[b]), *p)
        elif kind == "HarmonicAngleForce":
            for k in range(f.getNumAngles()):
                a, b, c, *p = force.getAngleParameters(k)
                f.setAngleParameters(k, int(new[a]), int(new[b]), int(new[c]), *p)
        elif kind == "PeriodicTorsionForce":
            for k in range(f.getNumTorsions()):
                a, b, c, d, *p = force.getTorsionParameters(k)
                f.setTorsionParameters(k, *(int(new[x]) for x in (a, b, c, d)), *p)
        elif kind == "NonbondedForce":
            for k in range(n):
                f.setParticleParameters(k, *force.getParticleParameters(int(order[k])))
            for k in range(f.getNumExceptions()):
                a, b, *p = force.getExceptionParameters(k)
                f.setExceptionParameters(k, int(new[a]), int(new[b]), *p)
        elif kind not in _IGNORED_FORCES:
            raise ValueError(f"cannot permute the particles of a {kind}")
        out.addForce(f)
    return out


# --------------------------------------------------------------------------- atom matching


def _molecule(atoms: Atoms) -> Atoms:
    """The structure as an isolated molecule (force fields here are non-periodic)."""
    a = atoms.copy()
    a.pbc = False
    return a


def _graph(numbers: np.ndarray, bonds: np.ndarray) -> Any:
    import networkx as nx

    g = nx.Graph()
    for k, z in enumerate(numbers):
        g.add_node(k, Z=int(z))
    g.add_edges_from((int(a), int(b)) for a, b in bonds)
    return g


def _describe_difference(z_ref, b_ref, z_tgt, b_tgt) -> str:
    """Which element counts, element-pair bond counts or degrees differ (for errors)."""

    def formula(z):
        c = Counter(chemical_symbols[int(x)] for x in z)
        return "".join(f"{s}{c[s]}" for s in sorted(c))

    def bond_counts(z, b):
        return Counter(
            "-".join(sorted((chemical_symbols[z[i]], chemical_symbols[z[j]]))) for i, j in b
        )

    def degrees(z, b):
        deg = np.bincount(np.asarray(b, np.int64).ravel(), minlength=len(z))
        return Counter(f"{chemical_symbols[int(x)]}({d})" for x, d in zip(z, deg))

    lines = []
    if formula(z_ref) != formula(z_tgt):
        lines.append(f"elements differ: reference {formula(z_ref)}, target {formula(z_tgt)}")
    for what, fn in (("bonds by element pair", bond_counts), ("atoms by degree", degrees)):
        r, t = fn(z_ref, b_ref), fn(z_tgt, b_tgt)
        diff = {k: (r.get(k, 0), t.get(k, 0)) for k in sorted(set(r) | set(t)) if r[k] != t[k]}
        if diff:
            txt = ", ".join(f"{k}: {a} vs {b}" for k, (a, b) in diff.items())
            lines.append(f"{what} differ (reference vs target): {txt}")
    if not lines:
        lines.append("same elements, bond counts and degrees, but different connectivity")
    return "; ".join(lines)


def match_atoms(
    reference_numbers: np.ndarray | list[int],
    reference_positions_or_bonds: np.ndarray,
    target_atoms: Atoms,
    target_bonds: np.ndarray | None = None,
    tolerance: float = BOND_TOLERANCE,
) -> np.ndarray:
    """The atom order that maps a reference molecule onto a target structure.

    Both molecules become graphs (nodes labelled by element, edges = bonds, perceived from
    distances by :func:`ase_mlff.graph.geometry.perceive_bonds`, the project's one
    molecular-graph criterion, unless given) and networkx's VF2 matcher finds an
    isomorphism. Returns ``order`` with target atom k = reference atom ``order[k]``, i.e.
    ``topology.permuted(order)`` is the reference force field in the target's atom order.

    Topologically equivalent atoms (e.g. the three methyl H) are interchangeable: the first
    isomorphism found is returned. For force fields whose types and charges follow the
    graph (GAFF with antechamber's equivalence-averaged AM1-BCC charges) every isomorphism
    gives the same energy function.

    Args:
        reference_numbers: (N,) atomic numbers of the reference (force-field) order.
        reference_positions_or_bonds: (N, 3) positions in Å, or (B, 2) integer bonds.
        target_atoms: the structure whose order is wanted.
        target_bonds: its bonds, if they should not be perceived from its positions.
        tolerance: covalent-radius tolerance of the bond perception.

    Raises:
        ValueError: the two bond graphs are not isomorphic (with the elements, bond counts
            by element pair or degrees that differ).
    """
    from networkx.algorithms.isomorphism import GraphMatcher, categorical_node_match

    z_ref = np.asarray(reference_numbers, dtype=np.int64)
    arr = np.asarray(reference_positions_or_bonds)
    if arr.ndim == 2 and arr.shape == (len(z_ref), 3) and np.issubdtype(arr.dtype, np.floating):
        b_ref = perceive_bonds(Atoms(numbers=z_ref, positions=arr), tolerance)
    elif arr.ndim == 2 and arr.shape[1] == 2:
        b_ref = arr.astype(np.int64)
    else:
        raise ValueError(
            f"reference_positions_or_bonds must be ({len(z_ref)}, 3) positions or (B, 2) "
            f"bonds, got shape {arr.shape}"
        )
    z_tgt = np.asarray(target_atoms.numbers, dtype=np.int64)
    b_tgt = (
        perceive_bonds(_molecule(target_atoms), tolerance)
        if target_bonds is None
        else np.asarray(target_bonds, np.int64)
    )
    g_ref, g_tgt = _graph(z_ref, b_ref), _graph(z_tgt, b_tgt)
    matcher = GraphMatcher(g_tgt, g_ref, node_match=categorical_node_match("Z", -1))
    mapping = next(matcher.isomorphisms_iter(), None) if len(z_ref) == len(z_tgt) else None
    if mapping is None:
        raise ValueError(
            "the reference and target molecules are not the same bond graph: "
            + _describe_difference(z_ref, b_ref, z_tgt, b_tgt)
        )
    order = np.array([mapping[k] for k in range(len(z_tgt))], dtype=np.int64)
    return order


def topology_bonds(topology: Topology) -> np.ndarray:
    """(B, 2) sorted unique i < j pairs of the Topology's harmonic and Morse bonds."""
    b = np.concatenate([topology.bonds, topology.morse]).reshape(-1, 2)
    return np.unique(np.sort(b, axis=1), axis=0)
