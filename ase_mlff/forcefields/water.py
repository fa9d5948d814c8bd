"""Flexible TIP3P water: the monomer as a batched torch potential, bulk water via OpenMM.

Paper 001 pre-trains on the *flexible* TIP3P water monomer (Jorgensen et al., J. Chem.
Phys. 79, 926 (1983), with OpenMM's intramolecular terms) and fine-tunes on bulk water;
paper 003 benchmarks 64-molecule water boxes at 300 K by their RDFs. This module gives

* :func:`tip3p_monomer_topology` / :func:`tip3p_monomer_potential` — one water molecule
  (atoms O, H, H): two harmonic O–H bonds and one harmonic H–O–H angle, E = ½k_b(r−r0)²
  + ½k_θ(θ−θ0)². TIP3P has no intramolecular non-bonded terms (the 1-2 and 1-3 pairs of
  a water are excluded), so this is the complete monomer energy;
* :func:`bulk_water_system` — a periodic box of flexible TIP3P water as an OpenMM
  ``System`` (PME electrostatics, no constraints), and :class:`OpenMMEvaluator`, its
  energies and forces in double precision.

The reference MD of that box (OpenMM Langevin, the shipped water set) is
:func:`ase_mlff.reference.water.water_reference_md`.

Every parameter is read from OpenMM's installed ``openmm/app/data/tip3p.xml`` (the file
``ForceField('tip3p.xml')`` loads; with ``rigidWater=False`` its HarmonicBondForce and
HarmonicAngleForce entries become real bonded terms), never retyped. OpenMM 8.6.1 ships

====================  ============================  ================================
term                  OpenMM units                  this package (Å, eV, rad)
====================  ============================  ================================
O–H r0                0.09572 nm                    0.9572 Å
O–H k_b               462750.4 kJ/mol/nm²           47.961 eV/Å²
H–O–H θ0              1.82421813418 rad             104.52°
H–O–H k_θ             836.8 kJ/mol/rad²             8.6728 eV/rad²
q_O, q_H              −0.834 e, +0.417 e
σ_O, ε_O              0.315075 nm, 0.635968 kJ/mol  3.15075 Å, 6.5913 meV
σ_H, ε_H              (ε = 0: no Lennard-Jones on H)
====================  ============================  ================================

Units: 1 kJ/mol = ``ase.units.kJ / ase.units.mol`` eV; 1 nm = 10 Å.
"""

from __future__ import annotations

import functools
import logging
import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
from ase import Atoms

from ase_mlff.calculators.openmm import get_platform, make_context
from ase_mlff.models.classical import ClassicalPotential, Topology
from ase_mlff.utils import KJ_PER_MOL

if TYPE_CHECKING:  # OpenMM is imported inside the functions that need it
    import openmm
    import openmm.app


log = logging.getLogger(__name__)

#: the OpenMM force-field file every parameter comes from
TIP3P_XML = "tip3p.xml"
#: liquid-water density at 300 K and 1 atm, g/cm³ (experimental: 0.99651 at 300 K)
DEFAULT_DENSITY = 0.997
#: Avogadro's number, 1/mol (SI 2019 exact value)
AVOGADRO = 6.02214076e23
#: the atomic numbers of one molecule, in the order of every structure of this module
WATER_NUMBERS = (8, 1, 1)
#: the smallest box allowed: the nonbonded cutoff must fit in half the box
MIN_CUTOFF_NM = 0.25


# --------------------------------------------------------------------------- parameters
def openmm_data_dir() -> Path:
    """The ``openmm/app/data`` directory of the installed OpenMM (its force-field XMLs)."""
    import openmm.app

    return Path(openmm.app.__file__).parent / "data"


