"""A dataset of labelled configurations, stored flat so one set may hold many molecules.

Shapes use the suffix convention: ``s`` = frame (system), ``n`` = atom (all frames
concatenated), ``c`` = Cartesian. Units: Å, eV, eV/Å, eV/Å³ (stress, ASE sign convention).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

FORMAT_VERSION = 1


class DatasetError(ValueError):
    """Raised for malformed or inconsistent dataset content."""


@dataclass
class Dataset:
    """Configurations with energies, forces (and optionally stress) plus provenance.

    Attributes:
        numbers_n: (N_total,) atomic numbers of all frames concatenated.
        positions_nc: (N_total, 3) Cartesian positions, Å.
        n_atoms_s: (S,) number of atoms of each frame.
        cell_s33: (S, 3, 3) cell vectors as rows, Å (zeros for molecules).
        pbc_s3: (S, 3) periodic directions.
        energy_s: (S,) total energy, eV (NaN where unknown).
        forces_nc: (N_total, 3) forces, eV/Å (NaN where unknown).
        stress_s33: (S, 3, 3) stress, eV/Å³, or None.
        weight_s: (S,) per-frame training weight.
        config_type_s: (S,) free-form label of how a frame was made ("md", "rattled", ...).
        extra_s: further per-frame arrays (e.g. ``traj_id``, ``time_fs``), each (S, ...).
        provenance: who labelled the data, how it was sampled, seeds (JSON-serialisable).
    """

    numbers_n: np.ndarray
    positions_nc: np.ndarray
    n_atoms_s: np.ndarray
    cell_s33: np.ndarray
    pbc_s3: np.ndarray
    energy_s: np.ndarray
    forces_nc: np.ndarray
    stress_s33: np.ndarray | None = None
    weight_s: np.ndarray | None = None
    config_type_s: np.ndarray | None = None
    extra_s: dict[str, np.ndarray] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.numbers_n = np.asarray(self.numbers_n, dtype=np.int64).reshape(-1)
        self.positions_nc = np.asarray(self.positions_nc, dtype=np.float64).reshape(-1, 3)
        self.n_atoms_s = np.asarray(self.n_atoms_s, dtype=np.int64).reshape(-1)
        n_frames, n_total = len(self.n_atoms_s), len(self.numbers_n)
        self.cell_s33 = np.asarray(self.cell_s33, dtype=np.float64).reshape(n_frames, 3, 3)
        self.pbc_s3 = np.asarray(self.pbc_s3, dtype=bool).reshape(n_frames, 3)
        self.energy_s = np.asarray(self.energy_s, dtype=np.float64).reshape(n_frames)
        self.forces_nc = np.asarray(self.forces_nc, dtype=np.float64).reshape(-1, 3)
        if self.stress_s33 is not None:
            self.stress_s33 = np.asarray(self.stress_s33, dtype=np.float64).reshape(n_frames, 3, 3)
        if self.weight_s is None:
            self.weight_s = np.ones(n_frames)
        self.weight_s = np.asarray(self.weight_s, dtype=np.float64).reshape(n_frames)
        if self.config_type_s is None:
            self.config_type_s = np.full(n_frames, "default")
        self.config_type_s = np.asarray(self.config_type_s, dtype=str).reshape(n_frames)
        if int(self.n_atoms_s.sum()) != n_total:
            raise DatasetError(
                f"n_atoms_s sums to {int(self.n_atoms_s.sum())} but there are {n_total} atoms"
            )
        if np.any(self.n_atoms_s <= 0):
            raise DatasetError("every frame must contain at least one atom")
        for name in ("positions_nc", "forces_nc"):
            if len(getattr(self, name)) != n_total:
                raise DatasetError(
                    f"{name} has {len(getattr(self, name))} rows, expected {n_total}"
                )
        if not np.all(np.isfinite(self.positions_nc)):
            raise DatasetError("positions contain NaN or inf")
        for key, value in self.extra_s.items():
            if len(value) != n_frames:
                raise DatasetError(
                    f"extra array {key!r} has {len(value)} rows, expected {n_frames}"
                )

    # ------------------------------------------------------------------ basics
    def __len__(self) -> int:
        return len(self.n_atoms_s)

    @property
    def ptr_s(self) -> np.ndarray:
        """(S+1,) offsets of each frame's first atom in the flat atom arrays."""
        return np.concatenate([[0], np.cumsum(self.n_atoms_s)])

    @property
    def has_stress(self) -> bool:
        return self.stress_s33 is not None

    @property
    def species(self) -> list[int]:
        return sorted(int(z) for z in np.unique(self.numbers_n))

    def atom_index(self, frames: np.ndarray) -> np.ndarray:
        """Flat atom indices of the given frames, in order (vectorized)."""
        frames = np.asarray(frames, dtype=np.int64)
        ptr = self.ptr_s
        counts = self.n_atoms_s[frames]
        starts = np.repeat(ptr[frames], counts)
        within = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        return starts + within

    def subset(self, frames: Sequence[int] | np.ndarray) -> Dataset:
        """A new dataset holding ``frames`` (copies), provenance kept and annotated."""
        frames = np.asarray(frames, dtype=np.int64).reshape(-1)
        if len(frames) and (frames.min() < -len(self) or frames.max() >= len(self)):
            raise IndexError(f"frame index out of range for dataset of {len(self)} frames")
        frames = frames % max(len(self), 1)
        atoms = self.atom_index(frames)
        return Dataset(
            numbers_n=self.numbers_n[atoms],
            positions_nc=self.positions_nc[atoms],
            n_atoms_s=self.n_atoms_s[frames],
            cell_s33=self.cell_s33[frames],
            pbc_s3=self.pbc_s3[frames],
            energy_s=self.energy_s[frames],
            forces_nc=self.forces_nc[atoms],
            stress_s33=None if self.stress_s33 is None else self.stress_s33[frames],
            weight_s=self.weight_s[frames],
            config_type_s=self.config_type_s[frames],
            extra_s={k: v[frames] for k, v in self.extra_s.items()},
            provenance=dict(self.provenance),
        )

    def __getitem__(self, idx: int | slice | Sequence[int] | np.ndarray) -> Dataset:
        if isinstance(idx, (int, np.integer)):
            return self.subset([int(idx)])
        if isinstance(idx, slice):
            return self.subset(np.arange(len(self))[idx])
        return self.subset(idx)

    def same_molecule(self) -> bool:
        """True when every frame has the same atomic numbers in the same order."""
        if len(self) == 0 or np.any(self.n_atoms_s != self.n_atoms_s[0]):
            return False
        z_sn = self.numbers_n.reshape(len(self), -1)
        return bool(np.all(z_sn == z_sn[0]))

    # ------------------------------------------------------------- conversion
    def to_atoms(self, i: int, with_labels: bool = True) -> Atoms:
        lo, hi = self.ptr_s[i], self.ptr_s[i + 1]
        atoms = Atoms(
            numbers=self.numbers_n[lo:hi],
            positions=self.positions_nc[lo:hi],
            cell=self.cell_s33[i],
            pbc=self.pbc_s3[i],
        )
        atoms.info["config_type"] = str(self.config_type_s[i])
        atoms.info["weight"] = float(self.weight_s[i])
        for key, value in self.extra_s.items():
            v = value[i]
            atoms.info[key] = v.item() if np.ndim(v) == 0 else np.asarray(v)
        if with_labels:
            results: dict[str, Any] = {}
            if np.isfinite(self.energy_s[i]):
                results["energy"] = float(self.energy_s[i])
            if np.all(np.isfinite(self.forces_nc[lo:hi])):
                results["forces"] = self.forces_nc[lo:hi].copy()
            if self.stress_s33 is not None and np.all(np.isfinite(self.stress_s33[i])):
                from ase.stress import full_3x3_to_voigt_6_stress

                results["stress"] = full_3x3_to_voigt_6_stress(self.stress_s33[i])
            if results:
                atoms.calc = SinglePointCalculator(atoms, **results)
        return atoms

    def to_atoms_list(self, with_labels: bool = True) -> list[Atoms]:
        return [self.to_atoms(i, with_labels) for i in range(len(self))]

    @classmethod
    def from_frames(
        cls,
        atoms: Atoms,
        positions_snc: np.ndarray,
        energy_s: np.ndarray,
        forces_snc: np.ndarray,
        config_type: str = "default",
        extra_s: dict[str, np.ndarray] | None = None,
        provenance: dict[str, Any] | None = None,
    ) -> Dataset:
        """S labelled frames of one system: the numbers, cell and periodicity of ``atoms``
        with positions (S, N, 3), energies (S,) and forces (S, N, 3)."""
        pos = np.asarray(positions_snc, dtype=np.float64)
        s, n = pos.shape[:2]
        return cls(
            numbers_n=np.tile(atoms.numbers, s),
            positions_nc=pos.reshape(-1, 3),
            n_atoms_s=np.full(s, n),
            cell_s33=np.repeat(np.asarray(atoms.cell[:])[None], s, axis=0),
            pbc_s3=np.repeat(np.asarray(atoms.pbc)[None], s, axis=0),
            energy_s=np.asarray(energy_s, dtype=float),
            forces_nc=np.asarray(forces_snc, dtype=float).reshape(-1, 3),
            config_type_s=np.full(s, config_type),
            extra_s=dict(extra_s or {}),
            provenance=dict(provenance or {}),
        )

    @classmethod
    def from_atoms(
        cls,
        images: Sequence[Atoms],
        provenance: dict[str, Any] | None = None,
        require_labels: bool = False,
    ) -> Dataset:
        """Build a dataset from ASE Atoms; labels are read from each Atoms' calculator."""
        from ase.stress import voigt_6_to_full_3x3_stress

        if len(images) == 0:
            raise DatasetError("cannot build a dataset from an empty list of structures")
        numbers, positions, forces, n_atoms, cells, pbcs, energies = [], [], [], [], [], [], []
        stresses: list[np.ndarray] = []
        config_types, weights = [], []
        any_stress = False
        for k, atoms in enumerate(images):
            if len(atoms) == 0:
                raise DatasetError(f"structure {k} has no atoms")
            numbers.append(atoms.numbers)
            positions.append(atoms.positions)
            n_atoms.append(len(atoms))
            cells.append(np.asarray(atoms.cell[:]))
            pbcs.append(atoms.pbc)
            e, f, s = np.nan, np.full((len(atoms), 3), np.nan), np.full((3, 3), np.nan)
            calc = atoms.calc
            if calc is not None:
                res = getattr(calc, "results", {})
                e = res.get("energy", res.get("free_energy", np.nan))
                if "forces" in res:
                    f = np.asarray(res["forces"])
                if "stress" in res:
                    st = np.asarray(res["stress"])
                    s = voigt_6_to_full_3x3_stress(st) if st.shape == (6,) else st.reshape(3, 3)
                    any_stress = True
            if require_labels and (not np.isfinite(e) or not np.all(np.isfinite(f))):
                raise DatasetError(f"structure {k} has no energy/forces attached")
            energies.append(e)
            forces.append(f)
            stresses.append(s)
            config_types.append(str(atoms.info.get("config_type", "default")))
            weights.append(float(atoms.info.get("weight", 1.0)))
        return cls(
            numbers_n=np.concatenate(numbers),
            positions_nc=np.concatenate(positions),
            n_atoms_s=np.array(n_atoms),
            cell_s33=np.array(cells),
            pbc_s3=np.array(pbcs),
            energy_s=np.array(energies, dtype=float),
            forces_nc=np.concatenate(forces),
            stress_s33=np.array(stresses) if any_stress else None,
            weight_s=np.array(weights),
            config_type_s=np.array(config_types),
            provenance=dict(provenance or {}),
        )

    @classmethod
    def concatenate(cls, datasets: Sequence[Dataset]) -> Dataset:
        if not datasets:
            raise DatasetError("nothing to concatenate")
        any_stress = any(d.has_stress for d in datasets)
        stress = None
        if any_stress:
            stress = np.concatenate(
                [
                    d.stress_s33 if d.has_stress else np.full((len(d), 3, 3), np.nan)
                    for d in datasets
                ]
            )
        common = set.intersection(*(set(d.extra_s) for d in datasets))
        return cls(
            numbers_n=np.concatenate([d.numbers_n for d in datasets]),
            positions_nc=np.concatenate([d.positions_nc for d in datasets]),
            n_atoms_s=np.concatenate([d.n_atoms_s for d in datasets]),
            cell_s33=np.concatenate([d.cell_s33 for d in datasets]),
            pbc_s3=np.concatenate([d.pbc_s3 for d in datasets]),
            energy_s=np.concatenate([d.energy_s for d in datasets]),
            forces_nc=np.concatenate([d.forces_nc for d in datasets]),
            stress_s33=stress,
            weight_s=np.concatenate([d.weight_s for d in datasets]),
            config_type_s=np.concatenate([d.config_type_s for d in datasets]),
            extra_s={k: np.concatenate([d.extra_s[k] for d in datasets]) for k in sorted(common)},
            provenance={"concatenated_from": [d.provenance for d in datasets]},
        )

    # ---------------------------------------------------------------- storage
    def save_npz(
        self, path: str | Path, compress: bool = True, single_precision: bool = False
    ) -> Path:
        """Write the native npz format (arrays + JSON provenance in one file).

        ``single_precision``: store positions and forces as float32 (read back as float64),
        half the size; energies stay float64 (total energies of ~10³ eV need it). Rounding
        moves an atom by ~10⁻⁷ relative, far below any label's own error."""
        vec = np.float32 if single_precision else np.float64
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, np.ndarray] = {
            "format_version": np.array(FORMAT_VERSION),
            "numbers_n": self.numbers_n,
            "positions_nc": self.positions_nc.astype(vec),
            "n_atoms_s": self.n_atoms_s,
            "cell_s33": self.cell_s33,
            "pbc_s3": self.pbc_s3,
            "energy_s": self.energy_s,
            "forces_nc": self.forces_nc.astype(vec),
            "weight_s": self.weight_s,
            "config_type_s": self.config_type_s,
            "provenance_json": np.array(json.dumps(self.provenance, default=str)),
        }
        if self.stress_s33 is not None:
            arrays["stress_s33"] = self.stress_s33
        for key, value in self.extra_s.items():
            arrays[f"extra__{key}"] = value
        (np.savez_compressed if compress else np.savez)(path, **arrays)
        return path

    @classmethod
    def load_npz(cls, path: str | Path) -> Dataset:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"dataset file not found: {path}")
        with np.load(path, allow_pickle=False) as f:
            if "format_version" not in f:
                raise DatasetError(
                    f"{path} is not an ase_mlff dataset npz (no format_version); "
                    "use ase_mlff.data.read_md17 / read_rmd17 for MD17-style files"
                )
            version = int(f["format_version"])
            if version > FORMAT_VERSION:
                raise DatasetError(
                    f"{path} has dataset format {version}, newer than this ase_mlff "
                    f"understands ({FORMAT_VERSION}); upgrade ase_mlff"
                )
            required = ("numbers_n", "positions_nc", "n_atoms_s", "cell_s33", "pbc_s3")
            missing = [k for k in (*required, "energy_s", "forces_nc") if k not in f.files]
            if missing:
                raise DatasetError(
                    f"{path}: an ase_mlff dataset npz without {', '.join(missing)}; write it "
                    "with Dataset.save_npz (NaN marks a missing label)"
                )
            return cls(
                numbers_n=f["numbers_n"],
                positions_nc=f["positions_nc"],
                n_atoms_s=f["n_atoms_s"],
                cell_s33=f["cell_s33"],
                pbc_s3=f["pbc_s3"],
                energy_s=f["energy_s"],
                forces_nc=f["forces_nc"],
                stress_s33=f["stress_s33"] if "stress_s33" in f else None,
                weight_s=f["weight_s"] if "weight_s" in f.files else None,
                config_type_s=f["config_type_s"] if "config_type_s" in f.files else None,
                extra_s={k[len("extra__") :]: f[k] for k in f.files if k.startswith("extra__")},
                provenance=json.loads(str(f["provenance_json"]))
                if "provenance_json" in f.files
                else {},
            )

    def summary(self) -> str:
        return (
            f"Dataset({len(self)} frames, {len(self.numbers_n)} atoms, species {self.species}, "
            f"stress={'yes' if self.has_stress else 'no'}, "
            f"method={self.provenance.get('method', '?')})"
        )

    __repr__ = summary
