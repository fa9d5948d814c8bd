"""The ASE adapter over any torch potential of this project.

    from ase_mlff.calculators import MLFFCalculator
    atoms.calc = MLFFCalculator("aspirin-painn")          # shipped model
    atoms.calc = MLFFCalculator("runs/painn/best")         # a checkpoint directory
    atoms.calc = MLFFCalculator(my_module, dtype="float32")
    atoms.calc = MLFFCalculator("aspirin-painn", dtype="float32", skin=1.0, compile=True)

Energy, free energy, forces (and the stress of periodic systems) are filled in one pass;
conversions of dtype/device happen here, at the boundary, and every result is detached.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
from ase.stress import full_3x3_to_voigt_6_stress

from ase_mlff.graph.batch import Batch, restrict_graph_and_lengths
from ase_mlff.models.base import compute_properties
from ase_mlff.models.compiled import AUTO_COMPILE_AFTER, CompiledPotential
from ase_mlff.models.io import CheckpointError, load_model
from ase_mlff.utils import DTYPES

SHIPPED_MODELS_DIR = Path(__file__).parent / "shipped"


def shipped_models() -> list[str]:
    """Names of the models that ship with the package."""
    if not SHIPPED_MODELS_DIR.exists():
        return []
    return sorted(p.name for p in SHIPPED_MODELS_DIR.iterdir() if (p / "model.json").exists())


def resolve_model_path(name_or_path: str | Path) -> Path:
    """A shipped model name or a checkpoint path -> the checkpoint directory."""
    if (SHIPPED_MODELS_DIR / str(name_or_path) / "model.json").exists():
        return SHIPPED_MODELS_DIR / str(name_or_path)
    path = Path(name_or_path)
    if path.exists():
        return path
    raise CheckpointError(
        f"{name_or_path!r} is neither a shipped model ({', '.join(shipped_models()) or 'none'}) "
        "nor an existing checkpoint path"
    )


#: Å; a periodic direction with a smaller cell height is refused
MIN_CELL_HEIGHT = 0.5
#: Å; atoms closer than this (shorter than any bond, H2's is 0.74 Å) are warned about
CLOSE_ATOMS = 0.3


class MLFFCalculator(Calculator):
    """ASE calculator for a trained potential (shipped name, checkpoint path or module).

    Args:
        model: shipped model name (``"aspirin-painn"``), checkpoint directory, or a
            :class:`~ase_mlff.models.Potential` instance (copied, not modified).
        device: torch device (``"cpu"``, ``"cuda"``, ...).
        dtype: ``"float64"`` (default; MD-grade precision) or ``"float32"`` (or the torch
            dtypes); float16 is refused: forces by autograd in half precision are off by far
            more than a model's error.
        skin: Verlet skin, Å (0: a fresh batch and graph every call). With a skin, the
            batch is kept between calls on the same atoms and cell and its graph rebuilt
            only when an atom has moved skin/2: what an MD driver asks for. The results are
            those of a fresh graph (tests/test_verlet_skin.py).
        compile: ``True`` compiles the model on the first call
            (:class:`~ase_mlff.models.compiled.CompiledPotential`: ``torch.compile``,
            dynamic shapes, cached across processes, eager fallback with a logged
            reason); ``False`` never; ``"auto"`` (default) after ``auto_compile_after``
            eager evaluations, i.e. in MD-length use
            (:data:`~ase_mlff.models.compiled.AUTO_COMPILE_AFTER`: 4,000). Compiled and eager
            results agree to rounding. ``self.model`` stays the eager module.
        auto_compile_after: eager evaluations before compiling, for ``compile="auto"``.

    Inputs are checked before the model runs: empty Atoms, NaN/inf positions or cell,
    elements the model never saw, a periodic cell of zero volume or with a cell height
    below :data:`MIN_CELL_HEIGHT` Å along a periodic direction (the neighbour list would
    need thousands of images) raise ``ValueError``. Two atoms closer than
    :data:`CLOSE_ATOMS` Å get a ``RuntimeWarning`` naming them: the energy there is far
    outside any training data (MD drivers keep running; their detectors judge).
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(
        self,
        model: str | Path | torch.nn.Module = "aspirin-painn",
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype = "float64",
        skin: float = 0.0,
        compile: bool | str = "auto",
        auto_compile_after: int = AUTO_COMPILE_AFTER,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not skin >= 0:
            raise ValueError(f"skin (the Verlet skin, Å) must be ≥ 0, got {skin}")
        self.skin = float(skin)
        self._batch: Batch | None = None  # kept between calls with a skin
        self._batch_key: tuple | None = None
        self.device = torch.device(device)
        if dtype not in (*DTYPES, *DTYPES.values()):
            raise ValueError(
                f"dtype must be float32 or float64, got {dtype!r} (half precision is not "
                "supported: autograd forces in float16 are far less accurate than the model)"
            )
        self.dtype = DTYPES[dtype] if isinstance(dtype, str) else dtype
        if isinstance(model, torch.nn.Module):
            self.model = copy.deepcopy(model).to(device=self.device, dtype=self.dtype).eval()
            self.metadata: dict[str, Any] = {"model": getattr(model, "config", {})}
        else:
            self.model, self.metadata = load_model(
                resolve_model_path(model), device=self.device, dtype=self.dtype
            )
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.species = getattr(self.model, "species", None)
        #: what the calls run: the model, compiled per ``compile``
        self.potential = CompiledPotential(self.model, compile, after=auto_compile_after)

    def check_state(self, atoms: Atoms, tol: float = 1e-15) -> list[str]:
        """The system changes since the last calculation, as ASE's ``compare_atoms`` but
        by exact equality (numpy's ``array_equal`` instead of ``allclose`` to 1e-15):
        the same answer except that a move below 1e-15 Å counts as a change, at a
        fraction of the cost (ASE's check was a quarter of a small model's call)."""
        if self.atoms is None:
            return list(all_changes)
        old, new = self.atoms, atoms
        changes = []
        if not np.array_equal(old.cell.array, new.cell.array):
            changes.append("cell")
        if not np.array_equal(old.pbc, new.pbc):
            changes.append("pbc")
        props = set(all_changes) - {"cell", "pbc"}
        changes += sorted(props & (set(old.arrays) ^ set(new.arrays)))
        for prop in props & set(old.arrays) & set(new.arrays):
            if not np.array_equal(old.arrays[prop], new.arrays[prop]):
                changes.append(prop)
        return changes

    def _check(self, atoms: Atoms) -> None:
        if len(atoms) == 0:
            raise ValueError("MLFFCalculator got an empty Atoms object")
        if not np.all(np.isfinite(atoms.positions)):
            raise ValueError("atoms.positions contain NaN or inf")
        if self.species is not None:
            unknown = sorted(set(atoms.numbers.tolist()) - set(self.species))
            if unknown:
                from ase.data import chemical_symbols

                names = ", ".join(chemical_symbols[z] for z in unknown)
                known = ", ".join(chemical_symbols[z] for z in self.species)
                raise ValueError(
                    f"the model was never trained on element(s) {names}; it knows {known}"
                )
        if atoms.pbc.any():
            _check_cell(atoms)

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
        periodic = bool(atoms.pbc.all())
        if "stress" in properties and not periodic:
            raise PropertyNotImplementedError("stress is only defined for 3-D periodic systems")
        # positions relative to the centre, in float64 before any cast: a molecule far
        # from the origin keeps its float32 precision (energy, forces and stress are
        # translation invariant)
        batch = self._batch_for(atoms, atoms.positions - atoms.positions.mean(axis=0))
        # a Verlet-skin graph restricted to the cutoff here (not again in
        # compute_properties), its edge lengths reused by the close-atoms check
        batch, r2_e = restrict_graph_and_lengths(batch, batch.cutoff)
        _warn_close_atoms(batch, r2_e)
        out = compute_properties(self.potential, batch, forces=True, stress=periodic)
        energy = float(out["energy"][0])
        self.results = {
            "energy": energy,
            "free_energy": energy,
            "forces": out["forces"].cpu().double().numpy(),
        }
        if periodic:
            self.results["stress"] = full_3x3_to_voigt_6_stress(
                out["stress"][0].cpu().double().numpy()
            )

    def _batch_for(self, atoms: Atoms, centred_positions: np.ndarray) -> Batch:
        """The batch at ``centred_positions``. With a Verlet skin the last call's batch is
        reused while the atoms, cell and periodicity are the same: only the positions
        change, and the neighbour graph is rebuilt when some atom has moved skin/2
        (:class:`~ase_mlff.graph.Batch`). Without one, a fresh batch every call."""
        key = (atoms.numbers.tobytes(), np.asarray(atoms.cell[:]).tobytes(), atoms.pbc.tobytes())
        if self.skin > 0 and self._batch is not None and key == self._batch_key:
            pos = torch.as_tensor(centred_positions, dtype=self.dtype, device=self.device)
            self._batch = self._batch.with_positions(pos)
            return self._batch
        centred = atoms.copy()
        centred.positions = centred_positions
        batch = Batch.from_atoms(
            centred, cutoff=self.model.cutoff, dtype=self.dtype, device=self.device, skin=self.skin
        )
        if self.skin > 0:
            self._batch, self._batch_key = batch, key
        return batch


def _warn_close_atoms(batch: Batch, r2_e: torch.Tensor) -> None:
    """A ``RuntimeWarning`` naming the closest pair when two atoms are nearer than
    :data:`CLOSE_ATOMS` Å (from the squared lengths ``r2_e`` of the graph's edges, which
    the model uses anyway)."""
    if r2_e.numel() == 0:
        return
    k = int(torch.argmin(r2_e))
    d = float(r2_e[k]) ** 0.5
    if d < CLOSE_ATOMS:
        i, j = (int(x) for x in batch.edge_index_2e[:, k])
        warnings.warn(
            f"atoms {i} and {j} are {d:.3g} Å apart (< {CLOSE_ATOMS} Å): the "
            "energy and forces there are far outside any training data",
            RuntimeWarning,
            stacklevel=3,
        )


def _check_cell(atoms: Atoms) -> None:
    """The cell of (partly) periodic Atoms: finite, its periodic vectors independent (a
    slab with c = 0 and pbc = [T, T, F] is fine), and no lattice spacing along a periodic
    direction below :data:`MIN_CELL_HEIGHT`."""
    cell = np.asarray(atoms.cell[:])
    if not np.all(np.isfinite(cell)):
        raise ValueError("atoms.cell contains NaN or inf")
    periodic = cell[atoms.pbc]
    if np.linalg.matrix_rank(periodic, tol=1e-9) < len(periodic):
        what = "volume" if atoms.pbc.all() else "independent periodic cell vectors"
        raise ValueError(f"periodic Atoms need a cell with non-zero {what}")
    if not atoms.pbc.all():
        return
    heights = abs(atoms.cell.volume) / np.linalg.norm(
        np.cross(cell[[1, 2, 0]], cell[[2, 0, 1]]), axis=1
    )
    thin = [f"{'abc'[k]}: {heights[k]:.3g} Å" for k in range(3) if heights[k] < MIN_CELL_HEIGHT]
    if thin:
        raise ValueError(
            f"the periodic cell is thinner than {MIN_CELL_HEIGHT} Å ({', '.join(thin)}): "
            "no material has such a lattice spacing; check the cell's units (Å)"
        )