@dataclass(frozen=True)
class TIP3PParameters:
    """Flexible TIP3P in OpenMM units (nm, kJ/mol, rad, e, dalton), read from the XML."""

    bond_r0_nm: float
    bond_k_kj_nm2: float
    angle_theta0_rad: float
    angle_k_kj_rad2: float
    charge_o: float
    charge_h: float
    sigma_o_nm: float
    epsilon_o_kj: float
    sigma_h_nm: float
    epsilon_h_kj: float
    mass_o: float
    mass_h: float
    source: str

    # conversions to this package's units
    @property
    def bond_r0(self) -> float:
        """O–H equilibrium length, Å."""
        return self.bond_r0_nm * 10.0

    @property
    def bond_k(self) -> float:
        """O–H force constant, eV/Å² (kJ/mol/nm² × KJ_PER_MOL / 100)."""
        return self.bond_k_kj_nm2 * KJ_PER_MOL / 100.0

    @property
    def angle_theta0(self) -> float:
        """H–O–H equilibrium angle, rad."""
        return self.angle_theta0_rad

    @property
    def angle_k(self) -> float:
        """H–O–H force constant, eV/rad²."""
        return self.angle_k_kj_rad2 * KJ_PER_MOL

    @property
    def molar_mass(self) -> float:
        """g/mol of one molecule (the XML's masses)."""
        return self.mass_o + 2.0 * self.mass_h

    def table(self) -> dict[str, dict[str, float]]:
        """Both unit systems, for provenance and docs."""
        return {
            "openmm": {
                "bond_r0_nm": self.bond_r0_nm,
                "bond_k_kJ_mol_nm2": self.bond_k_kj_nm2,
                "angle_theta0_rad": self.angle_theta0_rad,
                "angle_k_kJ_mol_rad2": self.angle_k_kj_rad2,
                "charge_O_e": self.charge_o,
                "charge_H_e": self.charge_h,
                "sigma_O_nm": self.sigma_o_nm,
                "epsilon_O_kJ_mol": self.epsilon_o_kj,
                "epsilon_H_kJ_mol": self.epsilon_h_kj,
            },
            "ase": {
                "bond_r0_A": self.bond_r0,
                "bond_k_eV_A2": self.bond_k,
                "angle_theta0_deg": math.degrees(self.angle_theta0),
                "angle_k_eV_rad2": self.angle_k,
                "sigma_O_A": self.sigma_o_nm * 10.0,
                "epsilon_O_eV": self.epsilon_o_kj * KJ_PER_MOL,
            },
        }


@functools.lru_cache(maxsize=8)
def tip3p_parameters(xml_file: str | Path = TIP3P_XML) -> TIP3PParameters:
    """Parse the flexible-TIP3P parameters from OpenMM's force-field XML.

    ``xml_file`` is a name inside :func:`openmm_data_dir` (default ``tip3p.xml``) or a
    path. The file must hold one HW–OW–HW angle, one OW–HW bond and the NonbondedForce
    entries of the O and H atom types of residue HOH.
    """
    path = Path(xml_file)
    if not path.is_absolute() and not path.exists():
        path = openmm_data_dir() / path
    if not path.exists():
        raise FileNotFoundError(f"OpenMM force-field file not found: {path}")
    root = ET.parse(path).getroot()
    types = {t.get("name"): t for t in root.iter("Type")}
    res = root.find("./Residues/Residue[@name='HOH']")
    if res is None:
        raise ValueError(f"{path} has no water residue HOH")
    atom_type = {a.get("name"): a.get("type") for a in res.iter("Atom")}
    t_o, t_h = atom_type.get("O"), atom_type.get("H1")
    if t_o not in types or t_h not in types:
        raise ValueError(f"{path}: residue HOH lacks atom types for O/H1")
    cls_o, cls_h = types[t_o].get("class"), types[t_h].get("class")

    def one(tag: str, want: set[str]) -> ET.Element:
        for el in root.iter(tag):
            if {el.get(k) for k in el.keys() if k.startswith(("class", "type"))} == want:
                return el
        raise ValueError(f"{path}: no {tag} between {sorted(want)}")

    bond = one("Bond", {cls_o, cls_h})
    angle = one("Angle", {cls_h, cls_o})
    nb = {a.get("type"): a for a in root.findall("./NonbondedForce/Atom")}
    if t_o not in nb or t_h not in nb:
        raise ValueError(f"{path}: NonbondedForce lacks {t_o}/{t_h}")
    return TIP3PParameters(
        bond_r0_nm=float(bond.get("length")),
        bond_k_kj_nm2=float(bond.get("k")),
        angle_theta0_rad=float(angle.get("angle")),
        angle_k_kj_rad2=float(angle.get("k")),
        charge_o=float(nb[t_o].get("charge")),
        charge_h=float(nb[t_h].get("charge")),
        sigma_o_nm=float(nb[t_o].get("sigma")),
        epsilon_o_kj=float(nb[t_o].get("epsilon")),
        sigma_h_nm=float(nb[t_h].get("sigma")),
        epsilon_h_kj=float(nb[t_h].get("epsilon")),
        mass_o=float(types[t_o].get("mass")),
        mass_h=float(types[t_h].get("mass")),
        source=str(path),
    )


