"""An ASE calculator over an OpenMM ``System`` (the frame-by-frame reference).

    from ase_mlff.calculators.openmm import OpenMMCalculator
    atoms.calc = OpenMMCalculator(system, atoms)             # Reference platform, float64
    atoms.calc = OpenMMCalculator("system.xml", atoms, platform="CPU")

One OpenMM ``Context`` is created once and reused: every call only sets positions (and
the periodic box), so the cost per call is OpenMM's own. Units are converted at the
boundary: Å <-> nm (×0.1), kJ/mol -> eV (``ase.units.kJ / ase.units.mol``).

Periodic systems (e.g. PME water): the box is taken from ``atoms.cell`` on every call,
after rotating the cell to OpenMM's reduced lower-triangular form (forces are rotated
back). Stress is not provided.

OpenMM is an optional dependency: it is imported when a calculator is built.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes

from ase_mlff.utils import KJ_PER_MOL

if TYPE_CHECKING:  # pragma: no cover
    import openmm

log = logging.getLogger(__name__)


def _import_openmm() -> Any:
    try:
        import openmm
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "OpenMM is needed for this (pip install openmm, or conda install -c conda-forge openmm)"
        ) from err
    return openmm


def load_system(system: Any) -> openmm.System:
    """An OpenMM System, its XML text (``XmlSerializer``) or the path of such an XML file."""
    openmm = _import_openmm()
    if isinstance(system, openmm.System):
        return system
    text = str(system)
    if not text.lstrip().startswith("<"):
        with open(text) as fh:
            text = fh.read()
    return openmm.XmlSerializer.deserialize(text)


def get_platform(name: str = "Reference", threads: int | None = None) -> tuple[Any, dict[str, str]]:
    """An OpenMM platform by name and its properties (CPU: ``Threads`` = ``threads``)."""
    openmm = _import_openmm()
    try:
        plat = openmm.Platform.getPlatformByName(name)
    except Exception as err:
        names = [
            openmm.Platform.getPlatform(i).getName()
            for i in range(openmm.Platform.getNumPlatforms())
        ]
        raise ValueError(f"OpenMM platform {name!r} not available; have {names}") from err
    props = {"Threads": str(int(threads))} if name == "CPU" and threads else {}
    return plat, props


def make_context(
    system: Any, platform: str = "Reference", properties: dict[str, str] | None = None
) -> openmm.Context:
    """A Context of the System on the named platform (a 1 fs Verlet integrator, never used)."""
    openmm = _import_openmm()
    system = load_system(system)
    plat, _ = get_platform(platform)
    integrator = openmm.VerletIntegrator(0.001)
    return openmm.Context(system, integrator, plat, dict(properties or {}))


def openmm_energies_forces(
    system: Any,
    positions_snc: np.ndarray,
    platform: str = "Reference",
    properties: dict[str, str] | None = None,
    context: openmm.Context | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Energies (S,) in eV and forces (S, N, 3) in eV/Å of S frames, one frame at a time.

    This is the frame-by-frame baseline: one Context, positions set per frame. Positions
    are (S, N, 3) in Å, in the System's particle order; non-periodic use only.
    """
    pos = np.asarray(positions_snc, dtype=np.float64)
    if pos.ndim == 2:
        pos = pos[None]
    ctx = context if context is not None else make_context(system, platform, properties)
    n = ctx.getSystem().getNumParticles()
    if pos.shape[1:] != (n, 3):
        raise ValueError(f"positions of shape {pos.shape} for a System of {n} particles")
    energy = np.empty(len(pos))
    forces = np.empty_like(pos)
    nm = 0.1 * pos
    for s in range(len(pos)):
        ctx.setPositions(nm[s])
        state = ctx.getState(getEnergy=True, getForces=True)
        energy[s] = state.getPotentialEnergy()._value
        forces[s] = state.getForces(asNumpy=True)._value
    # OpenMM's MD units: kJ/mol and kJ/mol/nm
    return energy * KJ_PER_MOL, forces * (KJ_PER_MOL * 0.1)


class OpenMMCalculator(Calculator):
    """ASE calculator of an OpenMM System: energy, free_energy (= energy), forces.

    Args:
        system: ``openmm.System``, its XML text, or an XML file path.
        numbers_or_atoms: atomic numbers (or Atoms) in the System's particle order;
            checked against every structure the calculator sees. ``None``: only the atom
            count is checked.
        platform: OpenMM platform name ("Reference": double precision; "CPU": mixed
            precision, faster; "CUDA"/"OpenCL" if present).
        platform_properties: OpenMM platform properties, e.g. ``{"Threads": "1"}`` (CPU).

    The Context is built once and reused. No stress is computed.
    """

    implemented_properties = ["energy", "free_energy", "forces"]

    def __init__(
        self,
        system: Any,
        numbers_or_atoms: Atoms | np.ndarray | list[int] | None = None,
        platform: str = "Reference",
        platform_properties: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.system = load_system(system)
        self.context = make_context(self.system, platform, platform_properties)
        self.platform = platform
        if isinstance(numbers_or_atoms, Atoms):
            numbers_or_atoms = numbers_or_atoms.numbers
        self.numbers = None if numbers_or_atoms is None else np.asarray(numbers_or_atoms)
        n = self.system.getNumParticles()
        if self.numbers is not None and len(self.numbers) != n:
            raise ValueError(f"{len(self.numbers)} atomic numbers for a System of {n} particles")
        self.periodic_system = bool(self.system.usesPeriodicBoundaryConditions())

    def _check(self, atoms: Atoms) -> None:
        n = self.system.getNumParticles()
        if len(atoms) != n:
            raise ValueError(f"the OpenMM System has {n} particles, the Atoms {len(atoms)}")
        if self.numbers is not None and not np.array_equal(atoms.numbers, self.numbers):
            raise ValueError(
                "the Atoms' elements (in order) differ from the System's; map the atom order "
                "first (ase_mlff.forcefields.openmm.match_atoms)"
            )
        if not np.all(np.isfinite(atoms.positions)):
            raise ValueError("atoms.positions contain NaN or inf")
        if self.periodic_system and not atoms.pbc.all():
            raise ValueError("the OpenMM System is periodic; give Atoms with pbc=True and a cell")
        if atoms.pbc.any() and not atoms.pbc.all():
            raise ValueError("OpenMM supports either no or full (3-D) periodicity")

    def calculate(
        self,
        atoms: Atoms | None = None,
        properties: list[str] | None = None,
        system_changes: list[str] = all_changes,
    ) -> None:
        properties = properties or ["energy"]
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        self._check(atoms)
        positions = atoms.positions
        rotation = None
        if self.periodic_system:
            # OpenMM wants a = (ax,0,0), b = (bx,by,0), c = (cx,cy,cz): ASE's standard form
            cell, rotation = atoms.cell.standard_form()
            positions = positions @ rotation.T
            try:
                self.context.setPeriodicBoxVectors(*(0.1 * np.asarray(cell)))
            except Exception as err:
                raise ValueError(
                    f"OpenMM rejected the cell {cell.cellpar()} (it needs a reduced box: "
                    f"|b_x| <= a_x/2, |c_x| <= a_x/2, |c_y| <= b_y/2): {err}"
                ) from err
        self.context.setPositions(0.1 * positions)
        state = self.context.getState(getEnergy=True, getForces=True)
        energy = state.getPotentialEnergy()._value * KJ_PER_MOL
        forces = state.getForces(asNumpy=True)._value * (KJ_PER_MOL * 0.1)
        if rotation is not None:
            forces = forces @ rotation
        self.results = {"energy": energy, "free_energy": energy, "forces": np.array(forces)}
