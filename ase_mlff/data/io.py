"""Readers and writers for the field's real formats, and the shipped-data registry.

- MD17 (sGDML) npz: keys ``z`` (N,), ``R`` (S, N, 3) Å, ``E`` (S,) or (S, 1) kcal/mol,
  ``F`` (S, N, 3) kcal/mol/Å.
- rMD17 npz: ``nuclear_charges``, ``coords``, ``energies``, ``forces`` (same units).
- Anything ``ase.io.read`` reads (extxyz, traj, ...), and ASE databases (``.db``).
- The native npz format of :class:`~ase_mlff.data.dataset.Dataset`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from ase import units

from ase_mlff.data.dataset import Dataset, DatasetError

KCAL_PER_MOL = units.kcal / units.mol  # eV per kcal/mol
SHIPPED_DIR = Path(__file__).parent / "shipped"

#: name -> file in ``ase_mlff/data/shipped``; each has ``<stem>.provenance.json`` beside it.
SHIPPED_DATASETS = {
    "aspirin": "aspirin_gfn2_500K.npz",
    "water": "water_tip3p_flex_300K.npz",
    "silica": "silica_gfn1.npz",
    "alanine": "alanine_amber14_gbn2.npz",
    "combustion": "ho2_spgfn2.npz",
    "organic": "organic_gfn2.npz",
    "md17": "md17_gfn2_500K.npz",
}
#: the command that regenerates each shipped dataset
SHIPPED_RECIPES = {
    "aspirin": "python -m ase_mlff.recipes.make_reference",
    "water": "python -m ase_mlff.recipes.make_water_reference "
    "--out ase_mlff/data/shipped/water_tip3p_flex_300K.npz --frames 1600 --seed 2026",
    "silica": "python -m ase_mlff.recipes.make_silica_reference "
    "--out ase_mlff/data/shipped/silica_gfn1.npz --workers 2",
    "alanine": "python -m ase_mlff.recipes.make_alanine_reference "
    "--out ase_mlff/data/shipped/alanine_amber14_gbn2.npz --workers 2",
    "combustion": "python -m ase_mlff.recipes.make_combustion_reference "
    "--out ase_mlff/data/shipped/ho2_spgfn2.npz --workers 2",
    "organic": "python -m ase_mlff.recipes.make_diverse_reference --set diverse "
    "--out ase_mlff/data/shipped/organic_gfn2.npz --workers 2",
    "md17": "python -m ase_mlff.recipes.make_diverse_reference --set md17 "
    "--out ase_mlff/data/shipped/md17_gfn2_500K.npz --workers 2",
}

#: how each shipped set is meant to be split: the test set is a whole held-out
#: trajectory, so no test frame is time-correlated with a training frame
SHIPPED_SPLITS = {
    "aspirin": {"split": "trajectory", "test_groups": [4]},
    "water": {"split": "trajectory", "test_groups": [1]},
    # blocks of 8 consecutive frames of one sampling job; 20 random blocks held out
    # (ase_mlff.recipes.make_silica_reference renumbers them 0-19)
    "silica": {"split": "trajectory", "test_groups": list(range(20))},
    # the second metadynamics walker (traj_id 1) is held out
    "alanine": {"split": "trajectory", "test_groups": [1]},
    # HO2 -> H + O2: the second block of reaction-path frames (job 4) is held out
    "combustion": {"split": "trajectory", "test_groups": [4]},
    # whole molecules held out: every 20th of the SMILES list (traj_id = mol_id)
    "organic": {"split": "trajectory", "test_groups": list(range(10, 419, 20))},
}


def _md17_like(
    path: Path, z: np.ndarray, r: np.ndarray, e: np.ndarray, f: np.ndarray, fmt: str
) -> Dataset:
    z = np.asarray(z, dtype=np.int64).reshape(-1)
    r = np.asarray(r, dtype=np.float64)
    if r.ndim != 3 or r.shape[1:] != (len(z), 3):
        raise DatasetError(f"{path}: coordinates of shape {r.shape} do not match {len(z)} atoms")
    n_frames, n_atoms = r.shape[0], len(z)
    e = np.asarray(e, dtype=np.float64).reshape(n_frames) * KCAL_PER_MOL
    f = np.asarray(f, dtype=np.float64).reshape(n_frames, n_atoms, 3) * KCAL_PER_MOL
    return Dataset(
        numbers_n=np.tile(z, n_frames),
        positions_nc=r.reshape(-1, 3),
        n_atoms_s=np.full(n_frames, n_atoms),
        cell_s33=np.zeros((n_frames, 3, 3)),
        pbc_s3=np.zeros((n_frames, 3), bool),
        energy_s=e,
        forces_nc=f.reshape(-1, 3),
        config_type_s=np.full(n_frames, fmt),
        provenance={"source": str(path), "format": fmt, "units_converted": "kcal/mol -> eV"},
    )


def read_md17(path: str | Path) -> Dataset:
    """Read an MD17 (sGDML) npz file; energies and forces converted from kcal/mol to eV."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"MD17 file not found: {path}")
    with np.load(path, allow_pickle=False) as f:
        missing = {"z", "R", "E", "F"} - set(f.files)
        if missing:
            raise DatasetError(f"{path} is not an MD17 npz: missing keys {sorted(missing)}")
        return _md17_like(path, f["z"], f["R"], f["E"], f["F"], "md17")