# --------------------------------------------------------------------------- monomer
def tip3p_monomer_topology(params: TIP3PParameters | None = None) -> Topology:
    """Flexible TIP3P monomer, atoms (O, H, H): bonds O–H1, O–H2 and angle H1–O–H2.

    E = ½k_b[(r_1 − r0)² + (r_2 − r0)²] + ½k_θ(θ − θ0)²; no non-bonded pairs (TIP3P
    excludes all intramolecular 1-2/1-3 pairs). Parameters from OpenMM's tip3p.xml.
    """
    p = params or tip3p_parameters()
    return Topology(
        numbers=np.array(WATER_NUMBERS),
        bonds=np.array([[0, 1], [0, 2]]),
        bond_r0=np.full(2, p.bond_r0),
        bond_k=np.full(2, p.bond_k),
        angles=np.array([[1, 0, 2]]),
        angle_theta0=np.array([p.angle_theta0]),
        angle_k=np.array([p.angle_k]),
        name="tip3p-flexible-monomer",
    )


def tip3p_monomer_potential(params: TIP3PParameters | None = None) -> ClassicalPotential:
    """The monomer of :func:`tip3p_monomer_topology` as a batched torch potential."""
    return ClassicalPotential(tip3p_monomer_topology(params))


def _monomer_frame(params: TIP3PParameters) -> np.ndarray:
    """(3, 3) relaxed O, H, H positions (Å): O at the origin, H in the xz plane, C2 axis z."""
    r0, half = params.bond_r0, 0.5 * params.angle_theta0
    return np.array(
        [
            [0.0, 0.0, 0.0],
            [r0 * math.sin(half), 0.0, r0 * math.cos(half)],
            [-r0 * math.sin(half), 0.0, r0 * math.cos(half)],
        ]
    )


def tip3p_monomer_atoms(params: TIP3PParameters | None = None) -> Atoms:
    """The relaxed flexible-TIP3P monomer (r = r0, θ = θ0: zero energy), centre of mass at 0."""
    p = params or tip3p_parameters()
    atoms = Atoms(numbers=list(WATER_NUMBERS), positions=_monomer_frame(p))
    atoms.set_masses([p.mass_o, p.mass_h, p.mass_h])
    atoms.positions -= atoms.get_center_of_mass()
    return atoms


# --------------------------------------------------------------------------- bulk
class BulkWater(NamedTuple):
    """A periodic flexible-TIP3P box: ``system, topology, positions, box = bulk_water_system()``."""

    system: openmm.System
    topology: openmm.app.Topology
    positions: np.ndarray  # (3n, 3) Å, atoms O, H, H per molecule
    box: np.ndarray  # (3,) orthorhombic box lengths, Å


def water_box_length(n_molecules: int, density_g_cm3: float = DEFAULT_DENSITY) -> float:
    """Edge (Å) of the cube holding ``n_molecules`` TIP3P waters at the given density.

    L = (n M / (ρ N_A))^(1/3), M the molar mass of tip3p.xml (18.0153 g/mol);
    1 cm³ = 10²⁴ Å³. 64 molecules at 0.997 g/cm³: L = 12.42 Å.
    """
    _check_box_args(n_molecules, density_g_cm3)
    mass_g = n_molecules * tip3p_parameters().molar_mass / AVOGADRO
    return float((mass_g / density_g_cm3 * 1e24) ** (1.0 / 3.0))


def default_cutoff_nm(box_A: float) -> float:
    """Nonbonded cutoff (nm) for a cubic box of edge ``box_A`` Å: min(0.9, L/2 − 0.02 nm).

    Rounded down to 0.01 nm; OpenMM requires the cutoff to be below half the box (the
    minimum-image convention). 12.42 Å box -> 0.60 nm.
    """
    return min(0.9, math.floor((0.05 * box_A - 0.02) * 100.0 + 1e-9) / 100.0)


def _check_box_args(n_molecules: int, density_g_cm3: float) -> None:
    if not isinstance(n_molecules, (int, np.integer)) or isinstance(n_molecules, bool):
        raise TypeError(f"n_molecules must be an integer, got {type(n_molecules).__name__}")
    if n_molecules < 1:
        raise ValueError(f"n_molecules must be positive, got {n_molecules}")
    if not (0.5 <= density_g_cm3 <= 1.5):
        raise ValueError(
            f"density {density_g_cm3} g/cm³ is not a liquid-water density (allowed 0.5-1.5)"
        )


def water_lattice_positions(
    n_molecules: int,
    density_g_cm3: float = DEFAULT_DENSITY,
    seed: int = 0,
    jitter_A: float = 0.1,
) -> tuple[np.ndarray, np.ndarray]:
    """Start geometry: relaxed monomers on a simple-cubic lattice with random orientations.

    The cube of :func:`water_box_length` is divided into m³ cells, m = ⌈n^(1/3)⌉; n of
    them (a seeded random choice when n < m³) get an oxygen at the cell centre plus a
    uniform jitter of ±``jitter_A``, and a uniformly random rotation (scipy
    ``Rotation.random``). Minimise before MD: the lattice is not a liquid.

    Returns (3n, 3) positions in Å (O, H, H per molecule) and the (3,) box lengths in Å.
    """
    from scipy.spatial.transform import Rotation

    length = water_box_length(n_molecules, density_g_cm3)
    rng = np.random.default_rng(seed)
    m = math.ceil(round(n_molecules ** (1.0 / 3.0), 9))
    grid = (np.stack(np.meshgrid(*[np.arange(m)] * 3, indexing="ij"), -1).reshape(-1, 3) + 0.5) * (
        length / m
    )
    sites = grid[np.sort(rng.choice(len(grid), n_molecules, replace=False))]
    sites = sites + rng.uniform(-jitter_A, jitter_A, size=sites.shape)
    rot = Rotation.random(n_molecules, random_state=rng).as_matrix()  # (n, 3, 3)
    frame = _monomer_frame(tip3p_parameters())
    pos = sites[:, None, :] + np.einsum("nij,aj->nai", rot, frame)
    return pos.reshape(-1, 3), np.full(3, length)


def water_openmm_topology(n_molecules: int, box_A: np.ndarray | None = None) -> openmm.app.Topology:
    """An OpenMM Topology of ``n_molecules`` HOH residues (O, H1, H2; bonds O–H1, O–H2)."""
    import openmm.app as app
    import openmm.unit as u

    top = app.Topology()
    chain = top.addChain()
    for _ in range(n_molecules):
        res = top.addResidue("HOH", chain)
        o = top.addAtom("O", app.element.oxygen, res)
        h1 = top.addAtom("H1", app.element.hydrogen, res)
        h2 = top.addAtom("H2", app.element.hydrogen, res)
        top.addBond(o, h1)
        top.addBond(o, h2)
    if box_A is not None:
        top.setUnitCellDimensions(u.Quantity(np.asarray(box_A, float) / 10.0, u.nanometer))
    return top