def read_rmd17(path: str | Path) -> Dataset:
    """Read a revised-MD17 npz file; energies and forces converted from kcal/mol to eV."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"rMD17 file not found: {path}")
    with np.load(path, allow_pickle=False) as f:
        keys = {"nuclear_charges", "coords", "energies", "forces"}
        missing = keys - set(f.files)
        if missing:
            raise DatasetError(f"{path} is not an rMD17 npz: missing keys {sorted(missing)}")
        return _md17_like(
            path, f["nuclear_charges"], f["coords"], f["energies"], f["forces"], "rmd17"
        )


def read_ase(path: str | Path, index: str | int | slice = ":", **kwargs: Any) -> Dataset:
    """Read anything ``ase.io.read`` understands (extxyz, ASE trajectory, ...)."""
    import ase.io

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"structure file not found: {path}")
    try:
        images = ase.io.read(path, index=index, **kwargs)
    except Exception as err:  # noqa: BLE001 - ASE raises many kinds for a foreign file
        first = (str(err).strip().splitlines() or [""])[0][:200]
        raise DatasetError(
            f"{path}: not a structure file ase.io.read can read ({type(err).__name__}: "
            f"{first}); give an extxyz, ASE trajectory, ASE database or npz file"
        ) from err
    if not isinstance(images, list):
        images = [images]
    ds = Dataset.from_atoms(images, provenance={"source": str(path), "format": "ase.io"})
    return ds


def read_db(path: str | Path, selection: str | None = None) -> Dataset:
    """Read an ASE database; energies/forces/stress come from each row's stored results."""
    from ase.db import connect

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"ASE database not found: {path}")
    with connect(path) as db:
        images = [row.toatoms(add_additional_information=False) for row in db.select(selection)]
    if not images:
        raise DatasetError(f"{path}: no rows match selection {selection!r}")
    return Dataset.from_atoms(images, provenance={"source": str(path), "format": "ase.db"})


def write_npz(dataset: Dataset, path: str | Path) -> Path:
    """Write the native npz (arrays + provenance) format."""
    return dataset.save_npz(path)


def write_extxyz(dataset: Dataset, path: str | Path) -> Path:
    """Write an extended-XYZ file with energy, forces (and stress) of every frame."""
    import ase.io

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ase.io.write(path, dataset.to_atoms_list(), format="extxyz")
    return path


def write_db(dataset: Dataset, path: str | Path) -> Path:
    """Write an ASE database with the labels of every frame."""
    from ase.db import connect

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with connect(path, append=False) as db:
        for atoms in dataset.to_atoms_list():
            db.write(atoms)
    return path


def provenance_path(npz_path: Path) -> Path:
    return npz_path.with_name(npz_path.name.removesuffix(".npz") + ".provenance.json")


def load_dataset(name_or_path: str | Path) -> Dataset:
    """Load a shipped dataset by name (``"aspirin"``) or any supported file by path.

    The format is chosen by content: native npz, MD17 npz, rMD17 npz, ASE db, or any
    file ``ase.io.read`` accepts.
    """
    key = str(name_or_path)
    if key in SHIPPED_DATASETS:
        path = SHIPPED_DIR / SHIPPED_DATASETS[key]
        if not path.exists():
            raise FileNotFoundError(
                f"shipped dataset {key!r} is missing at {path}; regenerate it with "
                f"`{SHIPPED_RECIPES[key]}`"
            )
        ds = Dataset.load_npz(path)
        prov = provenance_path(path)
        if prov.exists():
            ds.provenance = {**json.loads(prov.read_text()), **ds.provenance}
        return ds
    path = Path(name_or_path)
    if not path.exists():
        raise FileNotFoundError(
            f"no dataset named {key!r} (shipped: {sorted(SHIPPED_DATASETS)}) and no such file"
        )
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as f:
            files = set(f.files)
        if "format_version" in files:
            return Dataset.load_npz(path)
        if {"z", "R", "E", "F"} <= files:
            return read_md17(path)
        if {"nuclear_charges", "coords", "energies", "forces"} <= files:
            return read_rmd17(path)
        raise DatasetError(f"{path}: unrecognised npz keys {sorted(files)}")
    if path.suffix == ".db":
        return read_db(path)
    return read_ase(path)