def bulk_water_system(
    n_molecules: int = 64,
    density_g_cm3: float = DEFAULT_DENSITY,
    seed: int = 0,
    cutoff_nm: float | None = None,
    switch_width_nm: float | None = 0.1,
    dispersion_correction: bool = True,
    ewald_error_tolerance: float = 1e-5,
) -> BulkWater:
    """A cubic periodic box of flexible TIP3P water as an OpenMM System.

    ``ForceField('tip3p.xml').createSystem`` with ``nonbondedMethod=PME``,
    ``constraints=None, rigidWater=False`` (harmonic O–H bonds and H–O–H angles) and a
    CMMotionRemover. Electrostatics: smooth PME with ``ewaldErrorTolerance`` 1e-5.
    Lennard-Jones (O–O only): cut at ``cutoff_nm`` (default :func:`default_cutoff_nm`,
    0.60 nm for 64 molecules) and smoothly switched off over the last
    min(``switch_width_nm``, 0.2 r_c), so energy and forces stay continuous (a learnable
    PES); the long-range dispersion correction (a volume-only constant at fixed density,
    no forces) is on by default, as in OpenMM's TIP3P. Positions are the seeded lattice
    start of :func:`water_lattice_positions` (minimise before use).
    """
    import openmm.app as app
    import openmm.unit as u

    positions, box = water_lattice_positions(n_molecules, density_g_cm3, seed)
    half_nm = 0.05 * float(box[0])
    cutoff = default_cutoff_nm(float(box[0])) if cutoff_nm is None else float(cutoff_nm)
    if cutoff < MIN_CUTOFF_NM:
        raise ValueError(
            f"a box of {n_molecules} molecules ({box[0]:.2f} Å) only fits a cutoff of "
            f"{cutoff:.2f} nm (< {MIN_CUTOFF_NM} nm); use at least 8 molecules"
        )
    if cutoff >= half_nm:
        raise ValueError(
            f"cutoff {cutoff} nm must be below half the box ({half_nm:.3f} nm) for PME"
        )
    if not (0 < ewald_error_tolerance < 1e-2):
        raise ValueError(f"ewald_error_tolerance {ewald_error_tolerance} is not in (0, 0.01)")
    switch = None
    if switch_width_nm:
        switch = (cutoff - min(float(switch_width_nm), 0.2 * cutoff)) * u.nanometer
    top = water_openmm_topology(n_molecules, box)
    system = app.ForceField(TIP3P_XML).createSystem(
        top,
        nonbondedMethod=app.PME,
        nonbondedCutoff=cutoff * u.nanometer,
        constraints=None,
        rigidWater=False,
        ewaldErrorTolerance=ewald_error_tolerance,
        switchDistance=switch,
        useDispersionCorrection=dispersion_correction,
        removeCMMotion=True,
    )
    set_pme_parameters(system, box, ewald_error_tolerance)
    return BulkWater(system, top, positions, box)


def _fft_size(n: float) -> int:
    """Smallest integer ≥ n whose prime factors are 2, 3 and 5 (a fast FFT length)."""
    k = max(1, math.ceil(n - 1e-9))
    while True:
        m = k
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        if m == 1:
            return k
        k += 1


def set_pme_parameters(system: openmm.System, box_A: np.ndarray, tolerance: float) -> None:
    """Fix PME α and grid explicitly so every platform uses the same ones.

    OpenMM's own rule (NonbondedForce docs): α = √(−ln(2δ)) / r_c and n_k = ⌈2αL_k /
    (3δ^(1/5))⌉; the CPU platform then rounds n_k up to an FFT-friendly size while the
    Reference platform does not (64 molecules: 48³ vs 46³), so MD (CPU) and labels
    (Reference) would use different meshes. Here n_k is rounded up to a 2·3·5-smooth
    size once, for all platforms.
    """
    import openmm

    nb = next(f for f in system.getForces() if isinstance(f, openmm.NonbondedForce))
    rc = nb.getCutoffDistance()._value  # nm
    alpha = math.sqrt(-math.log(2.0 * tolerance)) / rc
    grid = [_fft_size(2.0 * alpha * (L / 10.0) / (3.0 * tolerance**0.2)) for L in box_A]
    nb.setPMEParameters(alpha, *grid)


def nonbonded_settings(system: openmm.System, context: openmm.Context | None = None) -> dict:
    """The NonbondedForce settings of ``system`` (and PME α/grid chosen in ``context``)."""
    import openmm

    nb = next(f for f in system.getForces() if isinstance(f, openmm.NonbondedForce))
    out: dict[str, Any] = {
        "method": {
            openmm.NonbondedForce.PME: "PME",
            openmm.NonbondedForce.NoCutoff: "NoCutoff",
        }.get(nb.getNonbondedMethod(), str(nb.getNonbondedMethod())),
        "cutoff_nm": nb.getCutoffDistance()._value,
        "switching_distance_nm": nb.getSwitchingDistance()._value
        if nb.getUseSwitchingFunction()
        else None,
        "ewald_error_tolerance": nb.getEwaldErrorTolerance(),
        "dispersion_correction": bool(nb.getUseDispersionCorrection()),
    }
    if context is not None and nb.getNonbondedMethod() == openmm.NonbondedForce.PME:
        alpha, nx, ny, nz = nb.getPMEParametersInContext(context)
        out["pme_alpha_per_nm"] = float(alpha)
        out["pme_grid"] = [int(nx), int(ny), int(nz)]
    return out


# --------------------------------------------------------------------------- evaluation
class OpenMMEvaluator:
    """Energy (eV) and forces (eV/Å) of an OpenMM System at positions given in Å.

    Default platform ``Reference``: double precision throughout, so forces are the
    exact gradient of the energy to ~1e-10 relative (the CPU platform is single/mixed
    precision). Not an ASE calculator; :mod:`ase_mlff.calculators.openmm` is.
    """

    def __init__(self, system: openmm.System, platform: str = "Reference", threads: int = 1):
        self.system = system
        self.n_atoms = system.getNumParticles()
        self.context = make_context(system, platform, get_platform(platform, threads)[1])

    def __call__(
        self, positions_A: np.ndarray, box_A: np.ndarray | None = None
    ) -> tuple[float, np.ndarray]:
        """(E eV, F (N, 3) eV/Å); ``box_A``: (3,) lengths or (3, 3) rows, Å (periodic only)."""
        import openmm.unit as u

        pos = np.asarray(positions_A, dtype=np.float64).reshape(-1, 3)
        if len(pos) != self.n_atoms:
            raise ValueError(f"{len(pos)} positions for a system of {self.n_atoms} atoms")
        if box_A is not None:
            b = np.asarray(box_A, dtype=np.float64)
            b = np.diag(b) if b.shape == (3,) else b.reshape(3, 3)
            self.context.setPeriodicBoxVectors(*(u.Quantity(v / 10.0, u.nanometer) for v in b))
        self.context.setPositions(u.Quantity(pos / 10.0, u.nanometer))
        state = self.context.getState(getEnergy=True, getForces=True)
        e = state.getPotentialEnergy().value_in_unit(u.kilojoule_per_mole) * KJ_PER_MOL
        f = state.getForces(asNumpy=True).value_in_unit(u.kilojoule_per_mole / u.nanometer)
        return float(e), np.asarray(f, dtype=np.float64) * (KJ_PER_MOL / 10.0)


def minimize_positions(
    system: openmm.System,
    positions_A: np.ndarray,
    platform: str = "CPU",
    threads: int = 1,
    tolerance_kj_mol_nm: float = 10.0,
    max_iterations: int = 0,
) -> np.ndarray:
    """OpenMM L-BFGS energy minimisation (``LocalEnergyMinimizer``); positions in/out Å."""
    import openmm
    import openmm.unit as u

    ctx = make_context(system, platform, get_platform(platform, threads)[1])
    ctx.setPositions(u.Quantity(np.asarray(positions_A, float) / 10.0, u.nanometer))
    openmm.LocalEnergyMinimizer.minimize(ctx, tolerance_kj_mol_nm, max_iterations)
    state = ctx.getState(getPositions=True, enforcePeriodicBox=True)
    return np.asarray(state.getPositions(asNumpy=True).value_in_unit(u.nanometer)) * 10.0


def water_box_atoms(
    n_molecules: int = 8,
    density_g_cm3: float = DEFAULT_DENSITY,
    seed: int = 0,
    minimize: bool = True,
    **system_kwargs: Any,
) -> tuple[Atoms, BulkWater]:
    """A small periodic water box for tests: ASE Atoms (cell, pbc) and its OpenMM system.

    With ``minimize`` the lattice start is relaxed by OpenMM (Reference platform), so the
    structure is a physical local minimum; 8 molecules make a 6.2 Å cube (cutoff 0.29 nm).
    """
    bulk = bulk_water_system(n_molecules, density_g_cm3, seed, **system_kwargs)
    pos = bulk.positions
    if minimize:
        pos = minimize_positions(bulk.system, pos, platform="Reference")
    atoms = Atoms(
        numbers=np.tile(WATER_NUMBERS, n_molecules),
        positions=pos,
        cell=np.diag(bulk.box),
        pbc=True,
    )
    return atoms, bulk._replace(positions=pos)
